//! Inserts: runs of inserts into one table go out as one `COPY` (binary when pgoutput sent
//! binary values, which are exactly the send/recv format `COPY (FORMAT binary)` reads), short
//! runs as one statement over arrays, single rows as `INSERT`.

use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use pgoutput_decoder::{Column, Lsn, Relation, Tuple};
use tokio_postgres::CopyInSink;

use crate::error::{ApplyError, Op};
use crate::target::CommitInfo;

use super::PostgresTarget;
use super::identity::{RowKey, TEXT_OID, key_columns};
use super::pipeline::{Purpose, StmtFuture};
use super::runs::{Run, RunKind, tuple_bytes};
use super::table::{self, StmtKey, TableInfo};
use super::value::{self, COPY_BINARY_HEADER, COPY_BINARY_TRAILER, Param, ValueFormat};

/// Size at which a COPY's buffered rows are sent.
const COPY_CHUNK: usize = 256 * 1024;

/// Bytes of buffered rows after which an insert run stops buffering and streams into a `COPY`
/// (a large transaction must not sit in memory; its later updates then end the run instead of
/// folding into it).
const COPY_STREAM_BYTES: usize = 4 << 20;

pub(super) struct CopyState {
    pub(super) sink: Pin<Box<CopyInSink<Bytes>>>,
    pub(super) buf: BytesMut,
    pub(super) rows: u64,
    pub(super) binary: bool,
}

/// The insert-run key of a row, when its table has a key and the row has every key value.
fn insert_key(t: &TableInfo, new: &Tuple) -> Option<RowKey> {
    if t.key.is_empty() || t.full_identity() {
        return None;
    }
    let values = key_columns(&t.key, new).map(|c| c.and_then(Column::bytes));
    if values.clone().any(|v| v.is_none()) {
        return None;
    }
    Some(RowKey::from_values(values.flatten()))
}

/// A buffered insert with a later update of the same row folded in: values the update sent
/// replace the inserted ones (unchanged TOAST values keep the inserted value).
pub(super) fn fold_into_insert(inserted: &Tuple, new: &Tuple) -> Tuple {
    Tuple::from_columns(
        inserted.iter().zip(new).map(|(i, n)| if n.is_unchanged_toast() { i } else { n }),
    )
}

fn encode_copy_row(c: &mut CopyState, row: &Tuple) {
    if c.binary {
        value::copy_binary_row(&mut c.buf, row);
    } else {
        value::copy_text_row(&mut c.buf, row);
    }
}

impl PostgresTarget {
    pub(super) async fn insert(
        &mut self,
        rel: Arc<Relation>,
        new: Tuple,
    ) -> Result<(), ApplyError> {
        self.table(&rel).await?;
        let rel_id = rel.rel_id;
        let name = Arc::clone(&self.catalog.tables[&rel_id].name);
        if new.len() != rel.columns.len() || new.iter().any(Column::is_unchanged_toast) {
            return Err(ApplyError::Schema {
                table: name.to_string(),
                detail: "insert row does not match the relation".into(),
            });
        }
        self.leave_others(rel_id).await?;
        let Some(fmt) = ValueFormat::of_row(&new) else {
            // Mixed text and binary values: no COPY, one statement.
            self.end_table_run(rel_id).await?;
            return self.insert_row(rel_id, self.commit_lsn(), &new, None).await;
        };
        let key = insert_key(&self.catalog.tables[&rel_id], &new);
        let fits = self.run_index(rel_id).is_some_and(|i| match &self.runs[i] {
            Run { rel: r, kind: RunKind::Insert { format, keys, .. }, .. } => {
                Arc::ptr_eq(r, &rel)
                    && (fmt.is_none() || format.is_none() || *format == fmt)
                    && key.as_ref().is_none_or(|k| !keys.contains_key(k))
            }
            _ => false,
        });
        let i = match self.run_index(rel_id) {
            Some(i) if fits => i,
            _ => {
                let kind = RunKind::Insert {
                    format: fmt,
                    rows: Vec::new(),
                    keys: Default::default(),
                    copy: None,
                };
                self.start_run(&rel, kind).await?
            }
        };
        let bytes = tuple_bytes(&new);
        let copy_min = self.cfg.copy_min_rows;
        let run = &mut self.runs[i];
        let RunKind::Insert { format, rows, keys, copy } = &mut run.kind else { unreachable!() };
        if format.is_none() {
            *format = fmt;
        }
        if let Some(c) = copy {
            encode_copy_row(c, &new);
            c.rows += 1;
            if c.buf.len() >= COPY_CHUNK {
                let chunk = c.buf.split().freeze();
                if let Err(source) = c.sink.send(chunk).await {
                    let err = ApplyError::Change {
                        table: name.to_string(),
                        op: Op::Insert,
                        commit_lsn: run.commit_lsn,
                        source,
                    };
                    return Err(err);
                }
            }
            return Ok(());
        }
        if let Some(k) = key {
            keys.insert(k, rows.len());
        }
        rows.push(new);
        let stream = run.bytes + bytes >= COPY_STREAM_BYTES && rows.len() >= copy_min;
        if stream {
            return self.stream_copy(i).await;
        }
        self.buffered_more(i, bytes).await
    }

