//! How [`JsonTarget`](super::JsonTarget) renders each column type: builtin array types from
//! PostgreSQL's `pg_type.dat`, other types looked up on the source once.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::ApplyError;

/// Type OIDs at or above this are assigned at `initdb` or later (`FirstGenbkiObjectId`): they
/// differ between clusters, and pgoutput describes them with a Type message.
const FIRST_GENBKI_OBJECT_ID: u32 = 10_000;
/// Domains over domains (and arrays of domains over arrays) followed at most this deep.
const MAX_NESTING: usize = 8;

pub(super) const INT2: u32 = 21;
pub(super) const INT2VECTOR: u32 = 22;
pub(super) const OID: u32 = 26;
pub(super) const OIDVECTOR: u32 = 30;

/// Every builtin array type (`pg_type.dat`, PostgreSQL 15, pseudo-types left out) with its
/// element type and the element type's delimiter in the text form (`typdelim`).
const BUILTIN_ARRAYS: &[(u32, u32, u8)] = &[
    (143, 142, b','),   // xml
    (199, 114, b','),   // json
    (210, 71, b','),    // pg_type
    (270, 75, b','),    // pg_attribute
    (271, 5069, b','),  // xid8
    (272, 81, b','),    // pg_proc
    (273, 83, b','),    // pg_class
    (629, 628, b','),   // line
    (651, 650, b','),   // cidr
    (719, 718, b','),   // circle
    (775, 774, b','),   // macaddr8
    (791, 790, b','),   // money
    (1000, 16, b','),   // bool
    (1001, 17, b','),   // bytea
    (1002, 18, b','),   // char
    (1003, 19, b','),   // name
    (1005, 21, b','),   // int2
    (1006, 22, b','),   // int2vector
    (1007, 23, b','),   // int4
    (1008, 24, b','),   // regproc
    (1009, 25, b','),   // text
    (1010, 27, b','),   // tid
    (1011, 28, b','),   // xid
    (1012, 29, b','),   // cid
    (1013, 30, b','),   // oidvector
    (1014, 1042, b','), // bpchar
    (1015, 1043, b','), // varchar
    (1016, 20, b','),   // int8
    (1017, 600, b','),  // point
    (1018, 601, b','),  // lseg
    (1019, 602, b','),  // path
    (1020, 603, b';'),  // box: its text form has commas
    (1021, 700, b','),  // float4
    (1022, 701, b','),  // float8
    (1027, 604, b','),  // polygon
    (1028, 26, b','),   // oid
    (1034, 1033, b','), // aclitem
    (1040, 829, b','),  // macaddr
    (1041, 869, b','),  // inet
    (1115, 1114, b','), // timestamp
    (1182, 1082, b','), // date
    (1183, 1083, b','), // time
    (1185, 1184, b','), // timestamptz
    (1187, 1186, b','), // interval
    (1231, 1700, b','), // numeric
    (1270, 1266, b','), // timetz
    (1561, 1560, b','), // bit
    (1563, 1562, b','), // varbit
    (2201, 1790, b','), // refcursor
    (2207, 2202, b','), // regprocedure
    (2208, 2203, b','), // regoper
    (2209, 2204, b','), // regoperator
    (2210, 2205, b','), // regclass
    (2211, 2206, b','), // regtype
    (2949, 2970, b','), // txid_snapshot
    (2951, 2950, b','), // uuid
    (3221, 3220, b','), // pg_lsn
    (3643, 3614, b','), // tsvector
    (3644, 3642, b','), // gtsvector
    (3645, 3615, b','), // tsquery
    (3735, 3734, b','), // regconfig
    (3770, 3769, b','), // regdictionary
    (3807, 3802, b','), // jsonb
    (3905, 3904, b','), // int4range
    (3907, 3906, b','), // numrange
    (3909, 3908, b','), // tsrange
    (3911, 3910, b','), // tstzrange
    (3913, 3912, b','), // daterange
    (3927, 3926, b','), // int8range
    (4073, 4072, b','), // jsonpath
    (4090, 4089, b','), // regnamespace
    (4097, 4096, b','), // regrole
    (4192, 4191, b','), // regcollation
    (5039, 5038, b','), // pg_snapshot
    (6150, 4451, b','), // int4multirange
    (6151, 4532, b','), // nummultirange
    (6152, 4533, b','), // tsmultirange
    (6153, 4534, b','), // tstzmultirange
    (6155, 4535, b','), // datemultirange
    (6157, 4536, b','), // int8multirange
];

/// How values of one type are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// By this type's own rules (numbers, booleans, JSON, else a string).
    Scalar(u32),
    /// A JSON array of `elem` values; `delim` separates elements in the text form.
    Array { elem: u32, delim: u8 },
    /// `int2vector` / `oidvector`: space-separated in text, an array in binary.
    Vector { elem: u32 },
    /// An enum: its label, a string in both formats.
    Enum,
}

