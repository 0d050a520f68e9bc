//! One column value as JSON: numbers and booleans as JSON ones, arrays as JSON arrays,
//! everything else the string PostgreSQL's output function prints. A binary value is first
//! decoded to that text, so both formats print the same.

use std::fmt::Write as _;

use pgoutput_decoder::Column;

use super::types::{Cx, Shape};
use super::{array, binary, hex, oid, push_str};

/// Appends `v`, a value of type `type_oid`.
pub(super) fn value(line: &mut String, cx: &Cx<'_>, type_oid: u32, v: Column<'_>) {
    match v {
        Column::Null => line.push_str("null"),
        Column::UnchangedToast => line.push_str("{\"unchanged_toast\":true}"),
        Column::Text(b) => text_value(line, cx, type_oid, &String::from_utf8_lossy(b)),
        Column::Binary(b) => binary_value(line, cx, type_oid, b),
    }
}

/// Whether `s` is a JSON number literal.
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// A value in PostgreSQL's text form.
pub(super) fn text_value(line: &mut String, cx: &Cx<'_>, type_oid: u32, s: &str) {
    match cx.types.shape(type_oid) {
        Shape::Scalar(
            oid::INT2 | oid::INT4 | oid::INT8 | oid::OID | oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC,
        ) if is_json_number(s) => line.push_str(s),
        Shape::Scalar(oid::BOOL) => line.push_str(if s == "t" { "true" } else { "false" }),
        Shape::Array { elem, delim } => {
            let json = array::from_text(s, delim, &mut |out, e| match e {
                Some(e) => text_value(out, cx, elem, e),
                None => out.push_str("null"),
            });
            match json {
                Some(json) => line.push_str(&json),
                None => push_str(line, s),
            }
        }
        Shape::Vector { elem } => {
            line.push('[');
            for (i, e) in s.split_ascii_whitespace().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                text_value(line, cx, elem, e);
            }
            line.push(']');
        }
        _ => push_str(line, s),
    }
}

