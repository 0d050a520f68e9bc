//! The initial copy into shards: each table read once from the source (`COPY ... TO STDOUT` in
//! binary format, in the caller's snapshot) and its rows routed as they stream: a sharded
//! table's rows each to the shard its key hashes to, a reference table's to every shard. The
//! shards' `COPY ... FROM STDIN` run at the same time, each in its own transaction.

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt, pin_mut};
use pgoutput_decoder::Column;
use tokio_postgres::{Client, CopyInSink};

use super::ShardError;
use super::hash::{partition_of, row_hash};
use super::layout::KeyColumn;

/// Bytes gathered per shard before they are sent.
const SEND_BUFFER: usize = 256 * 1024;

/// The binary COPY signature.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// One table to copy into the shards.
#[derive(Debug, Clone)]
pub struct RoutedTable {
    /// `"schema"."table"`.
    pub quoted: String,
    /// The quoted, comma-separated columns COPY carries (generated columns left out).
    pub columns: String,
    /// Its shard key, by position in `columns`; `None`: a reference table.
    pub key: Option<Vec<KeyColumn>>,
}

/// Errors of the routed copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A statement on the source or a shard failed.
    #[error("copying {table}: {context}")]
    Database {
        /// The table.
        table: String,
        /// What was being done.
        context: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The source's COPY data did not parse.
    #[error("copying {table}: malformed binary COPY data from the source")]
    Malformed {
        /// The table.
        table: String,
    },
    /// A key value could not be hashed.
    #[error("copying {table}")]
    Key {
        /// The table.
        table: String,
        /// Why.
        #[source]
        source: ShardError,
    },
}

/// Copies `table` from `source` (whose open transaction holds the snapshot to copy) into every
/// shard, in shard order; returns the rows each shard received. Each shard's part commits on
/// its own once the source's rows are all sent.
///
/// # Errors
/// A failing statement on either side, or data that does not parse.
pub async fn copy_routed(
    source: &Client,
    shards: &[Client],
    table: &RoutedTable,
) -> Result<Vec<u64>, CopyError> {
    let db = |context: &str| {
        let table = table.quoted.clone();
        let context = context.to_owned();
        move |source| CopyError::Database { table, context, source }
    };
    let mut sinks: Vec<Pin<Box<CopyInSink<Bytes>>>> = Vec::with_capacity(shards.len());
    for shard in shards {
        shard.batch_execute("BEGIN").await.map_err(db("starting a shard's transaction"))?;
        let sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", table.quoted, table.columns);
        sinks.push(Box::pin(shard.copy_in(&sql).await.map_err(db("starting a shard's COPY"))?));
    }
    let out = source
        .copy_out(&format!("COPY {} ({}) TO STDOUT (FORMAT binary)", table.quoted, table.columns))
        .await
        .map_err(db("reading the source"))?;
    pin_mut!(out);
    let mut router = Router::new(table, shards.len());
    while let Some(chunk) = out.next().await {
        router.feed(&chunk.map_err(db("reading the source"))?)?;
        for (sink, buf) in sinks.iter_mut().zip(&mut router.outgoing) {
            if buf.len() >= SEND_BUFFER {
                sink.send(buf.split().freeze()).await.map_err(db("writing a shard"))?;
            }
        }
    }
    if !router.ended {
        return Err(CopyError::Malformed { table: table.quoted.clone() });
    }
    let mut rows = Vec::with_capacity(shards.len());
    for ((sink, buf), shard) in sinks.iter_mut().zip(&mut router.outgoing).zip(shards) {
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        sink.send(buf.split().freeze()).await.map_err(db("writing a shard"))?;
        rows.push(sink.as_mut().finish().await.map_err(db("ending a shard's COPY"))?);
        shard.batch_execute("COMMIT").await.map_err(db("committing a shard"))?;
    }
    Ok(rows)
}

/// Splits the source's binary COPY stream into rows and appends each to its shards' buffers.
struct Router<'a> {
    table: &'a RoutedTable,
    /// Bytes received and not yet routed (a partial row).
    pending: BytesMut,
    /// The header was read (and copied into every shard's buffer).
    started: bool,
    /// The trailer was read.
    ended: bool,
    outgoing: Vec<BytesMut>,
}

impl<'a> Router<'a> {
    fn new(table: &'a RoutedTable, shards: usize) -> Self {
        Router {
            table,
            pending: BytesMut::new(),
            started: false,
            ended: false,
            outgoing: vec![BytesMut::new(); shards],
        }
    }

    fn malformed(&self) -> CopyError {
        CopyError::Malformed { table: self.table.quoted.clone() }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), CopyError> {
        self.pending.extend_from_slice(chunk);
        if !self.started {
            // Signature, flags, header extension length and extension.
            let Some(ext) = self.pending.get(15..19) else { return Ok(()) };
            let ext = usize::try_from(u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]))
                .map_err(|_| self.malformed())?;
            if self.pending.len() < 19 + ext {
                return Ok(());
            }
            if !self.pending.starts_with(SIGNATURE) {
                return Err(self.malformed());
            }
            let header = self.pending.split_to(19 + ext);
            for out in &mut self.outgoing {
                out.extend_from_slice(&header);
            }
            self.started = true;
        }
        while let Some(len) = self.row_len()? {
            let row = self.pending.split_to(len);
            if len == 2 {
                // The trailer (a field count of -1): the shards get theirs at the end.
                self.ended = true;
                continue;
            }
            match &self.table.key {
                None => {
                    for out in &mut self.outgoing {
                        out.extend_from_slice(&row);
                    }
                }
                Some(key) => {
                    let shard = self.shard_of(&row, key)?;
                    self.outgoing[shard].extend_from_slice(&row);
                }
            }
        }
        Ok(())
    }

    /// The length of the complete row (or trailer) at the front of `pending`, if it is all
    /// there.
    fn row_len(&self) -> Result<Option<usize>, CopyError> {
        let mut b = &self.pending[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fields = b.get_i16();
        if fields == -1 {
            return Ok(Some(2));
        }
        let mut len = 2;
        for _ in 0..fields {
            if b.len() < 4 {
                return Ok(None);
            }
            let n = b.get_i32();
            len += 4;
            if n >= 0 {
                let n = usize::try_from(n).map_err(|_| self.malformed())?;
                if b.len() < n {
                    return Ok(None);
                }
                b.advance(n);
                len += n;
            }
        }
        Ok(Some(len))
    }

    /// The shard a complete row (field count, then length-prefixed fields) belongs to.
    fn shard_of(&self, row: &[u8], key: &[KeyColumn]) -> Result<usize, CopyError> {
        let mut fields: Vec<Column<'_>> = Vec::new();
        let mut b = &row[2..];
        while b.len() >= 4 {
            let n = b.get_i32();
            if n < 0 {
                fields.push(Column::Null);
            } else {
                let n = usize::try_from(n).map_err(|_| self.malformed())?;
                fields.push(Column::Binary(&b[..n]));
                b.advance(n);
            }
        }
        let hashes = key
            .iter()
            .map(|k| k.ty.hash(fields.get(k.index).copied().unwrap_or(Column::Null)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CopyError::Key { table: self.table.quoted.clone(), source })?;
        Ok(partition_of(row_hash(hashes), self.outgoing.len()))
    }
}
