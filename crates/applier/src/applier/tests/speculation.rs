//! A streamed transaction applied on a second target session while it arrives
//! (`Target::fork`), and every way back to replaying it from its spill at its commit.

use super::*;

fn forking() -> Script {
    Script { forks: true, ..Script::default() }
}

/// `n` changes of streamed transaction 9, each in a subtransaction of its own (xid 100 + i).
fn in_subtransactions(n: u32) -> Vec<LogicalMessage> {
    (0..n).map(|i| insert(Some(100 + i), T, &i.to_string())).collect()
}

#[tokio::test]
async fn the_first_streamed_transaction_is_applied_on_a_fork_as_it_arrives() {
    let (mut a, log) = described(forking(), cfg()).await;
    let first = stream_block(9, true, vec![relation(Some(9), T, "t"), insert(Some(9), T, "a")]);
    assert_eq!(feed(&mut a, first).await, []);
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: relation t",
            "fork1: insert t a",
        ]
    );
    feed(&mut a, stream_block(9, false, vec![insert(Some(9), T, "b")])).await;
    assert_eq!(log.take(), ["fork1: insert t b"]);
    // Its commit is durable when the fork's flush returns: that is confirmed at once.
    assert_eq!(feed(&mut a, [stream_commit(9, 0x100)]).await, at(0x108));
    assert_eq!(log.take(), ["fork1: commit 9 end 0/108", "fork1: flush -> 0/108"]);
    assert_eq!(log.forks_alive(), 0);
    assert_eq!((a.stats().speculated_txns, a.stats().applied_txns, a.stats().changes), (1, 1, 2));
    assert!(a.is_quiescent());
}

#[tokio::test]
async fn the_main_session_commits_before_each_chunk_applied_ahead_and_before_its_commit() {
    let (mut a, log) = described(forking(), cfg()).await;
    let msgs = [
        txn(1, 0x100, vec![insert(None, U, "1")]),
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        txn(2, 0x200, vec![insert(None, U, "2")]),
        stream_block(9, false, vec![insert(Some(9), T, "b")]),
        txn(3, 0x300, vec![insert(None, U, "3")]),
        vec![stream_commit(9, 0x400)],
    ];
    assert_eq!(feed(&mut a, msgs.concat()).await, [lsn(0x108), lsn(0x208), lsn(0x408)]);
    assert_eq!(
        log.take(),
        [
            "begin 1 at 0/100",
            "insert u 1",
            "commit 1 end 0/108",
            "flush -> 0/108",
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "begin 2 at 0/200",
            "insert u 2",
            "commit 2 end 0/208",
            "flush -> 0/208",
            "fork1: insert t b",
            "begin 3 at 0/300",
            "insert u 3",
            "commit 3 end 0/308",
            "flush -> 0/308",
            "fork1: commit 9 end 0/408",
            "fork1: flush -> 0/408",
        ]
    );
}

#[tokio::test]
async fn only_one_streamed_transaction_is_applied_ahead_at_a_time() {
    let (mut a, log) = described(forking(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        stream_block(10, true, vec![insert(Some(10), U, "b")]),
        vec![stream_commit(10, 0x100)],
        vec![stream_commit(9, 0x200)],
    ];
    assert_eq!(feed(&mut a, msgs.concat()).await, at(0x208));
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "begin 10 at 0/100 streamed",
            "insert u b",
            "commit 10 end 0/108",
            "flush -> 0/108",
            "fork1: commit 9 end 0/208",
            "fork1: flush -> 0/208",
        ]
    );
}

