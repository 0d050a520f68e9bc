//! How [`JsonTarget`](super::JsonTarget) renders each column type: builtin array and range
//! types from PostgreSQL's `pg_type.dat`, other types looked up on the source once; the
//! source's settings that shape values' text; the names of `reg*` values.

use std::cell::RefCell;
use std::collections::HashMap;

use tokio_postgres::Client;

use super::money::{self, Money};
use super::oid::{INT2, INT2VECTOR, MONEY, OID, OIDVECTOR, REG_TYPES};
use crate::error::ApplyError;

/// Type OIDs at or above this are assigned at `initdb` or later (`FirstGenbkiObjectId`): they
/// differ between clusters, and pgoutput describes them with a Type message.
const FIRST_GENBKI_OBJECT_ID: u32 = 10_000;
/// Domains over domains (and arrays of domains over arrays) followed at most this deep.
const MAX_NESTING: usize = 8;

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

/// Every builtin range type with its subtype, then every builtin multirange type with its
/// range's subtype.
const BUILTIN_RANGES: &[(u32, u32)] = &[
    (3904, 23),   // int4range
    (3906, 1700), // numrange
    (3908, 1114), // tsrange
    (3910, 1184), // tstzrange
    (3912, 1082), // daterange
    (3926, 20),   // int8range
];
const BUILTIN_MULTIRANGES: &[(u32, u32)] = &[
    (4451, 23),   // int4multirange
    (4532, 1700), // nummultirange
    (4533, 1114), // tsmultirange
    (4534, 1184), // tstzmultirange
    (4535, 1082), // datemultirange
    (4536, 20),   // int8multirange
];

/// How values of one type are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// By this type's own rules (numbers, booleans, else a string).
    Scalar(u32),
    /// A JSON array of `elem` values; `delim` separates elements in the text form.
    Array { elem: u32, delim: u8 },
    /// `int2vector` / `oidvector`: space-separated in text, an array in binary.
    Vector { elem: u32 },
    /// An enum: its label, a string in both formats.
    Enum,
    /// A range of `sub` values.
    Range { sub: u32 },
    /// A multirange of `sub` values.
    Multirange { sub: u32 },
    /// A composite type: its binary form names each field's type.
    Record,
}

/// Settings of the source that its text output of some types follows.
#[derive(Debug, Default)]
pub(super) struct Settings {
    /// `bytea_output = escape` (else hex).
    pub(super) bytea_escape: bool,
    /// How `lc_monetary` lays out money.
    pub(super) money: Money,
}

/// Something rendering found missing, to look up on the source and render again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// How to render a type (a composite's field type).
    Type(u32),
    /// The name of `oid` as a value of the `reg*` type `reg`.
    Name { reg: u32, oid: u32 },
}

/// The shapes of the types seen so far, and where to look up the ones the stream does not
/// describe enough.
#[derive(Debug, Default)]
pub(super) struct Types {
    learned: HashMap<u32, Shape>,
    catalog: Option<Client>,
    /// Read from the catalog with the first types learned; defaults without a catalog.
    settings: Settings,
    settings_read: bool,
    /// Names of `reg*` values by type and OID. Forgotten at each commit, so a renamed object
    /// shows its new name from the next transaction on.
    names: HashMap<(u32, u32), String>,
}

impl Types {
    pub(super) fn with_catalog(catalog: Client) -> Self {
        Types { catalog: Some(catalog), ..Types::default() }
    }

    /// Types that already know `learned` (a domain's base, an array's element), as if read
    /// from a catalog.
    #[cfg(test)]
    pub(super) fn knowing(learned: impl IntoIterator<Item = (u32, Shape)>) -> Self {
        Types { learned: learned.into_iter().collect(), ..Types::default() }
    }

