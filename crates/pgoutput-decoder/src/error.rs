//! Typed decode errors that say what went wrong and where.

use std::fmt;

/// What went wrong while decoding; see [`DecodeError::kind`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended while `needed` more bytes were expected for `field`.
    UnexpectedEof {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A tag byte (message, tuple column kind, replica identity ...) is not known.
    UnknownTag {
        /// Which kind of tag was expected.
        field: &'static str,
        /// The byte found.
        found: u8,
    },
    /// A length or count field is negative or larger than the input could hold.
    InvalidLength {
        /// The length or count field.
        field: &'static str,
        /// The value as sent.
        value: i64,
    },
    /// A string field is not valid UTF-8.
    InvalidUtf8 {
        /// The string field.
        field: &'static str,
    },
    /// A NUL-terminated string field has no terminator.
    UnterminatedString {
        /// The string field.
        field: &'static str,
    },
    /// Bytes are left after a complete message.
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// A field holds a value that the protocol does not allow (unknown flag bits, ...).
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value as sent.
        value: i64,
    },
    /// The message needs a newer protocol version than the one negotiated.
    UnsupportedByProtocol {
        /// The negotiated `proto_version`.
        proto_version: u32,
        /// The first version that has this message.
        required: u32,
    },
    /// The message cannot appear here: a Stream Start inside a stream block, a
    /// Stream Stop outside one, or a transaction-level message inside one.
    StreamState {
        /// Whether the decoder was inside a Stream Start/Stop block.
        in_stream: bool,
    },
    /// The input was empty where a message was expected.
    Empty,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEof { field, needed, remaining } => write!(
                f,
                "unexpected end of input reading {field}: needed {needed} bytes, {remaining} left"
            ),
            Self::UnknownTag { field, found } => {
                write!(f, "unknown {field} tag {}", DisplayTag(*found))
            }
            Self::InvalidLength { field, value } => write!(f, "invalid {field} {value}"),
            Self::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            Self::UnterminatedString { field } => write!(f, "{field} has no NUL terminator"),
            Self::TrailingBytes { count } => write!(f, "{count} trailing bytes after the message"),
            Self::InvalidValue { field, value } => write!(f, "invalid {field} value {value}"),
            Self::UnsupportedByProtocol { proto_version, required } => write!(
                f,
                "message needs protocol version {required}, but version {proto_version} is in use"
            ),
            Self::StreamState { in_stream: true } => {
                write!(f, "message not allowed inside a Stream Start/Stop block")
            }
            Self::StreamState { in_stream: false } => {
                write!(f, "message not allowed outside a Stream Start/Stop block")
            }
            Self::Empty => write!(f, "empty message"),
        }
    }
}

/// A decode failure: its [`kind`](Self::kind), the byte [`offset`](Self::offset) into
/// the decoded payload where it was detected, and the message [`tag`](Self::tag).
///
/// Boxed so that `Result<LogicalMessage, DecodeError>` stays as small as the
/// message: results are moved several times per decoded message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    kind: DecodeErrorKind,
    offset: usize,
    tag: Option<u8>,
}

impl DecodeError {
    #[cold]
    pub(crate) fn new(kind: DecodeErrorKind, offset: usize, tag: Option<u8>) -> Self {
        Self(Box::new(Inner { kind, offset, tag }))
    }

    /// Sets the message tag if none is set yet.
    #[cold]
    pub(crate) fn with_tag(mut self, tag: u8) -> Self {
        self.0.tag.get_or_insert(tag);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.0.kind
    }

    /// Byte offset into the decoded payload (starting at its tag byte) where the
    /// problem was found.
    pub fn offset(&self) -> usize {
        self.0.offset
    }

    /// Tag byte of the message being decoded, if one was read.
    pub fn tag(&self) -> Option<u8> {
        self.0.tag
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner { kind, offset, tag } = &*self.0;
        match *tag {
            Some(tag) => {
                write!(f, "decoding message {} at offset {offset}: {kind}", DisplayTag(tag),)
            }
            None => write!(f, "decoding at offset {offset}: {kind}"),
        }
    }
}

/// Shows a tag byte as `'I'` when printable, else as `0x1f`.
struct DisplayTag(u8);

impl fmt::Display for DisplayTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_tag_offset_and_cause() {
        let e =
            DecodeError::new(DecodeErrorKind::UnknownTag { field: "message", found: 0 }, 0, None);
        assert_eq!(e.to_string(), "decoding at offset 0: unknown message tag 0x00");
        let e = DecodeError::new(
            DecodeErrorKind::UnexpectedEof { field: "relation id", needed: 4, remaining: 1 },
            1,
            Some(b'I'),
        );
        assert_eq!(
            e.to_string(),
            "decoding message 'I' at offset 1: unexpected end of input reading relation id: \
             needed 4 bytes, 1 left"
        );
        assert_eq!(e.tag(), Some(b'I'));
        assert_eq!(e.offset(), 1);
    }
}
