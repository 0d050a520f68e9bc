//! Property tests: decode(encode(m)) == m for arbitrary messages, every strict
//! prefix and every extension of an encoding is rejected, decoding arbitrary or
//! mutated bytes never panics, and whatever decodes reads back column by column
//! (as many columns as the count says) and re-encodes to the same bytes.

use bytes::Bytes;
use pgoutput_decoder::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn ts() -> impl Strategy<Value = PgTimestamp> {
    any::<i64>().prop_map(PgTimestamp)
}

fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn column() -> impl Strategy<Value = ColumnValue> {
    prop_oneof![
        Just(ColumnValue::Null),
        Just(ColumnValue::UnchangedToast),
        bytes().prop_map(ColumnValue::Text),
        bytes().prop_map(ColumnValue::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    vec(column(), 0..8).prop_map(Tuple::new)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![tuple().prop_map(OldTuple::Key), tuple().prop_map(OldTuple::Full)]
}

fn xid() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(any::<u32>())
}

fn replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}

fn prepare() -> impl Strategy<Value = Prepare> {
    (any::<u8>(), lsn(), lsn(), ts(), any::<u32>(), name()).prop_map(
        |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| Prepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_time,
            xid,
            gid,
        },
    )
}

fn message() -> impl Strategy<Value = LogicalMessage> {
    prop_oneof![
        (lsn(), ts(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            LogicalMessage::Begin(Begin { final_lsn, commit_time, xid })
        }),
        (any::<u8>(), lsn(), lsn(), ts()).prop_map(|(flags, commit_lsn, end_lsn, commit_time)| {
            LogicalMessage::Commit(Commit { flags, commit_lsn, end_lsn, commit_time })
        }),
        (lsn(), name())
            .prop_map(|(commit_lsn, name)| LogicalMessage::Origin(Origin { commit_lsn, name })),
        (
            xid(),
            any::<u32>(),
            name(),
            name(),
            replica_identity(),
            vec(
                (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
                    |(is_key, name, type_oid, type_modifier)| RelationColumn {
                        is_key,
                        name,
                        type_oid,
                        type_modifier
                    }
                ),
                0..6
            )
        )
            .prop_map(|(xid, rel_id, namespace, name, replica_identity, columns)| {
                LogicalMessage::Relation(Relation {
                    xid,
                    rel_id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (xid(), any::<u32>(), name(), name()).prop_map(|(xid, type_oid, namespace, name)| {
            LogicalMessage::Type(TypeInfo { xid, type_oid, namespace, name })
        }),
        (xid(), any::<u32>(), tuple())
            .prop_map(|(xid, rel_id, new)| LogicalMessage::Insert(Insert { xid, rel_id, new })),
        (xid(), any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            |(xid, rel_id, old, new)| LogicalMessage::Update(Update { xid, rel_id, old, new })
        ),
        (xid(), any::<u32>(), old_tuple())
            .prop_map(|(xid, rel_id, old)| LogicalMessage::Delete(Delete { xid, rel_id, old })),
        (xid(), any::<bool>(), any::<bool>(), vec(any::<u32>(), 0..6)).prop_map(
            |(xid, cascade, restart_identity, rel_ids)| {
                LogicalMessage::Truncate(Truncate { xid, cascade, restart_identity, rel_ids })
            }
        ),
        (xid(), any::<bool>(), lsn(), name(), bytes()).prop_map(
            |(xid, transactional, lsn, prefix, content)| {
                LogicalMessage::Message(DecodingMessage {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content,
                })
            }
        ),
        (any::<u32>(), any::<bool>()).prop_map(|(xid, first_segment)| {
            LogicalMessage::StreamStart(StreamStart { xid, first_segment })
        }),
        Just(LogicalMessage::StreamStop),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), ts()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_time)| {
                LogicalMessage::StreamCommit(StreamCommit {
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                })
            }
        ),
        (any::<u32>(), any::<u32>(), proptest::option::of((lsn(), ts()))).prop_map(
            |(xid, subxid, abort)| {
                LogicalMessage::StreamAbort(StreamAbort {
                    xid,
                    subxid,
                    abort_lsn: abort.map(|a| a.0),
                    abort_time: abort.map(|a| a.1),
                })
            }
        ),
        (lsn(), lsn(), ts(), any::<u32>(), name()).prop_map(
            |(prepare_lsn, end_lsn, prepare_time, xid, gid)| {
                LogicalMessage::BeginPrepare(BeginPrepare {
                    prepare_lsn,
                    end_lsn,
                    prepare_time,
                    xid,
                    gid,
                })
            }
        ),
        prepare().prop_map(LogicalMessage::Prepare),
        prepare().prop_map(LogicalMessage::StreamPrepare),
        (any::<u8>(), lsn(), lsn(), ts(), any::<u32>(), name()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
                LogicalMessage::CommitPrepared(CommitPrepared {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                    xid,
                    gid,
                })
            }
        ),
        (any::<u8>(), lsn(), lsn(), ts(), ts(), any::<u32>(), name()).prop_map(
            |(flags, prepare_end_lsn, rollback_end_lsn, prepare_time, rollback_time, xid, gid)| {
                LogicalMessage::RollbackPrepared(RollbackPrepared {
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid,
                })
            }
        ),
    ]
}

/// The context a message must be decoded in: inside a stream block iff it carries
/// an xid (or is Stream Stop); parallel streaming iff Stream Abort has an LSN.
fn context_for(m: &LogicalMessage) -> DecodeContext {
    DecodeContext {
        proto_version: 4,
        in_stream: matches!(m, LogicalMessage::StreamStop) || m.stream_xid().is_some(),
        parallel_streaming: matches!(
            m,
            LogicalMessage::StreamAbort(StreamAbort { abort_lsn: Some(_), .. })
        ),
    }
}

