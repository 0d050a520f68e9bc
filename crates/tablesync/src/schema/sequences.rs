//! Sequences of the tables to create: identity sequences (recreated with their column),
//! serial sequences and those named by `nextval` defaults (created under the source's name
//! before the table, and owned by their column again).

use tokio_postgres::Client;

use crate::catalog::SequenceDef;
use crate::error::{DbContext, Error};

/// A source sequence and the column that owns it, if one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SeqSpec {
    pub(super) oid: u32,
    pub(super) def: SequenceDef,
    /// The owning relation's OID and column number, and whether it is an identity column's.
    pub(super) owner: Option<(u32, i32, bool)>,
}

impl SeqSpec {
    /// The identity column's `( ... )` options: the source's name and parameters.
    pub(super) fn identity_options(&self) -> String {
        let d = &self.def;
        format!(
            "SEQUENCE NAME {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}",
            d.qualified_name().quoted(),
            d.increment,
            d.min_value,
            d.max_value,
            d.start,
            d.cache,
            if d.cycle { "CYCLE" } else { "NO CYCLE" }
        )
    }
}

const SEQUENCES_SQL: &str = "SELECT s.oid, sn.nspname::text, s.relname::text, \
            pg_catalog.format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement, q.seqmin, \
            q.seqmax, q.seqcache, q.seqcycle, o.refobjid, o.refobjsubid, o.deptype = 'i' \
     FROM pg_catalog.pg_class s \
     JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace \
     JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid \
     LEFT JOIN pg_catalog.pg_depend o ON o.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
          AND o.objid = s.oid AND o.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
          AND o.deptype IN ('a', 'i') AND o.refobjsubid > 0 \
     WHERE s.relkind = 'S' AND (s.oid = ANY($1) OR o.refobjid = ANY($2)) \
     ORDER BY s.oid";

/// The sequences `seqs` (named by defaults) and those owned by columns of `rels`.
pub(super) async fn load(
    client: &Client,
    seqs: &[u32],
    rels: &[u32],
) -> Result<Vec<SeqSpec>, Error> {
    let rows = client
        .query(SEQUENCES_SQL, &[&seqs, &rels])
        .await
        .db_context(|| "reading the sequences of the tables to create on the source".to_owned())?;
    Ok(rows
        .iter()
        .map(|r| {
            let start: i64 = r.get(4);
            let owner_rel: Option<u32> = r.get(10);
            let owner = owner_rel.map(|rel| (rel, r.get::<_, i32>(11), r.get::<_, bool>(12)));
            SeqSpec {
                oid: r.get(0),
                def: SequenceDef {
                    schema: r.get(1),
                    name: r.get(2),
                    data_type: r.get(3),
                    start,
                    increment: r.get(5),
                    min_value: r.get(6),
                    max_value: r.get(7),
                    cache: r.get(8),
                    cycle: r.get(9),
                    last_value: start,
                    is_called: false,
                    used_by: None,
                    identity: owner.is_some_and(|(_, _, identity)| identity),
                },
                owner,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_options_keep_name_and_parameters() {
        let spec = SeqSpec {
            oid: 1,
            def: SequenceDef {
                schema: "app".into(),
                name: "film_id_seq".into(),
                data_type: "integer".into(),
                start: 100,
                increment: 5,
                min_value: 1,
                max_value: 2_147_483_647,
                cache: 1,
                cycle: false,
                last_value: 100,
                is_called: false,
                used_by: None,
                identity: true,
            },
            owner: Some((7, 1, true)),
        };
        assert_eq!(
            spec.identity_options(),
            "SEQUENCE NAME \"app\".\"film_id_seq\" INCREMENT BY 5 MINVALUE 1 \
             MAXVALUE 2147483647 START WITH 100 CACHE 1 NO CYCLE"
        );
    }
}
