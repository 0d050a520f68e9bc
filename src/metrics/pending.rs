//! Source transactions received but not yet confirmed applied, for the lag in seconds.
//!
//! The apply lag in seconds is the age of the oldest change that waits to be applied. A
//! change is known to wait from the moment its transaction's Begin arrives (it carries the
//! commit LSN and the commit time: pgoutput sends a transaction only once it committed) or,
//! for a transaction streamed while in progress, from its Stream Commit (before that it is not
//! committed on the source, so the replica is not behind for it). It stops waiting once the
//! position confirmed to the primary (what the target holds durably) passes its commit LSN.

use std::collections::VecDeque;

/// Commits closer together than this share one entry: the lag is then overstated by at most
/// this much, and a backlog of many small transactions needs few entries.
const RESOLUTION_MICROS: i64 = 10_000;
/// At most this many entries; beyond it new commits join the newest entry.
const MAX_ENTRIES: usize = 16_384;

/// Transactions received and not yet applied, oldest first, by commit LSN.
#[derive(Debug, Default)]
pub struct Pending {
    entries: VecDeque<Entry>,
    /// Commit time (Unix microseconds) of the newest transaction confirmed applied.
    last_applied: Option<i64>,
}

/// One or more consecutive commits.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The highest commit LSN among them.
    commit_lsn: u64,
    /// Their oldest commit time (Unix microseconds).
    oldest: i64,
    /// Their newest commit time.
    newest: i64,
}

impl Pending {
    /// A committed transaction whose changes are arriving: `commit_lsn` and `commit_time`
    /// (Unix microseconds) as the primary sent them. A transaction sent again after a reconnect
    /// (its commit LSN is not above the newest one known) is already counted.
    pub fn received(&mut self, commit_lsn: u64, commit_time: i64) {
        let full = self.entries.len() >= MAX_ENTRIES;
        match self.entries.back_mut() {
            Some(last) if commit_lsn <= last.commit_lsn => {}
            Some(last) if commit_time <= last.oldest.saturating_add(RESOLUTION_MICROS) || full => {
                last.commit_lsn = commit_lsn;
                last.oldest = last.oldest.min(commit_time);
                last.newest = last.newest.max(commit_time);
            }
            _ => self.entries.push_back(Entry {
                commit_lsn,
                oldest: commit_time,
                newest: commit_time,
            }),
        }
    }

    /// Everything before `confirmed` is durably applied: a transaction is done once the
    /// confirmed position (its end LSN or later) is past its commit LSN.
    pub fn confirmed(&mut self, confirmed: u64) {
        while let Some(first) = self.entries.front().copied() {
            if first.commit_lsn >= confirmed {
                break;
            }
            self.entries.pop_front();
            self.last_applied =
                Some(self.last_applied.map_or(first.newest, |t| t.max(first.newest)));
        }
    }

    /// Commit time of the oldest transaction that waits to be applied; `None` when none waits.
    pub fn oldest_waiting(&self) -> Option<i64> {
        self.entries.iter().map(|e| e.oldest).min()
    }

    /// Commit time of the newest transaction confirmed applied.
    pub fn last_applied(&self) -> Option<i64> {
        self.last_applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_waits_once_the_confirmed_position_passes_the_commit() {
        let mut p = Pending::default();
        assert_eq!(p.oldest_waiting(), None);
        p.received(100, 5_000_000);
        p.received(200, 9_000_000);
        assert_eq!(p.oldest_waiting(), Some(5_000_000));
        // The confirmed position equal to a commit LSN is the end of an earlier transaction.
        p.confirmed(100);
        assert_eq!(p.oldest_waiting(), Some(5_000_000));
        assert_eq!(p.last_applied(), None);
        p.confirmed(150);
        assert_eq!(p.oldest_waiting(), Some(9_000_000));
        assert_eq!(p.last_applied(), Some(5_000_000));
        p.confirmed(250);
        assert_eq!(p.oldest_waiting(), None);
        assert_eq!(p.last_applied(), Some(9_000_000));
    }

    #[test]
    fn transactions_sent_again_after_a_reconnect_count_once() {
        let mut p = Pending::default();
        p.received(100, 1_000_000);
        p.received(200, 2_000_000);
        p.received(100, 1_000_000);
        p.received(200, 2_000_000);
        p.confirmed(150);
        assert_eq!(p.oldest_waiting(), Some(2_000_000));
        p.confirmed(250);
        assert_eq!(p.oldest_waiting(), None);
    }

    #[test]
    fn close_commits_share_an_entry_without_hiding_the_oldest() {
        let mut p = Pending::default();
        for i in 0..1000u64 {
            // 1000 commits 1 ms apart: one entry per 10 ms.
            p.received(100 + i, 1_000_000 + i64::try_from(i).unwrap() * 1000);
        }
        assert!(p.entries.len() <= 101, "{}", p.entries.len());
        assert_eq!(p.oldest_waiting(), Some(1_000_000));
        p.confirmed(600);
        let oldest = p.oldest_waiting().unwrap();
        // The oldest waiting commit is 1_500_000; an entry may start up to 10 ms earlier.
        assert!((1_490_000..=1_500_000).contains(&oldest), "{oldest}");
        p.confirmed(2000);
        assert_eq!(p.oldest_waiting(), None);
        assert_eq!(p.last_applied(), Some(1_999_000));
    }
}
