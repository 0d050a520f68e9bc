//! The geometric types as PostgreSQL prints them, coordinates as `float8out` prints them.

use fallible_iterator::FallibleIterator;
use postgres_protocol::types::{Point, box_from_sql, path_from_sql, point_from_sql};

use super::float::float8;

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
