//! Bounded-memory buffers for transactions that cannot be applied as they arrive (streamed
//! in-progress transactions and prepared two-phase transactions).
//!
//! Messages are stored re-encoded in pgoutput form, each framed by a `u32` length. The first
//! `memory_limit` bytes stay in memory; beyond that the whole buffer moves to an anonymous
//! temporary file (unlinked at creation, so a crash leaves nothing behind). File I/O is plain
//! blocking std I/O through a buffer: it goes to the page cache and is far cheaper than a
//! thread hop per message.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::{BufMut, Bytes, BytesMut};
use pgoutput_decoder::{DecodeContext, LogicalMessage};

use crate::error::ApplyError;

/// The protocol version used to re-decode spilled messages. Change, relation, type and
/// message bodies are the same in every version, only their optional xid differs.
const SPILL_PROTO: u32 = 4;

/// One buffered transaction.
#[derive(Debug)]
pub(crate) struct Spill {
    /// Frames while the buffer is small (empty once spilled to `file`).
    mem: BytesMut,
    /// The temporary file holding every frame once the buffer outgrew memory.
    file: Option<BufWriter<File>>,
    /// Logical length in bytes (frames written).
    len: u64,
    /// Subtransactions in order of their first message, with that message's offset.
    subxacts: Vec<(u32, u64)>,
    /// Whether messages carry an xid (streamed) or not (prepared, non-streamed).
    in_stream: bool,
    memory_limit: usize,
    dir: Option<PathBuf>,
    scratch: BytesMut,
}

impl Spill {
    pub(crate) fn new(in_stream: bool, memory_limit: usize, dir: Option<PathBuf>) -> Self {
        Spill {
            mem: BytesMut::new(),
            file: None,
            len: 0,
            subxacts: Vec::new(),
            in_stream,
            memory_limit,
            dir,
            scratch: BytesMut::new(),
        }
    }

    /// Whether the buffer lives in a temporary file.
    pub(crate) fn is_spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends one message; `xid` is the (sub)transaction it belongs to, if known.
    pub(crate) fn push(
        &mut self,
        msg: &LogicalMessage,
        xid: Option<u32>,
    ) -> Result<(), ApplyError> {
        if let Some(xid) = xid
            && !self.subxacts.iter().any(|&(x, _)| x == xid)
        {
            self.subxacts.push((xid, self.len));
        }
        self.scratch.clear();
        self.scratch.put_u32(0);
        msg.encode(&mut self.scratch);
        let body = u32::try_from(self.scratch.len() - 4).map_err(|_| {
            ApplyError::Spill(io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))
        })?;
        self.scratch[..4].copy_from_slice(&body.to_be_bytes());
        let frame_len = self.scratch.len();
        if self.file.is_none() && self.mem.len() + frame_len > self.memory_limit {
            self.move_to_file()?;
        }
        match &mut self.file {
            Some(w) => w.write_all(&self.scratch).map_err(ApplyError::Spill)?,
            None => self.mem.extend_from_slice(&self.scratch),
        }
        self.len += frame_len as u64;
        Ok(())
    }

    fn move_to_file(&mut self) -> Result<(), ApplyError> {
        let file = match &self.dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(ApplyError::Spill)?;
        let mut w = BufWriter::with_capacity(256 * 1024, file);
        w.write_all(&self.mem).map_err(ApplyError::Spill)?;
        self.mem = BytesMut::new();
        self.file = Some(w);
        tracing::debug!(bytes = self.len, "streamed transaction spilled to a temporary file");
        Ok(())
    }

    /// Drops a subtransaction: everything from its first message on (ROLLBACK TO SAVEPOINT
    /// undoes all work done after the savepoint, whatever subtransaction did it).
    pub(crate) fn abort_subxact(&mut self, subxid: u32) -> Result<(), ApplyError> {
        let Some(pos) = self.subxacts.iter().position(|&(x, _)| x == subxid) else {
            return Ok(()); // it changed nothing we saw
        };
        let offset = self.subxacts[pos].1;
        self.subxacts.truncate(pos);
        self.truncate(offset)
    }

    fn truncate(&mut self, offset: u64) -> Result<(), ApplyError> {
        match &mut self.file {
            Some(w) => {
                w.flush().map_err(ApplyError::Spill)?;
                let f = w.get_mut();
                f.set_len(offset).map_err(ApplyError::Spill)?;
                f.seek(SeekFrom::Start(offset)).map_err(ApplyError::Spill)?;
            }
            None => self.mem.truncate(usize::try_from(offset).unwrap_or(usize::MAX)),
        }
        self.len = offset;
        Ok(())
    }

    /// Turns the buffer into a reader of its messages, in order.
    pub(crate) fn into_reader(self) -> Result<SpillReader, ApplyError> {
        let ctx = DecodeContext {
            proto_version: SPILL_PROTO,
            in_stream: self.in_stream,
            parallel_streaming: false,
        };
        let source = match self.file {
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| ApplyError::Spill(e.into_error()))?;
                f.seek(SeekFrom::Start(0)).map_err(ApplyError::Spill)?;
                Source::File(BufReader::with_capacity(256 * 1024, f.take(self.len)))
            }
            None => Source::Mem(self.mem.freeze()),
        };
        Ok(SpillReader { source, ctx })
    }
}

