//! How each PostgreSQL column type is stored in MySQL/MariaDB (the mapping documented in
//! `docs/mysql.md`), and how values of it are checked and converted.

/// Longest text or bytea key in characters or bytes: InnoDB keys hold at most 3072 bytes, and
/// a `utf8mb4` character takes up to 4.
pub const MAX_TEXT_KEY_CHARS: u32 = 768;
const MAX_BYTES_KEY: u32 = 3072;
/// Longest `varchar(n)`/`char(n)` stored as `VARCHAR(n)` rather than `LONGTEXT` (a row holds at
/// most 65,535 bytes of `VARCHAR`s).
const MAX_VARCHAR: u32 = 255;
/// `DECIMAL`'s limits: 65 digits, 30 after the point (MySQL; MariaDB allows 38).
const MAX_PRECISION: u32 = 65;
const MAX_SCALE: u32 = 30;

/// A source column's type with domains followed to their base type, as the source's catalog
/// describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceType {
    /// OID of the base type (a domain's base type, followed through domains over domains).
    pub oid: u32,
    /// The base type's modifier (`atttypmod`, or the domain's `typtypmod`); -1 for none.
    pub typmod: i32,
    /// `pg_type.typtype` of the base type: `b`ase, `e`num, `c`omposite, `r`ange, `m`ultirange.
    pub typtype: u8,
    /// For an array: its element type's OID and the element type's text delimiter.
    pub array_elem: Option<(u32, u8)>,
}

/// How values of a column are converted (see [`super::value`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `t`/`f` → 1/0.
    Bool,
    /// A signed integer.
    Int,
    /// An unsigned integer (`oid`, `xid`, `cid`).
    UInt,
    /// `float4` (`single`) or `float8`: NaN and ±Infinity are unrepresentable.
    Float {
        /// `float4`.
        single: bool,
    },
    /// `DECIMAL(precision, scale)`: digits beyond are unrepresentable, as are NaN and ±Infinity.
    Decimal {
        /// Total digits.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// The text form, at most `max_chars` characters when bounded.
    Text {
        /// `VARCHAR(n)`'s n.
        max_chars: Option<u32>,
    },
    /// The bytes of a `bytea`, at most `max_bytes` when bounded.
    Bytes {
        /// `VARBINARY(n)`'s n.
        max_bytes: Option<u32>,
    },
    /// `DATE`: years 1000-9999 only.
    Date,
    /// `TIME(6)`.
    Time,
    /// `DATETIME(6)`: years 1000-9999; `tz` values are UTC (the offset, always `+00` in the
    /// UTC sessions pgmirror reads with, is dropped).
    DateTime {
        /// From a `timestamptz`.
        tz: bool,
    },
    /// `JSON` holding the value's own JSON text (json, jsonb).
    Json,
    /// `JSON` holding an array of the elements (of builtin type `elem`, delimited by `delim` in
    /// the text form).
    JsonArray {
        /// Element type.
        elem: u32,
        /// Element delimiter in the text form.
        delim: u8,
    },
    /// `JSON` holding the text form as a JSON string (composite values).
    JsonString,
}

/// A MySQL column type and how values go into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlType {
    /// Conversion of values.
    pub kind: Kind,
    /// The column type as `CREATE TABLE` takes it, e.g. `DECIMAL(12,2)`.
    pub sql: String,
}

impl MySqlType {
    fn new(kind: Kind, sql: impl Into<String>) -> Self {
        MySqlType { kind, sql: sql.into() }
    }

    fn text(max_chars: Option<u32>) -> Self {
        match max_chars {
            Some(n) => MySqlType::new(Kind::Text { max_chars: Some(n) }, format!("VARCHAR({n})")),
            None => MySqlType::new(Kind::Text { max_chars: None }, "LONGTEXT"),
        }
    }

