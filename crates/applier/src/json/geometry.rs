//! Floats as PostgreSQL prints them with `extra_float_digits` above 0 (the shortest digits
//! that read back exactly), and the geometric types, which print their coordinates so.

use fallible_iterator::FallibleIterator;
use postgres_protocol::types::{Point, box_from_sql, path_from_sql, point_from_sql};

/// `float8out`: fixed notation for decimal exponents -4 to 14, else `d.ddde+XX`.
pub(super) fn float8(f: f64) -> String {
    special(f).unwrap_or_else(|| layout(&format!("{:e}", f.abs()), f < 0.0, 15))
}

/// `float4out`: as [`float8`], with fixed notation for exponents -4 to 5.
pub(super) fn float4(f: f32) -> String {
    special(f64::from(f)).unwrap_or_else(|| layout(&format!("{:e}", f.abs()), f < 0.0, 6))
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

/// Lays out Rust's shortest scientific form (`1.25e-7`: the same digits as PostgreSQL's Ryu)
/// the way PostgreSQL does.
fn layout(sci: &str, negative: bool, fixed_below: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
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

/// Exactly `N` float8s.
fn floats<const N: usize>(b: &[u8]) -> Option<[f64; N]> {
    if b.len() != 8 * N {
        return None;
    }
    let mut out = [0.0; N];
    for (o, c) in out.iter_mut().zip(b.chunks_exact(8)) {
        *o = f64::from_be_bytes(c.try_into().ok()?);
    }
    Some(out)
}

fn pair(x: f64, y: f64) -> String {
    format!("({},{})", float8(x), float8(y))
}

fn point_text(p: Point) -> String {
    pair(p.x(), p.y())
}

fn points(pts: impl Iterator<Item = String>) -> String {
    pts.collect::<Vec<_>>().join(",")
}

/// `point`: `(x,y)`.
pub(super) fn point(b: &[u8]) -> Option<String> {
    point_from_sql(b).ok().map(point_text)
}

/// `lseg`: `[(x1,y1),(x2,y2)]`.
pub(super) fn lseg(b: &[u8]) -> Option<String> {
    let [x1, y1, x2, y2] = floats(b)?;
    Some(format!("[{},{}]", pair(x1, y1), pair(x2, y2)))
}

/// `box`: `(high),(low)`.
pub(super) fn bbox(b: &[u8]) -> Option<String> {
    let r = box_from_sql(b).ok()?;
    Some(format!("{},{}", point_text(r.upper_right()), point_text(r.lower_left())))
}

/// `path`: `((..),..)` when closed, `[(..),..]` when open.
pub(super) fn path(b: &[u8]) -> Option<String> {
    let p = path_from_sql(b).ok()?;
    let pts: Vec<Point> = p.points().collect().ok()?;
    let (open, close) = if p.closed() { ('(', ')') } else { ('[', ']') };
    Some(format!("{open}{}{close}", points(pts.into_iter().map(point_text))))
}

/// `polygon`: `((x,y),..)`, after its number of points.
pub(super) fn polygon(b: &[u8]) -> Option<String> {
    let (n, rest) = b.split_at_checked(4)?;
    let n = usize::try_from(i32::from_be_bytes(n.try_into().ok()?)).ok()?;
    if rest.len() != 16 * n {
        return None;
    }
    let pts = rest.chunks_exact(16).map(|c| floats::<2>(c).map(|[x, y]| pair(x, y)));
    Some(format!("({})", points(pts.collect::<Option<Vec<_>>>()?.into_iter())))
}

/// `line` (`Ax + By + C = 0`): `{A,B,C}`.
pub(super) fn line(b: &[u8]) -> Option<String> {
    let [a, bb, c] = floats(b)?;
    Some(format!("{{{},{},{}}}", float8(a), float8(bb), float8(c)))
}

/// `circle`: `<(x,y),r>`.
pub(super) fn circle(b: &[u8]) -> Option<String> {
    let [x, y, r] = floats(b)?;
    Some(format!("<{},{}>", pair(x, y), float8(r)))
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
    }
}
