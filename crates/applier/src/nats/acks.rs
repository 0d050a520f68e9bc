//! Publishing into JetStream with many acknowledgements in flight, without a request per
//! message.
//!
//! A JetStream publish is a core NATS publish with a reply subject: the stream answers there
//! with a `PubAck` (`{"stream":..,"seq":..}`) or an error (`{"error":{..}}`), and the server
//! with a 503 status when no stream takes the subject. async-nats's
//! `jetstream::Context::send_publish` makes each message a request of its own (a reply inbox, an
//! entry in the client's request map, a oneshot channel and a timer), which cost pgmirror more
//! CPU than rendering the message. Here one subscription on `<inbox>.*` takes every reply; a
//! message's reply subject is `<inbox>.<n>`, its number, so its acknowledgement finds it
//! without a map, in whatever order replies arrive.
//!
//! With many messages in flight, the stream can refuse one (a size limit, no leader during an
//! election) and store those sent after it. Retrying would then store the refused one after
//! them, out of commit order; so a refusal also waits for the replies of the later messages and
//! says how many of them were stored ([`AckError::OutOfOrder`]).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::{Client, HeaderMap, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::time::Instant;

/// Why a message was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The client refused to send it.
    #[error(transparent)]
    Publish(#[from] async_nats::client::PublishError),
    /// The connection took no more messages, or no acknowledgement came, in time.
    #[error("the NATS server neither took nor acknowledged a message within {0:?}")]
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
    /// A message failed, and messages sent after it were stored.
    #[error("{cause}, and {stored_after} messages sent after it were stored")]
    OutOfOrder {
        /// Why the message failed.
        cause: Box<AckError>,
        /// How many later messages the stream stored.
        stored_after: usize,
    },
}

/// What became of one message in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending,
    /// Stored at this stream sequence.
    Stored(u64),
    Failed,
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
    /// From `oldest` on, what became of each message.
    window: VecDeque<Slot>,
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
        self.window.push_back(Slot::Pending);
        Ok(())
    }

    /// Waits for the acknowledgement of the oldest message in flight; its stream sequence, or
    /// `None` when nothing is in flight.
    ///
    /// # Errors
    /// The stream refused a message, no stream takes it, no acknowledgement came within the
    /// timeout, or the connection closed; [`AckError::OutOfOrder`] when messages sent after the
    /// failed one were stored.
    pub async fn ack_oldest(&mut self) -> Result<Option<u64>, AckError> {
        loop {
            match self.window.front() {
                None => return Ok(None),
                Some(&Slot::Stored(seq)) => {
                    self.window.pop_front();
                    self.oldest += 1;
                    return Ok(Some(seq));
                }
                Some(Slot::Pending | Slot::Failed) => {}
            }
            let reply = match tokio::time::timeout(self.timeout, self.replies.next()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => return Err(AckError::Closed),
                Err(_) => {
                    let oldest = self.oldest;
                    return Err(self.failed(oldest, AckError::TimedOut(self.timeout)).await);
                }
            };
            if let Err((n, e)) = self.take(&reply) {
                return Err(self.failed(n, e).await);
            }
        }
    }

    /// Message `n` failed with `cause`: waits (one timeout at most) for the replies of the
    /// messages still in flight and counts those sent after `n` that were stored.
    async fn failed(&mut self, n: u64, cause: AckError) -> AckError {
        let deadline = Instant::now() + self.timeout;
        while self.window.contains(&Slot::Pending) {
            match tokio::time::timeout_at(deadline, self.replies.next()).await {
                Ok(Some(reply)) => {
                    let _ = self.take(&reply);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let first_after = usize::try_from(n.saturating_sub(self.oldest) + 1).unwrap_or(usize::MAX);
        let stored_after =
            self.window.iter().skip(first_after).filter(|s| matches!(s, Slot::Stored(_))).count();
        if stored_after == 0 {
            cause
        } else {
            AckError::OutOfOrder { cause: Box::new(cause), stored_after }
        }
    }

    /// Records one reply against its message; the message's number and error if it failed.
    fn take(&mut self, reply: &async_nats::Message) -> Result<(), (u64, AckError)> {
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
        if *slot != Slot::Pending {
            return Ok(());
        }
        let outcome = if reply.status == Some(StatusCode::NO_RESPONDERS) {
            Err(AckError::NoStream)
        } else {
            match serde_json::from_slice::<Reply>(&reply.payload) {
                Ok(Reply { error: Some(r), .. }) => {
                    Err(AckError::Refused { err_code: r.err_code, description: r.description })
                }
                Ok(Reply { seq, .. }) => Ok(seq),
                Err(e) => Err(AckError::Refused {
                    err_code: 0,
                    description: format!("unreadable acknowledgement: {e}"),
                }),
            }
        };
        match outcome {
            Ok(seq) => {
                *slot = Slot::Stored(seq);
                Ok(())
            }
            Err(e) => {
                *slot = Slot::Failed;
                Err((n, e))
            }
        }
    }
}
