//! How things read in messages and reports: plural forms, table names, sizes.

use tablesync::TableDef;

/// `n` and its noun, singular for one: `count(1, "table", "tables")` is `1 table`.
pub fn count<N: std::fmt::Display + TryInto<u8> + Copy>(n: N, one: &str, many: &str) -> String {
    format!("{n} {}", agree(n, one, many))
}

/// The verb for a subject of `n` things: `agree(1, "matches", "match")` is `matches`.
pub fn agree<'a, N: TryInto<u8>>(n: N, one: &'a str, many: &'a str) -> &'a str {
    if matches!(n.try_into(), Ok(1)) { one } else { many }
}

/// `schema.table` as people write it (unquoted, for reading rather than for SQL).
pub fn display_name(table: &TableDef) -> String {
    format!("{}.{}", table.schema, table.name)
}

/// `1.5 MB`-style sizes (powers of 1024, as PostgreSQL's `pg_size_pretty`).
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let negative = bytes < 0;
    let mut value = bytes.unsigned_abs();
    let mut unit = 0;
    let mut rem = 0;
    while value >= 1024 && unit + 1 < UNITS.len() {
        rem = value % 1024;
        value /= 1024;
        unit += 1;
    }
    let sign = if negative { "-" } else { "" };
    if unit == 0 || value >= 100 {
        format!("{sign}{value} {}", UNITS[unit])
    } else {
        // One decimal from the remainder, without a float cast.
        format!("{sign}{value}.{} {}", rem * 10 / 1024, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(count(1_usize, "table", "tables"), "1 table");
        assert_eq!(count(0_i64, "table", "tables"), "0 tables");
        assert_eq!(count(300_u32, "chunk", "chunks"), "300 chunks");
        assert_eq!(agree(1_u64, "differs", "differ"), "differs");
        assert_eq!(agree(3_u64, "differs", "differ"), "differ");
    }

    #[test]
    fn human_bytes_like_pg_size_pretty() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 kB");
        assert_eq!(human_bytes(16 * 1024 * 1024), "16.0 MB");
        assert_eq!(human_bytes(300 * 1024 * 1024), "300 MB");
        assert_eq!(human_bytes(-2048), "-2.0 kB");
    }
}
