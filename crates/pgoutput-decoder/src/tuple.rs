//! Row data: [TupleData](https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html#PROTOCOL-LOGICALREP-MESSAGE-FORMATS-TUPLEDATA).

use bytes::Bytes;

/// One row as sent in a TupleData block: one value per published column, in the
/// column order of the table's [`Relation`](crate::Relation) message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple {
    /// The column values.
    pub columns: Vec<ColumnValue>,
}

impl Tuple {
    /// Wraps column values.
    pub fn new(columns: Vec<ColumnValue>) -> Self {
        Self { columns }
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether there are no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The value of column `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&ColumnValue> {
        self.columns.get(index)
    }

    /// Iterates over the column values.
    pub fn iter(&self) -> std::slice::Iter<'_, ColumnValue> {
        self.columns.iter()
    }
}

impl<'a> IntoIterator for &'a Tuple {
    type Item = &'a ColumnValue;
    type IntoIter = std::slice::Iter<'a, ColumnValue>;

    fn into_iter(self) -> Self::IntoIter {
        self.columns.iter()
    }
}

/// One column value of a [`Tuple`]. The byte payloads are zero-copy slices of the
/// decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged out-of-line (TOASTed) value that the server did not send.
    /// It is *not* NULL: the old value stays.
    UnchangedToast,
    /// `t`: the value in text format (client encoding, no NUL terminator).
    Text(Bytes),
    /// `b`: the value in binary (send/recv) format; sent only with `binary = true`
    /// for types that have a send function.
    Binary(Bytes),
}

impl ColumnValue {
    /// Whether this is [`ColumnValue::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// Whether this is [`ColumnValue::UnchangedToast`].
    pub fn is_unchanged_toast(&self) -> bool {
        matches!(self, Self::UnchangedToast)
    }

    /// The raw bytes of a text or binary value.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Text(b) | Self::Binary(b) => Some(b),
            Self::Null | Self::UnchangedToast => None,
        }
    }

    /// A text value as `&str`, if it is text and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// The old row sent with an [`Update`](crate::Update) or [`Delete`](crate::Delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns (other columns are sent as NULL).
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The row, whichever kind it is.
    pub fn tuple(&self) -> &Tuple {
        match self {
            Self::Key(t) | Self::Full(t) => t,
        }
    }

    /// Whether only the key columns were sent.
    pub fn is_key(&self) -> bool {
        matches!(self, Self::Key(_))
    }
}
