//! [`NatsTarget`]: every change of a publication as one message in a NATS JetStream stream,
//! exactly once.
//!
//! # Messages
//! Each row change is one message on `<prefix>.<database>.<schema>.<table>` (names escaped
//! as [`subject::token`] describes: dots, spaces, `*`, `>` and non-ASCII never change the
//! routing). A `TRUNCATE` of several tables is one message per table. Transactional logical
//! decoding messages go to `<prefix>.<database>._message`, and with transaction markers on,
//! a `begin` and a `commit` message per transaction to `<prefix>.<database>._transaction`:
//! both one token shorter than a table subject, so never mistaken for one.
//!
//! The payload is the object `pgmirror tail` prints ([`PayloadFormat::Json`], see
//! [`JsonTarget`]) or Debezium's change-event envelope ([`PayloadFormat::Debezium`]).
//! Unchanged TOAST values are marked (`{"unchanged_toast":true}`, or Debezium's
//! `__debezium_unavailable_value`), never `null`. Headers on every message:
//! - `Nats-Msg-Id`: `<name>:<commit LSN>:<index>`, the change's index in its transaction
//!   (markers included), so JetStream drops a message published again within the stream's
//!   duplicate window;
//! - `Pgmirror-Commit-Lsn`, `Pgmirror-Xid`, `Pgmirror-Commit-Time`.
//!
//! # Exactly once
//! Messages are published with many acknowledgements in flight (at most
//! [`NatsTargetConfig::max_in_flight`]), in commit order on one connection, so the stream holds
//! them in commit order. [`flush`](Target::flush) waits for every acknowledgement, then stores
//! the end LSN of the last transaction in the key-value bucket
//! [`NatsTargetConfig::bucket`] (key: the mirror's name), and only then returns it for the
//! source's slot. [`load_progress`](Target::load_progress) reads it back, so a restart skips
//! every transaction stored and acknowledged before the last flush, however long ago; what it
//! publishes again (acknowledged after that flush) falls inside the duplicate window and is
//! dropped by its `Nats-Msg-Id`.
//!
//! A stream at its size limit (with discard policy `new`) refuses messages:
//! [`NatsError::StreamFull`], and nothing after the last flush is confirmed. A change the
//! stream refuses while it stores changes published after it (a smaller one that still fits, or
//! a leader elected between two messages in flight) would land after them if published again:
//! that stops the mirror as [`NatsError::OutOfOrder`], which says so, instead of retrying.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, kv, stream};
use async_nats::{HeaderMap, HeaderName, Subject};
use bytes::Bytes;
use pgoutput_decoder::{DecodingMessage, Lsn, PgTimestamp, Relation, Tuple};

use crate::error::ApplyError;
use crate::json::JsonTarget;
use crate::target::{Change, CommitInfo, Target, TxnInfo, TypeMap};

pub mod acks;
mod debezium;
pub mod subject;

use acks::{AckError, Publisher};

/// The payload of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// The object `pgmirror tail` prints.
    #[default]
    Json,
    /// Debezium's change-event envelope (`before`, `after`, `source`, `op`, `ts_ms`).
    Debezium,
}

/// Where and how a [`NatsTarget`] publishes.
#[derive(Debug, Clone)]
pub struct NatsTargetConfig {
    /// The mirror's name: the key of its progress in the bucket, and the start of every
    /// `Nats-Msg-Id`.
    pub name: String,
    /// The stream, created if missing.
    pub stream: String,
    /// The first tokens of every subject.
    pub prefix: String,
    /// The source database, the token after the prefix.
    pub database: String,
    /// The payload format.
    pub format: PayloadFormat,
    /// Replicas of a stream and bucket this target creates (1 to 5).
    pub replicas: usize,
    /// Publish `begin`/`commit` messages around each transaction's changes.
    pub transaction_markers: bool,
    /// Messages published whose acknowledgement has not arrived yet, at most.
    pub max_in_flight: usize,
    /// The key-value bucket holding each mirror's last acknowledged end LSN.
    pub bucket: String,
    /// How long to wait for one acknowledgement.
    pub ack_timeout: Duration,
}

