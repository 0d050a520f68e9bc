//! Streamed transactions (Stream Start/Stop/Commit/Abort) on a target without a second
//! session: buffered per transaction and applied at their Stream Commit.

use super::*;

#[tokio::test]
async fn a_streamed_transaction_is_applied_at_its_commit_after_those_committed_before() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "s1")]),
        txn(1, 0x100, vec![insert(None, U, "1")]),
        stream_block(9, false, vec![insert(Some(9), T, "s2")]),
        vec![stream_commit(9, 0x200)],
    ];
    assert_eq!(feed(&mut a, msgs.concat()).await, []);
    assert_eq!(
        log.take(),
        [
            "fork -> none",
            "begin 1 at 0/100",
            "insert u 1",
            "commit 1 end 0/108",
            "begin 9 at 0/200 streamed",
            "insert t s1",
            "insert t s2",
            "commit 9 end 0/208",
        ]
    );
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x208)));
    assert!(a.is_quiescent());
}

#[tokio::test]
async fn a_target_without_a_second_session_is_asked_for_one_once() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_commit(9, 0x100)],
        stream_block(10, true, vec![insert(Some(10), T, "b")]),
        vec![stream_commit(10, 0x200)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> none",
            "begin 9 at 0/100 streamed",
            "insert t a",
            "commit 9 end 0/108",
            "begin 10 at 0/200 streamed",
            "insert t b",
            "commit 10 end 0/208",
        ]
    );
    assert_eq!(a.stats().speculated_txns, 0);
}

#[tokio::test]
async fn a_streamed_transaction_aborted_on_the_source_never_reaches_the_target() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_abort(9, 9)],
        txn(1, 0x100, vec![insert(None, U, "1")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        ["fork -> none", "begin 1 at 0/100", "insert u 1", "commit 1 end 0/108"]
    );
    assert_eq!(a.stats().aborted_txns, 1);
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x108)));
    assert!(a.is_quiescent());
}

#[tokio::test]
async fn a_subtransaction_abort_drops_its_changes_and_all_after_them() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(
            9,
            true,
            vec![insert(Some(9), T, "a"), insert(Some(10), T, "b"), insert(Some(11), U, "c")],
        ),
        vec![stream_abort(9, 10)],
        // A subtransaction that changed nothing has nothing to drop.
        vec![stream_abort(9, 12)],
        stream_block(9, false, vec![insert(Some(9), T, "d"), insert(Some(13), U, "e")]),
        vec![stream_commit(9, 0x100)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> none",
            "begin 9 at 0/100 streamed",
            "insert t a",
            "insert t d",
            "insert u e",
            "commit 9 end 0/108",
        ]
    );
}

#[tokio::test]
async fn a_spilled_streamed_transaction_is_replayed_whole() {
    let cfg = ApplierConfig { spill_memory_limit: 64, ..cfg() };
    let (mut a, log) = described(Script::default(), cfg).await;
    let rows: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let mut msgs = stream_block(9, true, rows.iter().map(|r| insert(Some(9), T, r)).collect());
    msgs.push(stream_commit(9, 0x100));
    feed(&mut a, msgs).await;
    assert_eq!(a.stats().spilled_txns, 1);
    let mut expected = vec!["fork -> none".to_owned(), "begin 9 at 0/100 streamed".to_owned()];
    expected.extend(rows.iter().map(|r| format!("insert t {r}")));
    expected.push("commit 9 end 0/108".to_owned());
    assert_eq!(log.take(), expected);
}

#[tokio::test]
async fn relations_sent_in_a_committed_streamed_transaction_serve_later_transactions() {
    let (mut a, log) = start(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![relation(Some(9), T, "t"), insert(Some(9), T, "a")]),
        vec![stream_commit(9, 0x100)],
        // pgoutput counts the relation as sent once that transaction committed.
        txn(1, 0x200, vec![insert(None, T, "b")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> none",
            "begin 9 at 0/100 streamed",
            "relation t",
            "insert t a",
            "commit 9 end 0/108",
            "begin 1 at 0/200",
            "insert t b",
            "commit 1 end 0/208",
        ]
    );
}

#[tokio::test]
async fn relations_sent_in_an_aborted_streamed_transaction_are_forgotten() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![relation(Some(9), T, "t_renamed"), insert(Some(9), T, "a")]),
        vec![stream_abort(9, 9)],
        txn(1, 0x100, vec![insert(None, T, "b")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        ["fork -> none", "begin 1 at 0/100", "insert t b", "commit 1 end 0/108"]
    );
}

#[tokio::test]
async fn a_relation_described_after_a_streamed_one_stays_when_that_stream_commits() {
    let (mut a, log) = start(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![relation(Some(9), T, "t_old"), insert(Some(9), T, "a")]),
        // The table was renamed, and a later transaction describes it anew.
        vec![relation(None, T, "t_new")],
        txn(1, 0x100, vec![insert(None, T, "b")]),
        vec![stream_commit(9, 0x200)],
        txn(2, 0x300, vec![insert(None, T, "c")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> none",
            "relation t_new",
            "begin 1 at 0/100",
            "insert t_new b",
            "commit 1 end 0/108",
            // The streamed transaction's changes keep the description they were sent with.
            "begin 9 at 0/200 streamed",
            "relation t_old",
            "insert t_old a",
            "commit 9 end 0/208",
            "begin 2 at 0/300",
            "insert t_new c",
            "commit 2 end 0/308",
        ]
    );
}

#[tokio::test]
async fn a_non_transactional_message_in_a_stream_block_is_passed_on_at_once() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![message(Some(9), false, "ping"), message(Some(9), true, "tx")]),
        vec![stream_commit(9, 0x100)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> none",
            "non-transactional message ping",
            "begin 9 at 0/100 streamed",
            "message tx",
            "commit 9 end 0/108",
        ]
    );
}

#[tokio::test]
async fn a_streamed_transaction_the_target_has_is_skipped_at_its_commit() {
    let script = Script { progress: Some(lsn(0x108)), ..Script::default() };
    let (mut a, log) = described(script, cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_commit(9, 0x100)],
        stream_block(10, true, vec![insert(Some(10), T, "b")]),
        vec![stream_commit(10, 0x200)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        ["fork -> none", "begin 10 at 0/200 streamed", "insert t b", "commit 10 end 0/208",]
    );
    assert_eq!(a.stats().skipped_txns, 1);
}

#[tokio::test]
async fn a_streamed_transaction_prepared_is_applied_at_its_commit_prepared() {
    let (mut a, log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_prepare(9, "g1", 0x100)],
        txn(1, 0x200, vec![insert(None, U, "b")]),
        vec![commit_prepared(9, "g1", 0x300)],
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(
        log.take(),
        [
            "fork -> none",
            "begin 1 at 0/200",
            "insert u b",
            "commit 1 end 0/208",
            "begin 9 at 0/300 gid g1",
            "insert t a",
            "commit 9 end 0/308",
        ]
    );
    // The prepared transaction held the confirmation back until then.
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x308)));
}

#[tokio::test]
async fn a_streamed_transaction_prepared_holds_confirmation_at_its_prepare() {
    let (mut a, _log) = described(Script::default(), cfg()).await;
    let msgs = [
        stream_block(9, true, vec![insert(Some(9), T, "a")]),
        vec![stream_prepare(9, "g1", 0x100)],
        txn(1, 0x200, vec![insert(None, U, "b")]),
    ];
    feed(&mut a, msgs.concat()).await;
    assert_eq!(a.idle().await.unwrap(), Some(lsn(0x100)));
}