#[tokio::test]
async fn a_transaction_aborted_on_the_source_is_rolled_back_on_its_fork() {
    let (mut a, log) = described(forking(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_abort(9, 9)],
        // The next streamed transaction gets a session of its own.
        stream_block(10, true, vec![insert(Some(10), T, "b")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "fork1: rolled back",
            "fork -> fork2",
            "fork2: begin 10 at 0/0 streamed",
            "fork2: insert t b",
        ]
    );
    assert_eq!(a.stats().aborted_txns, 1);
}

#[tokio::test]
async fn a_subtransaction_abort_returns_the_fork_to_its_savepoint() {
    let (mut a, log) = described(forking(), cfg()).await;
    let msgs = [
        stream_block(
            9,
            true,
            vec![insert(Some(9), T, "a"), insert(Some(10), T, "b"), insert(Some(11), T, "c")],
        ),
        vec![stream_abort(9, 10)],
        vec![stream_abort(9, 12)],
        stream_block(9, false, vec![insert(Some(9), T, "d"), insert(Some(11), T, "e")]),
        vec![stream_commit(9, 0x100)],
    ];
    assert_eq!(feed(&mut a, msgs.concat()).await, at(0x108));
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "fork1: savepoint 10",
            "fork1: insert t b",
            "fork1: savepoint 11",
            "fork1: insert t c",
            // Savepoint 11 went with it: subtransaction 11's next change sets it again.
            "fork1: rollback to 10",
            "fork1: insert t d",
            "fork1: savepoint 11",
            "fork1: insert t e",
            "fork1: commit 9 end 0/108",
            "fork1: flush -> 0/108",
        ]
    );
}

#[tokio::test]
async fn beyond_32_subtransactions_the_transaction_is_left_to_its_spill() {
    let script = Script { max_subtransactions: Some(32), ..forking() };
    let (mut a, log) = described(script, cfg()).await;
    let mut msgs = stream_block(9, true, in_subtransactions(33));
    msgs.push(stream_commit(9, 0x100));
    assert_eq!(feed(&mut a, msgs).await, []);
    let mut expected = vec!["fork -> fork1".to_owned(), "fork1: begin 9 at 0/0 streamed".into()];
    for i in 0..32 {
        expected.push(format!("fork1: savepoint {}", 100 + i));
        expected.push(format!("fork1: insert t {i}"));
    }
    expected.push("fork1: rolled back".into());
    expected.push("begin 9 at 0/100 streamed".into());
    expected.extend((0..33).map(|i| format!("insert t {i}")));
    expected.push("commit 9 end 0/108".into());
    assert_eq!(log.take(), expected);
    assert_eq!(a.stats().speculated_txns, 0);
}

#[tokio::test]
async fn a_fork_that_fails_leaves_the_transaction_to_its_spill_and_the_next_is_tried_again() {
    let script = Script { fork_fails_on: Some("u".into()), ..forking() };
    let (mut a, log) = described(script, cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a"), insert(Some(9), U, "b")]),
        stream_block(9, false, vec![insert(Some(9), T, "c")]),
        vec![stream_commit(9, 0x100)],
        stream_block(10, true, vec![insert(Some(10), T, "d")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "fork1: insert u b",
            "fork1: rolled back",
            "begin 9 at 0/100 streamed",
            "insert t a",
            "insert u b",
            "insert t c",
            "commit 9 end 0/108",
            // The main session commits before the next transaction is applied ahead.
            "flush -> 0/108",
            "fork -> fork2",
            "fork2: begin 10 at 0/0 streamed",
            "fork2: insert t d",
        ]
    );
}

#[tokio::test]
async fn a_fork_that_cannot_be_opened_leaves_the_transaction_to_its_spill() {
    let script = Script { fork_fails: true, ..forking() };
    let (mut a, log) = described(script, cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_commit(9, 0x100)],
        stream_block(10, true, vec![insert(Some(10), T, "b")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> error",
            "begin 9 at 0/100 streamed",
            "insert t a",
            "commit 9 end 0/108",
            "flush -> 0/108",
            // An error may pass: the next streamed transaction asks again.
            "fork -> error",
        ]
    );
}

#[tokio::test]
async fn a_stream_prepare_rolls_the_fork_back_and_commit_prepared_replays_the_spill() {
    let (mut a, log) = described(forking(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_prepare(9, "g1", 0x100)],
        vec![commit_prepared(9, "g1", 0x200)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "fork1: rolled back",
            "begin 9 at 0/200 gid g1",
            "insert t a",
            "commit 9 end 0/208",
        ]
    );
}

#[tokio::test]
async fn a_transaction_applied_ahead_that_the_target_has_is_rolled_back_at_its_commit() {
    let script = Script { progress: Some(lsn(0x108)), ..forking() };
    let (mut a, log) = described(script, cfg()).await;
    let mut msgs = stream_block(9, true, vec![insert(Some(9), T, "a")]);
    msgs.push(stream_commit(9, 0x100));
    assert_eq!(feed(&mut a, msgs).await, []);
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "fork1: rolled back",
        ]
    );
    assert_eq!(a.stats().skipped_txns, 1);
    assert!(a.is_quiescent());
}