    /// `information_schema.COLUMNS.DATA_TYPE` values a compatible existing column may have.
    pub fn data_types(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Bool => &["tinyint", "smallint", "int", "bigint"],
            Kind::Int | Kind::UInt => match self.sql.as_str() {
                "SMALLINT" => &["smallint", "int", "mediumint", "bigint"],
                "INT" | "INT UNSIGNED" => &["int", "bigint"],
                _ => &["bigint"],
            },
            Kind::Float { single: true } => &["float", "double"],
            Kind::Float { single: false } => &["double"],
            Kind::Decimal { .. } => &["decimal"],
            Kind::Text { max_chars: Some(_) } => {
                &["varchar", "char", "text", "mediumtext", "longtext"]
            }
            Kind::Text { max_chars: None } => &["longtext"],
            Kind::Bytes { max_bytes: Some(_) } => &["varbinary", "blob", "mediumblob", "longblob"],
            Kind::Bytes { max_bytes: None } => &["longblob"],
            Kind::Date => &["date"],
            Kind::Time => &["time"],
            Kind::DateTime { .. } => &["datetime"],
            // MariaDB's JSON is LONGTEXT with a JSON_VALID check.
            Kind::Json | Kind::JsonArray { .. } | Kind::JsonString => &["json", "longtext"],
        }
    }
}

/// Builtin type OIDs the mapping names.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const XID: u32 = 28;
    pub const CID: u32 = 29;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const CIDR: u32 = 650;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const PG_LSN: u32 = 3220;
    pub const JSONB: u32 = 3802;
    pub const XID8: u32 = 5069;
}

/// `numeric(p,s)`'s precision and scale from its typmod.
fn numeric_typmod(typmod: i32) -> Option<(i32, i32)> {
    let m = typmod.checked_sub(4)?;
    if typmod < 4 {
        return None;
    }
    // The scale is an 11-bit signed field (PostgreSQL 15 allows negative scales).
    let scale = ((m & 0x7ff) ^ 1024) - 1024;
    Some(((m >> 16) & 0xffff, scale))
}

