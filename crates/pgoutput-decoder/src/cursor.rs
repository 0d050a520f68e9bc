//! A checked big-endian reader over a [`Bytes`] buffer that never panics.

use bytes::{Buf, Bytes};

use crate::error::{DecodeError, DecodeErrorKind};

/// Reads fields front to back; every read checks the remaining length first and
/// returns [`DecodeErrorKind::UnexpectedEof`] naming the field instead of panicking.
/// Byte strings come out as [`Bytes::slice`]s of the input, so nothing is copied.
#[derive(Debug)]
pub(crate) struct Cursor {
    buf: Bytes,
    pos: usize,
    /// Offset of `buf` in the input: nonzero once [`since`](Self::since) handed the
    /// input over (then `buf` is empty).
    base: usize,
    /// The message tag that errors name, once known.
    tag: Option<u8>,
}

impl Cursor {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0, base: 0, tag: None }
    }

    /// Offset of the next byte to read.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Names `tag` as the message tag in the errors from now on.
    pub(crate) fn set_tag(&mut self, tag: u8) {
        self.tag = Some(tag);
    }

    /// An error of `kind` located at the current offset.
    pub(crate) fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(kind, self.offset(), self.tag)
    }

    /// An error of `kind` located at `offset`.
    pub(crate) fn error_at(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(kind, offset, self.tag)
    }

    #[cold]
    fn eof(&self, field: &'static str, needed: usize) -> DecodeError {
        self.error(DecodeErrorKind::UnexpectedEof { field, needed, remaining: self.remaining() })
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let end = self.pos.checked_add(N).ok_or_else(|| self.eof(field, N))?;
        match self.buf.get(self.pos..end) {
            Some(slice) => {
                let mut out = [0u8; N];
                out.copy_from_slice(slice);
                self.pos = end;
                Ok(out)
            }
            None => Err(self.eof(field, N)),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.eof(field, 1)),
        }
    }

    #[inline]
    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    /// Reads a non-negative Int32 length (or count) and checks that at least
    /// `len * min_item_size` bytes remain, so callers may allocate for it.
    #[inline]
    pub(crate) fn len_i32(
        &mut self,
        field: &'static str,
        min_item_size: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.offset();
        let raw = self.i32(field)?;
        self.checked_len(at, field, i64::from(raw), usize::try_from(raw).ok(), min_item_size)
    }

    /// Like [`len_i32`](Self::len_i32) for an Int16 count.
    #[inline]
    pub(crate) fn len_i16(
        &mut self,
        field: &'static str,
        min_item_size: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.offset();
        let raw = self.i16(field)?;
        self.checked_len(at, field, i64::from(raw), usize::try_from(raw).ok(), min_item_size)
    }

    fn checked_len(
        &self,
        at: usize,
        field: &'static str,
        raw: i64,
        len: Option<usize>,
        min_item_size: usize,
    ) -> Result<usize, DecodeError> {
        let invalid = || self.error_at(at, DecodeErrorKind::InvalidLength { field, value: raw });
        let len = len.ok_or_else(invalid)?;
        match len.checked_mul(min_item_size) {
            Some(need) if need <= self.remaining() => Ok(len),
            _ => Err(invalid()),
        }
    }

    /// The next `len` bytes as a zero-copy slice of the input.
    #[inline]
    pub(crate) fn bytes(&mut self, field: &'static str, len: usize) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(self.eof(field, len));
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Skips the next `len` bytes.
    #[inline]
    pub(crate) fn skip(&mut self, field: &'static str, len: usize) -> Result<(), DecodeError> {
        if len > self.remaining() {
            return Err(self.eof(field, len));
        }
        self.pos += len;
        Ok(())
    }

    /// The bytes from offset `start` (an earlier [`offset`](Self::offset)) up to the
    /// current offset, as a zero-copy slice.
    ///
    /// When that is the rest of the input, as for a message's last tuple, the input
    /// itself is handed over rather than another reference to it counted: that saves
    /// an atomic increment and decrement per row. The cursor then stays at the end.
    #[inline]
    pub(crate) fn since(&mut self, start: usize) -> Bytes {
        let Some(start) = start.checked_sub(self.base).filter(|&s| s <= self.pos) else {
            return Bytes::new(); // not an earlier offset; not reached
        };
        if self.remaining() == 0 {
            let mut tail = std::mem::take(&mut self.buf);
            tail.advance(start);
            self.base += self.pos;
            self.pos = 0;
            tail
        } else {
            self.buf.slice(start..self.pos)
        }
    }

    /// Everything that is left, borrowed.
    #[inline]
    pub(crate) fn rest_slice(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Everything that is left, as a zero-copy slice.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.buf.len();
        self.buf.slice(start..)
    }

    /// A NUL-terminated UTF-8 string (PostgreSQL's `String` type).
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error(DecodeErrorKind::UnterminatedString { field }));
        };
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| self.error(DecodeErrorKind::InvalidUtf8 { field }))?
            .to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    /// Fails with [`DecodeErrorKind::TrailingBytes`] unless the input is used up.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error(DecodeErrorKind::TrailingBytes { count })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_reports_eof_with_offset() {
        let mut c = Cursor::new(Bytes::from_static(&[0, 1, 0, 0, 0, 2, 9]));
        assert_eq!(c.i16("a").unwrap(), 1);
        assert_eq!(c.u32("b").unwrap(), 2);
        let e = c.i32("c").unwrap_err();
        assert_eq!(e.offset(), 6);
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::UnexpectedEof { field: "c", needed: 4, remaining: 1 }
        );
        assert_eq!(c.u8("d").unwrap(), 9);
        c.finish().unwrap();
    }

    #[test]
    fn lengths_are_checked_against_remaining_bytes() {
        let mut c = Cursor::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]));
        let e = c.len_i32("len", 1).unwrap_err();
        assert_eq!(e.kind(), &DecodeErrorKind::InvalidLength { field: "len", value: -1 });
        assert_eq!(e.offset(), 0);

        let mut c = Cursor::new(Bytes::from_static(&[0, 0, 0, 3, 1, 2]));
        assert!(matches!(
            c.len_i32("len", 1).unwrap_err().kind(),
            DecodeErrorKind::InvalidLength { value: 3, .. }
        ));
        let mut c = Cursor::new(Bytes::from_static(&[0, 0, 0, 2, 1, 2]));
        let n = c.len_i32("len", 1).unwrap();
        assert_eq!(&c.bytes("v", n).unwrap()[..], &[1, 2]);
    }

    #[test]
    fn cstr_needs_terminator_and_utf8() {
        let mut c = Cursor::new(Bytes::from_static(b"abc\0xy"));
        assert_eq!(c.cstr("s").unwrap(), "abc");
        assert!(matches!(
            c.cstr("t").unwrap_err().kind(),
            DecodeErrorKind::UnterminatedString { field: "t" }
        ));
        let mut c = Cursor::new(Bytes::from_static(b"\xff\0"));
        assert!(matches!(c.cstr("s").unwrap_err().kind(), DecodeErrorKind::InvalidUtf8 { .. }));
        assert_eq!(c.remaining(), 2);
        assert!(matches!(
            c.finish().unwrap_err().kind(),
            DecodeErrorKind::TrailingBytes { count: 2 }
        ));
    }

    #[test]
    fn bytes_are_zero_copy_slices() {
        let input = Bytes::from(vec![1u8, 2, 3, 4]);
        let mut c = Cursor::new(input.clone());
        c.u8("x").unwrap();
        let b = c.bytes("v", 2).unwrap();
        assert_eq!(b.as_ptr(), input[1..].as_ptr());
        assert_eq!(c.since(1).as_ptr(), input[1..].as_ptr());
        assert_eq!(c.since(0).len(), 3);
        assert_eq!(c.offset(), 3);
        assert!(matches!(
            c.skip("w", 2).unwrap_err().kind(),
            DecodeErrorKind::UnexpectedEof { field: "w", needed: 2, remaining: 1 }
        ));
        c.skip("w", 0).unwrap();
        assert_eq!(&c.rest()[..], &[4]);
    }

    #[test]
    fn a_slice_to_the_end_takes_over_the_input() {
        let input = Bytes::from(vec![1u8, 2, 3, 4]);
        let mut c = Cursor::new(input.clone());
        c.u8("x").unwrap();
        c.skip("v", 3).unwrap();
        let tail = c.since(1);
        assert_eq!((tail.as_ptr(), tail.len()), (input[1..].as_ptr(), 3));
        // The cursor is still at the end of the input, offsets included.
        assert_eq!((c.offset(), c.remaining()), (4, 0));
        c.finish().unwrap();
        let e = c.u8("y").unwrap_err();
        assert_eq!(e.offset(), 4);
        assert_eq!(
            e.kind(),
            &DecodeErrorKind::UnexpectedEof { field: "y", needed: 1, remaining: 0 }
        );
        assert_eq!(c.since(4).len(), 0);
        assert_eq!(c.since(1).len(), 0);
    }
}
