//! Subjects and key names from PostgreSQL names.
//!
//! A subject token is the name with every byte outside `A-Z a-z 0-9 - _` written as `%XX`
//! (the byte in upper-case hex, UTF-8 for non-ASCII): `my.table` is `my%2Etable`, `a b` is
//! `a%20b`, `*` is `%2A`, `>` is `%3E`, `%` itself `%25`. A name therefore always stays one
//! token, matches no wildcard, and decodes back with any percent-decoder.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Bytes kept as they are in a token: ASCII letters, digits, `-` and `_`.
const TOKEN: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// `name` as one subject token (see the module docs).
pub fn token(name: &str) -> String {
    utf8_percent_encode(name, TOKEN).to_string()
}

/// The subject of a change of table `schema`.`table` in `database`:
/// `<prefix>.<database>.<schema>.<table>`, each name one token.
pub fn table_subject(prefix: &str, database: &str, schema: &str, table: &str) -> String {
    format!("{prefix}.{}.{}.{}", token(database), token(schema), token(table))
}

/// The subject of what belongs to no table (transaction markers, logical decoding messages):
/// `<prefix>.<database>.<kind>`, one token shorter than every table subject, so never one.
pub fn database_subject(prefix: &str, database: &str, kind: &str) -> String {
    format!("{prefix}.{}.{kind}", token(database))
}

/// A key of a JetStream key-value bucket for `name`: keys allow only `A-Z a-z 0-9 - _ / = .`,
/// so every other byte (and `=`) is written `=XX`.
pub fn kv_key(name: &str) -> String {
    const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'/');
    utf8_percent_encode(name, KEY).to_string().replace('%', "=")
}

/// Whether the stream subject `pattern` takes every subject under `prefix` (`<prefix>.>`).
pub fn covers_prefix(pattern: &str, prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split('.').collect();
    let mut tokens = pattern.split('.');
    for want in &prefix {
        match tokens.next() {
            Some(">") => return true,
            Some(t) if t == "*" || t == *want => {}
            _ => return false,
        }
    }
    tokens.next() == Some(">") && tokens.next().is_none()
}

/// Checks a subject prefix: one or more tokens, none empty, no wildcard, no whitespace.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let bad = prefix
        .split('.')
        .find(|t| t.is_empty() || *t == "*" || *t == ">" || t.chars().any(|c| c.is_whitespace()));
    match bad {
        Some(t) => Err(format!(
            "subject prefix {prefix:?} has an invalid token {t:?}: use tokens of letters, \
             digits, - and _, separated by dots (e.g. pgmirror or cdc.orders)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_one_token_without_wildcards() {
        for (name, want) in [
            ("orders", "orders"),
            ("my.table", "my%2Etable"),
            ("a b", "a%20b"),
            ("*", "%2A"),
            (">", "%3E"),
            ("100%", "100%25"),
            ("Ünïcode", "%C3%9Cn%C3%AFcode"),
            ("snake_case-x", "snake_case-x"),
        ] {
            assert_eq!(token(name), want, "{name}");
        }
        let s = table_subject("pg", "db.x", "s p", "t>*");
        assert_eq!(s, "pg.db%2Ex.s%20p.t%3E%2A");
        assert_eq!(s.split('.').count(), 4);
    }

    #[test]
    fn kv_keys_use_only_allowed_bytes() {
        assert_eq!(kv_key("default"), "default");
        assert_eq!(kv_key("a.b c=d"), "a=2Eb=20c=3Dd");
    }

    #[test]
    fn prefix_coverage() {
        assert!(covers_prefix(">", "pgmirror"));
        assert!(covers_prefix("pgmirror.>", "pgmirror"));
        assert!(covers_prefix("*.>", "pgmirror"));
        assert!(covers_prefix("cdc.>", "cdc.pg"));
        assert!(covers_prefix("cdc.pg.>", "cdc.pg"));
        assert!(!covers_prefix("pgmirror.*.*.*", "pgmirror"));
        assert!(!covers_prefix("other.>", "pgmirror"));
        assert!(!covers_prefix("pgmirror", "pgmirror"));
        assert!(!covers_prefix("cdc.pg.x.>", "cdc.pg"));
        assert!(check_prefix("cdc.pg").is_ok());
        assert!(check_prefix("cdc..pg").is_err());
        assert!(check_prefix("cdc.>").is_err());
    }
}
