//! [`ReplicationClient`]: a `replication=database` connection that runs
//! replication commands (IDENTIFY_SYSTEM, slots) and plain SQL, then turns
//! into a [`LogicalReplicationStream`] with START_REPLICATION.

use std::sync::Arc;

use bytes::Bytes;
use fallible_iterator::FallibleIterator;
use futures_util::Stream;
use pgoutput_decoder::Lsn;
use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend;

use pgconn::hosts::{self, SERVER_STATE_SQL, Session};
use pgconn::{ConnConfig, Error as ConnError, quote_ident, quote_literal};

use crate::error::Error;
use crate::stream::{LogicalReplicationStream, StartReplication, Streaming};
use crate::wire::{Backend, Conn, parse_server_version};

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier.
    pub system_id: u64,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// Database of this connection (`None` for physical connections).
    pub dbname: Option<String>,
}

/// What CREATE_REPLICATION_SLOT does with the snapshot it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotAction {
    /// Export it (`snapshot_name` in the result) for `SET TRANSACTION SNAPSHOT`
    /// on other connections, until the next command on this one.
    #[default]
    Export,
    /// Use it for the current transaction of this connection (which must be
    /// `BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ`, started just before).
    Use,
    /// Neither.
    Nothing,
}

/// Options of CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateSlotOptions {
    /// Drop the slot when this connection ends.
    pub temporary: bool,
    /// Snapshot handling.
    pub snapshot: SnapshotAction,
    /// Decode prepared transactions at PREPARE time (PG 15+).
    pub two_phase: bool,
}

/// The answer to CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Name of the new slot.
    pub slot_name: String,
    /// The LSN from which the slot streams: start replication here.
    pub consistent_point: Lsn,
    /// The exported snapshot, for [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
    /// `pgoutput`.
    pub output_plugin: String,
}

/// One row of a simple-query result, all values in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleRow {
    columns: Arc<[String]>,
    values: Vec<Option<String>>,
}

impl SimpleRow {
    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Value of column `idx`; `None` for NULL or an index out of range.
    pub fn get(&self, idx: usize) -> Option<&str> {
        self.values.get(idx).and_then(|v| v.as_deref())
    }

    /// Value of the column called `name`; `None` for NULL or no such column.
    pub fn get_by_name(&self, name: &str) -> Option<&str> {
        let idx = self.columns.iter().position(|c| c == name)?;
        self.get(idx)
    }
}

/// A `replication=database` connection in command mode.
///
/// Commands take `&mut self`; a command abandoned half-way (its future
/// dropped) is drained before the next one starts.
#[derive(Debug)]
pub struct ReplicationClient {
    conn: Conn,
    config: ConnConfig,
    server_version: u32,
    /// A command's answer may still be arriving (until ReadyForQuery).
    busy: bool,
}

impl ReplicationClient {
    /// Connects in `replication=database` mode: to the first host that accepts and suits
    /// `target_session_attrs`, asking the config's password prompt when a server wants a
    /// password nothing gave.
    ///
    /// # Errors
    /// [`Error::Conn`] with [`ConnError::Connect`] when the server is unreachable,
    /// [`ConnError::Db`] for a refused login (see [`Error::is_auth_failure`]),
    /// [`ConnError::PasswordMissing`], [`ConnError::SessionAttrs`], TLS and protocol errors;
    /// [`ConnError::AllHostsFailed`] with each host's when several were given.
    pub async fn connect(config: &ConnConfig) -> Result<Self, Error> {
        let mut client = hosts::connect(config, |one| Box::pin(Self::connect_one(one))).await?;
        // Reconnecting with `config()` tries every host again.
        client.config = config.clone();
        Ok(client)
    }

    async fn connect_one(config: ConnConfig) -> Result<Self, ConnError> {
        let conn = Conn::connect(&config).await?;
        let mut client = ReplicationClient { conn, config, server_version: 0, busy: false };
        client.server_version =
            match client.conn.parameter("server_version").and_then(parse_server_version) {
                Some(v) => v,
                None => {
                    let rows = client.query("SHOW server_version_num").await?;
                    rows.first().and_then(|r| r.get(0)).and_then(|v| v.parse().ok()).ok_or_else(
                        || ConnError::Protocol("could not determine the server version".into()),
                    )?
                }
            };
        tracing::debug!(
            target = %client.config.redacted(),
            server_version = client.server_version,
            tls = client.conn.tls,
            "replication connection established"
        );
        Ok(client)
    }

    /// The server version in `server_version_num` form (e.g. 150018).
    pub fn server_version(&self) -> u32 {
        self.server_version
    }