#[tokio::test]
async fn table_floors_stop_streamed_transactions_from_being_applied_ahead() {
    let (mut a, log) = described(forking(), cfg()).await;
    a.set_table_floors(floors(&[("u", 0x50)]));
    let mut msgs = stream_block(9, true, vec![insert(Some(9), T, "a")]);
    msgs.push(stream_commit(9, 0x100));
    feed(&mut a, msgs).await;
    assert_eq!(log.take(), ["begin 9 at 0/100 streamed", "insert t a", "commit 9 end 0/108"]);
}

// A main session that waits while a transaction is applied ahead. The clock is tokio's
// paused test clock: the lock checks and the patience pass without real waiting.

/// Transaction 9 applied ahead on fork1, then a main-session transaction whose change to `u`
/// waits (as the script says).
fn main_session_waits() -> Vec<LogicalMessage> {
    [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        txn(1, 0x100, vec![insert(None, U, "1")]),
        vec![stream_commit(9, 0x200)],
        stream_block(10, true, vec![insert(Some(10), T, "b")]),
    ]
    .concat()
}

/// What follows a given-up speculation: transaction 9 from its spill at its commit, and
/// transaction 10 not applied ahead.
const REPLAYED_AT_COMMIT: [&str; 4] =
    ["commit 1 end 0/108", "begin 9 at 0/200 streamed", "insert t a", "commit 9 end 0/208"];

#[tokio::test(start_paused = true)]
async fn a_main_session_waiting_for_a_lock_of_the_fork_rolls_the_fork_back() {
    let script =
        Script { main_waits_for_forks_on: Some("u".into()), fork_blocks_main: true, ..forking() };
    let (mut a, log) = described(script, cfg()).await;
    feed(&mut a, main_session_waits()).await;
    let mut expected = vec![
        "fork -> fork1",
        "fork1: begin 9 at 0/0 streamed",
        "fork1: insert t a",
        "begin 1 at 0/100",
        "insert u 1",
        // 100 ms into the wait the fork is asked, says yes, and is rolled back.
        "fork1: blocks parent 0? true",
        "fork1: rolled back",
    ];
    expected.extend(REPLAYED_AT_COMMIT);
    assert_eq!(log.take(), expected);
    assert_eq!(a.stats().speculated_txns, 0);
}

#[tokio::test(start_paused = true)]
async fn a_main_session_waiting_longer_than_the_patience_rolls_the_fork_back() {
    let script = Script { main_waits_for_forks_on: Some("u".into()), ..forking() };
    let cfg = ApplierConfig { speculation_patience: Duration::from_secs(1), ..cfg() };
    let (mut a, log) = described(script, cfg).await;
    feed(&mut a, main_session_waits()).await;
    let mut expected = vec![
        "fork -> fork1",
        "fork1: begin 9 at 0/0 streamed",
        "fork1: insert t a",
        "begin 1 at 0/100",
        "insert u 1",
        // Asked at 100 ms and every 250 ms after; given up at 1 s.
        "fork1: blocks parent 0? false",
        "fork1: blocks parent 0? false",
        "fork1: blocks parent 0? false",
        "fork1: blocks parent 0? false",
        "fork1: rolled back",
    ];
    expected.extend(REPLAYED_AT_COMMIT);
    assert_eq!(log.take(), expected);
}

#[tokio::test(start_paused = true)]
async fn a_main_session_that_is_merely_slow_keeps_the_fork() {
    let script =
        Script { main_slow_on: Some(("u".into(), Duration::from_millis(300))), ..forking() };
    let (mut a, log) = described(script, cfg()).await;
    let confirmed = feed(&mut a, main_session_waits()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> fork1",
            "fork1: begin 9 at 0/0 streamed",
            "fork1: insert t a",
            "begin 1 at 0/100",
            "insert u 1",
            "fork1: blocks parent 0? false",
            "commit 1 end 0/108",
            "flush -> 0/108",
            "fork1: commit 9 end 0/208",
            "fork1: flush -> 0/208",
            // The next streamed transaction is applied ahead too.
            "fork -> fork2",
            "fork2: begin 10 at 0/0 streamed",
            "fork2: insert t b",
        ]
    );
    assert_eq!(confirmed, at(0x208));
}
