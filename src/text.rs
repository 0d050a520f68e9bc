//! Small helpers for the words of user-facing messages.

/// `n` and its noun, singular for one: `count(1, "table", "tables")` is `1 table`.
pub fn count<N: std::fmt::Display + TryInto<u8> + Copy>(n: N, one: &str, many: &str) -> String {
    format!("{n} {}", agree(n, one, many))
}

/// The verb for a subject of `n` things: `agree(1, "matches", "match")` is `matches`.
pub fn agree<'a, N: TryInto<u8>>(n: N, one: &'a str, many: &'a str) -> &'a str {
    if matches!(n.try_into(), Ok(1)) { one } else { many }
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
}
