//! Catalog reads whose text output is turned into DDL.

use std::future::Future;

use tokio_postgres::Client;

use crate::error::{DbContext, Error};

/// Runs `read` inside a read-only transaction with an empty `search_path`, as pg_dump does:
/// `format_type`, `pg_get_expr`, `pg_get_indexdef` and `pg_get_constraintdef` then qualify
/// every name outside `pg_catalog`, so the statements built from them mean the same on the
/// target whatever its `search_path`, and texts read on both sides compare equal.
pub(super) async fn qualified<T, F, Fut>(client: &Client, side: &str, read: F) -> Result<T, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    client
        .batch_execute("BEGIN READ ONLY; SET LOCAL search_path = ''")
        .await
        .db_context(|| format!("reading the {side}'s catalog"))?;
    let result = read().await;
    // Read-only: committing or rolling back is the same; a broken connection shows in `result`.
    let _ = client.batch_execute("ROLLBACK").await;
    result
}

/// `"schema"."name"` from the two catalog parts.
pub(super) fn qualify(schema: &str, name: &str) -> String {
    crate::ident::QualifiedName::new(schema, name).quoted()
}