/// A value in binary (send) form: decoded to its text form when its type is known, else
/// `{"binary_hex":"\\x..","type_oid":N}`.
fn binary_value(line: &mut String, cx: &Cx<'_>, type_oid: u32, b: &[u8]) {
    let decoded = match cx.types.shape(type_oid) {
        // The commonest types, written straight into the line: what the general case below
        // prints, without the intermediate text.
        // A domain's values are its base type's (`base`, not `type_oid`).
        Shape::Scalar(base @ (oid::INT2 | oid::INT4 | oid::INT8)) => binary::integer(line, base, b),
        Shape::Scalar(oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME) => {
            std::str::from_utf8(b).map(|s| push_str(line, s)).is_ok()
        }
        Shape::Array { .. } | Shape::Vector { .. } => {
            let json = array::from_binary(b, &mut |out, elem, e| binary_value(out, cx, elem, e));
            json.map(|json| line.push_str(&json)).is_some()
        }
        _ => binary::to_text(cx, type_oid, b).map(|s| text_value(line, cx, type_oid, &s)).is_some(),
    };
    if !decoded {
        line.push_str("{\"binary_hex\":");
        push_str(line, &hex(b));
        let _ = write!(line, ",\"type_oid\":{type_oid}}}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::types::Types;
    use super::*;

    #[test]
    fn json_numbers() {
        for ok in ["0", "-1", "12.5", "1e+10", "1.5E-07", "123456789012345678901234567890.5"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "NaN", "Infinity", "1e", "+1", "0x1"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    fn render(type_oid: u32, v: Column<'_>) -> String {
        let types = Types::default();
        let mut s = String::new();
        value(&mut s, &Cx::new(&types), type_oid, v);
        s
    }

    #[test]
    fn values() {
        let cases: &[(u32, Column<'_>, &str)] = &[
            (oid::INT4, Column::Binary(&[0xff, 0xff, 0xff, 0xfe]), "-2"),
            (oid::FLOAT8, Column::Text(b"NaN"), "\"NaN\""),
            (oid::JSONB, Column::Text(b"{\"a\": [1, 2]}"), r#""{\"a\": [1, 2]}""#),
            (oid::JSON, Column::Text(b"{\n\"a\": 1}"), r#""{\n\"a\": 1}""#),
            (oid::BOOL, Column::Text(b"t"), "true"),
            (oid::POINT, Column::Binary(&[1, 2]), r#"{"binary_hex":"\\x0102","type_oid":600}"#),
            (20_000, Column::Binary(&[1]), r#"{"binary_hex":"\\x01","type_oid":20000}"#),
            (oid::UUID, Column::Binary(&[0x12; 16]), "\"12121212-1212-1212-1212-121212121212\""),
            (oid::TEXT, Column::UnchangedToast, "{\"unchanged_toast\":true}"),
            (oid::REGCLASS, Column::Binary(&[0, 0, 4, 0xeb]), "\"1259\""),
        ];
        for (oid, v, want) in cases {
            assert_eq!(render(*oid, *v), *want, "{oid}");
        }
    }

    #[test]
    fn direct_binary_values_print_as_their_text_forms() {
        let types = Types::default();
        let cx = Cx::new(&types);
        let cases: &[(u32, &[u8])] = &[
            (oid::INT2, &[0x80, 0]),
            (oid::INT2, &[0, 7]),
            (oid::INT4, &[0x7f, 0xff, 0xff, 0xff]),
            (oid::INT4, &[1, 2]),
            (oid::INT8, &[0x80, 0, 0, 0, 0, 0, 0, 0]),
            (oid::INT8, &[0, 0, 0, 0, 0, 0, 0, 42]),
            (oid::TEXT, b"value 1"),
            (oid::TEXT, b"a\"b\\c\n\x01\x7f \xc3\x9c"),
            (oid::TEXT, &[0xff, 0xfe]),
            (oid::VARCHAR, b""),
            (oid::BPCHAR, b"x  "),
            (oid::NAME, b"tab\tle"),
        ];
        for (oid, b) in cases {
            let mut general = String::new();
            match binary::to_text(&cx, *oid, b) {
                Some(text) => text_value(&mut general, &cx, *oid, &text),
                None => {
                    general.push_str("{\"binary_hex\":");
                    push_str(&mut general, &hex(b));
                    let _ = write!(general, ",\"type_oid\":{oid}}}");
                }
            }
            assert_eq!(render(*oid, Column::Binary(b)), general, "{oid} {b:?}");
        }
    }

    #[test]
    fn binary_values_of_a_domain_print_as_its_base_type() {
        // 16392: a domain over int4; 16393: one over text.
        let types =
            Types::knowing([(16392, Shape::Scalar(oid::INT4)), (16393, Shape::Scalar(oid::TEXT))]);
        let cx = Cx::new(&types);
        let mut line = String::new();
        value(&mut line, &cx, 16392, Column::Binary(&[0, 0, 0, 2]));
        line.push(' ');
        value(&mut line, &cx, 16393, Column::Binary(b"t"));
        assert_eq!(line, "2 \"t\"");
    }

    #[test]
    fn arrays_in_text() {
        let cases: &[(u32, &str, &str)] = &[
            (1007, "{1,NULL,-3}", "[1,null,-3]"),
            (1007, "[0:1]={1,2}", "[1,2]"),
            (1007, "{{1,2},{3,NULL}}", "[[1,2],[3,null]]"),
            (1007, "{}", "[]"),
            (
                1009,
                r#"{"a\"b","c\\d","e,f","NULL",NULL,""}"#,
                r#"["a\"b","c\\d","e,f","NULL",null,""]"#,
            ),
            (1000, "{t,f,NULL}", "[true,false,null]"),
            (1231, "{1.50,NaN,-Infinity}", r#"[1.50,"NaN","-Infinity"]"#),
            (1022, "{1e+300,Infinity}", r#"[1e+300,"Infinity"]"#),
            (3807, r#"{"{\"a\": [1, 2]}",NULL}"#, r#"["{\"a\": [1, 2]}",null]"#),
            (1020, "{(3,4),(1,2);(1,1),(0,0)}", r#"["(3,4),(1,2)","(1,1),(0,0)"]"#),
            (22, "1 2", "[1,2]"),
            (1007, "{1,2", r#""{1,2""#),
        ];
        for (oid, text, want) in cases {
            assert_eq!(render(*oid, Column::Text(text.as_bytes())), *want, "{oid} {text}");
        }
    }

    #[test]
    fn arrays_in_binary() {
        // int4[] [2:3]={7,NULL}; then text[] {{"a"},{"b"}}; then an unknown element type.
        let mut int4 = Vec::new();
        for w in [1i32, 1, 23, 2, 2, 4, 7, -1] {
            int4.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(render(1007, Column::Binary(&int4)), "[7,null]");
        let mut text = Vec::new();
        for w in [2i32, 0, 25, 2, 1, 1, 1, 1] {
            text.extend_from_slice(&w.to_be_bytes());
        }
        text.extend_from_slice(b"a");
        text.extend_from_slice(&1i32.to_be_bytes());
        text.extend_from_slice(b"b");
        assert_eq!(render(1009, Column::Binary(&text)), r#"[["a"],["b"]]"#);
        let mut unknown = Vec::new();
        for w in [1i32, 0, 20_000, 1, 1, 2] {
            unknown.extend_from_slice(&w.to_be_bytes());
        }
        unknown.extend_from_slice(&[1, 2]);
        assert_eq!(
            render(1017, Column::Binary(&unknown)),
            r#"[{"binary_hex":"\\x0102","type_oid":20000}]"#
        );
        assert_eq!(
            render(1007, Column::Binary(&[0, 0, 0, 1])),
            r#"{"binary_hex":"\\x00000001","type_oid":1007}"#
        );
    }
}