    /// How to render type `oid`. Without a catalog, or before [`learn`](Self::learn) saw it,
    /// a non-builtin type is a scalar (a string).
    pub(super) fn shape(&self, oid: u32) -> Shape {
        builtin(oid).or_else(|| self.learned.get(&oid).copied()).unwrap_or(Shape::Scalar(oid))
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Forgets the names of `reg*` values.
    pub(super) fn forget_names(&mut self) {
        self.names.clear();
    }

    /// Looks up what rendering found missing.
    ///
    /// # Errors
    /// [`ApplyError::TypeLookup`] when a catalog query fails.
    pub(super) async fn resolve(&mut self, wants: Vec<Want>) -> Result<(), ApplyError> {
        let types = wants.iter().filter_map(|w| match w {
            Want::Type(t) => Some(*t),
            Want::Name { .. } => None,
        });
        self.learn(types.collect::<Vec<_>>().into_iter()).await?;
        let Some(catalog) = &self.catalog else { return Ok(()) };
        for &(reg, name) in REG_TYPES {
            let mut oids: Vec<u32> = wants
                .iter()
                .filter_map(|w| match *w {
                    Want::Name { reg: r, oid } if r == reg => Some(oid),
                    _ => None,
                })
                .collect();
            if oids.is_empty() {
                continue;
            }
            oids.sort_unstable();
            oids.dedup();
            // A dropped object's OID prints as the number, as PostgreSQL prints it.
            let rows = catalog
                .query(&format!("SELECT o, o::{name}::text FROM unnest($1::oid[]) AS o"), &[&oids])
                .await
                .map_err(|source| ApplyError::TypeLookup { type_oid: reg, source })?;
            for r in rows {
                self.names.insert((reg, r.get(0)), r.get(1));
            }
            for oid in oids {
                self.names.entry((reg, oid)).or_insert_with(|| oid.to_string());
            }
        }
        Ok(())
    }

    /// Looks up, once each, the non-builtin types among `oids` (and the element, base and
    /// sub-types they need) in the catalog, if there is one; the first time, also the settings.
    ///
    /// # Errors
    /// [`ApplyError::TypeLookup`] when the catalog query fails.
    pub(super) async fn learn(
        &mut self,
        oids: impl Iterator<Item = u32>,
    ) -> Result<(), ApplyError> {
        let Types { learned, catalog, settings, settings_read, .. } = self;
        let Some(catalog) = catalog else { return Ok(()) };
        if !*settings_read {
            *settings = read_settings(catalog).await?;
            *settings_read = true;
        }
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
                let Some(t) = lookup(catalog, oid).await? else {
                    // A type dropped since: its own rules (a string).
                    break Shape::Scalar(oid);
                };
                let sub = match t.typtype.as_str() {
                    "d" => {
                        oid = t.base;
                        continue;
                    }
                    "e" => break Shape::Enum,
                    "c" => break Shape::Record,
                    _ if t.is_array => {
                        todo.push(t.elem);
                        break Shape::Array { elem: t.elem, delim: t.delim };
                    }
                    "r" => t.range_sub,
                    "m" => multirange_sub(catalog, oid).await?,
                    _ => break Shape::Scalar(oid),
                };
                let Some(sub) = sub else { break Shape::Scalar(oid) };
                todo.push(sub);
                break if t.typtype == "r" {
                    Shape::Range { sub }
                } else {
                    Shape::Multirange { sub }
                };
            };
            for oid in chain {
                learned.insert(oid, shape);
            }
        }
        Ok(())
    }
}

