//! The applier's state machine against a [`RecordingTarget`]: each test feeds pgoutput
//! messages and checks the exact target calls and the LSNs returned for confirmation.

mod speculation;
mod streaming;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgoutput_decoder::{LogicalMessage, Lsn};

use super::{Applier, ApplierConfig};
use crate::error::ApplyError;
use crate::target::Change;
use crate::testing::*;

const T: u32 = 1;
const U: u32 = 2;
const HOUR: Duration = Duration::from_secs(3600);

/// Nothing is flushed unless a test asks for it: no bound is reached, no delay passes.
fn cfg() -> ApplierConfig {
    ApplierConfig { max_batch_delay: HOUR, durability_poll: HOUR, ..ApplierConfig::default() }
}

/// An applier on a recording target (its `load_progress` call already taken from the log).
async fn start(script: Script, cfg: ApplierConfig) -> (Applier<RecordingTarget>, Log) {
    let (target, log) = RecordingTarget::new(script);
    let applier = Applier::new(target, cfg).await.unwrap();
    assert_eq!(log.take(), ["load_progress"]);
    (applier, log)
}

/// Relations `t` and `u` described, and that taken from the log.
async fn described(script: Script, cfg: ApplierConfig) -> (Applier<RecordingTarget>, Log) {
    let (mut a, log) = start(script, cfg).await;
    feed(&mut a, [relation(None, T, "t"), relation(None, U, "u")]).await;
    assert_eq!(log.take(), ["relation t", "relation u"]);
    (a, log)
}

/// Handles `msgs` in order; the LSNs `handle` returned to confirm.
async fn feed(
    a: &mut Applier<RecordingTarget>,
    msgs: impl IntoIterator<Item = LogicalMessage>,
) -> Vec<Lsn> {
    let mut confirmed = Vec::new();
    for m in msgs {
        confirmed.extend(a.handle(m).await.unwrap());
        // One definition of "nothing to do": a quiescent applier has nothing due either.
        assert!(!a.is_quiescent() || a.next_deadline().is_none());
    }
    confirmed
}

fn at(v: u64) -> Vec<Lsn> {
    vec![lsn(v)]
}

#[tokio::test]
async fn a_transaction_is_begun_changed_and_committed_on_the_target_in_order() {
    let (mut a, log) = start(Script::default(), cfg()).await;
    let msgs = [relation(None, T, "t")].into_iter().chain(txn(
        7,
        0x100,
        vec![
            insert(None, T, "1"),
            delete(None, T, "2"),
            truncate(None, &[T]),
            message(None, true, "note"),
        ],
    ));
    assert_eq!(feed(&mut a, msgs).await, []);
    assert_eq!(
        log.take(),
        [
            "relation t",
            "begin 7 at 0/100",
            "insert t 1",
            "delete t 2",
            "truncate t",
            "message note",
            "commit 7 end 0/108",
        ]
    );
    assert_eq!(a.last_applied(), Some(lsn(0x108)));
    assert_eq!(a.stats().changes, 4);
}

#[tokio::test]
async fn commits_are_grouped_until_the_stream_goes_idle() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs =
        [txn(1, 0x100, vec![insert(None, T, "1")]), txn(2, 0x200, vec![insert(None, U, "2")])];
    assert_eq!(feed(&mut a, msgs.concat()).await, []);
    assert_eq!(
        log.take(),
        [
            "begin 1 at 0/100",
            "insert t 1",
            "commit 1 end 0/108",
            "begin 2 at 0/200",
            "insert u 2",
            "commit 2 end 0/208",
        ]
    );
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x208)));
    assert_eq!(log.take(), ["flush -> 0/208"]);
    assert_eq!(a.stats().flushes, 1);
    assert!(a.is_quiescent());
    // Nothing new: idle asks nothing of the target.
    assert_eq!(a.idle().await.unwrap(), None);
    assert_eq!(log.take(), Vec::<String>::new());
}

