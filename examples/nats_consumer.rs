//! Rebuilds one table from the changes `pgmirror mirror --target nats://...` publishes (JSON
//! format): reads the table's subject from the start of the stream, applies every insert,
//! update, delete and truncate to an in-memory copy keyed by the given key columns, and prints
//! the rows as JSON lines once no message arrived for a second.
//!
//! ```text
//! cargo run --example nats_consumer -- nats://127.0.0.1:4222 PGMIRROR pgmirror.shop.public.orders id
//! ```
//!
//! An update carrying an unchanged TOAST value (`{"unchanged_toast":true}`) keeps the value the
//! copy already holds. Messages are read with an ordered consumer: in stream order, which is
//! commit order.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use futures_util::StreamExt;
use serde_json::{Map, Value};

/// A table's rows by key (the key columns' values as a JSON array).
pub type Rows = BTreeMap<String, Map<String, Value>>;

/// Reads `subject` of `stream` from its first message until none arrived for `idle`, and
/// returns the table those changes build.
///
/// # Errors
/// NATS errors, or a message that is not a `pgmirror` JSON change.
pub async fn run(
    client: async_nats::Client,
    stream: &str,
    subject: &str,
    key: &[String],
    idle: Duration,
) -> Result<Rows, async_nats::Error> {
    let js = jetstream::new(client);
    let consumer = js
        .get_stream(stream)
        .await?
        .create_consumer(OrderedConfig { filter_subject: subject.to_owned(), ..Default::default() })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut rows = Rows::new();
    while let Ok(Some(msg)) = tokio::time::timeout(idle, messages.next()).await {
        let change: Value = serde_json::from_slice(&msg?.payload)?;
        apply(&mut rows, key, &change)?;
    }
    Ok(rows)
}

/// Applies one change to `rows`.
///
/// # Errors
/// A change without the fields its type needs.
pub fn apply(rows: &mut Rows, key: &[String], change: &Value) -> Result<(), async_nats::Error> {
    let row = |field: &str| change.get(field).and_then(Value::as_object);
    let key_of = |r: &Map<String, Value>| {
        Value::Array(key.iter().map(|k| r.get(k).cloned().unwrap_or(Value::Null)).collect())
            .to_string()
    };
    match change["type"].as_str() {
        Some("insert") => {
            let new = row("new").ok_or("insert without new")?;
            rows.insert(key_of(new), new.clone());
        }
        Some("update") => {
            let new = row("new").ok_or("update without new")?;
            let old_key = row("old").or_else(|| row("key")).map_or_else(|| key_of(new), key_of);
            let mut merged = rows.remove(&old_key).unwrap_or_default();
            for (col, v) in new {
                if v.get("unchanged_toast").is_none() {
                    merged.insert(col.clone(), v.clone());
                }
            }
            rows.insert(key_of(new), merged);
        }
        Some("delete") => {
            let old = row("old").or_else(|| row("key")).ok_or("delete without key")?;
            rows.remove(&key_of(old));
        }
        Some("truncate") => rows.clear(),
        other => return Err(format!("not a row change: {other:?}").into()),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, stream, subject, key @ ..] = args.as_slice() else {
        return Err("usage: nats_consumer NATS_URL STREAM SUBJECT KEY_COLUMN...".into());
    };
    if key.is_empty() {
        return Err("give the table's key columns after the subject".into());
    }
    let client = async_nats::connect(url.as_str()).await?;
    let rows = run(client, stream, subject, key, Duration::from_secs(1)).await?;
    for row in rows.values() {
        println!("{}", Value::Object(row.clone()));
    }
    Ok(())
}
