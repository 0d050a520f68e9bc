//! Floats as PostgreSQL prints them with `extra_float_digits` above 0: the shortest digits
//! that read back as the same float (PostgreSQL's Ryu), fixed notation for decimal exponents
//! from -4 up to 14 (`float8`) or 5 (`float4`), else `d.ddde+XX`.

use num_bigint::BigUint;

/// `float8out`.
pub(super) fn float8(f: f64) -> String {
    let bits = f.to_bits();
    let (field, frac) = (i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0), bits & ((1 << 52) - 1));
    special(f).unwrap_or_else(|| {
        let (m, e) = if field == 0 { (frac, -1074) } else { (frac | 1 << 52, field - 1075) };
        let edge = Edge { m, e, narrow_below: frac == 0 && field > 1, from: 0, most: 17 };
        layout(f < 0.0, shortest(&format!("{:e}", f.abs()), edge), 15)
    })
}

/// `float4out`.
pub(super) fn float4(f: f32) -> String {
    let bits = f.to_bits();
    let (field, frac) = ((bits >> 23 & 0xff).cast_signed(), bits & ((1 << 23) - 1));
    special(f64::from(f)).unwrap_or_else(|| {
        let (m, e) = if field == 0 { (frac, -149) } else { (frac | 1 << 23, field - 150) };
        let edge = Edge { m: m.into(), e, narrow_below: frac == 0 && field > 1, from: -1, most: 9 };
        layout(f < 0.0, shortest(&format!("{:e}", f.abs()), edge), 6)
    })
}

fn special(f: f64) -> Option<String> {
    let s = if f.is_nan() {
        "NaN"
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }
    } else if f == 0.0 {
        if f.is_sign_negative() { "-0" } else { "0" }
    } else {
        return None;
    };
    Some(s.to_owned())
}

/// A positive float as `m`·2^`e`; `narrow_below` at a power of two (the float below is
/// nearer than the one above); `from`: the least `e` where the shortest digits can lie on the
/// edge of what reads back; `most`: the most shortest digits a float of its kind needs.
struct Edge {
    m: u64,
    e: i32,
    narrow_below: bool,
    from: i32,
    most: u32,
}

/// The digits of positive `abs` and the decimal exponent of the first. Rust's shortest digits
/// (`sci`) are PostgreSQL's but in two cases, where they are worked out exactly instead:
/// - they lie exactly on the edge of the values that read back as the float (Rust takes an
///   edge when `m` is even, PostgreSQL never does). An edge is an odd multiple of 2^(e-2) with
///   a mantissa's worth of bits, with few enough digits only from 2^`from` on;
/// - two candidates are equally near (Rust takes the upper, PostgreSQL the even one): the
///   float's own exact expansion then has at most one digit more than the most a float needs.
fn shortest(sci: &str, x: Edge) -> (String, i32) {
    let tz = x.m.trailing_zeros();
    let halvings = -(x.e + tz.cast_signed());
    // Digits of the exact expansion: those of the odd part times 5^halvings.
    let exact_digits = ((x.m >> tz) as f64).log10() + f64::from(halvings) * 5f64.log10();
    let tie = halvings > 0 && exact_digits < f64::from(x.most) + 1.5;
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp = exp.parse().unwrap_or(0);
    if x.e >= x.from || tie {
        // Rust's exponent is PostgreSQL's or one less (when rounding carries).
        return exact_shortest(x.m, x.e, x.narrow_below, exp + 2);
    }
    (digits, exp)
}

