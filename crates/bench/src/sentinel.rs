//! Knowing when a sentinel row has reached a target database.
//!
//! The target's copy of the sentinel table announces every row it receives with `NOTIFY`
//! (an `ENABLE ALWAYS` trigger, so it fires under `session_replication_role = replica`, as
//! native, pglogical and pgmirror all apply), and the benchmark waits for that notification. Asking the target
//! in a loop instead takes CPU from the catch-up it times, which on a machine of few cores
//! slows it measurably.

use std::time::{Duration, Instant};

use pgcluster::Cluster;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::error::Error;
use crate::workload::SENTINEL_TABLE;

/// The channel the target's sentinel table notifies, with the row's id as payload.
const CHANNEL: &str = "pgmirror_bench_sentinel";

/// How often a wait without news checks that the contender is alive and looks the row up (a
/// row that arrived before the watch listened was announced to no one).
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Makes the sentinel table of a target database notify [`CHANNEL`] for every row inserted.
pub(crate) fn notify_ddl() -> String {
    format!(
        "CREATE FUNCTION {CHANNEL}_notify() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_catalog.pg_notify('{CHANNEL}', NEW.id::text); RETURN NULL; END $$; \
         CREATE TRIGGER {CHANNEL}_notify AFTER INSERT ON {SENTINEL_TABLE} \
         FOR EACH ROW EXECUTE FUNCTION {CHANNEL}_notify(); \
         ALTER TABLE {SENTINEL_TABLE} ENABLE ALWAYS TRIGGER {CHANNEL}_notify"
    )
}

/// A session on a target database that listens for its sentinel rows.
pub(crate) struct SentinelWatch {
    client: Client,
    pid: i32,
    payloads: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl SentinelWatch {
    /// Connects to database `db` of `cluster` and listens, before any row to wait for can
    /// arrive.
    pub(crate) async fn start(cluster: &Cluster, db: &str) -> Result<Self, Error> {
        let (client, mut connection) = cluster.config(db).connect(NoTls).await?;
        let (tx, payloads) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n.payload().to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "sentinel watch connection ended");
                        break;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        let pid = client.query_one("SELECT pg_catalog.pg_backend_pid()", &[]).await?.get(0);
        Ok(SentinelWatch { client, pid, payloads, task })
    }

    /// The watch's server process, which is not part of what a contender runs.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until sentinel row `id` is in the target, for at most `timeout`; `alive` is asked
    /// every [`CHECK_EVERY`] whether the contender still runs.
    pub(crate) async fn wait(
        &mut self,
        id: i32,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let want = id.to_string();
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {SENTINEL_TABLE} WHERE id = $1)");
        let start = Instant::now();
        let mut until = tokio::time::Instant::now() + CHECK_EVERY;
        loop {
            match tokio::time::timeout_at(until, self.payloads.recv()).await {
                Ok(Some(payload)) if payload == want => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(Error::Failed("the sentinel watch lost its connection".into()));
                }
                Err(_) => {}
            }
            alive()?;
            if self.client.query_one(&sql, &[&id]).await?.get::<_, bool>(0) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Failed(format!(
                    "the target did not catch up within {timeout:?}"
                )));
            }
            until = tokio::time::Instant::now() + CHECK_EVERY;
        }
    }
}

impl Drop for SentinelWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
