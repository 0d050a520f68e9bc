//! Publishing into JetStream with many acknowledgements in flight, without a request per
//! message.
//!
//! A JetStream publish is a core NATS publish with a reply subject: the stream answers there
//! with a `PubAck` (`{"stream":..,"seq":..}`) or an error (`{"error":{..}}`), and the server
//! with a 503 status when no stream takes the subject. async-nats's
//! `jetstream::Context::send_publish` makes each message a request of its own (a reply inbox, a
//! entry in the client's request map, a oneshot channel and a timer), which cost pgmirror more
//! CPU than rendering the message. Here one subscription on `<inbox>.*` takes every reply; a
//! message's reply subject is `<inbox>.<n>`, its number, so its acknowledgement finds it
//! without a map, in whatever order replies arrive.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::{Client, HeaderMap, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

/// Why a message was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The client refused to send it.
    #[error(transparent)]
    Publish(#[from] async_nats::client::PublishError),
    /// No acknowledgement came in time.
    #[error("no acknowledgement within {0:?}")]
    TimedOut(Duration),
    /// The connection's subscription ended.
    #[error("the connection to the NATS server closed")]
    Closed,
    /// No stream takes the message's subject.
    #[error("no stream takes the subject (deleted?)")]
    NoStream,
    /// The stream refused the message.
    #[error("{description} (JetStream error {err_code})")]
    Refused {
        /// JetStream's error code (`err_code`).
        err_code: u64,
        /// The server's words.
        description: String,
    },
}

/// A `PubAck`, or the error in its place.
#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    seq: u64,
    error: Option<Refusal>,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Publishes messages and collects their acknowledgements in publishing order.
#[derive(Debug)]
pub struct Publisher {
    client: Client,
    /// `<inbox>.`: the reply subjects' common start.
    inbox: String,
    replies: Subscriber,
    /// The number of the oldest message not yet taken by [`Publisher::ack_oldest`].
    oldest: u64,
    /// From `oldest` on, each message's stream sequence once acknowledged.
    window: VecDeque<Option<u64>>,
    timeout: Duration,
}

impl Publisher {
    /// Subscribes to the replies of the messages this publisher sends.
    ///
    /// # Errors
    /// The subscription could not be sent to the server.
    pub async fn new(
        client: Client,
        timeout: Duration,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = format!("{}.", client.new_inbox());
        let replies = client.subscribe(format!("{inbox}*")).await?;
        Ok(Publisher { client, inbox, replies, oldest: 0, window: VecDeque::new(), timeout })
    }

    /// Messages sent whose acknowledgement has not been taken yet.
    pub fn in_flight(&self) -> usize {
        self.window.len()
    }

    /// Sends one message; its acknowledgement is taken later, in order, by
    /// [`Publisher::ack_oldest`].
    ///
    /// # Errors
    /// The client refused the message (larger than the server's `max_payload`, or the
    /// connection's queue full for longer than the timeout).
    pub async fn publish(
        &mut self,
        subject: Subject,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), AckError> {
        let n = self.oldest + self.window.len() as u64;
        let reply = Subject::from(format!("{}{n}", self.inbox));
        let send = self.client.publish_with_reply_and_headers(subject, reply, headers, payload);
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| AckError::TimedOut(self.timeout))??;
        self.window.push_back(None);
        Ok(())
    }

    /// Waits for the acknowledgement of the oldest message in flight; its stream sequence, or
    /// `None` when nothing is in flight.
    ///
    /// # Errors
    /// The stream refused the message, no stream takes it, no acknowledgement came within the
    /// timeout, or the connection closed.
    pub async fn ack_oldest(&mut self) -> Result<Option<u64>, AckError> {
        loop {
            match self.window.front() {
                None => return Ok(None),
                Some(Some(seq)) => {
                    let seq = *seq;
                    self.window.pop_front();
                    self.oldest += 1;
                    return Ok(Some(seq));
                }
                Some(None) => {}
            }
            let reply = tokio::time::timeout(self.timeout, self.replies.next())
                .await
                .map_err(|_| AckError::TimedOut(self.timeout))?
                .ok_or(AckError::Closed)?;
            self.take(&reply)?;
        }
    }

    /// Records one reply against its message.
    fn take(&mut self, reply: &async_nats::Message) -> Result<(), AckError> {
        let Some(n) = reply
            .subject
            .as_str()
            .strip_prefix(self.inbox.as_str())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Ok(());
        };
        let Some(slot) = n
            .checked_sub(self.oldest)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.window.get_mut(i))
        else {
            // A late reply to a message already answered.
            return Ok(());
        };
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(AckError::NoStream);
        }
        let parsed: Reply =
            serde_json::from_slice(&reply.payload).map_err(|e| AckError::Refused {
                err_code: 0,
                description: format!("unreadable acknowledgement: {e}"),
            })?;
        if let Some(r) = parsed.error {
            return Err(AckError::Refused { err_code: r.err_code, description: r.description });
        }
        *slot = Some(parsed.seq);
        Ok(())
    }
}