/// The length of `varchar(n)`, `char(n)` or `bit(n)` from its typmod.
fn length_typmod(oid: u32, typmod: i32) -> Option<u32> {
    let n = match oid {
        oid::BIT | oid::VARBIT => typmod,
        _ => typmod.checked_sub(4)?,
    };
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// The MySQL type of a source column; `key` when it is part of the table's key (text and
/// bytes keys need a bounded length).
pub fn map_type(t: &SourceType, key: bool) -> MySqlType {
    let bounded_text = |n: Option<u32>| match n {
        Some(n) if n <= MAX_VARCHAR || (key && n <= MAX_TEXT_KEY_CHARS) => MySqlType::text(Some(n)),
        _ if key => MySqlType::text(Some(MAX_TEXT_KEY_CHARS)),
        _ => MySqlType::text(None),
    };
    if let Some((elem, delim)) = t.array_elem {
        return MySqlType::new(Kind::JsonArray { elem, delim }, "JSON");
    }
    match t.typtype {
        b'e' => return MySqlType::text(Some(63)),
        b'c' => return MySqlType::new(Kind::JsonString, "JSON"),
        b'r' | b'm' => return bounded_text(None),
        _ => {}
    }
    match t.oid {
        oid::BOOL => MySqlType::new(Kind::Bool, "TINYINT(1)"),
        oid::INT2 => MySqlType::new(Kind::Int, "SMALLINT"),
        oid::INT4 => MySqlType::new(Kind::Int, "INT"),
        oid::INT8 => MySqlType::new(Kind::Int, "BIGINT"),
        oid::OID | oid::XID | oid::CID => MySqlType::new(Kind::UInt, "INT UNSIGNED"),
        oid::XID8 => MySqlType::new(Kind::UInt, "BIGINT UNSIGNED"),
        oid::FLOAT4 => MySqlType::new(Kind::Float { single: true }, "FLOAT"),
        oid::FLOAT8 => MySqlType::new(Kind::Float { single: false }, "DOUBLE"),
        oid::NUMERIC => {
            let (precision, scale) = match numeric_typmod(t.typmod) {
                Some((p, s)) if (0..=p).contains(&s) => (p.unsigned_abs(), s.unsigned_abs()),
                _ => (MAX_PRECISION, MAX_SCALE),
            };
            let (precision, scale) = if precision <= MAX_PRECISION && scale <= MAX_SCALE {
                (precision, scale)
            } else {
                (MAX_PRECISION, MAX_SCALE)
            };
            MySqlType::new(
                Kind::Decimal { precision, scale },
                format!("DECIMAL({precision},{scale})"),
            )
        }
        oid::MONEY => MySqlType::text(Some(32)),
        oid::VARCHAR | oid::BPCHAR | oid::BIT | oid::VARBIT => {
            bounded_text(length_typmod(t.oid, t.typmod))
        }
        oid::CHAR => MySqlType::text(Some(4)),
        oid::NAME => MySqlType::text(Some(64)),
        oid::BYTEA if key => MySqlType::new(
            Kind::Bytes { max_bytes: Some(MAX_BYTES_KEY) },
            format!("VARBINARY({MAX_BYTES_KEY})"),
        ),
        oid::BYTEA => MySqlType::new(Kind::Bytes { max_bytes: None }, "LONGBLOB"),
        oid::DATE => MySqlType::new(Kind::Date, "DATE"),
        oid::TIME => MySqlType::new(Kind::Time, "TIME(6)"),
        oid::TIMESTAMP => MySqlType::new(Kind::DateTime { tz: false }, "DATETIME(6)"),
        oid::TIMESTAMPTZ => MySqlType::new(Kind::DateTime { tz: true }, "DATETIME(6)"),
        oid::JSON | oid::JSONB => MySqlType::new(Kind::Json, "JSON"),
        oid::UUID => MySqlType::text(Some(36)),
        oid::INET | oid::CIDR => MySqlType::text(Some(43)),
        oid::MACADDR => MySqlType::text(Some(17)),
        oid::MACADDR8 => MySqlType::text(Some(23)),
        oid::TIMETZ => MySqlType::text(Some(32)),
        oid::INTERVAL => MySqlType::text(Some(100)),
        oid::PG_LSN => MySqlType::text(Some(17)),
        // tsvector, tsquery, xml, geometric types, types of extensions: their text form.
        _ => bounded_text(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(oid: u32, typmod: i32) -> SourceType {
        SourceType { oid, typmod, typtype: b'b', array_elem: None }
    }

    #[test]
    fn numeric_precision_and_scale() {
        // numeric(12,2), numeric(70,2), numeric(10,-2), numeric without typmod.
        let cases = [
            ((12 << 16) + 2 + 4, "DECIMAL(12,2)"),
            ((70 << 16) + 2 + 4, "DECIMAL(65,30)"),
            ((10 << 16) + 0x7fe + 4, "DECIMAL(65,30)"),
            (-1, "DECIMAL(65,30)"),
        ];
        for (typmod, want) in cases {
            assert_eq!(map_type(&scalar(oid::NUMERIC, typmod), false).sql, want, "{typmod}");
        }
    }

    #[test]
    fn text_lengths_follow_the_key() {
        assert_eq!(map_type(&scalar(oid::VARCHAR, 20 + 4), false).sql, "VARCHAR(20)");
        assert_eq!(map_type(&scalar(oid::VARCHAR, 300 + 4), false).sql, "LONGTEXT");
        assert_eq!(map_type(&scalar(oid::VARCHAR, 300 + 4), true).sql, "VARCHAR(300)");
        assert_eq!(map_type(&scalar(25, -1), true).sql, "VARCHAR(768)");
        assert_eq!(map_type(&scalar(oid::BYTEA, -1), true).sql, "VARBINARY(3072)");
        assert_eq!(map_type(&scalar(oid::BIT, 8), false).sql, "VARCHAR(8)");
        let arr = SourceType { oid: 1007, typmod: -1, typtype: b'b', array_elem: Some((23, b',')) };
        assert_eq!(map_type(&arr, false).kind, Kind::JsonArray { elem: 23, delim: b',' });
    }
}