#[derive(Debug)]
enum Source {
    Mem(Bytes),
    File(BufReader<io::Take<File>>),
}

/// Reads buffered messages back.
#[derive(Debug)]
pub(crate) struct SpillReader {
    source: Source,
    ctx: DecodeContext,
}

impl SpillReader {
    /// The next message, or `None` at the end.
    pub(crate) fn next_message(&mut self) -> Result<Option<LogicalMessage>, ApplyError> {
        let body = match &mut self.source {
            Source::Mem(b) => {
                if b.is_empty() {
                    return Ok(None);
                }
                let len = frame_len(&b[..4.min(b.len())])?;
                if b.len() < 4 + len {
                    return Err(truncated());
                }
                b.split_to(4 + len).slice(4..)
            }
            Source::File(r) => {
                let mut hdr = [0u8; 4];
                match r.read_exact(&mut hdr) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(ApplyError::Spill(e)),
                }
                let len = frame_len(&hdr)?;
                let mut buf = vec![0u8; len];
                r.read_exact(&mut buf).map_err(ApplyError::Spill)?;
                Bytes::from(buf)
            }
        };
        LogicalMessage::decode(body, &self.ctx).map(Some).map_err(ApplyError::SpillDecode)
    }
}

fn frame_len(hdr: &[u8]) -> Result<usize, ApplyError> {
    let arr: [u8; 4] = hdr.try_into().map_err(|_| truncated())?;
    usize::try_from(u32::from_be_bytes(arr)).map_err(|_| truncated())
}

fn truncated() -> ApplyError {
    ApplyError::Spill(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated spill frame"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgoutput_decoder::{ColumnValue, Insert, Tuple};

    fn insert(xid: u32, v: &str) -> LogicalMessage {
        LogicalMessage::Insert(Insert {
            xid: Some(xid),
            rel_id: 7,
            new: Tuple::new(vec![ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes()))]),
        })
    }

    fn values(s: Spill) -> Vec<String> {
        let mut r = s.into_reader().unwrap();
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            match m {
                LogicalMessage::Insert(i) => {
                    out.push(i.new.get(0).and_then(|c| c.as_str()).unwrap().to_owned())
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    fn run(limit: usize) {
        let mut s = Spill::new(true, limit, None);
        s.push(&insert(10, "a"), Some(10)).unwrap();
        s.push(&insert(11, "b"), Some(11)).unwrap();
        s.push(&insert(12, "c"), Some(12)).unwrap();
        s.abort_subxact(12).unwrap();
        s.push(&insert(10, "d"), Some(10)).unwrap();
        s.abort_subxact(99).unwrap(); // unknown: no-op
        for i in 0..100 {
            s.push(&insert(13, &format!("x{i}")), Some(13)).unwrap();
        }
        s.abort_subxact(13).unwrap();
        s.push(&insert(10, "e"), Some(10)).unwrap();
        assert_eq!(s.is_spilled(), limit < 100);
        assert_eq!(values(s), ["a", "b", "d", "e"]);
    }

    #[test]
    fn in_memory_round_trip_and_subxact_abort() {
        run(1 << 20);
    }

    #[test]
    fn spilled_round_trip_and_subxact_abort() {
        run(10);
    }
}