/// Ryu's choice for `m`·2^`e`, in exact arithmetic: the fewest digits strictly between the
/// midpoints to the neighbouring floats (the one below is nearer when `narrow_below`, at a
/// power of two), rounding the float's own value half up (half even on an exact tie), and up
/// when rounding down would leave the interval. Returns the digits and the decimal exponent of
/// the first one; the search starts at 10^`above`, where none fits.
fn exact_shortest(m: u64, e: i32, narrow_below: bool, above: i32) -> (String, i32) {
    // Everything in units of 2^(e-2), over the denominator 2^shift.
    let shift = (2 - e).max(0).unsigned_abs();
    let up = (e - 2 + shift.cast_signed()).unsigned_abs();
    let at = |x: u64| BigUint::from(x) << up;
    let (value, high) = (at(4 * m), at(4 * m + 2));
    let low = at(4 * m - if narrow_below { 1 } else { 2 });
    let den = BigUint::from(1u8) << shift;
    // x / 10^k as quotient, remainder, divisor.
    let div = |x: &BigUint, k: i32| {
        let p = BigUint::from(10u8).pow(k.unsigned_abs());
        let (n, d) = if k >= 0 { (x.clone(), &den * p) } else { (x * p, den.clone()) };
        (&n / &d, &n % &d, d)
    };
    // No candidate has a digit at 10^above.
    let mut k = above;
    loop {
        let (vm, _, _) = div(&low, k);
        let (hq, hr, _) = div(&high, k);
        let vp = if hr == BigUint::ZERO { hq - 1u8 } else { hq };
        if vp > vm {
            let (vr, rem, d) = div(&value, k);
            let twice = rem << 1;
            let round_up = vr == vm || twice > d || (twice == d && vr.bit(0));
            let digits = if round_up { vr + 1u8 } else { vr }.to_string();
            let exp = k + i32::try_from(digits.len()).unwrap_or(0) - 1;
            return (digits, exp);
        }
        k -= 1;
    }
}

/// `digits` (the first one times 10^`exp`) laid out as PostgreSQL does.
fn layout(negative: bool, (digits, exp): (String, i32), fixed_below: i32) -> String {
    let mut s = String::with_capacity(digits.len() + 8);
    if negative {
        s.push('-');
    }
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', exp.unsigned_abs() as usize - 1));
            s.push_str(&digits);
        } else {
            let whole = exp.unsigned_abs() as usize + 1;
            if digits.len() <= whole {
                s.push_str(&digits);
                s.extend(std::iter::repeat_n('0', whole - digits.len()));
            } else {
                s.push_str(&digits[..whole]);
                s.push('.');
                s.push_str(&digits[whole..]);
            }
        }
    } else {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push_str(&format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_postgres_prints_them() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.1"),
            (1.5, "1.5"),
            (-0.0, "-0"),
            (100.0, "100"),
            (1e14, "100000000000000"),
            (1e15, "1e+15"),
            (123_456_789_012_345.6, "123456789012345.6"),
            (1_234_567_890_123_456.0, "1.234567890123456e+15"),
            (0.0001, "0.0001"),
            (0.000_012_5, "1.25e-05"),
            (1e300, "1e+300"),
            (-2.5e-300, "-2.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (f, want) in cases {
            assert_eq!(float8(*f), *want, "{f:e}");
        }
        assert_eq!(float4(1e6), "1e+06");
        assert_eq!(float4(123_456.0), "123456");
        assert_eq!(float4(0.1), "0.1");
        assert_eq!(float4(f32::MAX), "3.4028235e+38");
        // Rust's shortest digits lie on the edge of what reads back; PostgreSQL's do not.
        assert_eq!(format!("{:e}", f32::from_bits(0x4e32_0050)), "7.465912e8");
        assert_eq!(float4(f32::from_bits(0x4e32_0050)), "7.4659123e+08");
        // A tie between 2885526.2 and 2885526.3: Rust takes the upper, PostgreSQL the even.
        assert_eq!(format!("{:e}", f32::from_bits(0x4a30_1e59)), "2.8855263e6");
        assert_eq!(float4(f32::from_bits(0x4a30_1e59)), "2.8855262e+06");
        assert_eq!(float4(f32::from_bits(0x4804_6668)), "135577.62");
    }
}