/// The tuples of a decoded message.
fn tuples(m: &LogicalMessage) -> Vec<&Tuple> {
    match m {
        LogicalMessage::Insert(i) => vec![&i.new],
        LogicalMessage::Update(u) => u.old.iter().map(OldTuple::tuple).chain([&u.new]).collect(),
        LogicalMessage::Delete(d) => vec![d.old.tuple()],
        _ => vec![],
    }
}

/// Whatever decoded reads back completely: every column the count announces, the
/// borrowed and owned views agree, and the message re-encodes to `bytes`.
fn check_decoded(m: &LogicalMessage, bytes: &[u8]) -> Result<(), TestCaseError> {
    for t in tuples(m) {
        prop_assert_eq!(t.iter().count(), t.len());
        prop_assert_eq!(t.iter().len(), t.len());
        let values: Vec<ColumnValue> = t.values().collect();
        prop_assert_eq!(values.len(), t.len());
        for (i, (c, v)) in t.iter().zip(&values).enumerate() {
            prop_assert_eq!(c, v.as_column());
            prop_assert_eq!(t.get(i), Some(c));
        }
        prop_assert_eq!(t.get(t.len()), None);
        prop_assert_eq!(&Tuple::from_values(values), t);
        prop_assert_eq!(&Tuple::from_columns(t.iter()), t);
    }
    prop_assert_eq!(&m.to_bytes()[..], bytes);
    Ok(())
}

fn any_context() -> impl Strategy<Value = DecodeContext> {
    (1u32..=4, any::<bool>(), any::<bool>()).prop_map(|(proto_version, in_stream, parallel)| {
        DecodeContext { proto_version, in_stream, parallel_streaming: parallel }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_inverts_encode(m in message()) {
        let bytes = m.to_bytes();
        let ctx = context_for(&m);
        let decoded = LogicalMessage::decode(bytes.clone(), &ctx).unwrap();
        prop_assert_eq!(&decoded, &m);
        check_decoded(&decoded, &bytes)?;
        // Every strict prefix is rejected ...
        for len in 0..bytes.len() {
            prop_assert!(LogicalMessage::decode(bytes.slice(..len), &ctx).is_err(), "prefix {}", len);
        }
        // ... and so is any extension.
        let mut longer = bytes.to_vec();
        longer.push(0);
        let e = LogicalMessage::decode(Bytes::from(longer), &ctx).unwrap_err();
        prop_assert_eq!(e.kind(), &DecodeErrorKind::TrailingBytes { count: 1 });
    }

    #[test]
    fn tuples_read_back_their_values(values in vec(column(), 0..8), xid in xid()) {
        let t = Tuple::new(values.clone());
        prop_assert_eq!(t.len(), values.len());
        prop_assert_eq!(t.values().collect::<Vec<_>>(), values.clone());
        let m = LogicalMessage::Insert(Insert { xid, rel_id: 1, new: t });
        let bytes = m.to_bytes();
        let LogicalMessage::Insert(i) = LogicalMessage::decode(bytes.clone(), &context_for(&m)).unwrap()
        else {
            panic!("not an insert")
        };
        prop_assert_eq!(i.new.values().collect::<Vec<_>>(), values.clone());
        let borrowed: Vec<Column<'_>> = values.iter().map(ColumnValue::as_column).collect();
        prop_assert_eq!(i.new.iter().collect::<Vec<_>>(), borrowed);
        check_decoded(&LogicalMessage::Insert(i), &bytes)?;
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(data in vec(any::<u8>(), 0..64), ctx in any_context()) {
        if let Ok(m) = LogicalMessage::decode(Bytes::from(data.clone()), &ctx) {
            check_decoded(&m, &data)?;
        }
        let _ = ReplicationMessage::parse(Bytes::from(data.clone()));
        let _ = StandbyStatusUpdate::parse(Bytes::from(data));
    }

    #[test]
    fn decode_never_panics_on_mutated_messages(
        m in message(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ctx in any_context(),
    ) {
        let mut bytes = m.to_bytes().to_vec();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        for ctx in [context_for(&m), ctx] {
            if let Ok(d) = LogicalMessage::decode(Bytes::from(bytes.clone()), &ctx) {
                check_decoded(&d, &bytes)?;
            }
        }
    }

    #[test]
    fn copy_both_round_trip(
        wal_start in lsn(), wal_end in lsn(), send_time in ts(), data in bytes(), reply in any::<bool>()
    ) {
        let x = ReplicationMessage::XLogData(XLogData { wal_start, wal_end, send_time, data });
        prop_assert_eq!(ReplicationMessage::parse(x.to_bytes()).unwrap(), x);
        let k = ReplicationMessage::Keepalive(PrimaryKeepalive { wal_end, send_time, reply_requested: reply });
        prop_assert_eq!(ReplicationMessage::parse(k.to_bytes()).unwrap(), k);
        let s = StandbyStatusUpdate {
            write_lsn: wal_start, flush_lsn: wal_end, apply_lsn: wal_end, send_time, reply_requested: reply,
        };
        prop_assert_eq!(StandbyStatusUpdate::parse(s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn lsn_text_round_trip(v in any::<u64>()) {
        prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
    }

    #[test]
    fn timestamp_display_never_panics(v in any::<i64>()) {
        let s = PgTimestamp(v).to_string();
        prop_assert!(s.ends_with('Z') || s.ends_with("infinity"));
    }
}