#[tokio::test]
async fn inside_a_transaction_idle_and_flush_neither_flush_nor_confirm() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    feed(&mut a, txn(1, 0x100, vec![insert(None, T, "1")])).await;
    feed(&mut a, [begin(2, 0x200), insert(None, T, "2")]).await;
    log.take();
    assert_eq!(a.idle().await.unwrap(), None);
    assert_eq!(a.flush().await.unwrap(), None);
    assert_eq!(log.take(), Vec::<String>::new());
    assert_eq!(feed(&mut a, [commit(0x200, 0x208)]).await, []);
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x208)));
    assert_eq!(log.take(), ["commit 2 end 0/208", "flush -> 0/208"]);
}

#[tokio::test]
async fn max_batch_rows_flushes_at_the_commit_that_reaches_it_never_inside_a_transaction() {
    let (mut a, log) =
        described(Script::default(), ApplierConfig { max_batch_rows: 2, ..cfg() }).await;
    let big = txn(1, 0x100, vec![insert(None, T, "1"), insert(None, T, "2"), insert(None, T, "3")]);
    assert_eq!(feed(&mut a, big).await, at(0x108));
    assert_eq!(
        log.take(),
        [
            "begin 1 at 0/100",
            "insert t 1",
            "insert t 2",
            "insert t 3",
            "commit 1 end 0/108",
            "flush -> 0/108",
        ]
    );
    // The count starts again after a flush: one row is below the bound.
    assert_eq!(feed(&mut a, txn(2, 0x200, vec![insert(None, T, "4")])).await, []);
    assert_eq!(feed(&mut a, txn(3, 0x300, vec![insert(None, T, "5")])).await, at(0x308));
    assert_eq!(
        log.take(),
        [
            "begin 2 at 0/200",
            "insert t 4",
            "commit 2 end 0/208",
            "begin 3 at 0/300",
            "insert t 5",
            "commit 3 end 0/308",
            "flush -> 0/308",
        ]
    );
}

#[tokio::test]
async fn max_batch_bytes_flushes_at_the_commit_that_reaches_it() {
    let LogicalMessage::Insert(one) = insert(None, T, "1") else { unreachable!() };
    let row_bytes =
        Change::Insert { rel: std::sync::Arc::new(rel_t()), new: one.new }.approx_bytes();
    let cfg = ApplierConfig { max_batch_bytes: row_bytes + 1, ..cfg() };
    let (mut a, log) = described(Script::default(), cfg).await;
    assert_eq!(feed(&mut a, txn(1, 0x100, vec![insert(None, T, "1")])).await, []);
    assert_eq!(feed(&mut a, txn(2, 0x200, vec![insert(None, T, "2")])).await, at(0x208));
    assert_eq!(
        log.take(),
        [
            "begin 1 at 0/100",
            "insert t 1",
            "commit 1 end 0/108",
            "begin 2 at 0/200",
            "insert t 2",
            "commit 2 end 0/208",
            "flush -> 0/208",
        ]
    );
}

fn rel_t() -> pgoutput_decoder::Relation {
    let LogicalMessage::Relation(r) = relation(None, T, "t") else { unreachable!() };
    r
}

#[tokio::test]
async fn a_commit_as_old_as_max_batch_delay_is_flushed_at_once() {
    let cfg = ApplierConfig { max_batch_delay: Duration::ZERO, ..cfg() };
    let (mut a, log) = described(Script::default(), cfg).await;
    assert_eq!(feed(&mut a, txn(1, 0x100, vec![insert(None, T, "1")])).await, at(0x108));
    assert_eq!(feed(&mut a, txn(2, 0x200, vec![insert(None, T, "2")])).await, at(0x208));
    assert_eq!(
        log.take(),
        [
            "begin 1 at 0/100",
            "insert t 1",
            "commit 1 end 0/108",
            "flush -> 0/108",
            "begin 2 at 0/200",
            "insert t 2",
            "commit 2 end 0/208",
            "flush -> 0/208",
        ]
    );
}

#[tokio::test]
async fn the_deadline_is_the_oldest_unflushed_commit_plus_max_batch_delay() {
    let (mut a, _log) = described(Script::default(), cfg()).await;
    assert_eq!(a.next_deadline(), None);
    let before = Instant::now();
    feed(&mut a, txn(1, 0x100, vec![insert(None, T, "1")])).await;
    let after = Instant::now();
    feed(&mut a, txn(2, 0x200, vec![insert(None, T, "2")])).await;
    let deadline = a.next_deadline().unwrap();
    assert!(deadline >= before + HOUR && deadline <= after + HOUR, "the first commit's");
    a.idle().await.unwrap();
    assert_eq!(a.next_deadline(), None, "everything flushed is durable");
}

