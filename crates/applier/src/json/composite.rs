//! Text forms of values made of other values, from their binary forms: composite rows,
//! ranges, multiranges, and arrays where they appear inside those (`record_out`,
//! `range_out`, `multirange_out`, `array_out`).

use std::fmt::Write as _;

use postgres_protocol::types::{Range, RangeBound, range_from_sql};

use super::array::binary_parts;
use super::binary::{Reader, to_text};
use super::types::Cx;

/// `isspace` in the C locale, which PostgreSQL's quoting rules use.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// A row field or range bound: double-quoted when empty or holding one of `special` or
/// whitespace, with `"` and `\` doubled inside the quotes.
fn push_doubled(s: &mut String, v: &str, special: &[char]) {
    let quote = v.is_empty() || v.chars().any(|c| special.contains(&c) || is_space(c));
    if quote {
        s.push('"');
    }
    for c in v.chars() {
        if c == '"' || c == '\\' {
            s.push(c);
        }
        s.push(c);
    }
    if quote {
        s.push('"');
    }
}

/// A composite value: `(1,"a b",)`, a NULL field empty.
pub(super) fn record(cx: &Cx<'_>, b: &[u8]) -> Option<String> {
    let mut r = Reader(b);
    let n = r.i32()?;
    let mut s = String::with_capacity(b.len() + 2);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let field_type = r.u32()?;
        let Some(value) = r.value()? else { continue };
        if !cx.knows(field_type) {
            return None;
        }
        push_doubled(&mut s, &to_text(cx, field_type, value)?, &['"', '\\', '(', ')', ',']);
    }
    s.push(')');
    r.0.is_empty().then_some(s)
}

/// A range of `sub` values: `[1,5)`, `(,"2024-01-01 00:00:00")`, `empty`.
pub(super) fn range(cx: &Cx<'_>, sub: u32, b: &[u8]) -> Option<String> {
    let (lower, upper) = match range_from_sql(b).ok()? {
        Range::Empty => return Some("empty".into()),
        Range::Nonempty(lower, upper) => (lower, upper),
    };
    let mut s = String::new();
    let bound = |s: &mut String, b: &RangeBound<Option<&[u8]>>| -> Option<bool> {
        let (value, inclusive) = match b {
            RangeBound::Inclusive(v) => (v, true),
            RangeBound::Exclusive(v) => (v, false),
            RangeBound::Unbounded => return Some(false),
        };
        if let Some(v) = value {
            push_doubled(s, &to_text(cx, sub, v)?, &['"', '\\', '(', ')', '[', ']', ',']);
        }
        Some(inclusive)
    };
    let mut lower_text = String::new();
    let lower_inc = bound(&mut lower_text, &lower)?;
    s.push(if lower_inc { '[' } else { '(' });
    s.push_str(&lower_text);
    s.push(',');
    let upper_inc = bound(&mut s, &upper)?;
    s.push(if upper_inc { ']' } else { ')' });
    Some(s)
}

/// A multirange of `sub` values: `{[1,5),[7,8)}`.
pub(super) fn multirange(cx: &Cx<'_>, sub: u32, b: &[u8]) -> Option<String> {
    let mut r = Reader(b);
    let n = r.i32()?;
    let mut parts = Vec::new();
    for _ in 0..n {
        parts.push(range(cx, sub, r.value()??)?);
    }
    r.0.is_empty().then(|| format!("{{{}}}", parts.join(",")))
}

/// An array's text form (`{1,NULL}`, `[0:1]={a,"b c"}`), elements separated by `delim`.
pub(super) fn array(cx: &Cx<'_>, b: &[u8], delim: u8) -> Option<String> {
    let (dims, elem, values) = binary_parts(b)?;
    if dims.is_empty() {
        return Some("{}".into());
    }
    let mut s = String::new();
    if dims.iter().any(|d| d.lower_bound != 1) {
        for d in &dims {
            let upper = i64::from(d.lower_bound) + i64::from(d.len) - 1;
            let _ = write!(s, "[{}:{upper}]", d.lower_bound);
        }
        s.push('=');
    }
    let lens: Vec<usize> =
        dims.iter().map(|d| usize::try_from(d.len).ok()).collect::<Option<_>>()?;
    let mut items = values.into_iter();
    array_level(cx, &mut s, &lens, elem, char::from(delim), &mut items)?;
    items.next().is_none().then_some(s)
}

fn array_level<'b>(
    cx: &Cx<'_>,
    s: &mut String,
    lens: &[usize],
    elem: u32,
    delim: char,
    items: &mut impl Iterator<Item = Option<&'b [u8]>>,
) -> Option<()> {
    s.push('{');
    for i in 0..lens[0] {
        if i > 0 {
            s.push(delim);
        }
        if lens.len() > 1 {
            array_level(cx, s, &lens[1..], elem, delim, items)?;
            continue;
        }
        let Some(v) = items.next()? else {
            s.push_str("NULL");
            continue;
        };
        let v = to_text(cx, elem, v)?;
        let quote = v.is_empty()
            || v.eq_ignore_ascii_case("NULL")
            || v.chars().any(|c| matches!(c, '"' | '\\' | '{' | '}') || c == delim || is_space(c));
        if quote {
            s.push('"');
        }
        for c in v.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        if quote {
            s.push('"');
        }
    }
    s.push('}');
    Some(())
}

/// `int2vector` / `oidvector`: the elements separated by spaces.
pub(super) fn vector(cx: &Cx<'_>, b: &[u8]) -> Option<String> {
    let (_, elem, values) = binary_parts(b)?;
    let texts: Option<Vec<String>> = values.into_iter().map(|v| to_text(cx, elem, v?)).collect();
    Some(texts?.join(" "))
}
