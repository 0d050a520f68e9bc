//! Where the applier stands, as source LSNs: what the target held at start, what was handed
//! to it, what it made durable and what was confirmed. Every position only moves forward.

use pgoutput_decoder::Lsn;

/// The applier's source positions (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Positions {
    /// The target's stored progress at start.
    stored: Option<Lsn>,
    /// End LSN of the last source transaction handed to the target.
    applied: Option<Lsn>,
    /// The newest end LSN the target reported durable.
    durable: Option<Lsn>,
    /// The last LSN returned for confirmation.
    confirmed: Option<Lsn>,
}

impl Positions {
    /// At start, with the progress the target stored.
    pub(super) fn new(stored: Option<Lsn>) -> Self {
        Positions { stored, applied: stored, ..Positions::default() }
    }

    /// Whether the target already holds the source transaction whose commit record starts at
    /// `commit_lsn` (its end LSN is not known at its Begin).
    ///
    /// The stored progress is the end of a commit record (or the copy's consistent point, a
    /// record boundary too), and records do not overlap: a transaction's commit record starts
    /// before the stored progress exactly when it ends at or before it.
    pub(super) fn holds(&self, commit_lsn: Lsn) -> bool {
        self.stored.is_some_and(|p| commit_lsn < p)
    }

    /// A source transaction ending at `end_lsn` was handed to the target.
    pub(super) fn applied(&mut self, end_lsn: Lsn) {
        self.applied = Some(self.applied.map_or(end_lsn, |a| a.max(end_lsn)));
    }

    /// The target made everything up to `lsn` durable.
    pub(super) fn durable(&mut self, lsn: Lsn) {
        self.durable = Some(self.durable.map_or(lsn, |d| d.max(lsn)));
    }

    /// The durable position, held back to `hold` (where the primary must be able to send
    /// from again), when it is past what was confirmed: the LSN to confirm now.
    pub(super) fn confirm(&mut self, hold: Option<Lsn>) -> Option<Lsn> {
        let durable = self.durable?;
        let lsn = hold.map_or(durable, |h| h.min(durable));
        if self.confirmed.is_some_and(|c| c >= lsn) {
            return None;
        }
        self.confirmed = Some(lsn);
        Some(lsn)
    }

    /// Whether a transaction handed to the target is not durable yet (and not held at start).
    pub(super) fn awaits_durability(&self) -> bool {
        match (self.applied, self.durable) {
            (Some(a), Some(d)) => a > d && self.stored.is_none_or(|p| a > p),
            (Some(a), None) => self.stored.is_none_or(|p| a > p),
            _ => false,
        }
    }

    /// Whether everything handed to the target is confirmed (what it held at start was
    /// confirmed when the stream started).
    pub(super) fn all_confirmed(&self) -> bool {
        self.applied.is_none_or(|a| self.confirmed.max(self.stored).is_some_and(|c| c >= a))
    }

    /// The target's stored progress at start.
    pub(super) fn stored(&self) -> Option<Lsn> {
        self.stored
    }

    /// End LSN of the last source transaction handed to the target.
    pub(super) fn last_applied(&self) -> Option<Lsn> {
        self.applied
    }

    /// The last LSN returned for confirmation.
    pub(super) fn confirmed(&self) -> Option<Lsn> {
        self.confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_is_held_when_its_commit_starts_before_the_stored_progress() {
        let p = Positions::new(Some(Lsn(0x108)));
        // Ending at the stored progress (0x100..0x108), and before it.
        assert!(p.holds(Lsn(0x100)));
        assert!(p.holds(Lsn(0x50)));
        // Starting at or after it.
        assert!(!p.holds(Lsn(0x108)));
        assert!(!p.holds(Lsn(0x200)));
        assert!(!Positions::new(None).holds(Lsn(0x100)));
    }

    #[test]
    fn positions_only_move_forward() {
        let mut p = Positions::new(None);
        p.applied(Lsn(0x200));
        p.applied(Lsn(0x100));
        assert_eq!(p.last_applied(), Some(Lsn(0x200)));
        p.durable(Lsn(0x200));
        p.durable(Lsn(0x100));
        assert_eq!(p.confirm(None), Some(Lsn(0x200)));
        // Nothing newer: nothing to confirm, and a hold below never takes it back.
        assert_eq!(p.confirm(None), None);
        assert_eq!(p.confirm(Some(Lsn(0x50))), None);
        assert_eq!(p.confirmed(), Some(Lsn(0x200)));
    }

    #[test]
    fn a_hold_keeps_the_confirmation_back() {
        let mut p = Positions::new(None);
        p.applied(Lsn(0x300));
        p.durable(Lsn(0x300));
        assert_eq!(p.confirm(Some(Lsn(0x100))), Some(Lsn(0x100)));
        assert!(!p.all_confirmed());
        assert_eq!(p.confirm(None), Some(Lsn(0x300)));
        assert!(p.all_confirmed());
    }

    #[test]
    fn what_the_target_held_at_start_needs_no_confirmation() {
        let mut p = Positions::new(Some(Lsn(0x108)));
        assert!(p.all_confirmed());
        assert!(!p.awaits_durability());
        p.applied(Lsn(0x208));
        assert!(p.awaits_durability());
        assert!(!p.all_confirmed());
        p.durable(Lsn(0x208));
        assert!(!p.awaits_durability());
    }
}
