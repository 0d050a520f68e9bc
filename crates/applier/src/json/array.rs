//! PostgreSQL arrays as JSON arrays, from the text form (`array_out`) and the binary form
//! (`array_send`): nested arrays for more dimensions, `null` for NULL elements. Lower bounds
//! other than 1 (`[0:1]={1,2}`) are dropped, as PostgreSQL's `array_to_json` drops them.

use fallible_iterator::FallibleIterator;
use postgres_protocol::types::{ArrayDimension, array_from_sql};

/// The most dimensions PostgreSQL gives an array (`MAXDIM`).
const MAX_DIMS: usize = 6;

/// Renders the text form `text` (`{1,2}`, `{{"a b",NULL}}`, `[0:1]={1,2}`) with elements
/// separated by `delim` as a JSON array; `element` appends one element given its text, `None`
/// for NULL. `None` when `text` is not an array's text form.
pub(super) fn from_text(
    text: &str,
    delim: u8,
    element: &mut dyn FnMut(&mut String, Option<&str>),
) -> Option<String> {
    let mut p = TextForm { s: text, pos: 0, delim: char::from(delim) };
    p.skip_ws();
    if p.peek() == Some('[') {
        // Dimension decoration: `[lb:ub]` per dimension, then `=`.
        while p.peek() == Some('[') {
            let close = p.s[p.pos..].find(']')?;
            p.pos += close + 1;
        }
        p.skip_ws();
        if p.next()? != '=' {
            return None;
        }
        p.skip_ws();
    }
    let mut out = String::with_capacity(text.len() + 2);
    p.level(&mut out, element, 1)?;
    p.skip_ws();
    (p.pos == text.len()).then_some(out)
}

struct TextForm<'a> {
    s: &'a str,
    pos: usize,
    delim: char,
}

impl TextForm<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// One `{...}` level, the opening brace next.
    fn level(
        &mut self,
        out: &mut String,
        element: &mut dyn FnMut(&mut String, Option<&str>),
        depth: usize,
    ) -> Option<()> {
        if depth > MAX_DIMS || self.next()? != '{' {
            return None;
        }
        out.push('[');
        self.skip_ws();
        if self.peek()? == '}' {
            self.pos += 1;
            out.push(']');
            return Some(());
        }
        loop {
            self.skip_ws();
            if self.peek()? == '{' {
                self.level(out, element, depth + 1)?;
            } else {
                let value = self.element()?;
                element(out, value.as_deref());
            }
            self.skip_ws();
            match self.next()? {
                '}' => {
                    out.push(']');
                    return Some(());
                }
                c if c == self.delim => out.push(','),
                _ => return None,
            }
        }
    }

    /// One element's text, `None` for an unquoted NULL; quotes and backslash escapes removed.
    fn element(&mut self) -> Option<Option<String>> {
        let mut value = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        if self.peek()? == '"' {
            chars.next();
            loop {
                match chars.next()? {
                    (i, '"') => {
                        self.pos += i + 1;
                        return Some(Some(value));
                    }
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            }
        }
        let mut escaped = false;
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == self.delim || c == '}' => {
                    end = Some(i);
                    break;
                }
                '{' | '"' => return None,
                '\\' => {
                    value.push(chars.next()?.1);
                    escaped = true;
                }
                c => value.push(c),
            }
        }
        self.pos += end?;
        // Whitespace around an unquoted element is not part of it.
        value.truncate(value.trim_end_matches(|c: char| c.is_ascii_whitespace()).len());
        if value.is_empty() {
            return None;
        }
        if !escaped && value.eq_ignore_ascii_case("NULL") {
            return Some(None);
        }
        Some(Some(value))
    }
}

/// A binary array (`array_send`: dimensions, lower bounds, element type, then each element as
/// a length and its bytes) taken apart: dimensions, element type, elements in row-major order
/// (`None` for NULL). `None` when `b` is malformed.
pub(super) type Parts<'a> = (Vec<ArrayDimension>, u32, Vec<Option<&'a [u8]>>);

pub(super) fn binary_parts(b: &[u8]) -> Option<Parts<'_>> {
    let a = array_from_sql(b).ok()?;
    let dims: Vec<ArrayDimension> = a.dimensions().collect().ok()?;
    if dims.len() > MAX_DIMS {
        return None;
    }
    let total = dims.iter().try_fold(usize::from(!dims.is_empty()), |n, d| {
        n.checked_mul(usize::try_from(d.len).ok()?)
    })?;
    // Each element takes at least its 4-byte length: bounds the work on a malformed header.
    if total > b.len() / 4 {
        return None;
    }
    Some((dims, a.element_type(), a.values().collect().ok()?))
}