#[tokio::test]
async fn an_lsn_is_confirmed_once_it_is_durable_and_only_once() {
    let cfg = ApplierConfig { durability_poll: Duration::ZERO, ..cfg() };
    let (mut a, log) = described(Script::default(), cfg).await;
    let msgs =
        [txn(1, 0x100, vec![insert(None, T, "1")]), txn(2, 0x200, vec![insert(None, T, "2")])];
    feed(&mut a, msgs.concat()).await;
    log.take();
    // The target's asynchronous commit has reached only the first transaction.
    log.set_durable_cap(Some(lsn(0x108)));
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x108)));
    assert!(!a.is_quiescent());
    // Polled again: nothing new is durable, nothing is confirmed twice.
    assert_eq!(a.idle().await.unwrap(), None);
    log.set_durable_cap(None);
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x208)));
    assert!(a.is_quiescent());
    // All durable: no more polling.
    assert_eq!(a.idle().await.unwrap(), None);
    assert_eq!(log.take(), ["flush -> 0/108", "flush -> 0/108", "flush -> 0/208"]);
    assert_eq!(a.confirmed(), Some(lsn(0x208)));
}

#[tokio::test]
async fn durability_is_polled_no_more_often_than_durability_poll() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    feed(&mut a, txn(1, 0x100, vec![insert(None, T, "1")])).await;
    log.take();
    log.set_durable_cap(Some(Lsn::ZERO));
    let before = Instant::now();
    assert_eq!(a.idle().await.unwrap(), None);
    assert_eq!(a.idle().await.unwrap(), None);
    assert_eq!(log.take(), ["flush -> none"], "the second idle is before the next poll");
    let deadline = a.next_deadline().unwrap();
    assert!(deadline >= before + HOUR, "the next poll");
}

#[tokio::test]
async fn a_restart_skips_transactions_ending_at_or_before_the_stored_progress() {
    let script = Script { progress: Some(lsn(0x108)), ..Script::default() };
    let (mut a, log) = start(script, cfg()).await;
    assert_eq!(a.start_progress(), Some(lsn(0x108)));
    let msgs = [
        vec![relation(None, T, "t")],
        // Ends at the stored progress: the target has it. Its relation is cached, not sent.
        txn(1, 0x100, vec![relation(None, U, "u"), insert(None, U, "1")]),
        // Its commit record starts where the stored one ended: new.
        txn(2, 0x108, vec![insert(None, U, "2")]),
    ];
    assert_eq!(feed(&mut a, msgs.concat()).await, []);
    assert_eq!(log.take(), ["relation t", "begin 2 at 0/108", "insert u 2", "commit 2 end 0/110"]);
    assert_eq!((a.stats().skipped_txns, a.stats().applied_txns), (1, 1));
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x110)));
}

#[tokio::test]
async fn a_restarted_applier_is_quiescent_at_its_stored_progress() {
    let script = Script { progress: Some(lsn(0x108)), ..Script::default() };
    let (mut a, log) = start(script, cfg()).await;
    assert_eq!(a.last_applied(), Some(lsn(0x108)));
    assert!(a.is_quiescent());
    assert_eq!(a.next_deadline(), None);
    feed(&mut a, txn(1, 0x100, vec![])).await;
    assert!(a.is_quiescent(), "a skipped transaction leaves nothing to confirm");
    assert_eq!(a.idle().await.unwrap(), None);
    assert_eq!(log.take(), Vec::<String>::new());
    assert_eq!(a.confirmed(), None);
}

