//! Finding a row on the target: by its replica identity key, or for `REPLICA IDENTITY FULL` by
//! the whole old row (`=` for values, so an index on any of its columns serves the lookup, also
//! as text where `=` is coarser than the value's output, and `IS NULL` for NULLs), one row at a
//! time (`(tableoid, ctid) = (SELECT tableoid, ctid ... LIMIT 1)`) so identical duplicates are
//! handled one by one; runs of such changes go out as one statement (see `table`).

use pgoutput_decoder::{Column, ColumnValue, Tuple};

use crate::error::{ApplyError, Op};

use super::PostgresTarget;
use super::table::{Match, StmtKey, TableInfo};
use super::value::Param;

pub(super) const TEXT_OID: u32 = 25;

/// Key values of a row, each length-prefixed, in one buffer: hashed and compared as a unit,
/// without a reference count per value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct RowKey(Vec<u8>);

impl RowKey {
    pub(super) fn push(&mut self, value: &[u8]) {
        self.0.extend_from_slice(&value.len().to_ne_bytes());
        self.0.extend_from_slice(value);
    }

    /// The key of `values`, allocated once.
    pub(super) fn from_values<'a>(values: impl Iterator<Item = &'a [u8]> + Clone) -> RowKey {
        let len = values.clone().map(|v| size_of::<usize>() + v.len()).sum();
        let mut k = RowKey(Vec::with_capacity(len));
        for v in values {
            k.push(v);
        }
        k
    }

    /// The values of a key tuple (as built by `key_values`).
    pub(super) fn of(key: &Tuple) -> RowKey {
        RowKey::from_values(key.iter().filter_map(Column::bytes))
    }
}

/// The key columns of `row`, in key order (`key` holds ascending column indices), in one walk
/// over the row; `None` for a column the row lacks.
pub(super) fn key_columns<'a>(
    key: &[usize],
    row: &'a Tuple,
) -> impl Iterator<Item = Option<Column<'a>>> + Clone {
    let mut cols = row.iter().enumerate();
    key.iter().map(move |&k| cols.by_ref().find(|&(i, _)| i == k).map(|(_, c)| c))
}

/// Per column: is the value binary (NULLs count as binary until a text value shows up).
pub(super) fn column_binary(row: &Tuple) -> Vec<bool> {
    binary_flags(row).collect()
}

/// [`column_binary`], unallocated.
pub(super) fn binary_flags(row: &Tuple) -> impl Iterator<Item = bool> + '_ {
    row.iter().map(|v| !matches!(v, Column::Text(_)))
}

/// The arrays of a set-based statement by key: column `j` of the key tuples, as the key
/// column's type when binary, else text.
pub(super) fn key_picks(t: &TableInfo, key_binary: &[bool]) -> Vec<(usize, u32)> {
    t.key
        .iter()
        .zip(key_binary)
        .enumerate()
        .map(|(j, (&k, &binary))| (j, if binary { t.cols[k].type_oid } else { TEXT_OID }))
        .collect()
}

/// For each value that is not NULL or an unchanged TOAST value: whether it is binary.
pub(super) fn value_binary<'a>(values: impl Iterator<Item = Column<'a>>) -> Box<[bool]> {
    values
        .filter(|v| matches!(v, Column::Text(_) | Column::Binary(_)))
        .map(|v| matches!(v, Column::Binary(_)))
        .collect()
}

/// The arrays of a whole-row statement: column `i` of each of `cols` (in order), as the
/// column's type when its `binary` flag says so, else as text.
pub(super) fn picks_of(
    t: &TableInfo,
    cols: impl Iterator<Item = usize>,
    binary: &[bool],
) -> Vec<(usize, u32)> {
    cols.zip(binary).map(|(i, &bin)| (i, if bin { t.cols[i].type_oid } else { TEXT_OID })).collect()
}

/// The columns a whole old row matches by value.
pub(super) fn matched_values(matched: &[Match]) -> impl Iterator<Item = usize> + '_ {
    matched.iter().enumerate().filter(|(_, m)| **m == Match::Value).map(|(i, _)| i)
}

