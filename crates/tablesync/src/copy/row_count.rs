//! Counting the rows of a COPY stream as it passes, for the copy's progress, without
//! decoding values.

/// Counts rows in a COPY stream as it passes, without decoding values.
#[derive(Debug)]
pub(crate) enum RowCounter {
    /// Text format: one row per unescaped newline (embedded newlines are escaped as `\n`).
    Text(u64),
    /// Binary format: walks tuple headers and field lengths.
    Binary(BinaryRowCounter),
}

impl RowCounter {
    /// A counter for a binary (`true`) or text COPY stream.
    pub(crate) fn new(binary: bool) -> Self {
        if binary { Self::Binary(BinaryRowCounter::default()) } else { Self::Text(0) }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        match self {
            Self::Text(n) => {
                let lines = data.iter().filter(|&&b| b == b'\n').count();
                *n += u64::try_from(lines).unwrap_or(u64::MAX);
            }
            Self::Binary(c) => c.feed(data),
        }
    }

    pub(crate) fn rows(&self) -> u64 {
        match self {
            Self::Text(n) => *n,
            Self::Binary(c) => c.rows,
        }
    }
}

/// The binary COPY signature: `PGCOPY\n\377\r\n\0`.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Signature, flags and header-extension length (19 bytes).
    Header,
    /// Skipping `n` bytes, then `then`.
    Skip(u64, After),
    /// A tuple's 16-bit field count.
    FieldCount,
    /// A field's 32-bit length; `left` fields remain including this one.
    FieldLen { left: u16 },
    /// The trailer was seen, or the data is not binary COPY: stop counting.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    FieldCount,
    FieldLen { left: u16 },
}

/// Incremental parser of the binary COPY framing that counts tuples.
#[derive(Debug)]
pub(crate) struct BinaryRowCounter {
    phase: Phase,
    acc: [u8; 19],
    have: usize,
    rows: u64,
}

impl Default for BinaryRowCounter {
    fn default() -> Self {
        Self { phase: Phase::Header, acc: [0; 19], have: 0, rows: 0 }
    }
}

