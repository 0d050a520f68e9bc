//! Which mirror an operator command (`status`, `verify`, `resync`, `drop`) is about: from its
//! `--name` or `--slot` and what `pgmirror.mirrors` on the target records.

use anyhow::Context;
use tokio_postgres::Client;

use super::registry::{self, MirrorRecord};

/// Which mirror an operator command is about, as far as it can be found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRef {
    /// The mirror's name (its progress row's key).
    pub name: String,
    /// Its slot on the primary.
    pub slot: String,
    /// Its row in `pgmirror.mirrors`, when a target was given and has one.
    pub record: Option<MirrorRecord>,
}

/// Finds the mirror from `--name` / `--slot` and the target's `pgmirror.mirrors`:
/// - `--name N`: its row, else slot `pgmirror_N`;
/// - `--slot S`: the row with that slot, else a name derived from the slot;
/// - neither: the only mirror recorded on the target, else mirror `default`.
///
/// # Errors
/// Query errors on the target.
pub async fn resolve_mirror(
    target: Option<&Client>,
    name: Option<&str>,
    slot: Option<&str>,
) -> anyhow::Result<MirrorRef> {
    let has_registry = match target {
        Some(t) => {
            registry::exists(t).await.context("looking for pgmirror.mirrors on the target")?
        }
        None => false,
    };
    let registry_client = target.filter(|_| has_registry);
    let name = match (name, slot, registry_client) {
        (Some(n), _, _) => n.to_owned(),
        (None, Some(s), Some(t)) => registry::name_by(t, registry::Lookup::Slot, s)
            .await
            .context("reading pgmirror.mirrors")?
            .unwrap_or_else(|| name_from_slot(s)),
        (None, Some(s), None) => name_from_slot(s),
        (None, None, Some(t)) => registry::only_name(t)
            .await
            .context("reading pgmirror.mirrors")?
            .unwrap_or_else(|| "default".to_owned()),
        (None, None, None) => "default".to_owned(),
    };
    let record = match registry_client {
        Some(t) => registry::load(t, &name).await.context("reading pgmirror.mirrors")?,
        None => None,
    };
    let slot = slot
        .map(str::to_owned)
        .or_else(|| record.as_ref().map(|r| r.slot.clone()))
        .unwrap_or_else(|| format!("pgmirror_{name}"));
    Ok(MirrorRef { name, slot, record })
}

fn name_from_slot(slot: &str) -> String {
    slot.strip_prefix("pgmirror_").unwrap_or(slot).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_map_back_to_mirror_names() {
        assert_eq!(name_from_slot("pgmirror_shop"), "shop");
        assert_eq!(name_from_slot("other"), "other");
    }
}