/// The shapes of the types seen so far, and where to look up the ones the stream does not
/// describe enough.
#[derive(Debug, Default)]
pub(super) struct Types {
    learned: HashMap<u32, Shape>,
    catalog: Option<Client>,
}

impl Types {
    pub(super) fn with_catalog(catalog: Client) -> Self {
        Types { learned: HashMap::new(), catalog: Some(catalog) }
    }

    /// How to render type `oid`. Without a catalog, or before [`learn`](Self::learn) saw it,
    /// a non-builtin type is a scalar (a string).
    pub(super) fn shape(&self, oid: u32) -> Shape {
        builtin(oid).or_else(|| self.learned.get(&oid).copied()).unwrap_or(Shape::Scalar(oid))
    }

    /// Looks up, once each, the non-builtin types among `oids` (and the element and base
    /// types they need) in the catalog, if there is one.
    ///
    /// # Errors
    /// [`ApplyError::TypeLookup`] when the catalog query fails.
    pub(super) async fn learn(
        &mut self,
        oids: impl Iterator<Item = u32>,
    ) -> Result<(), ApplyError> {
        let Types { learned, catalog } = self;
        let Some(catalog) = catalog else { return Ok(()) };
        let unknown = |o: &u32, learned: &HashMap<u32, Shape>| {
            *o >= FIRST_GENBKI_OBJECT_ID && !learned.contains_key(o)
        };
        let mut todo: Vec<u32> = oids.filter(|o| unknown(o, learned)).collect();
        while let Some(first) = todo.pop() {
            // A domain is rendered as its base type (as to_json does): follow the chain.
            let mut chain = Vec::new();
            let mut oid = first;
            let shape = loop {
                if let Some(shape) = builtin(oid).or_else(|| learned.get(&oid).copied()) {
                    break shape;
                }
                if oid < FIRST_GENBKI_OBJECT_ID || chain.len() > MAX_NESTING {
                    break Shape::Scalar(oid);
                }
                chain.push(oid);
                match lookup(catalog, oid).await? {
                    Some(t) if t.typtype == "d" => oid = t.base,
                    Some(t) if t.typtype == "e" => break Shape::Enum,
                    Some(t) if t.is_array => {
                        if unknown(&t.elem, learned) {
                            todo.push(t.elem);
                        }
                        break Shape::Array { elem: t.elem, delim: t.delim };
                    }
                    // Anything else, or a type dropped since: its own rules (a string).
                    _ => break Shape::Scalar(oid),
                }
            };
            for oid in chain {
                learned.insert(oid, shape);
            }
        }
        Ok(())
    }
}

/// What the catalog says about one type.
struct TypeRow {
    typtype: String,
    base: u32,
    elem: u32,
    is_array: bool,
    delim: u8,
}

async fn lookup(catalog: &Client, oid: u32) -> Result<Option<TypeRow>, ApplyError> {
    let row = catalog
        .query_opt(
            "SELECT t.typtype::text, t.typbasetype, t.typelem, \
                    coalesce(e.typarray = t.oid, false), coalesce(e.typdelim::text, ',') \
             FROM pg_catalog.pg_type t \
             LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem \
             WHERE t.oid = $1",
            &[&oid],
        )
        .await
        .map_err(|source| ApplyError::TypeLookup { type_oid: oid, source })?;
    Ok(row.map(|r| TypeRow {
        typtype: r.get(0),
        base: r.get(1),
        elem: r.get(2),
        is_array: r.get(3),
        delim: r.get::<_, String>(4).bytes().next().unwrap_or(b','),
    }))
}

/// The shape of a builtin array or vector type.
fn builtin(oid: u32) -> Option<Shape> {
    if let Ok(i) = BUILTIN_ARRAYS.binary_search_by_key(&oid, |&(array, _, _)| array) {
        let (_, elem, delim) = BUILTIN_ARRAYS[i];
        return Some(Shape::Array { elem, delim });
    }
    match oid {
        INT2VECTOR => Some(Shape::Vector { elem: INT2 }),
        OIDVECTOR => Some(Shape::Vector { elem: OID }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_arrays_are_sorted_for_binary_search() {
        assert!(BUILTIN_ARRAYS.windows(2).all(|w| w[0].0 < w[1].0));
        let types = Types::default();
        assert_eq!(types.shape(1007), Shape::Array { elem: 23, delim: b',' });
        assert_eq!(types.shape(1020), Shape::Array { elem: 603, delim: b';' });
        assert_eq!(types.shape(23), Shape::Scalar(23));
        assert_eq!(types.shape(30), Shape::Vector { elem: OID });
        assert_eq!(types.shape(20_000), Shape::Scalar(20_000));
    }
}