impl NatsTargetConfig {
    /// Defaults: stream `PGMIRROR`, prefix `pgmirror`, JSON payloads, one replica, no markers,
    /// 4096 acknowledgements in flight, bucket `pgmirror`.
    pub fn new(name: impl Into<String>, database: impl Into<String>) -> Self {
        NatsTargetConfig {
            name: name.into(),
            stream: "PGMIRROR".into(),
            prefix: "pgmirror".into(),
            database: database.into(),
            format: PayloadFormat::Json,
            replicas: 1,
            transaction_markers: false,
            max_in_flight: 4096,
            bucket: "pgmirror".into(),
            ack_timeout: Duration::from_secs(10),
        }
    }

    /// The subject of changes of `schema`.`table`.
    pub fn table_subject(&self, schema: &str, table: &str) -> String {
        subject::table_subject(&self.prefix, &self.database, schema, table)
    }
}

/// What went wrong with NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// An existing stream does not take the target's subjects.
    #[error(
        "NATS stream {stream:?} takes subjects {subjects:?}, which do not include \"{prefix}.>\"; \
         add \"{prefix}.>\" to its subjects, or publish into another stream or under another \
         subject prefix"
    )]
    StreamSubjects {
        /// The stream.
        stream: String,
        /// Its subjects.
        subjects: Vec<String>,
        /// The target's prefix.
        prefix: String,
    },
    /// The stream refused a message because it reached a limit.
    #[error(
        "NATS stream {stream:?} refused a message ({detail}): it is at its size limit, so \
         nothing after {stored} was confirmed to the source; raise the stream's max_bytes or \
         max_msgs (`nats stream edit {stream}`) or remove old messages, then start again"
    )]
    StreamFull {
        /// The stream.
        stream: String,
        /// The server's words.
        detail: String,
        /// The last end LSN stored.
        stored: Lsn,
    },
    /// The stream failed to store a change but stored changes published after it.
    #[error(
        "{cause}. Stream {stream:?} also stored {stored_after} changes published after that \
         one, so it no longer holds them in commit order, and pgmirror stopped (nothing after \
         {stored} was confirmed to the source). Started again once the cause is fixed, it \
         publishes the missing change after them (dropping the later ones as duplicates); a \
         consumer can restore the order by each message's Pgmirror-Commit-Lsn header and the \
         index that ends its Nats-Msg-Id"
    )]
    OutOfOrder {
        /// The stream.
        stream: String,
        /// Why the change was not stored.
        cause: String,
        /// Changes published after it that the stream stored.
        stored_after: usize,
        /// The last end LSN stored.
        stored: Lsn,
    },
    /// A setting cannot work.
    #[error("{0}")]
    Config(String),
    /// A request to the server failed.
    #[error("NATS: {context}")]
    Request {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

impl NatsError {
    fn request(context: impl Into<String>, e: impl Into<async_nats::Error>) -> Self {
        NatsError::Request { context: context.into(), source: e.into() }
    }

    /// Whether trying again later may succeed (a server down or electing a leader, a lost
    /// connection, a timeout), as opposed to a setting or a full stream.
    pub fn is_transient(&self) -> bool {
        matches!(self, NatsError::Request { .. })
    }
}

/// Publishes changes into a JetStream stream (see the module docs).
#[derive(Debug)]
pub struct NatsTarget {
    js: jetstream::Context,
    kv: kv::Store,
    cfg: NatsTargetConfig,
    key: String,
    json: JsonTarget<io::Sink>,
    created_stream: bool,
    publisher: Publisher,
    txn: Option<TxnInfo>,
    index: u64,
    /// The headers every change of the current transaction carries.
    txn_headers: HeaderMap,
    /// `<name>:<commit LSN>:` of the current transaction, the start of its message ids.
    id_prefix: String,
    /// Reused for each message id.
    id: String,
    /// Each relation's subject (by relation id), with the relation it was made for.
    subjects: HashMap<u32, (Arc<Relation>, Subject)>,
    /// End LSN of the last transaction accepted.
    committed: Option<Lsn>,
    /// End LSN stored in the bucket.
    stored: Option<Lsn>,
    /// Stream sequence of the last message acknowledged.
    last_sequence: u64,
    /// The last change of this mirror the stream stored, as (commit LSN, index), when it was
    /// stored too long ago for the duplicate window to drop it again: what is not published
    /// again after a restart.
    resume: Option<(Lsn, u64)>,
}

impl NatsTarget {
    /// Creates the stream (subjects `<prefix>.>`, file storage, discard policy `new`) and the
    /// bucket if they are missing, and checks an existing stream takes the prefix.
    ///
    /// # Errors
    /// An existing stream that does not take `<prefix>.>`, an invalid prefix or stream name,
    /// and server errors.
    pub async fn connect(
        client: async_nats::Client,
        cfg: NatsTargetConfig,
    ) -> Result<Self, NatsError> {
        subject::check_prefix(&cfg.prefix).map_err(NatsError::Config)?;
        let publisher = Publisher::new(client.clone(), cfg.ack_timeout)
            .await
            .map_err(|e| NatsError::request("subscribing to acknowledgements", e))?;
        let mut js = jetstream::new(client);
        js.set_timeout(cfg.ack_timeout);
        let created_stream = ensure_stream(&js, &cfg).await?;
        let kv = ensure_bucket(&js, &cfg.bucket, cfg.replicas).await?;
        let mut target = NatsTarget {
            js,
            kv,
            key: subject::kv_key(&cfg.name),
            cfg,
            json: JsonTarget::new(io::sink()),
            created_stream,
            publisher,
            txn: None,
            index: 0,
            txn_headers: HeaderMap::new(),
            id_prefix: String::new(),
            id: String::new(),
            subjects: HashMap::new(),
            committed: None,
            stored: None,
            last_sequence: 0,
            resume: None,
        };
        target.set_txn(None);
        Ok(target)
    }

    /// Looks up non-builtin column types in `catalog` (a connection to the source database),
    /// as [`JsonTarget::with_catalog`] does.
    #[must_use]
    pub fn with_catalog(mut self, catalog: tokio_postgres::Client) -> Self {
        self.json = self.json.with_catalog(catalog);
        self
    }

    /// Whether [`connect`](Self::connect) created the stream.
    pub fn created_stream(&self) -> bool {
        self.created_stream
    }

    /// The stream sequence of the last message acknowledged.
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Publishes one row of the initial copy of `rel` as a read (`op: r` in Debezium's form,
    /// an `insert` in `tail`'s), the `n`th (counted from 0) of that table under the snapshot of
    /// `point`, the slot's consistent point.
    ///
    /// # Errors
    /// Rendering and publishing errors.
    pub async fn publish_snapshot_row(
        &mut self,
        rel: &Arc<Relation>,
        row: Tuple,
        point: Lsn,
        n: u64,
    ) -> Result<(), ApplyError> {
        let subject = self.cfg.table_subject(&rel.namespace, &rel.name);
        let id = format!("{}:{point}:r:{}:{n}", self.cfg.name, rel.rel_id);
        let change = Change::Insert { rel: rel.clone(), new: row };
        let src = debezium::Source {
            name: &self.cfg.prefix,
            db: &self.cfg.database,
            xid: 0,
            lsn: point,
            commit_time: PgTimestamp::now(),
            snapshot: true,
        };
        let commit_time = src.commit_time;
        let payload = render(&mut self.json, &change, self.cfg.format, &src).await?;
        let mut headers = HeaderMap::new();
        headers.insert("Pgmirror-Commit-Lsn", point.to_string());
        headers.insert("Pgmirror-Commit-Time", commit_time.to_string());
        headers.insert("Pgmirror-Snapshot", "true");
        self.publish(subject.into(), &id, payload, headers).await
    }

    /// After the initial copy: waits for every acknowledgement and stores `point`, the slot's
    /// consistent point, as the progress to stream from.
    ///
    /// # Errors
    /// Publishing and bucket errors.
    pub async fn finish_snapshot(&mut self, point: Lsn) -> Result<(), ApplyError> {
        self.committed = Some(point);
        self.flush().await.map(|_| ())
    }

    async fn publish(
        &mut self,
        subject: Subject,
        id: &str,
        payload: Bytes,
        mut headers: HeaderMap,
    ) -> Result<(), ApplyError> {
        headers.insert(NATS_MESSAGE_ID, id);
        let sent = self.publisher.publish(subject, headers, payload).await;
        sent.map_err(|e| self.publish_error(e))?;
        while self.publisher.in_flight() >= self.cfg.max_in_flight.max(1) {
            self.ack_oldest().await?;
        }
        Ok(())
    }

    async fn ack_oldest(&mut self) -> Result<(), ApplyError> {
        let acked = self.publisher.ack_oldest().await;
        if let Some(seq) = acked.map_err(|e| self.publish_error(e))? {
            self.last_sequence = seq;
        }
        Ok(())
    }

    fn publish_error(&self, e: AckError) -> ApplyError {
        let stream = &self.cfg.stream;
        let stored = self.stored.unwrap_or(Lsn::ZERO);
        match e {
            AckError::OutOfOrder { cause, stored_after } => {
                let cause = self.publish_error(*cause);
                let mut text = cause.to_string();
                let mut source = std::error::Error::source(&cause);
                while let Some(s) = source {
                    let _ = write!(text, ": {s}");
                    source = s.source();
                }
                NatsError::OutOfOrder { stream: stream.clone(), cause: text, stored_after, stored }
                    .into()
            }
            AckError::Refused { err_code, description }
                if err_code == jetstream::ErrorCode::STREAM_STORE_FAILED.0 =>
            {
                NatsError::StreamFull { stream: stream.clone(), detail: description, stored }.into()
            }
            // The same change is as large next time: not worth retrying.
            AckError::Refused { err_code, description }
                if err_code == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM.0 =>
            {
                NatsError::Config(format!(
                    "NATS stream {stream:?} refused a change larger than its max_msg_size \
                     ({description}); raise it (`nats stream edit {stream} --max-msg-size`), \
                     then start again: nothing after {stored} was confirmed to the source"
                ))
                .into()
            }
            AckError::Publish(e)
                if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded =>
            {
                NatsError::Config(format!(
                    "a change is larger than the NATS server's max_payload ({e}); raise \
                     max_payload in the server's configuration (up to 64MB)"
                ))
                .into()
            }
            e => NatsError::request(format!("publishing to stream {stream:?}"), e).into(),
        }
    }

    /// Starts (`Some`) or ends (`None`) a transaction: what its messages' headers and ids
    /// share is made once here, not for each message.
    fn set_txn(&mut self, txn: Option<TxnInfo>) {
        let mut h = HeaderMap::new();
        if let Some(t) = &txn {
            h.insert(HeaderName::from_static("Pgmirror-Commit-Lsn"), t.commit_lsn.to_string());
            h.insert(HeaderName::from_static("Pgmirror-Xid"), t.xid.to_string());
            h.insert(HeaderName::from_static("Pgmirror-Commit-Time"), t.commit_time.to_string());
        }
        self.txn_headers = h;
        let lsn = txn.as_ref().map_or(Lsn::ZERO, |t| t.commit_lsn);
        self.id_prefix.clear();
        let _ = write!(self.id_prefix, "{}:{lsn}:", self.cfg.name);
        self.txn = txn;
    }

    /// Puts the next message id of the current transaction in `self.id`.
    fn next_id(&mut self) {
        self.id.clear();
        self.id.push_str(&self.id_prefix);
        let _ = write!(self.id, "{}", self.index);
        self.index += 1;
    }

    /// The subject of changes of `rel`, made once per relation.
    fn subject_of(&mut self, rel: &Arc<Relation>) -> Subject {
        if let Some((known, subject)) = self.subjects.get(&rel.rel_id)
            && (Arc::ptr_eq(known, rel)
                || (known.namespace == rel.namespace && known.name == rel.name))
        {
            return subject.clone();
        }
        let subject = Subject::from(self.cfg.table_subject(&rel.namespace, &rel.name));
        self.subjects.insert(rel.rel_id, (rel.clone(), subject.clone()));
        subject
    }

    /// Whether the next message of the current transaction is stored already (see
    /// [`resume`](Self::resume)); if so, counts it as published.
    fn stored_already(&mut self) -> bool {
        let (Some((lsn, index)), Some(txn)) = (self.resume, &self.txn) else { return false };
        let stored = txn.commit_lsn < lsn || (txn.commit_lsn == lsn && self.index <= index);
        if stored {
            self.index += 1;
        }
        stored
    }

    async fn publish_change(
        &mut self,
        subject: Subject,
        change: &Change,
    ) -> Result<(), ApplyError> {
        if self.stored_already() {
            return Ok(());
        }
        let src = source_of(&self.cfg, self.txn.as_ref());
        let payload = render(&mut self.json, change, self.cfg.format, &src).await?;
        self.next_id();
        let id = std::mem::take(&mut self.id);
        let r = self.publish(subject, &id, payload, self.txn_headers.clone()).await;
        self.id = id;
        r
    }

    async fn marker(&mut self, body: String) -> Result<(), ApplyError> {
        if self.stored_already() {
            return Ok(());
        }
        let subject =
            subject::database_subject(&self.cfg.prefix, &self.cfg.database, "_transaction");
        self.next_id();
        let id = std::mem::take(&mut self.id);
        let headers = self.txn_headers.clone();
        let r = self.publish(subject.into(), &id, Bytes::from(body), headers).await;
        self.id = id;
        r
    }
}

impl NatsTarget {
    /// The stream's last message, when it is a change of this mirror stored longer ago than
    /// half the duplicate window: JetStream would no longer drop it as a duplicate, so a
    /// restart must not publish it (or anything before it) again. Inside the window the
    /// duplicate check is exact and the bucket's progress is enough. `None` also when the last
    /// message is another publisher's.
    async fn stream_tail(&self) -> Result<Option<(Lsn, u64)>, NatsError> {
        let mut stream = self
            .js
            .get_stream(&self.cfg.stream)
            .await
            .map_err(|e| NatsError::request("looking up the stream", e))?;
        let info = stream.info().await.map_err(|e| NatsError::request("reading the stream", e))?;
        let (last, window) = (info.state.last_sequence, info.config.duplicate_window);
        if last == 0 {
            return Ok(None);
        }
        let Ok(msg) = stream.get_raw_message(last).await else { return Ok(None) };
        let header = |k: &str| msg.headers.get(k).map(|v| v.as_str().to_owned());
        let Some(id) = header("Nats-Msg-Id") else { return Ok(None) };
        let mine = format!("{}:", self.cfg.name);
        let Some(rest) = id.strip_prefix(&mine) else { return Ok(None) };
        // `<commit LSN>:<index>`; copied rows and non-transactional messages say nothing here.
        let Some((lsn, index)) = rest.split_once(':') else { return Ok(None) };
        let (Ok(lsn), Ok(index)) = (lsn.parse::<Lsn>(), index.parse::<u64>()) else {
            return Ok(None);
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        // 2 minutes when the stream does not say.
        let window = if window.is_zero() { Duration::from_secs(120) } else { window };
        let half = i64::try_from(window.as_secs() / 2).unwrap_or(i64::MAX);
        let old = now.saturating_sub(msg.time.unix_timestamp()) >= half;
        Ok(old.then_some((lsn, index)))
    }
}

/// Where the changes of `txn` come from, for Debezium's `source`.
fn source_of<'a>(cfg: &'a NatsTargetConfig, txn: Option<&TxnInfo>) -> debezium::Source<'a> {
    let (xid, lsn, commit_time) =
        txn.map_or((0, Lsn::ZERO, PgTimestamp(0)), |t| (t.xid, t.commit_lsn, t.commit_time));
    debezium::Source {
        name: &cfg.prefix,
        db: &cfg.database,
        xid,
        lsn,
        commit_time,
        snapshot: false,
    }
}

/// The payload of `change` in `format`.
async fn render(
    json: &mut JsonTarget<io::Sink>,
    change: &Change,
    format: PayloadFormat,
    src: &debezium::Source<'_>,
) -> Result<Bytes, ApplyError> {
    let line = json.render_change(change).await?;
    match format {
        PayloadFormat::Json => Ok(Bytes::copy_from_slice(line.as_bytes())),
        PayloadFormat::Debezium => {
            let object = serde_json::from_str(line)
                .map_err(|e| ApplyError::Output(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let e = debezium::envelope(object, src, now).ok_or_else(|| {
                ApplyError::Output(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "change without a Debezium form",
                ))
            })?;
            Ok(Bytes::from(e))
        }
    }
}

impl Target for NatsTarget {
    async fn load_progress(&mut self) -> Result<Option<Lsn>, ApplyError> {
        self.stored = read_progress(&self.kv, &self.key).await?;
        self.resume = self.stream_tail().await?;
        Ok(self.stored)
    }

    async fn begin(&mut self, txn: &TxnInfo) -> Result<(), ApplyError> {
        self.set_txn(Some(txn.clone()));
        self.index = 0;
        if self.cfg.transaction_markers {
            let body = match self.cfg.format {
                PayloadFormat::Json => format!(
                    "{{\"type\":\"begin\",\"xid\":{},\"commit_lsn\":\"{}\",\"commit_time\":\"{}\"}}",
                    txn.xid, txn.commit_lsn, txn.commit_time
                ),
                PayloadFormat::Debezium => serde_json::json!({
                    "status": "BEGIN",
                    "id": format!("{}:{}", txn.xid, txn.commit_lsn.0),
                    "ts_ms": txn.commit_time.unix_micros().div_euclid(1000),
                })
                .to_string(),
            };
            self.marker(body).await?;
        }
        Ok(())
    }

    async fn relation(&mut self, rel: &Arc<Relation>, _types: &TypeMap) -> Result<(), ApplyError> {
        // A relation sent again may have been renamed.
        self.subjects.remove(&rel.rel_id);
        self.json.learn_relation(rel).await
    }

    async fn change(&mut self, change: Change) -> Result<(), ApplyError> {
        match &change {
            Change::Insert { rel, .. }
            | Change::Update { rel, .. }
            | Change::Delete { rel, .. } => {
                let subject = self.subject_of(rel);
                self.publish_change(subject, &change).await
            }
            Change::Truncate { rels, cascade, restart_identity } => {
                for rel in rels {
                    let one = Change::Truncate {
                        rels: vec![rel.clone()],
                        cascade: *cascade,
                        restart_identity: *restart_identity,
                    };
                    let subject = self.subject_of(rel);
                    self.publish_change(subject, &one).await?;
                }
                Ok(())
            }
            Change::Message(_) => {
                let subject =
                    subject::database_subject(&self.cfg.prefix, &self.cfg.database, "_message");
                self.publish_change(subject.into(), &change).await
            }
        }
    }

    async fn commit(&mut self, commit: &CommitInfo) -> Result<(), ApplyError> {
        if self.cfg.transaction_markers {
            let body = match self.cfg.format {
                PayloadFormat::Json => format!(
                    "{{\"type\":\"commit\",\"xid\":{},\"commit_lsn\":\"{}\",\"end_lsn\":\"{}\",\
                     \"commit_time\":\"{}\"}}",
                    commit.xid, commit.commit_lsn, commit.end_lsn, commit.commit_time
                ),
                PayloadFormat::Debezium => serde_json::json!({
                    "status": "END",
                    "id": format!("{}:{}", commit.xid, commit.commit_lsn.0),
                    "event_count": self.index.saturating_sub(1),
                    "ts_ms": commit.commit_time.unix_micros().div_euclid(1000),
                })
                .to_string(),
            };
            self.marker(body).await?;
        }
        self.set_txn(None);
        self.committed = Some(commit.end_lsn);
        self.json.end_transaction();
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        while self.publisher.in_flight() > 0 {
            self.ack_oldest().await?;
        }
        if let Some(end) = self.committed
            && Some(end) > self.stored
        {
            self.kv
                .put(&self.key, Bytes::from(end.to_string()))
                .await
                .map_err(|e| NatsError::request("storing the progress in the bucket", e))?;
            self.stored = Some(end);
        }
        Ok(self.stored)
    }

    async fn message(&mut self, msg: &DecodingMessage) -> Result<(), ApplyError> {
        let subject = subject::database_subject(&self.cfg.prefix, &self.cfg.database, "_message");
        let src = debezium::Source {
            name: &self.cfg.prefix,
            db: &self.cfg.database,
            xid: 0,
            lsn: msg.lsn,
            commit_time: PgTimestamp::now(),
            snapshot: false,
        };
        let change = Change::Message(msg.clone());
        let payload = render(&mut self.json, &change, self.cfg.format, &src).await?;
        let id = format!("{}:{}:m", self.cfg.name, msg.lsn);
        self.publish(subject.into(), &id, payload, HeaderMap::new()).await
    }
}

/// The last end LSN stored for a mirror in its bucket.
async fn read_progress(kv: &kv::Store, key: &str) -> Result<Option<Lsn>, NatsError> {
    let value = kv
        .get(key)
        .await
        .map_err(|e| NatsError::request("reading the progress in the bucket", e))?;
    value
        .map(|v| {
            std::str::from_utf8(&v).ok().and_then(|s| s.parse::<Lsn>().ok()).ok_or_else(|| {
                NatsError::Config(format!(
                    "the progress of this mirror in the NATS bucket is not an LSN ({:?}); delete \
                     the key {key:?} to publish from the slot's position",
                    String::from_utf8_lossy(&v)
                ))
            })
        })
        .transpose()
}

/// A mirror's progress as stored in `bucket`: the last end LSN the stream acknowledged, or
/// `None` (no bucket, or nothing stored yet).
///
/// # Errors
/// Server errors.
pub async fn stored_progress(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
) -> Result<Option<Lsn>, NatsError> {
    match js.get_key_value(bucket).await {
        Ok(kv) => read_progress(&kv, &subject::kv_key(name)).await,
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => Ok(None),
        Err(e) => Err(NatsError::request(format!("opening bucket {bucket:?}"), e)),
    }
}

/// Removes a mirror's progress from `bucket` (nothing if missing).
///
/// # Errors
/// Server errors.
pub async fn forget_progress(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
) -> Result<(), NatsError> {
    match js.get_key_value(bucket).await {
        Ok(kv) => kv
            .purge(subject::kv_key(name))
            .await
            .map_err(|e| NatsError::request("removing the progress from the bucket", e)),
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => Ok(()),
        Err(e) => Err(NatsError::request(format!("opening bucket {bucket:?}"), e)),
    }
}

/// Creates the stream if missing; checks an existing one takes the prefix. `true`: created.
async fn ensure_stream(js: &jetstream::Context, cfg: &NatsTargetConfig) -> Result<bool, NatsError> {
    match js.get_stream(&cfg.stream).await {
        Ok(mut s) => {
            let info = s
                .info()
                .await
                .map_err(|e| NatsError::request("reading the stream's settings", e))?;
            let subjects = info.config.subjects.clone();
            if subjects.iter().any(|p| subject::covers_prefix(p, &cfg.prefix)) {
                Ok(false)
            } else {
                Err(NatsError::StreamSubjects {
                    stream: cfg.stream.clone(),
                    subjects,
                    prefix: cfg.prefix.clone(),
                })
            }
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            if !(1..=5).contains(&cfg.replicas) {
                return Err(NatsError::Config(format!(
                    "{} replicas asked for the stream: JetStream keeps 1 to 5",
                    cfg.replicas
                )));
            }
            let config = stream::Config {
                name: cfg.stream.clone(),
                subjects: vec![format!("{}.>", cfg.prefix)],
                storage: stream::StorageType::File,
                num_replicas: cfg.replicas,
                // A full stream refuses new messages (the mirror stops, the slot keeps them)
                // rather than dropping the oldest ones unread.
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            };
            js.create_stream(config)
                .await
                .map_err(|e| NatsError::request(format!("creating stream {:?}", cfg.stream), e))?;
            tracing::info!(stream = %cfg.stream, subjects = %format!("{}.>", cfg.prefix), "created NATS stream");
            Ok(true)
        }
        Err(e) => Err(NatsError::request(format!("looking up stream {:?}", cfg.stream), e)),
    }
}

/// Opens the bucket, creating it if missing.
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, NatsError> {
    match js.get_key_value(bucket).await {
        Ok(kv) => Ok(kv),
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
            // The bucket's stream, as `create_key_value` makes it (which first asks for the
            // account's details, a reply async-nats cannot read from a 2.9 server). Reads go to
            // the stream's leader (no direct gets), so a read sees the last write.
            let config = stream::Config {
                name: format!("KV_{bucket}"),
                description: Some(
                    "pgmirror: each mirror's last end LSN stored in its stream".into(),
                ),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas.clamp(1, 5),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: false,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            };
            js.create_stream(config)
                .await
                .map_err(|e| NatsError::request(format!("creating bucket {bucket:?}"), e))?;
            js.get_key_value(bucket)
                .await
                .map_err(|e| NatsError::request(format!("opening bucket {bucket:?}"), e))
        }
        Err(e) => Err(NatsError::request(format!("opening bucket {bucket:?}"), e)),
    }
}
