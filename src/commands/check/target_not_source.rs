//! The check that the target is not the source's own database.

use crate::preflight::{Report, pg_error_text};
use pgconn::ConnConfig;

/// Whether the target is another database than the source's. Fails the check when it is the
/// same one, in which case the other target checks (which would suggest emptying its tables)
/// must not run. Connection failures are left to the connection checks.
pub(super) async fn check(source: &ConnConfig, target: &ConnConfig, report: &mut Report) -> bool {
    const CHECK: &str = "target is not the source";
    let (Ok(source), Ok(target)) =
        (pgconn::connect_sql(source).await, pgconn::connect_sql(target).await)
    else {
        return true;
    };
    let identities = async {
        Ok::<_, tokio_postgres::Error>((
            crate::same_database::identify(&source).await?,
            crate::same_database::identify(&target).await?,
        ))
    };
    match identities.await {
        Ok((theirs, ours)) if theirs.same_database(&ours) => {
            report.fail(
                CHECK,
                format!(
                    "--target reaches the source's own database {:?}: pgmirror would write into \
                     the tables it reads",
                    ours.database
                ),
                "point --target at another database or server (another database of the same \
                 server is fine)",
            );
            false
        }
        Ok((_, ours)) => {
            report.pass(CHECK, format!("{:?} is not the source's database", ours.database));
            true
        }
        Err(e) => {
            report.fail(CHECK, pg_error_text(&e), "see the error above");
            false
        }
    }
}