impl BinaryRowCounter {
    fn want(&self) -> usize {
        match self.phase {
            Phase::Header => 19,
            Phase::FieldCount => 2,
            Phase::FieldLen { .. } => 4,
            Phase::Skip(..) | Phase::Done => 0,
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // The source sends a row per message: count whole rows straight from the slice.
            if self.phase == Phase::FieldCount
                && self.have == 0
                && let Some(len) = whole_row_len(data)
            {
                self.rows += 1;
                data = &data[len..];
                continue;
            }
            match self.phase {
                Phase::Done => return,
                Phase::Skip(n, then) => {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    if len < n {
                        self.phase = Phase::Skip(n - len, then);
                        return;
                    }
                    // n <= data.len(), so it fits in usize.
                    let skip = usize::try_from(n).unwrap_or(data.len());
                    data = &data[skip..];
                    self.phase = match then {
                        After::FieldCount => Phase::FieldCount,
                        After::FieldLen { left } => Phase::FieldLen { left },
                    };
                }
                _ => {
                    let want = self.want();
                    let take = (want - self.have).min(data.len());
                    self.acc[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    data = &data[take..];
                    if self.have == want {
                        self.have = 0;
                        self.complete();
                    }
                }
            }
        }
    }

    fn complete(&mut self) {
        self.phase = match self.phase {
            Phase::Header => {
                if &self.acc[..11] != BINARY_SIGNATURE {
                    Phase::Done
                } else {
                    let ext = u32::from_be_bytes([
                        self.acc[15],
                        self.acc[16],
                        self.acc[17],
                        self.acc[18],
                    ]);
                    skip_then(u64::from(ext), After::FieldCount)
                }
            }
            Phase::FieldCount => match i16::from_be_bytes([self.acc[0], self.acc[1]]) {
                -1 => Phase::Done,
                n => {
                    self.rows += 1;
                    match u16::try_from(n) {
                        Ok(0) => Phase::FieldCount,
                        Ok(left) => Phase::FieldLen { left },
                        Err(_) => Phase::Done,
                    }
                }
            },
            Phase::FieldLen { left } => {
                let len = i32::from_be_bytes([self.acc[0], self.acc[1], self.acc[2], self.acc[3]]);
                let next =
                    if left > 1 { After::FieldLen { left: left - 1 } } else { After::FieldCount };
                // -1 is NULL (no data); other negative lengths are invalid.
                match len {
                    -1 => skip_then(0, next),
                    n => match u64::try_from(n) {
                        Ok(n) => skip_then(n, next),
                        Err(_) => Phase::Done,
                    },
                }
            }
            other => other,
        };
    }
}

/// The length of the binary COPY row at the start of `data` if all of it is there; `None`
/// for a partial row, the trailer or anything malformed (the byte-wise parser decides).
fn whole_row_len(data: &[u8]) -> Option<usize> {
    let fields = u16::try_from(i16::from_be_bytes([*data.first()?, *data.get(1)?])).ok()?;
    let mut at = 2usize;
    for _ in 0..fields {
        let next = at.checked_add(4)?;
        let len = data.get(at..next)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at = next;
        match len {
            -1 => {}
            n => at = at.checked_add(usize::try_from(n).ok()?)?,
        }
    }
    (at <= data.len()).then_some(at)
}

fn skip_then(n: u64, then: After) -> Phase {
    if n == 0 {
        match then {
            After::FieldCount => Phase::FieldCount,
            After::FieldLen { left } => Phase::FieldLen { left },
        }
    } else {
        Phase::Skip(n, then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a binary COPY stream: rows of optional byte fields.
    fn binary_copy(rows: &[Vec<Option<&[u8]>>], ext: &[u8]) -> Vec<u8> {
        let mut out = BINARY_SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&u32::try_from(ext.len()).unwrap().to_be_bytes());
        out.extend_from_slice(ext);
        for row in rows {
            out.extend_from_slice(&i16::try_from(row.len()).unwrap().to_be_bytes());
            for field in row {
                match field {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn sample() -> Vec<u8> {
        let rows: Vec<Vec<Option<&[u8]>>> = vec![
            vec![Some(b"\x00\x00\x00\x01"), None, Some(b"hello")],
            vec![],
            vec![Some(b""), Some(b"\xff\xff\xff\xff"), None],
            vec![Some(&[0xffu8; 70000][..])],
        ];
        binary_copy(&rows, b"ext!")
    }

    #[test]
    fn binary_counter_counts_in_one_piece() {
        let mut c = RowCounter::new(true);
        c.feed(&sample());
        assert_eq!(c.rows(), 4);
    }

    #[test]
    fn binary_counter_counts_across_every_split() {
        let data = sample();
        for chunk in [1, 2, 3, 5, 7, 19, 20, 1000, 65536] {
            let mut c = BinaryRowCounter::default();
            for piece in data.chunks(chunk) {
                c.feed(piece);
            }
            assert_eq!(c.rows, 4, "chunk size {chunk}");
            assert_eq!(c.phase, Phase::Done);
        }
    }

    #[test]
    fn whole_rows_are_measured_and_partial_ones_left_to_the_parser() {
        // Two fields: 4 bytes, then NULL.
        let row = b"\0\x02\0\0\0\x04abcd\xff\xff\xff\xff";
        assert_eq!(whole_row_len(row), Some(row.len()));
        for cut in 0..row.len() {
            assert_eq!(whole_row_len(&row[..cut]), None, "cut at {cut}");
        }
        // The trailer, a negative length other than NULL and a huge length.
        assert_eq!(whole_row_len(b"\xff\xff"), None);
        assert_eq!(whole_row_len(b"\0\x01\xff\xff\xff\xfe"), None);
        assert_eq!(whole_row_len(b"\0\x01\x7f\xff\xff\xff"), None);
    }

    #[test]
    fn binary_counter_stops_on_garbage() {
        let mut c = BinaryRowCounter::default();
        c.feed(b"1\tone\n2\ttwo\n this is not binary copy data at all");
        assert_eq!(c.rows, 0);
        assert_eq!(c.phase, Phase::Done);
    }

    #[test]
    fn text_counter_counts_lines() {
        let mut c = RowCounter::new(false);
        c.feed(b"1\ta\\nb\n2\t\\N\n");
        c.feed(b"3\tc\n");
        assert_eq!(c.rows(), 3);
    }
}
