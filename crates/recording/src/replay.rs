//! Applying a recording with the mirror's applier, and timing its decoding alone.

use std::path::Path;
use std::time::{Duration, Instant};

use applier::{Applier, ApplierConfig, PostgresTarget, PostgresTargetConfig};
use pgconn::ConnConfig;
use serde::Serialize;

use crate::error::Error;
use crate::format::RecordingReader;

/// Settings of [`replay`].
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The target.
    pub target: ConnConfig,
    /// The mirror name (the progress row): replaying twice under one name applies once.
    pub name: String,
    /// Create the recording's tables on the target when they are missing.
    pub create_tables: bool,
    /// Settings of the apply loop.
    pub applier: ApplierConfig,
}

/// What [`replay`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Messages read.
    pub messages: u64,
    /// Source transactions applied (not skipped).
    pub applied_txns: u64,
    /// Source transactions skipped because the target already had them.
    pub skipped_txns: u64,
    /// Row changes handed to the target.
    pub changes: u64,
    /// Wall-clock seconds of the whole replay.
    pub seconds: f64,
    /// Of which decoding the payloads.
    pub decode_seconds: f64,
    /// The last source LSN the target holds.
    pub last_applied: Option<String>,
}

/// Applies the recording at `path` into `opts.target` with the mirror's applier. Refuses a
/// target that is the database the recording was made from.
///
/// # Errors
/// A bad recording, a target that rejects a change, connection errors.
pub async fn replay(path: &Path, opts: &ReplayOptions) -> Result<ReplaySummary, Error> {
    let mut reader = RecordingReader::open(path)
        .map_err(|source| Error::Open { path: path.to_owned(), source })?;
    let client = pgconn::connect_sql(&opts.target)
        .await
        .map_err(Error::connection("connecting to the target"))?;
    if let Some(source) = &reader.header().source {
        let target =
            pgconn::identify(&client).await.map_err(Error::query("identifying the target"))?;
        let same_system = source.system_id.is_some() && source.system_id == target.system_id;
        if same_system && source.database == target.database {
            return Err(Error::SameDatabase {
                database: source.database.clone(),
                system_id: source.system_id.clone().unwrap_or_else(|| "?".into()),
            });
        }
    }
    if opts.create_tables {
        for t in &reader.header().tables {
            let quoted =
                format!("{}.{}", pgconn::quote_ident(&t.schema), pgconn::quote_ident(&t.name));
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted])
                .await
                .map_err(Error::query(format!("looking up {quoted}")))?
                .get(0);
            if !exists {
                client
                    .batch_execute(&t.ddl)
                    .await
                    .map_err(Error::query(format!("creating {quoted}")))?;
            }
        }
    }
    let target = PostgresTarget::new(client, PostgresTargetConfig::new(opts.name.clone())).await?;
    let mut applier = Applier::new(target, opts.applier.clone()).await?;
    let mut decoder = reader.decoder();
    let began = Instant::now();
    let mut decode = Duration::ZERO;
    let mut messages = 0u64;
    while let Some(m) = reader.next_message()? {
        messages += 1;
        let t = Instant::now();
        let message = decoder.decode(m.payload).map_err(|source| Error::Decode {
            index: messages,
            wal_start: m.wal_start,
            source,
        })?;
        decode += t.elapsed();
        applier.handle(message).await?;
    }
    applier.flush().await?;
    let stats = applier.stats().clone();
    Ok(ReplaySummary {
        messages,
        applied_txns: stats.applied_txns,
        skipped_txns: stats.skipped_txns,
        changes: stats.changes,
        seconds: began.elapsed().as_secs_f64(),
        decode_seconds: decode.as_secs_f64(),
        last_applied: applier.last_applied().map(|l| l.to_string()),
    })
}

/// Decodes every message of a recording and returns (messages, seconds spent decoding).
///
/// # Errors
/// A bad recording.
pub fn decode_all(path: &Path) -> Result<(u64, f64), Error> {
    let mut reader = RecordingReader::open(path)
        .map_err(|source| Error::Open { path: path.to_owned(), source })?;
    let mut decoder = reader.decoder();
    // One buffer with every payload, sliced, as the stream hands them out (slices of its
    // read buffer): separately allocated payloads would time an allocation on each first
    // clone instead of decoding.
    let mut all = bytes::BytesMut::new();
    let (mut ends, mut starts) = (Vec::new(), Vec::new());
    while let Some(m) = reader.next_message()? {
        all.extend_from_slice(&m.payload);
        ends.push(all.len());
        starts.push(m.wal_start);
    }
    let all = all.freeze();
    let payloads: Vec<bytes::Bytes> = std::iter::once(0)
        .chain(ends.iter().copied())
        .zip(&ends)
        .map(|(start, &end)| all.slice(start..end))
        .collect();
    let t = Instant::now();
    for (i, p) in payloads.iter().enumerate() {
        let message = decoder.decode(p.clone()).map_err(|source| Error::Decode {
            index: u64::try_from(i + 1).unwrap_or(u64::MAX),
            wal_start: starts[i],
            source,
        })?;
        std::hint::black_box(message);
    }
    Ok((u64::try_from(payloads.len()).unwrap_or(u64::MAX), t.elapsed().as_secs_f64()))
}
