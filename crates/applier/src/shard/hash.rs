//! PostgreSQL's hash-partitioning hash: which partition of `PARTITION BY HASH (key) ... WITH
//! (MODULUS n, REMAINDER r)` a row belongs to.
//!
//! `compute_partition_hash_value` (partbounds.c) starts from 0 and, for every non-NULL key
//! column in order, folds the column's *extended* hash (the hash opclass's support function 2,
//! seeded with `HASH_PARTITION_SEED`) in with `hash_combine64`; the row belongs to partition
//! `hash % modulus`. The extended hashes are Bob Jenkins' lookup3 (`hash_bytes_extended` and
//! `hash_bytes_uint32_extended` in `src/common/hashfn.c`). lookup3 reads its input in the
//! server's native byte order, and `numeric` hashes its base-10000 digits as native `int16`s:
//! these functions give the values of little-endian servers (x86-64, AArch64), as
//! `satisfies_hash_partition` computes them there.

/// `HASH_PARTITION_SEED` (`src/include/catalog/partition.h`).
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// `mix()` of lookup3.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// `final()` of lookup3.
fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// The state lookup3 starts from for a key of `len` bytes, perturbed by `seed`.
fn start(len: u32, seed: u64) -> (u32, u32, u32) {
    let init = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        // The seed is hashed as a first 12-byte chunk: its high half, its low half, zeros.
        a = a.wrapping_add(high(seed));
        b = b.wrapping_add(low(seed));
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// The high half of a 64-bit value.
fn high(v: u64) -> u32 {
    low(v >> 32)
}

/// The low half of a 64-bit value (C's conversion to `uint32`).
fn low(v: u64) -> u32 {
    (v & 0xFFFF_FFFF).try_into().unwrap_or(0)
}

/// A little-endian word of up to 4 bytes (missing high bytes are zero).
fn word(bytes: &[u8]) -> u32 {
    bytes.iter().rev().fold(0, |w, &b| (w << 8) | u32::from(b))
}

/// `hash_bytes_extended`: the 64-bit lookup3 hash of `key` with `seed`.
pub fn hash_bytes_extended(key: &[u8], seed: u64) -> u64 {
    // PostgreSQL passes the length as an `int`; a key never comes near 4 GiB here, and the
    // C code's wrap-around is what `as` does.
    #[allow(clippy::cast_possible_truncation)]
    let (mut a, mut b, mut c) = start(key.len() as u32, seed);
    let mut k = key;
    while k.len() >= 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The last 0..=11 bytes: a takes bytes 0-3 and b bytes 4-7 as little-endian words; c takes
    // bytes 8-10 above its lowest byte, which lookup3 reserves for the length.
    a = a.wrapping_add(word(&k[..k.len().min(4)]));
    if k.len() > 4 {
        b = b.wrapping_add(word(&k[4..k.len().min(8)]));
    }
    if k.len() > 8 {
        c = c.wrapping_add(word(&k[8..]) << 8);
    }
    finish(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hash_bytes_uint32_extended` (`hash_uint32_extended`): the 64-bit hash of one 32-bit value.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let (mut a, mut b, mut c) = start(4, seed);
    a = a.wrapping_add(k);
    finish(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hash_combine64`: folds the hash `b` of the next key column into the row hash `a`.
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b.wrapping_add(0x49a0_f4dd_15e5_a8e3).wrapping_add(a << 54).wrapping_add(a >> 7)
}

/// `hashint4extended` (also `int2` and `date`, whose values widen to `int4`).
pub fn hash_int4(v: i32, seed: u64) -> u64 {
    hash_uint32_extended(v.cast_unsigned(), seed)
}

/// `hashint8extended`: the low half folded with the high half (or its complement for negative
/// values), so that values in `int4`'s range hash as `int4` does.
pub fn hash_int8(v: i64, seed: u64) -> u64 {
    let lo = low(v.cast_unsigned());
    let hi = high(v.cast_unsigned());
    hash_uint32_extended(lo ^ if v >= 0 { hi } else { !hi }, seed)
}

/// A `numeric` value as PostgreSQL stores it: base-10000 digits, most significant first, and
/// the weight (power of 10000) of the first one. `None` digits: NaN or an infinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumericDigits {
    /// The base-10000 digits, or `None` for NaN and ±Infinity.
    pub digits: Option<Vec<i16>>,
    /// Weight of the first digit.
    pub weight: i32,
}

/// `hash_numeric_extended`: scale and sign do not count (1.0 and 1.00 hash alike), leading and
/// trailing zero digits are stripped, the rest hashed as native `int16`s and XORed with the
/// weight. NaN and the infinities hash to the seed, zero to the seed minus one.
pub fn hash_numeric(n: &NumericDigits, seed: u64) -> u64 {
    let Some(digits) = &n.digits else { return seed };
    let Some(first) = digits.iter().position(|&d| d != 0) else {
        return seed.wrapping_sub(1);
    };
    let last = digits.iter().rposition(|&d| d != 0).unwrap_or(first);
    let weight = n.weight - i32::try_from(first).unwrap_or(i32::MAX);
    let bytes: Vec<u8> = digits[first..=last].iter().flat_map(|d| d.to_le_bytes()).collect();
    // The C code XORs an `int` into a `uint64`, which sign-extends it.
    hash_bytes_extended(&bytes, seed) ^ i64::from(weight).cast_unsigned()
}

/// `date2j`: the Julian day number of a proleptic Gregorian date (astronomical year numbering).
pub fn date2j(year: i32, month: i32, day: i32) -> i32 {
    let (month, year) =
        if month > 2 { (month + 1, year + 4800) } else { (month + 13, year + 4799) };
    let century = year / 100;
    let mut julian = year * 365 - 32167;
    julian += year / 4 - century + century / 4;
    julian + 7834 * month / 256 + day
}

/// `POSTGRES_EPOCH_JDATE`: the Julian day of 2000-01-01, day 0 of `date`.
pub const POSTGRES_EPOCH_JDATE: i32 = 2_451_545;

/// The row hash of `compute_partition_hash_value`: each non-NULL column's extended hash
/// (`None` for NULL) folded in order.
pub fn row_hash(columns: impl IntoIterator<Item = Option<u64>>) -> u64 {
    columns.into_iter().flatten().fold(0, hash_combine64)
}

/// The partition (`REMAINDER`) of a row hash among `modulus` partitions.
pub fn partition_of(row_hash: u64, modulus: usize) -> usize {
    // `usize` fits in `u64` on every platform Rust supports, and the remainder is below
    // `modulus`.
    #[allow(clippy::cast_possible_truncation)]
    let r = (row_hash % modulus as u64) as usize;
    r
}
