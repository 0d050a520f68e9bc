//! Quoting names and values into SQL text, for the statements that cannot take parameters
//! (DDL, replication commands, `SET TRANSACTION SNAPSHOT`).

/// Quotes an SQL identifier: always double-quoted, embedded `"` doubled, so upper case,
/// spaces, keywords and non-ASCII names stay exactly as given.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: single-quoted, embedded `'` doubled. Only for servers with
/// `standard_conforming_strings = on` (the default since PostgreSQL 9.1), where a backslash
/// is an ordinary character.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_everything_else_kept() {
        assert_eq!(quote_ident("a\"B"), "\"a\"\"B\"");
        assert_eq!(quote_ident("Ünïcode tablé; DROP"), "\"Ünïcode tablé; DROP\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "'a\\b'");
    }
}