#[tokio::test]
async fn messages_out_of_protocol_order_are_errors() {
    let cases: [(&str, Vec<LogicalMessage>, &str); 6] = [
        ("Commit", vec![commit(0x100, 0x108)], "outside a transaction"),
        ("Stream Stop", vec![LogicalMessage::StreamStop], "outside a stream block"),
        ("Begin", vec![begin(1, 0x100), begin(2, 0x200)], "inside transaction 1"),
        ("Insert", vec![insert(None, T, "1")], "outside a transaction"),
        ("Begin", vec![stream_start(9, true), begin(1, 0x100)], "inside a stream block"),
        ("Stream Commit", vec![begin(1, 0x100), stream_commit(9, 0x200)], "inside transaction 1"),
    ];
    for (name, msgs, state) in cases {
        let (mut a, _log) = described(Script::default(), cfg()).await;
        let (last, before) = msgs.split_last().unwrap();
        feed(&mut a, before.to_vec()).await;
        match a.handle(last.clone()).await {
            Err(ApplyError::Protocol { message, state: s }) => {
                assert_eq!((message, s.as_str()), (name, state));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_change_of_a_relation_never_described_is_an_error() {
    let (mut a, _log) = start(Script::default(), cfg()).await;
    feed(&mut a, [begin(1, 0x100)]).await;
    let err = a.handle(insert(None, 99, "1")).await.unwrap_err();
    assert!(matches!(err, ApplyError::UnknownRelation { rel_id: 99 }), "{err:?}");
}

#[tokio::test]
async fn a_non_transactional_message_is_passed_on_between_transactions() {
    let (mut a, log) = start(Script::default(), cfg()).await;
    assert_eq!(feed(&mut a, [message(None, false, "ping")]).await, []);
    assert_eq!(log.take(), ["non-transactional message ping"]);
    assert!(a.is_quiescent());
}

// Two-phase commit.

#[tokio::test]
async fn a_prepared_transaction_is_applied_at_its_commit_prepared() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        prepared(5, "g1", 0x100, vec![relation(None, T, "t"), insert(None, T, "p")]),
        txn(6, 0x200, vec![insert(None, U, "x")]),
        vec![commit_prepared(5, "g1", 0x300)],
    ];
    assert_eq!(feed(&mut a, msgs.concat()).await, []);
    assert_eq!(
        log.take(),
        [
            "begin 6 at 0/200",
            "insert u x",
            "commit 6 end 0/208",
            "begin 5 at 0/300 gid g1",
            "relation t",
            "insert t p",
            "commit 5 end 0/308",
        ]
    );
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x308)));
}

#[tokio::test]
async fn a_rolled_back_prepared_transaction_never_reaches_the_target() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        prepared(5, "g1", 0x100, vec![insert(None, T, "p")]),
        vec![rollback_prepared(5, "g1", 0x100, 0x200)],
        txn(6, 0x300, vec![insert(None, U, "x")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(log.take(), ["begin 6 at 0/300", "insert u x", "commit 6 end 0/308"]);
    assert_eq!(a.stats().aborted_txns, 1);
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x308)));
    assert!(a.is_quiescent());
}

#[tokio::test]
async fn confirmation_stays_at_a_held_prepare_until_its_commit_prepared() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        prepared(5, "g1", 0x100, vec![insert(None, T, "p")]),
        txn(6, 0x200, vec![insert(None, U, "x")]),
    ];
    feed(&mut a, msgs.concat()).await;
    // Durable past the PREPARE, but only our buffer holds the prepared transaction: confirming
    // past it would stop the primary from sending it again after a restart.
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x100)));
    assert!(!a.is_quiescent());
    feed(&mut a, [commit_prepared(5, "g1", 0x300)]).await;
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x308)));
    assert_eq!(
        log.take(),
        [
            "begin 6 at 0/200",
            "insert u x",
            "commit 6 end 0/208",
            "flush -> 0/208",
            "begin 5 at 0/300 gid g1",
            "insert t p",
            "commit 5 end 0/308",
            "flush -> 0/308",
        ]
    );
}

#[tokio::test]
async fn rollback_prepared_releases_the_held_confirmation() {
    let (mut a, _log) = described(Script::default(), cfg()).await;
    let msgs = [
        prepared(5, "g1", 0x100, vec![insert(None, T, "p")]),
        txn(6, 0x200, vec![insert(None, U, "x")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x100)));
    assert_eq!(feed(&mut a, [rollback_prepared(5, "g1", 0x100, 0x300)]).await, [lsn(0x208)]);
    assert_eq!(a.idle().await.unwrap(), None);
    assert!(a.is_quiescent());
}