    /// A parameter the server reported (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.conn.parameter(name)
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.conn.tls
    }

    /// Whether authentication used SCRAM-SHA-256-PLUS channel binding.
    pub fn uses_channel_binding(&self) -> bool {
        self.conn.channel_binding
    }

    /// The server process id (for `pg_stat_replication.pid` or
    /// `pg_terminate_backend`).
    pub fn backend_pid(&self) -> Option<i32> {
        self.conn.backend_pid
    }

    /// The configuration this client connected with.
    pub fn config(&self) -> &ConnConfig {
        &self.config
    }

    /// IDENTIFY_SYSTEM.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, Error> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row =
            rows.first().ok_or_else(|| ConnError::Protocol("IDENTIFY_SYSTEM: no row".into()))?;
        let field = |i: usize, name: &str| {
            row.get(i).ok_or_else(|| ConnError::Protocol(format!("IDENTIFY_SYSTEM: no {name}")))
        };
        let bad = |name: &str| ConnError::Protocol(format!("IDENTIFY_SYSTEM: invalid {name}"));
        Ok(SystemInfo {
            system_id: field(0, "systemid")?.parse().map_err(|_| bad("systemid"))?,
            timeline: field(1, "timeline")?.parse().map_err(|_| bad("timeline"))?,
            xlogpos: field(2, "xlogpos")?.parse().map_err(|_| bad("xlogpos"))?,
            dbname: row.get(3).map(str::to_owned),
        })
    }

    /// CREATE_REPLICATION_SLOT for `pgoutput`, with the parenthesised
    /// option syntax on PG 15+ and the legacy keywords before.
    pub async fn create_slot(
        &mut self,
        name: &str,
        options: CreateSlotOptions,
    ) -> Result<SlotInfo, Error> {
        let sql = create_slot_command(name, options, self.server_version)?;
        let rows = self.simple_query(&sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| ConnError::Protocol("CREATE_REPLICATION_SLOT: no row".into()))?;
        let consistent_point = row.get(1).and_then(|v| v.parse().ok()).ok_or_else(|| {
            ConnError::Protocol("CREATE_REPLICATION_SLOT: invalid consistent_point".into())
        })?;
        Ok(SlotInfo {
            slot_name: row.get(0).unwrap_or(name).to_owned(),
            consistent_point,
            snapshot_name: row.get(2).map(str::to_owned),
            output_plugin: row.get(3).unwrap_or("pgoutput").to_owned(),
        })
    }

    /// DROP_REPLICATION_SLOT; with `wait`, waits for an active slot to be
    /// released instead of failing.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), Error> {
        let mut sql = format!("DROP_REPLICATION_SLOT {}", quote_ident(name));
        if wait {
            sql.push_str(" WAIT");
        }
        self.simple_query(&sql).await?;
        Ok(())
    }

    /// Whether the replication slot `name` exists.
    ///
    /// # Errors
    /// The catalog query failed.
    pub async fn slot_exists(&mut self, name: &str) -> Result<bool, Error> {
        let rows = self
            .simple_query(&format!(
                "SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
                quote_literal(name)
            ))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Runs SQL (or a replication command) with the simple query protocol
    /// and returns all rows of all statements, values in text form.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleRow>, Error> {
        Ok(self.query(sql).await?)
    }

    /// [`Self::simple_query`] with the connection's error, as the host loop takes it.
    async fn query(&mut self, sql: &str) -> Result<Vec<SimpleRow>, ConnError> {
        self.begin(sql).await?;
        let mut rows = Vec::new();
        let mut columns: Arc<[String]> = Arc::from(Vec::new());
        let mut error = None;
        loop {
            match self.conn.read_message().await? {
                Backend::Msg(Message::RowDescription(body)) => {
                    let mut names = Vec::new();
                    let mut fields = body.fields();
                    while let Some(f) = fields.next()? {
                        names.push(f.name().to_owned());
                    }
                    columns = Arc::from(names);
                }
                Backend::Msg(Message::DataRow(body)) => {
                    rows.push(SimpleRow { columns: columns.clone(), values: row_values(&body)? });
                }
                Backend::Msg(Message::CommandComplete(_) | Message::EmptyQueryResponse) => {}
                Backend::Msg(Message::ErrorResponse(body)) => {
                    error = Some(self.conn.db_error(&body));
                }
                Backend::Msg(Message::CopyOutResponse(_)) => {
                    error = Some(ConnError::Unsupported(
                        "COPY ... TO STDOUT in simple_query; use copy_out".into(),
                    ));
                }
                Backend::Msg(Message::CopyData(_) | Message::CopyDone) => {}
                Backend::Msg(Message::CopyInResponse(_)) => {
                    frontend::copy_fail("COPY FROM STDIN is not supported here", self.conn.buf())?;
                    self.conn.flush().await?;
                }
                Backend::Msg(Message::ReadyForQuery(_)) => {
                    self.busy = false;
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                Backend::CopyBothResponse => {
                    return Err(ConnError::Protocol(
                        "simple_query entered CopyBoth mode; use start_replication".into(),
                    ));
                }
                _ => {
                    return Err(ConnError::Protocol("unexpected message in query response".into()));
                }
            }
        }
    }

    /// Runs `COPY ... TO STDOUT` and streams the data chunks (one row per
    /// chunk in text/CSV format). On the replication connection this is how
    /// a table is copied inside the snapshot of [`SnapshotAction::Use`].
    pub fn copy_out<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'a {
        enum State {
            Start,
            Data,
            Done,
        }
        futures_util::stream::unfold((self, State::Start), move |(client, state)| async move {
            match state {
                State::Done => None,
                State::Start => match client.start_copy_out(sql).await {
                    Ok(()) => client.next_copy_chunk().await.map(|r| {
                        let next = if r.is_ok() { State::Data } else { State::Done };
                        (r.map_err(Error::from), (client, next))
                    }),
                    Err(e) => Some((Err(e.into()), (client, State::Done))),
                },
                State::Data => client.next_copy_chunk().await.map(|r| {
                    let next = if r.is_ok() { State::Data } else { State::Done };
                    (r.map_err(Error::from), (client, next))
                }),
            }
        })
    }

    async fn start_copy_out(&mut self, sql: &str) -> Result<(), ConnError> {
        self.begin(sql).await?;
        loop {
            match self.conn.read_message().await? {
                Backend::Msg(Message::CopyOutResponse(_)) => return Ok(()),
                Backend::Msg(Message::ErrorResponse(body)) => {
                    let e = self.conn.db_error(&body);
                    self.drain().await?;
                    return Err(e);
                }
                Backend::Msg(Message::RowDescription(_) | Message::DataRow(_)) => {}
                Backend::Msg(Message::CommandComplete(_) | Message::EmptyQueryResponse) => {}
                Backend::Msg(Message::ReadyForQuery(_)) => {
                    self.busy = false;
                    return Err(ConnError::Protocol(
                        "copy_out: the statement is not a COPY TO STDOUT".into(),
                    ));
                }
                _ => return Err(ConnError::Protocol("copy_out: unexpected message".into())),
            }
        }
    }

    /// The next CopyData chunk, or `None` after CopyDone..ReadyForQuery.
    async fn next_copy_chunk(&mut self) -> Option<Result<Bytes, ConnError>> {
        loop {
            let msg = match self.conn.read_message().await {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            match msg {
                Backend::Msg(Message::CopyData(body)) => return Some(Ok(body.into_bytes())),
                Backend::Msg(Message::CopyDone | Message::CommandComplete(_)) => {}
                Backend::Msg(Message::ReadyForQuery(_)) => {
                    self.busy = false;
                    return None;
                }
                Backend::Msg(Message::ErrorResponse(body)) => {
                    let e = self.conn.db_error(&body);
                    return Some(match self.drain().await {
                        Ok(()) => Err(e),
                        Err(io) => Err(io),
                    });
                }
                _ => return Some(Err(ConnError::Protocol("copy_out: unexpected message".into()))),
            }
        }
    }

    /// Sends a query, first finishing any command abandoned mid-way.
    async fn begin(&mut self, sql: &str) -> Result<(), ConnError> {
        if self.busy {
            self.drain().await?;
        }
        frontend::query(sql, self.conn.buf())?;
        self.busy = true;
        self.conn.flush().await
    }

    /// Reads and discards messages until ReadyForQuery.
    async fn drain(&mut self) -> Result<(), ConnError> {
        loop {
            match self.conn.read_message().await? {
                Backend::Msg(Message::ReadyForQuery(_)) => {
                    self.busy = false;
                    return Ok(());
                }
                Backend::CopyBothResponse => {
                    return Err(ConnError::Protocol(
                        "unexpected CopyBoth mode while draining".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// Starts streaming (START_REPLICATION) and hands the connection to a
    /// background task; see [`LogicalReplicationStream`].
    pub async fn start_replication(
        mut self,
        options: StartReplication,
    ) -> Result<LogicalReplicationStream, Error> {
        if self.busy {
            self.drain().await?;
        }
        let wal_sender_timeout = self.wal_sender_timeout().await?;
        if let Some(kb) = options.decoding_work_mem_kb
            && options.streaming != Streaming::Off
            && self.server_version >= 140_000
        {
            self.cap_decoding_work_mem(kb).await?;
        }
        crate::stream::start(self.conn, self.server_version, options, wal_sender_timeout).await
    }

    /// Lowers this session's `logical_decoding_work_mem` to `kb` when it is larger (the
    /// walsender reads it while decoding; see [`StartReplication::decoding_work_mem_kb`]).
    async fn cap_decoding_work_mem(&mut self, kb: u32) -> Result<(), Error> {
        let bytes = u64::from(kb) * 1024;
        let sql = format!(
            "SELECT pg_catalog.set_config('logical_decoding_work_mem', '{kb}kB', false) \
             WHERE pg_catalog.pg_size_bytes(pg_catalog.current_setting('logical_decoding_work_mem')) > {bytes}"
        );
        let rows = self.simple_query(&sql).await?;
        if let Some(now) = rows.first().and_then(|r| r.get(0)) {
            tracing::debug!(logical_decoding_work_mem = now, "lowered for this walsender");
        }
        Ok(())
    }

    /// `SHOW wal_sender_timeout`, used to keep feedback well inside it.
    async fn wal_sender_timeout(&mut self) -> Result<Option<std::time::Duration>, Error> {
        let rows = self.simple_query("SHOW wal_sender_timeout").await?;
        Ok(rows.first().and_then(|r| r.get(0)).and_then(parse_pg_duration))
    }

    /// Sends Terminate and closes the connection (a temporary slot is dropped
    /// by the server).
    pub async fn close(self) {
        self.conn.terminate().await;
    }
}

impl Session for ReplicationClient {
    async fn server_state_row(&mut self) -> Result<(String, String), ConnError> {
        let rows = self.query(SERVER_STATE_SQL).await?;
        let row = rows.first().ok_or_else(|| ConnError::Protocol("no server state row".into()))?;
        Ok((row.get(0).unwrap_or_default().to_owned(), row.get(1).unwrap_or_default().to_owned()))
    }

    async fn discard(self) {
        self.close().await;
    }
}

fn row_values(body: &DataRowBody) -> Result<Vec<Option<String>>, ConnError> {
    let buf = body.buffer();
    let mut values = Vec::new();
    let mut ranges = body.ranges();
    while let Some(range) = ranges.next()? {
        values.push(match range {
            None => None,
            Some(r) => Some(
                std::str::from_utf8(
                    buf.get(r).ok_or_else(|| ConnError::Protocol("bad DataRow".into()))?,
                )
                .map_err(|_| ConnError::Protocol("DataRow value is not UTF-8".into()))?
                .to_owned(),
            ),
        });
    }
    Ok(values)
}

/// The CREATE_REPLICATION_SLOT command for a server version.
pub(crate) fn create_slot_command(
    name: &str,
    options: CreateSlotOptions,
    server_version: u32,
) -> Result<String, ConnError> {
    let mut sql = format!("CREATE_REPLICATION_SLOT {}", quote_ident(name));
    if options.temporary {
        sql.push_str(" TEMPORARY");
    }
    sql.push_str(" LOGICAL \"pgoutput\"");
    if server_version >= 150_000 {
        let snapshot = match options.snapshot {
            SnapshotAction::Export => "export",
            SnapshotAction::Use => "use",
            SnapshotAction::Nothing => "nothing",
        };
        sql.push_str(&format!(" (SNAPSHOT '{snapshot}'"));
        if options.two_phase {
            sql.push_str(", TWO_PHASE");
        }
        sql.push(')');
    } else {
        if options.two_phase {
            return Err(ConnError::Unsupported(
                "two-phase slots need PostgreSQL 15 or newer".into(),
            ));
        }
        sql.push_str(match options.snapshot {
            SnapshotAction::Export => " EXPORT_SNAPSHOT",
            SnapshotAction::Use => " USE_SNAPSHOT",
            SnapshotAction::Nothing => " NOEXPORT_SNAPSHOT",
        });
    }
    Ok(sql)
}

/// Parses a GUC duration as SHOW prints it (`60s`, `2min`, `500ms`, `0`).
pub(crate) fn parse_pg_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n.checked_mul(1000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        "us" => n / 1000,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slot_commands() {
        let opts =
            CreateSlotOptions { temporary: true, snapshot: SnapshotAction::Use, two_phase: true };
        assert_eq!(
            create_slot_command("s\"1", opts, 150_018).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\"\"1\" TEMPORARY LOGICAL \"pgoutput\" (SNAPSHOT 'use', TWO_PHASE)"
        );
        let opts = CreateSlotOptions::default();
        assert_eq!(
            create_slot_command("s", opts, 160_000).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL \"pgoutput\" (SNAPSHOT 'export')"
        );
        let opts = CreateSlotOptions { snapshot: SnapshotAction::Nothing, ..opts };
        assert_eq!(
            create_slot_command("s", opts, 140_010).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL \"pgoutput\" NOEXPORT_SNAPSHOT"
        );
        let opts = CreateSlotOptions { two_phase: true, ..opts };
        assert!(matches!(create_slot_command("s", opts, 140_010), Err(ConnError::Unsupported(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_pg_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_pg_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_pg_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_pg_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_pg_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_pg_duration("x"), None);
    }
}