    /// Starts a COPY for table `rel_id` (ending any other open COPY and waiting for the
    /// pipeline first).
    async fn open_copy(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        binary: bool,
    ) -> Result<CopyState, ApplyError> {
        let (stmt, table) = self
            .statement(rel_id, Op::Insert, StmtKey::Copy { binary }, |t| t.copy_sql(binary))
            .await?;
        self.quiesce().await?;
        self.ensure_txn().await?;
        let sink = self.session.client.copy_in::<_, Bytes>(&stmt).await.map_err(|source| {
            ApplyError::Change { table: table.to_string(), op: Op::Insert, commit_lsn, source }
        })?;
        self.stats.statements += 1;
        let mut c = CopyState {
            sink: Box::pin(sink),
            buf: BytesMut::with_capacity(COPY_CHUNK + 4096),
            rows: 0,
            binary,
        };
        if binary {
            c.buf.extend_from_slice(COPY_BINARY_HEADER);
        }
        Ok(c)
    }

    /// Turns the buffered insert run `i` into a streaming COPY (the run stays open).
    pub(super) async fn stream_copy(&mut self, i: usize) -> Result<(), ApplyError> {
        let (rel_id, commit_lsn) = (self.runs[i].rel_id, self.runs[i].commit_lsn);
        let RunKind::Insert { format, .. } = &self.runs[i].kind else { return Ok(()) };
        let binary = *format != Some(ValueFormat::Text);
        // Another run's COPY may end here, which shifts the indices.
        let mut c = self.open_copy(rel_id, commit_lsn, binary).await?;
        let i = self.run_index(rel_id).expect("opening a COPY keeps this table's run");
        let run = &mut self.runs[i];
        self.buffered -= run.bytes;
        run.bytes = 0;
        let RunKind::Insert { rows, keys, copy, format } = &mut run.kind else { unreachable!() };
        // Only rows of the COPY's format may join it from now on.
        *format = Some(if binary { ValueFormat::Binary } else { ValueFormat::Text });
        for row in rows.drain(..) {
            encode_copy_row(&mut c, &row);
            c.rows += 1;
        }
        *keys = Default::default();
        *copy = Some(c);
        Ok(())
    }

    /// Ends the run holding an open COPY, if any.
    pub(super) async fn close_copy(&mut self) -> Result<(), ApplyError> {
        let open =
            self.runs.iter().position(|r| matches!(r.kind, RunKind::Insert { copy: Some(_), .. }));
        if let Some(i) = open {
            let run = self.take_run(i);
            let RunKind::Insert { copy: Some(c), .. } = run.kind else { unreachable!() };
            self.finish_copy(&run.rel, run.commit_lsn, c).await?;
        }
        Ok(())
    }

