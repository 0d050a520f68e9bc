//! The relation cache: what each relation id in a change stands for.
//!
//! The decoder keeps no state across messages, and pgoutput describes a relation only once
//! per walsender (again after a schema change or cache invalidation), so someone must map the
//! relation ids of later changes: this cache, for every target. A target may keep its own
//! facts per relation (the PostgreSQL target: the target table and its prepared statements),
//! keyed by the `Arc` this cache hands out, but never has to resolve an id itself.

use std::collections::HashMap;
use std::sync::Arc;

use pgoutput_decoder::{LogicalMessage, Relation, TypeInfo};

use super::msg_name;
use crate::error::ApplyError;
use crate::target::{Change, TypeMap};

/// Relations as described so far, in arrival order, and the types the source announced.
#[derive(Debug, Default)]
pub(super) struct Relations {
    by_id: foldhash::HashMap<u32, Arc<Relation>>,
    /// Non-builtin types announced so far (for a target that must name them).
    types: TypeMap,
    /// Relation messages in arrival order: when each entry of `by_id` arrived.
    seq: u64,
    at: foldhash::HashMap<u32, u64>,
    /// The latest Relation each in-flight streamed transaction sent, with when it arrived.
    streamed: HashMap<u32, HashMap<u32, (u64, Arc<Relation>)>>,
}

impl Relations {
    /// A Relation message outside a stream block: it describes the relation from now on.
    pub(super) fn described(&mut self, rel: Relation) -> Arc<Relation> {
        let rel = Arc::new(rel);
        self.by_id.insert(rel.rel_id, Arc::clone(&rel));
        self.seq += 1;
        self.at.insert(rel.rel_id, self.seq);
        rel
    }

    /// A Relation message inside a block of streamed transaction `top`: it describes the
    /// relation for that transaction, and for everyone once it commits (see
    /// [`adopt`](Self::adopt)).
    pub(super) fn described_in_stream(&mut self, top: u32, rel: &Relation) {
        self.seq += 1;
        let seen = (self.seq, Arc::new(rel.clone()));
        self.streamed.entry(top).or_default().insert(rel.rel_id, seen);
    }

    /// At the end of streamed transaction `xid`: the relations it sent become the cache's,
    /// unless a newer Relation message arrived since.
    ///
    /// pgoutput sends a relation inside each streamed transaction that touches it, and once
    /// one commits it counts the relation as sent (`cleanup_rel_sync_cache`): the next
    /// transaction's changes come without a Relation message. A Relation that arrived later
    /// (after a schema change) describes the table as it is now, and stays.
    pub(super) fn adopt(&mut self, xid: u32) {
        let Some(sent) = self.streamed.remove(&xid) else { return };
        for (rel_id, (seq, rel)) in sent {
            if self.at.get(&rel_id).is_none_or(|&at| at < seq) {
                self.by_id.insert(rel_id, rel);
                self.at.insert(rel_id, seq);
            }
        }
    }

    /// Streamed transaction `xid` was aborted: what it sent describes nothing.
    pub(super) fn forget(&mut self, xid: u32) {
        self.streamed.remove(&xid);
    }

    /// A Type message.
    pub(super) fn announced(&mut self, t: TypeInfo) {
        self.types.insert(t.type_oid, t);
    }

    /// The types announced so far.
    pub(super) fn types(&self) -> &TypeMap {
        &self.types
    }

    /// A change message as a [`Change`], its relations looked up in `overlay` (how a buffered
    /// transaction described them) first, then in the cache.
    pub(super) fn change(
        &self,
        msg: LogicalMessage,
        overlay: Option<&HashMap<u32, Arc<Relation>>>,
    ) -> Result<Change, ApplyError> {
        let lookup = |rel_id: u32| {
            overlay
                .and_then(|o| o.get(&rel_id))
                .or_else(|| self.by_id.get(&rel_id))
                .cloned()
                .ok_or(ApplyError::UnknownRelation { rel_id })
        };
        Ok(match msg {
            LogicalMessage::Insert(i) => Change::Insert { rel: lookup(i.rel_id)?, new: i.new },
            LogicalMessage::Update(u) => {
                Change::Update { rel: lookup(u.rel_id)?, old: u.old, new: u.new }
            }
            LogicalMessage::Delete(d) => Change::Delete { rel: lookup(d.rel_id)?, old: d.old },
            LogicalMessage::Truncate(t) => Change::Truncate {
                rels: t.rel_ids.iter().map(|&id| lookup(id)).collect::<Result<_, _>>()?,
                cascade: t.cascade,
                restart_identity: t.restart_identity,
            },
            LogicalMessage::Message(m) => Change::Message(m),
            other => {
                return Err(ApplyError::protocol(msg_name(&other), "where a change was expected"));
            }
        })
    }
}
