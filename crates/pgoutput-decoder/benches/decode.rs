//! Decode throughput on an insert-heavy stream of Store-like rows.
//!
//! Run: `cargo bench -p pgoutput-decoder --bench decode`. Reports bytes/s
//! (`Throughput::Bytes`) and messages/s (`Throughput::Elements`).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgoutput_decoder::{
    Begin, ColumnValue, Commit, Decoder, Insert, LogicalMessage, Lsn, PgTimestamp, Tuple,
};

const TRANSACTIONS: u32 = 200;

fn text(s: String) -> ColumnValue {
    ColumnValue::Text(Bytes::from(s))
}

fn binary(b: &[u8]) -> ColumnValue {
    ColumnValue::Binary(Bytes::copy_from_slice(b))
}

/// One customer, one order and three order items per transaction, like the Store
/// workload; `binary` picks the value format. Each message is a slice of one
/// buffer, as they would be when cut out of received CopyData frames.
fn store_stream(binary_values: bool) -> (Vec<Bytes>, usize) {
    let mut buf = BytesMut::new();
    let mut ranges = Vec::new();
    let mut push = |m: LogicalMessage, buf: &mut BytesMut| {
        let start = buf.len();
        m.encode(buf);
        ranges.push(start..buf.len());
    };
    for t in 0..TRANSACTIONS {
        let id = i64::from(t) + 100_000;
        let lsn = Lsn(0x1_0000_0000 + u64::from(t) * 4096);
        let time = PgTimestamp(800_000_000_000_000 + i64::from(t));
        push(
            LogicalMessage::Begin(Begin { final_lsn: lsn, commit_time: time, xid: 1000 + t }),
            &mut buf,
        );
        let customer = if binary_values {
            vec![
                binary(&id.to_be_bytes()),
                binary(format!("customer{id}@example.com").as_bytes()),
                binary(format!("Customer Number {id}").as_bytes()),
                binary(&[1]),
                binary(&time.0.to_be_bytes()),
                binary(&[0xa0; 16]),
                ColumnValue::Null,
                ColumnValue::Null,
            ]
        } else {
            vec![
                text(id.to_string()),
                text(format!("customer{id}@example.com")),
                text(format!("Customer Number {id}")),
                text("t".into()),
                text("2024-05-01 10:00:00.123456+00".into()),
                text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
                ColumnValue::Null,
                ColumnValue::Null,
            ]
        };
        let insert = |rel_id, columns| {
            LogicalMessage::Insert(Insert { xid: None, rel_id, new: Tuple::new(columns) })
        };
        push(insert(16384, customer), &mut buf);
        let order = if binary_values {
            vec![
                binary(&id.to_be_bytes()),
                binary(&id.to_be_bytes()),
                binary(b"new"),
                binary(&time.0.to_be_bytes()),
                binary(&[0, 2, 0, 0, 0, 0, 0, 2, 0, 44, 38, 148]),
                ColumnValue::Null,
            ]
        } else {
            vec![
                text(id.to_string()),
                text(id.to_string()),
                text("new".into()),
                text("2024-05-04 09:15:00+00".into()),
                text("449.98".into()),
                ColumnValue::Null,
            ]
        };
        push(insert(16390, order), &mut buf);
        for line in 1..=3i32 {
            let item = if binary_values {
                vec![
                    binary(&id.to_be_bytes()),
                    binary(&line.to_be_bytes()),
                    binary(&(line * 7).to_be_bytes()),
                    binary(&2i32.to_be_bytes()),
                    binary(&[0, 2, 0, 0, 0, 0, 0, 2, 0, 19, 38, 148]),
                ]
            } else {
                vec![
                    text(id.to_string()),
                    text(line.to_string()),
                    text((line * 7).to_string()),
                    text("2".into()),
                    text("19.99".into()),
                ]
            };
            push(insert(16395, item), &mut buf);
        }
        push(
            LogicalMessage::Commit(Commit {
                flags: 0,
                commit_lsn: lsn,
                end_lsn: Lsn(lsn.0 + 48),
                commit_time: time,
            }),
            &mut buf,
        );
    }
    let total = buf.len();
    let buf = buf.freeze();
    (ranges.into_iter().map(|r| buf.slice(r)).collect(), total)
}

/// The streamed-transaction fixture captured from PostgreSQL 15 (protocol 2):
/// real server bytes, mostly inserts of `customers` rows inside stream blocks.
fn fixture_stream() -> (Vec<Bytes>, usize) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stream.v2.txt");
    let text = std::fs::read_to_string(path).expect("fixture");
    let msgs: Vec<Bytes> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let hex = l.split(' ').nth(2).expect("hex column");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>();
            Bytes::from(bytes)
        })
        .collect();
    let total = msgs.iter().map(Bytes::len).sum();
    (msgs, total)
}

fn decode_all(msgs: &[Bytes], proto_version: u32) -> usize {
    let mut decoder = Decoder::new(proto_version);
    let mut columns = 0;
    for m in msgs {
        match decoder.decode(m.clone()).expect("valid stream") {
            LogicalMessage::Insert(i) => columns += i.new.len(),
            other => {
                black_box(other);
            }
        }
    }
    columns
}

/// Decodes and reads every column of every row (summing value lengths), so the
/// figure covers a consumer that looks at the values, not just the decoder.
fn decode_and_touch_all(msgs: &[Bytes], proto_version: u32) -> usize {
    let mut decoder = Decoder::new(proto_version);
    let mut total = 0;
    for m in msgs {
        match decoder.decode(m.clone()).expect("valid stream") {
            LogicalMessage::Insert(i) => {
                for c in i.new.iter() {
                    total += c.bytes().map_or(1, |b| b.len());
                }
            }
            other => {
                black_box(other);
            }
        }
    }
    total
}

fn bench(c: &mut Criterion) {
    let streams = [
        ("store_inserts_text", store_stream(false), 1),
        ("store_inserts_binary", store_stream(true), 1),
        ("pg15_fixture_stream_v2", fixture_stream(), 2),
    ];
    for (label, (msgs, total), proto) in streams {
        let mut group = c.benchmark_group(format!("decode_{label}"));
        group.throughput(Throughput::Bytes(u64::try_from(total).unwrap()));
        group.bench_function("bytes", |b| b.iter(|| decode_all(black_box(&msgs), proto)));
        group.throughput(Throughput::Elements(u64::try_from(msgs.len()).unwrap()));
        group.bench_function("messages", |b| b.iter(|| decode_all(black_box(&msgs), proto)));
        group.finish();
        let mut group = c.benchmark_group(format!("decode_touch_{label}"));
        group.throughput(Throughput::Bytes(u64::try_from(total).unwrap()));
        group.bench_function("bytes", |b| b.iter(|| decode_and_touch_all(black_box(&msgs), proto)));
        group.throughput(Throughput::Elements(u64::try_from(msgs.len()).unwrap()));
        group.bench_function("messages", |b| {
            b.iter(|| decode_and_touch_all(black_box(&msgs), proto));
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