#[tokio::test]
async fn a_restart_applies_a_prepared_transaction_sent_again() {
    // Before the restart the transaction at 0/200 was applied; the prepare at 0/100 held the
    // confirmation back, so the primary sends it again.
    let script = Script { progress: Some(lsn(0x208)), ..Script::default() };
    let (mut a, log) = described(script, cfg()).await;
    let msgs = [
        prepared(5, "g1", 0x100, vec![insert(None, T, "p")]),
        txn(6, 0x200, vec![insert(None, U, "x")]),
        vec![commit_prepared(5, "g1", 0x300)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(log.take(), ["begin 5 at 0/300 gid g1", "insert t p", "commit 5 end 0/308"]);
    assert_eq!(a.stats().skipped_txns, 1);
}

#[tokio::test]
async fn commit_prepared_without_its_prepare_is_an_error_unless_the_target_has_it() {
    let script = Script { progress: Some(lsn(0x308)), ..Script::default() };
    let (mut a, log) = described(script, cfg()).await;
    // Committed before the stored progress: applied in an earlier run.
    assert_eq!(feed(&mut a, [commit_prepared(5, "g1", 0x300)]).await, []);
    assert_eq!(a.stats().skipped_txns, 1);
    let err = a.handle(commit_prepared(6, "g2", 0x400)).await.unwrap_err();
    assert!(
        matches!(&err, ApplyError::UnknownPrepared { gid, end_lsn } if gid == "g2" && *end_lsn == lsn(0x408)),
        "{err:?}"
    );
    assert_eq!(log.take(), Vec::<String>::new());
}

// Table floors: tables copied again under a snapshot.

fn floors(entries: &[(&str, u64)]) -> HashMap<(String, String), Lsn> {
    entries.iter().map(|&(t, l)| (("public".to_owned(), t.to_owned()), lsn(l))).collect()
}

#[tokio::test]
async fn changes_to_a_table_in_transactions_committed_before_its_floor_are_skipped() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    a.set_table_floors(floors(&[("t", 0x200)]));
    let msgs = [
        txn(1, 0x100, vec![insert(None, T, "1"), insert(None, U, "2"), delete(None, T, "3")]),
        // Committed at the floor: not in the copy.
        txn(2, 0x200, vec![insert(None, T, "4")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "begin 1 at 0/100",
            "insert u 2",
            "commit 1 end 0/108",
            "begin 2 at 0/200",
            "insert t 4",
            "commit 2 end 0/208",
        ]
    );
    assert_eq!(a.floored_changes(), 2);
    assert_eq!(a.stats().changes, 2);
}

#[tokio::test]
async fn a_truncate_before_a_floor_loses_the_floored_table_only() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    a.set_table_floors(floors(&[("t", 0x200)]));
    let msgs = [
        txn(1, 0x100, vec![truncate(None, &[T, U]), truncate(None, &[T])]),
        txn(2, 0x300, vec![truncate(None, &[T, U])]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "begin 1 at 0/100",
            "truncate u",
            "commit 1 end 0/108",
            "begin 2 at 0/300",
            "truncate t,u",
            "commit 2 end 0/308",
        ]
    );
    assert_eq!(a.floored_changes(), 1);
}

#[tokio::test]
async fn floors_judge_streamed_and_prepared_transactions_by_their_commit() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    a.set_table_floors(floors(&[("t", 0x200)]));
    let msgs = [
        // Streamed, committed before the floor.
        stream_block(9, true, vec![insert(Some(9), T, "s")]),
        vec![stream_commit(9, 0x100)],
        // Prepared before the floor, committed after it: the copy did not see it.
        prepared(5, "g1", 0x150, vec![insert(None, T, "p")]),
        vec![commit_prepared(5, "g1", 0x250)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "begin 9 at 0/100 streamed",
            "commit 9 end 0/108",
            "begin 5 at 0/250 gid g1",
            "insert t p",
            "commit 5 end 0/258",
        ]
    );
    assert_eq!(a.floored_changes(), 1);
}
