//! OIDs of the builtin types whose values are rendered by type (`pg_type.dat`).

pub(super) const BOOL: u32 = 16;
pub(super) const BYTEA: u32 = 17;
pub(super) const CHAR: u32 = 18;
pub(super) const NAME: u32 = 19;
pub(super) const INT8: u32 = 20;
pub(super) const INT2: u32 = 21;
pub(super) const INT2VECTOR: u32 = 22;
pub(super) const INT4: u32 = 23;
pub(super) const REGPROC: u32 = 24;
pub(super) const TEXT: u32 = 25;
pub(super) const OID: u32 = 26;
pub(super) const TID: u32 = 27;
pub(super) const XID: u32 = 28;
pub(super) const CID: u32 = 29;
pub(super) const OIDVECTOR: u32 = 30;
pub(super) const JSON: u32 = 114;
pub(super) const XML: u32 = 142;
pub(super) const PG_NODE_TREE: u32 = 194;
pub(super) const POINT: u32 = 600;
pub(super) const LSEG: u32 = 601;
pub(super) const PATH: u32 = 602;
pub(super) const BOX: u32 = 603;
pub(super) const POLYGON: u32 = 604;
pub(super) const LINE: u32 = 628;
pub(super) const CIDR: u32 = 650;
pub(super) const FLOAT4: u32 = 700;
pub(super) const FLOAT8: u32 = 701;
pub(super) const UNKNOWN: u32 = 705;
pub(super) const CIRCLE: u32 = 718;
pub(super) const MACADDR8: u32 = 774;
pub(super) const MONEY: u32 = 790;
pub(super) const MACADDR: u32 = 829;
pub(super) const INET: u32 = 869;
pub(super) const BPCHAR: u32 = 1042;
pub(super) const VARCHAR: u32 = 1043;
pub(super) const DATE: u32 = 1082;
pub(super) const TIME: u32 = 1083;
pub(super) const TIMESTAMP: u32 = 1114;
pub(super) const TIMESTAMPTZ: u32 = 1184;
pub(super) const INTERVAL: u32 = 1186;
pub(super) const TIMETZ: u32 = 1266;
pub(super) const BIT: u32 = 1560;
pub(super) const VARBIT: u32 = 1562;
pub(super) const NUMERIC: u32 = 1700;
pub(super) const REFCURSOR: u32 = 1790;
pub(super) const REGPROCEDURE: u32 = 2202;
pub(super) const REGOPER: u32 = 2203;
pub(super) const REGOPERATOR: u32 = 2204;
pub(super) const REGCLASS: u32 = 2205;
pub(super) const REGTYPE: u32 = 2206;
pub(super) const UUID: u32 = 2950;
pub(super) const TXID_SNAPSHOT: u32 = 2970;
pub(super) const PG_LSN: u32 = 3220;
pub(super) const TSVECTOR: u32 = 3614;
pub(super) const TSQUERY: u32 = 3615;
pub(super) const REGCONFIG: u32 = 3734;
pub(super) const REGDICTIONARY: u32 = 3769;
pub(super) const JSONB: u32 = 3802;
pub(super) const JSONPATH: u32 = 4072;
pub(super) const REGNAMESPACE: u32 = 4089;
pub(super) const REGROLE: u32 = 4096;
pub(super) const REGCOLLATION: u32 = 4191;
pub(super) const PG_MCV_LIST: u32 = 5017;
pub(super) const PG_SNAPSHOT: u32 = 5038;
pub(super) const XID8: u32 = 5069;

/// The `reg*` types, whose binary form is an OID and whose text is the object's name, with
/// the name to cast to.
pub(super) const REG_TYPES: &[(u32, &str)] = &[
    (REGPROC, "regproc"),
    (REGPROCEDURE, "regprocedure"),
    (REGOPER, "regoper"),
    (REGOPERATOR, "regoperator"),
    (REGCLASS, "regclass"),
    (REGTYPE, "regtype"),
    (REGCONFIG, "regconfig"),
    (REGDICTIONARY, "regdictionary"),
    (REGNAMESPACE, "regnamespace"),
    (REGROLE, "regrole"),
    (REGCOLLATION, "regcollation"),
];
