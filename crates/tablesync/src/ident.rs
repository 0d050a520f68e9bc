//! Table names as a user writes them, and as the catalog stores them.

use std::fmt;

use pgconn::quote_ident;

use crate::error::Error;

/// A schema-qualified table name, both parts exactly as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    /// Schema name (`pg_namespace.nspname`).
    pub schema: String,
    /// Relation name (`pg_class.relname`).
    pub name: String,
}

impl QualifiedName {
    /// Builds a name from its two catalog parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self { schema: schema.into(), name: name.into() }
    }

    /// The quoted `"schema"."name"` form, safe to paste into SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// Parses one name as written in SQL: `t`, `s.t`, `"S"."My Table"`.
    ///
    /// Unquoted parts are folded to lower case (ASCII only, as PostgreSQL does in
    /// UTF-8 databases); quoted parts are kept verbatim. The schema defaults to `public`.
    ///
    /// # Errors
    /// [`Error::InvalidTableName`] when the text is not one or two identifiers.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let parts = split_name(text)?;
        match parts.as_slice() {
            [name] => Ok(Self::new("public", name.clone())),
            [schema, name] => Ok(Self::new(schema.clone(), name.clone())),
            _ => Err(invalid(text, "expected `table` or `schema.table`")),
        }
    }

    /// Parses a comma-separated list such as `a,b,"My Schema".c`; commas inside
    /// quotes do not split, surrounding white space is ignored.
    ///
    /// # Errors
    /// [`Error::InvalidTableName`] for an empty entry or a malformed name.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, Error> {
        split_list(text).into_iter().map(Self::parse).collect()
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

/// One `--tables` entry: a table, or every table of a schema (`schema.*`, as psql's
/// `\dt schema.*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TablePattern {
    /// One table.
    Table(QualifiedName),
    /// The tables of this schema (`pg_namespace.nspname`, exactly as stored).
    Schema(String),
}

impl TablePattern {
    /// Parses `t`, `s.t`, `"S"."T"` (see [`QualifiedName::parse`]) or `s.*` / `"S".*`: an
    /// unquoted `*` as the table part (a quoted `"*"` is a table named `*`).
    ///
    /// # Errors
    /// [`Error::InvalidTableName`] for a malformed name or any other use of an unquoted `*`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let parts = split_parts(text)?;
        let star = |p: &(String, bool)| !p.1 && p.0 == "*";
        match parts.as_slice() {
            [schema, table] if star(table) && !star(schema) => Ok(Self::Schema(schema.0.clone())),
            _ if parts.iter().any(|p| !p.1 && p.0.contains('*')) => {
                Err(invalid(text, "the only wildcard is a whole table part, as in `schema.*`"))
            }
            _ => QualifiedName::parse(text).map(Self::Table),
        }
    }

    /// Parses a comma-separated list of patterns; commas inside quotes do not split.
    ///
    /// # Errors
    /// [`Error::InvalidTableName`] for an empty entry or a malformed pattern.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, Error> {
        split_list(text).into_iter().map(Self::parse).collect()
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TablePattern::Table(name) => name.fmt(f),
            TablePattern::Schema(schema) => write!(f, "{}.*", quote_ident(schema)),
        }
    }
}

/// Splits a list at commas outside double quotes.
fn split_list(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn invalid(text: &str, reason: &str) -> Error {
    Error::InvalidTableName { text: text.to_owned(), reason: reason.to_owned() }
}

/// Splits `a.b` into identifiers, honouring quotes and folding unquoted parts.
fn split_name(text: &str) -> Result<Vec<String>, Error> {
    Ok(split_parts(text)?.into_iter().map(|(part, _)| part).collect())
}

/// [`split_name`], with whether each part was quoted.
fn split_parts(text: &str) -> Result<Vec<(String, bool)>, Error> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid(text, "empty table name"));
    }
    let mut parts = Vec::new();
    let mut chars = trimmed.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut part = String::new();
        let quoted = chars.next_if_eq(&'"').is_some();
        if quoted {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => part.push('"'),
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(invalid(text, "unterminated quoted identifier")),
                }
            }
            if part.is_empty() {
                return Err(invalid(text, "zero-length quoted identifier"));
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.' && *c != '"' && !c.is_whitespace()) {
                part.push(c.to_ascii_lowercase());
            }
            if part.is_empty() {
                return Err(invalid(text, "empty identifier"));
            }
        }
        parts.push((part, quoted));
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(c) => return Err(invalid(text, &format!("unexpected character `{c}`"))),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_folds_unquoted_and_keeps_quoted() {
        assert_eq!(QualifiedName::parse("Orders").unwrap(), QualifiedName::new("public", "orders"));
        assert_eq!(
            QualifiedName::parse("Sales.\"Order Items\"").unwrap(),
            QualifiedName::new("sales", "Order Items")
        );
        assert_eq!(
            QualifiedName::parse(" \"a\"\"b\" . \"ÄÖ\" ").unwrap(),
            QualifiedName::new("a\"b", "ÄÖ")
        );
        // Non-ASCII letters are not folded (PostgreSQL folds ASCII only in UTF-8).
        assert_eq!(QualifiedName::parse("Été").unwrap(), QualifiedName::new("public", "Été"));
    }

    #[test]
    fn parse_list_respects_quotes() {
        let list = QualifiedName::parse_list("a, b ,\"x,y\".\"z\"").unwrap();
        assert_eq!(
            list,
            vec![
                QualifiedName::new("public", "a"),
                QualifiedName::new("public", "b"),
                QualifiedName::new("x,y", "z"),
            ]
        );
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in ["", "a.b.c", "\"unterminated", "a..b", "\"\"", "a b", "a,", "a.\"b\"c"] {
            assert!(
                matches!(QualifiedName::parse_list(bad), Err(Error::InvalidTableName { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn patterns_take_a_schema_wildcard_only() {
        let list =
            TablePattern::parse_list("app.*, \"My.Schema\" . *,\"a,b\".*,t,\"s\".\"*\"").unwrap();
        assert_eq!(
            list,
            vec![
                TablePattern::Schema("app".into()),
                TablePattern::Schema("My.Schema".into()),
                TablePattern::Schema("a,b".into()),
                TablePattern::Table(QualifiedName::new("public", "t")),
                TablePattern::Table(QualifiedName::new("s", "*")),
            ]
        );
        assert_eq!(TablePattern::Schema("My\"S".into()).to_string(), "\"My\"\"S\".*");
        for bad in ["*", "*.*", "app.t*", "a.b.*", "app.", ".*", "*.t"] {
            assert!(
                matches!(TablePattern::parse(bad), Err(Error::InvalidTableName { .. })),
                "{bad:?} should be rejected"
            );
        }
        let parsed = TablePattern::parse(&TablePattern::Schema("x\"y.z".into()).to_string());
        assert_eq!(parsed.unwrap(), TablePattern::Schema("x\"y.z".into()));
    }

    #[test]
    fn quoted_round_trips_through_parse() {
        let name = QualifiedName::new("My \"Schema\"", "table.with,dots");
        assert_eq!(QualifiedName::parse(&name.quoted()).unwrap(), name);
    }
}
