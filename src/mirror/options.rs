//! What a mirror is told: its name, both servers, its tables and how to run.

use std::sync::Arc;
use std::time::Duration;

use applier::ApplierConfig;
use pgconn::ConnConfig;

use crate::metrics::Metrics;
use crate::selection::TableSelection;

/// Everything a mirror needs to run.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The mirror's name: the key of its progress row; the default slot and publication
    /// names derive from it.
    pub name: String,
    /// The primary.
    pub source: ConnConfig,
    /// The replica.
    pub target: ConnConfig,
    /// The tables, as a publication or a list.
    pub tables: TableSelection,
    /// Slot name (default `pgmirror_<name>`).
    pub slot: Option<String>,
    /// Copy existing rows before streaming.
    pub initial_copy: bool,
    /// Empty non-empty target tables before the initial copy instead of failing.
    pub truncate_target: bool,
    /// Retry when a server cannot be reached at the very first contact (for services that
    /// start before their database); otherwise that fails at once.
    pub retry_first_connect: bool,
    /// Parallel COPY connections for the initial copy.
    pub copy_parallelism: usize,
    /// Binary column values (faster; the default).
    pub binary: bool,
    /// Show progress bars (a terminal) rather than log lines.
    pub progress_bars: bool,
    /// How often sequences are copied while streaming.
    pub sequence_interval: Duration,
    /// Settings of the apply loop.
    pub applier: ApplierConfig,
    /// Where the mirror reports what it does (served by `--metrics-addr`).
    pub metrics: Arc<Metrics>,
}

impl MirrorOptions {
    /// Options with the defaults for everything but the essentials.
    pub fn new(
        name: impl Into<String>,
        source: ConnConfig,
        target: ConnConfig,
        tables: TableSelection,
    ) -> Self {
        MirrorOptions {
            name: name.into(),
            source,
            target,
            tables,
            slot: None,
            initial_copy: true,
            truncate_target: false,
            retry_first_connect: false,
            copy_parallelism: 2,
            binary: true,
            progress_bars: false,
            sequence_interval: Duration::from_secs(30),
            applier: ApplierConfig::default(),
            metrics: Metrics::new(),
        }
    }

    /// The slot's name.
    pub fn slot_name(&self) -> String {
        self.slot.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }

    pub(crate) fn publication_name(&self) -> String {
        self.tables.publication.clone().unwrap_or_else(|| format!("pgmirror_{}", self.name))
    }
}
