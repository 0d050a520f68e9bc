//! Fuzzes the pgoutput decoder: the first byte picks the decode context (bits
//! 0-1: protocol version - 1, bit 2: inside a stream block, bit 3: parallel
//! streaming), the rest is one message. Decoding must never panic, whatever
//! decodes must re-encode to exactly the same bytes, and its tuples must read back
//! every column they count, borrowed and owned alike. The input is also tried as a
//! CopyBoth payload.
//!
//! Run from `fuzz/`: `cargo +nightly fuzz run decode_message corpus/decode_message`
//! (or `RUSTC_BOOTSTRAP=1 cargo fuzz run ...` on stable). Seed the corpus with
//! `python3 fuzz/seed-corpus.py`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgoutput_decoder::{
    DecodeContext, LogicalMessage, OldTuple, ReplicationMessage, StandbyStatusUpdate, Tuple,
};

/// Walks a decoded tuple every way it can be read.
fn read_back(t: &Tuple) {
    assert_eq!(t.iter().count(), t.len(), "{t:?}");
    assert!(t.values().zip(t).all(|(v, c)| v == c));
    assert_eq!(t.get(t.len()), None);
    assert_eq!(&Tuple::from_columns(t), t);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let ctx = DecodeContext {
        proto_version: u32::from(selector & 3) + 1,
        in_stream: selector & 4 != 0,
        parallel_streaming: selector & 8 != 0,
    };
    let bytes = Bytes::copy_from_slice(message);
    if let Ok(m) = LogicalMessage::decode(bytes.clone(), &ctx) {
        assert_eq!(m.to_bytes(), bytes, "decode is not the inverse of encode for {m:?}");
        match &m {
            LogicalMessage::Insert(i) => read_back(&i.new),
            LogicalMessage::Update(u) => {
                u.old.as_ref().map(OldTuple::tuple).into_iter().for_each(read_back);
                read_back(&u.new);
            }
            LogicalMessage::Delete(d) => read_back(d.old.tuple()),
            _ => {}
        }
    }
    let all = Bytes::copy_from_slice(data);
    if let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::parse(all.clone()) {
        let _ = LogicalMessage::decode(x.data, &ctx);
    }
    let _ = StandbyStatusUpdate::parse(all);
});