    /// Sends the rest of a COPY and queues its completion.
    pub(super) async fn finish_copy(
        &mut self,
        rel: &Relation,
        commit_lsn: Lsn,
        mut c: CopyState,
    ) -> Result<(), ApplyError> {
        if c.binary {
            c.buf.extend_from_slice(COPY_BINARY_TRAILER);
        }
        let table: Arc<str> = table::qualified_name(rel).into();
        let chunk = c.buf.split().freeze();
        if let Err(source) = c.sink.send(chunk).await {
            return Err(ApplyError::Change {
                table: table.to_string(),
                op: Op::Insert,
                commit_lsn,
                source,
            });
        }
        self.stats.copied_rows += c.rows;
        let expected = c.rows;
        let mut sink = c.sink;
        let fut: StmtFuture = Box::pin(async move { sink.as_mut().finish().await });
        let purpose = Purpose::Change { table, op: Op::Insert, commit_lsn, expected };
        self.session.pipe.push(fut, purpose, 64).await
    }

    /// A single-row insert; with `carry`, as a whole target transaction (see
    /// [`Self::push_row`]).
    pub(super) async fn insert_row(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        row: &Tuple,
        carry: Option<&CommitInfo>,
    ) -> Result<(), ApplyError> {
        let params: Vec<Param> =
            row.values().map(|v| Param::from_value(v).unwrap_or(Param::Null)).collect();
        let (key, sql) = (StmtKey::Insert, TableInfo::insert_sql);
        self.push_row(rel_id, Op::Insert, key, sql, params, 1, commit_lsn, carry).await
    }

    /// A short run of inserts as one statement over arrays (a COPY costs a round trip).
    async fn insert_rows(
        &mut self,
        rel_id: u32,
        commit_lsn: Lsn,
        rows: &[Tuple],
        format: Option<ValueFormat>,
    ) -> Result<(), ApplyError> {
        let binary = format != Some(ValueFormat::Text);
        let (stmt, table) = self
            .statement(rel_id, Op::Insert, StmtKey::BatchInsert { binary }, |t| {
                t.batch_insert_sql(binary)
            })
            .await?;
        let t = &self.catalog.tables[&rel_id];
        let picks: Vec<(usize, u32)> = t
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| (i, if binary { c.type_oid } else { TEXT_OID }))
            .collect();
        let params: Vec<Param> =
            value::column_arrays(rows, &picks).into_iter().map(Param::Binary).collect();
        let expected = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        self.stats.batched_rows += expected;
        self.push_change(stmt, params, table, Op::Insert, commit_lsn, expected).await
    }

    /// Sends a buffered run of inserts: a `COPY` when long enough, else one statement over
    /// arrays, or single rows.
    pub(super) async fn send_inserts(
        &mut self,
        rel: &Relation,
        commit_lsn: Lsn,
        rows: Vec<Tuple>,
        format: Option<ValueFormat>,
    ) -> Result<(), ApplyError> {
        let rel_id = rel.rel_id;
        let no_arrays = !self.catalog.tables[&rel_id].cols.iter().any(|c| c.is_array);
        if rows.len() >= self.cfg.copy_min_rows {
            let binary = format != Some(ValueFormat::Text);
            let mut c = self.open_copy(rel_id, commit_lsn, binary).await?;
            for row in &rows {
                encode_copy_row(&mut c, row);
                c.rows += 1;
                if c.buf.len() >= COPY_CHUNK {
                    let chunk = c.buf.split().freeze();
                    if let Err(source) = c.sink.send(chunk).await {
                        return Err(ApplyError::Change {
                            table: table::qualified_name(rel),
                            op: Op::Insert,
                            commit_lsn,
                            source,
                        });
                    }
                }
            }
            self.finish_copy(rel, commit_lsn, c).await
        } else if rows.len() >= 2 && no_arrays {
            self.insert_rows(rel_id, commit_lsn, &rows, format).await
        } else {
            for row in &rows {
                self.insert_row(rel_id, commit_lsn, row, None).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::identity::text_row;
    use super::*;

    #[test]
    fn an_update_folded_into_an_insert_keeps_the_values_it_did_not_send() {
        let inserted = text_row(&[Some("1"), Some("a"), Some("b")]);
        let update = text_row(&[Some("1"), None, Some("c")]);
        assert_eq!(
            fold_into_insert(&inserted, &update),
            text_row(&[Some("1"), Some("a"), Some("c")])
        );
    }
}