/// Renders the binary form `b` as a JSON array; `element` appends one non-NULL element given
/// the element type OID and its binary value. `None` when `b` is malformed.
pub(super) fn from_binary(
    b: &[u8],
    element: &mut dyn FnMut(&mut String, u32, &[u8]),
) -> Option<String> {
    let (dims, elem, values) = binary_parts(b)?;
    let dims: Vec<usize> =
        dims.iter().map(|d| usize::try_from(d.len).ok()).collect::<Option<_>>()?;
    let mut out = String::new();
    let mut values = values.into_iter();
    if dims.is_empty() {
        out.push_str("[]");
    } else {
        binary_level(&mut values, &dims, elem, &mut out, element)?;
    }
    values.next().is_none().then_some(out)
}

fn binary_level<'a>(
    values: &mut impl Iterator<Item = Option<&'a [u8]>>,
    dims: &[usize],
    elem: u32,
    out: &mut String,
    element: &mut dyn FnMut(&mut String, u32, &[u8]),
) -> Option<()> {
    out.push('[');
    for i in 0..dims[0] {
        if i > 0 {
            out.push(',');
        }
        if dims.len() > 1 {
            binary_level(values, &dims[1..], elem, out, element)?;
        } else {
            match values.next()? {
                None => out.push_str("null"),
                Some(value) => element(out, elem, value),
            }
        }
    }
    out.push(']');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elements as JSON strings, NULL as null.
    fn text(s: &str, delim: u8) -> Option<String> {
        from_text(s, delim, &mut |out, e| match e {
            Some(e) => out.push_str(&serde_json::to_string(e).unwrap()),
            None => out.push_str("null"),
        })
    }

    #[test]
    fn text_forms() {
        assert_eq!(text("{}", b',').unwrap(), "[]");
        assert_eq!(text("{1,2,3}", b',').unwrap(), r#"["1","2","3"]"#);
        assert_eq!(text("[0:1]={1,2}", b',').unwrap(), r#"["1","2"]"#);
        assert_eq!(text("[2:3][5:5]={{1},{2}}", b',').unwrap(), r#"[["1"],["2"]]"#);
        assert_eq!(
            text(r#"{{NULL,"NULL"},{null,"a\"b\\c,d"}}"#, b',').unwrap(),
            r#"[[null,"NULL"],[null,"a\"b\\c,d"]]"#
        );
        assert_eq!(text(r#"{"",  x y  ,"{}",é}"#, b',').unwrap(), r#"["","x y","{}","é"]"#);
        assert_eq!(text(r#"{a\,b,\NULL}"#, b',').unwrap(), r#"["a,b","NULL"]"#);
        assert_eq!(
            text("{(3,4),(1,2);(1,1),(0,0)}", b';').unwrap(),
            r#"["(3,4),(1,2)","(1,1),(0,0)"]"#
        );
        for bad in [
            "",
            "1,2",
            "{1,2",
            "{1,,2}",
            "{1}x",
            "{{{{{{{1}}}}}}}",
            "[1:2]{1,2}",
            "{\"a}",
            "{a\"b}",
        ] {
            assert_eq!(text(bad, b','), None, "{bad:?}");
        }
    }

    fn send(ndim: i32, elem: u32, dims: &[(i32, i32)], values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ndim.to_be_bytes());
        v.extend_from_slice(&i32::from(values.iter().any(Option::is_none)).to_be_bytes());
        v.extend_from_slice(&elem.to_be_bytes());
        for (len, lb) in dims {
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&lb.to_be_bytes());
        }
        for value in values {
            match value {
                Some(b) => {
                    v.extend_from_slice(&i32::try_from(b.len()).unwrap().to_be_bytes());
                    v.extend_from_slice(b);
                }
                None => v.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        v
    }

    fn binary(b: &[u8]) -> Option<String> {
        from_binary(b, &mut |out, elem, v| {
            out.push_str(&format!("{elem}:{}", String::from_utf8_lossy(v)));
        })
    }

    #[test]
    fn binary_forms() {
        assert_eq!(binary(&send(0, 23, &[], &[])).unwrap(), "[]");
        let two_by_two = send(2, 25, &[(2, 0), (2, 1)], &[Some(b"a"), None, Some(b"b"), Some(b"")]);
        assert_eq!(binary(&two_by_two).unwrap(), "[[25:a,null],[25:b,25:]]");
        let mut long = two_by_two.clone();
        long.push(0);
        assert_eq!(binary(&long), None, "trailing bytes");
        assert_eq!(binary(&two_by_two[..two_by_two.len() - 1]), None, "truncated");
        assert_eq!(binary(&send(7, 23, &[(1, 1); 7], &[Some(b"x")])), None, "too many dims");
        assert_eq!(binary(&send(1, 23, &[(i32::MAX, 1)], &[])), None, "more elements than bytes");
        assert_eq!(binary(&send(1, 23, &[(-1, 1)], &[])), None, "negative length");
    }
}