/// How each column of a whole old row (REPLICA IDENTITY FULL) is matched.
pub(super) fn full_match(old: &Tuple) -> Box<[Match]> {
    old.values()
        .map(|v| match v {
            ColumnValue::UnchangedToast => Match::Skip,
            ColumnValue::Null => Match::Null,
            ColumnValue::Text(_) | ColumnValue::Binary(_) => Match::Value,
        })
        .collect()
}

impl PostgresTarget {
    /// The key values identifying a row for table `t` (key replica identity), from the old
    /// tuple if sent, else from the new row: a tuple of the key columns only.
    pub(super) fn key_values(
        t: &TableInfo,
        op: Op,
        old: Option<&Tuple>,
        new: Option<&Tuple>,
    ) -> Result<Tuple, ApplyError> {
        let missing = |detail: &str| ApplyError::MissingIdentity {
            table: t.name.to_string(),
            op,
            detail: detail.into(),
        };
        if t.key.is_empty() {
            return Err(missing("the relation has no key columns (replica identity nothing?)"));
        }
        let src = old.or(new).ok_or_else(|| missing("no old key sent"))?;
        for c in key_columns(&t.key, src) {
            match c {
                Some(Column::Text(_) | Column::Binary(_)) => {}
                Some(Column::UnchangedToast) => {
                    return Err(missing("key column is an unchanged TOAST value"));
                }
                Some(Column::Null) | None => return Err(missing("key column is NULL")),
            }
        }
        Ok(Tuple::from_columns(key_columns(&t.key, src).flatten()))
    }

    /// One update or delete matching the whole old row (REPLICA IDENTITY FULL).
    pub(super) async fn full_identity_row(
        &mut self,
        rel_id: u32,
        op: Op,
        set: Option<(&Tuple, &[bool])>,
        old: &Tuple,
    ) -> Result<(), ApplyError> {
        let matched = full_match(old);
        let mut params: Vec<Param> = Vec::new();
        let key = match set {
            Some((new, set)) => {
                params.extend(
                    new.values()
                        .zip(set)
                        .filter(|(_, s)| **s)
                        .filter_map(|(v, _)| Param::from_value(v)),
                );
                StmtKey::Update { set: set.into(), matched: matched.clone() }
            }
            None => StmtKey::Delete { matched: matched.clone() },
        };
        // NULLs are matched by `IS NULL`, without a parameter.
        params.extend(
            old.values().filter(|v| !matches!(v, ColumnValue::Null)).filter_map(Param::from_value),
        );
        let (stmt, table) = match &key {
            StmtKey::Update { set, matched } => {
                let (s, m) = (set.clone(), matched.clone());
                self.statement(rel_id, op, key, move |t| t.update_sql(&s, &m)).await?
            }
            _ => {
                let m = matched.clone();
                self.statement(rel_id, op, key, move |t| t.delete_sql(&m)).await?
            }
        };
        self.push_change(stmt, params, table, op, self.commit_lsn(), 1).await
    }
}

/// A row of text values (`None`: an unchanged TOAST value), for tests.
#[cfg(test)]
pub(super) fn text_row(values: &[Option<&str>]) -> Tuple {
    Tuple::new(
        values
            .iter()
            .map(|v| match v {
                Some(v) => ColumnValue::Text(bytes::Bytes::copy_from_slice(v.as_bytes())),
                None => ColumnValue::UnchangedToast,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_compared_as_a_unit_with_their_lengths() {
        let a = RowKey::of(&text_row(&[Some("1"), Some("ab")]));
        let b = RowKey::of(&text_row(&[Some("1a"), Some("b")]));
        assert_ne!(a, b, "the same bytes split differently are another key");
        assert_eq!(a, RowKey::of(&text_row(&[Some("1"), Some("ab")])));
    }

    #[test]
    fn key_columns_are_picked_in_one_walk() {
        let row = text_row(&[Some("a"), Some("b"), Some("c")]);
        let picked: Vec<_> =
            key_columns(&[0, 2], &row).map(|c| c.and_then(Column::as_str)).collect();
        assert_eq!(picked, [Some("a"), Some("c")]);
        let short = text_row(&[Some("a")]);
        assert_eq!(
            key_columns(&[0, 2], &short).map(|c| c.is_some()).collect::<Vec<_>>(),
            [true, false]
        );
    }
}