/// What rendering one change needs: the types, and what it found missing.
pub(super) struct Cx<'a> {
    pub(super) types: &'a Types,
    wants: RefCell<Vec<Want>>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(types: &'a Types) -> Self {
        Cx { types, wants: RefCell::new(Vec::new()) }
    }

    /// What rendering found missing.
    pub(super) fn into_wants(self) -> Vec<Want> {
        self.wants.into_inner()
    }

    /// Whether `oid`'s shape is known, or cannot be: without a catalog there is nothing to
    /// look up. An unknown type is wanted.
    pub(super) fn knows(&self, oid: u32) -> bool {
        let t = self.types;
        let known = t.catalog.is_none()
            || oid < FIRST_GENBKI_OBJECT_ID
            || builtin(oid).is_some()
            || t.learned.contains_key(&oid);
        if !known {
            self.wants.borrow_mut().push(Want::Type(oid));
        }
        known
    }

    /// The name of `oid` as a value of `reg`, as the source prints it; the number until looked
    /// up (and without a catalog).
    pub(super) fn reg_name(&self, reg: u32, oid: u32) -> String {
        match self.types.names.get(&(reg, oid)) {
            Some(name) => name.clone(),
            None => {
                if self.types.catalog.is_some() {
                    self.wants.borrow_mut().push(Want::Name { reg, oid });
                }
                oid.to_string()
            }
        }
    }
}

/// Reads `bytea_output` and learns how `lc_monetary` lays out money from two probe amounts.
async fn read_settings(catalog: &Client) -> Result<Settings, ApplyError> {
    let row = catalog
        .query_one(
            "SELECT current_setting('bytea_output'), $1::int8::money::text, \
                    (-$1::int8)::money::text, scale(1::int8::money::numeric)",
            &[&money::PROBE],
        )
        .await
        .map_err(|source| ApplyError::TypeLookup { type_oid: MONEY, source })?;
    let (positive, negative): (String, String) = (row.get(1), row.get(2));
    let points = u32::try_from(row.get::<_, i32>(3)).unwrap_or(2);
    let money = Money::learn(&positive, &negative, points).unwrap_or_else(|| {
        tracing::warn!(
            %positive, %negative,
            "money values in binary format print as plain amounts: their layout (lc_monetary) \
             was not recognized; use text format to print them as the source does"
        );
        Money::plain(points)
    });
    Ok(Settings { bytea_escape: row.get::<_, String>(0) == "escape", money })
}

/// What the catalog says about one type.
struct TypeRow {
    typtype: String,
    base: u32,
    elem: u32,
    is_array: bool,
    delim: u8,
    range_sub: Option<u32>,
}

async fn lookup(catalog: &Client, oid: u32) -> Result<Option<TypeRow>, ApplyError> {
    let row = catalog
        .query_opt(
            "SELECT t.typtype::text, t.typbasetype, t.typelem, \
                    coalesce(e.typarray = t.oid, false), coalesce(e.typdelim::text, ','), \
                    r.rngsubtype \
             FROM pg_catalog.pg_type t \
             LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem \
             LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid \
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
        range_sub: r.get(5),
    }))
}

/// The subtype of multirange `oid`'s range (multiranges, and `rngmultitypid`, are new in 14).
async fn multirange_sub(catalog: &Client, oid: u32) -> Result<Option<u32>, ApplyError> {
    let row = catalog
        .query_opt("SELECT rngsubtype FROM pg_catalog.pg_range WHERE rngmultitypid = $1", &[&oid])
        .await
        .map_err(|source| ApplyError::TypeLookup { type_oid: oid, source })?;
    Ok(row.map(|r| r.get(0)))
}

/// The shape of a builtin array, vector, range or multirange type.
fn builtin(oid: u32) -> Option<Shape> {
    if let Ok(i) = BUILTIN_ARRAYS.binary_search_by_key(&oid, |&(array, _, _)| array) {
        let (_, elem, delim) = BUILTIN_ARRAYS[i];
        return Some(Shape::Array { elem, delim });
    }
    let sub = |table: &[(u32, u32)]| table.iter().find(|&&(t, _)| t == oid).map(|&(_, s)| s);
    if let Some(sub) = sub(BUILTIN_RANGES) {
        return Some(Shape::Range { sub });
    }
    if let Some(sub) = sub(BUILTIN_MULTIRANGES) {
        return Some(Shape::Multirange { sub });
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
        assert_eq!(types.shape(3912), Shape::Range { sub: 1082 });
        assert_eq!(types.shape(4536), Shape::Multirange { sub: 20 });
    }
}
