//! The table flags of the commands that stream (`mirror`, `tail`, `record`): a publication,
//! or a list of tables with exclusions.

use clap::{ArgGroup, Args};

use crate::selection::TableSelection;

/// The flags that select the tables: a publication, or a list of tables.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("table_source").args(["publication", "tables"]).required(true)))]
pub struct TableArgs {
    /// An existing publication on the source.
    #[arg(long, value_name = "NAME")]
    pub publication: Option<String>,
    /// Tables as `name`, `schema.name` or `schema.*` (every table of the schema when the
    /// command starts), comma-separated; quote names with capitals, dots or commas
    /// (`"My.Schema".*`). A publication is created for them.
    #[arg(long, value_name = "A,B,...")]
    pub tables: Option<Vec<String>>,
    /// Tables to leave out of `--tables`, in the same syntax (`app.audit`, `staging.*`).
    /// Not with `--publication`, which alone decides what is streamed.
    #[arg(long, value_name = "A,B,...")]
    pub exclude_tables: Option<Vec<String>>,
}

impl From<TableArgs> for TableSelection {
    fn from(args: TableArgs) -> Self {
        TableSelection {
            publication: args.publication,
            tables: args.tables,
            exclude_tables: args.exclude_tables,
        }
    }
}
