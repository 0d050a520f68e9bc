//! A per-process initdb template: `initdb` runs once, every further cluster copies it.
//!
//! initdb takes about a second (it boots a single-user backend several times); copying its
//! ~40 MB result takes a few tens of milliseconds. The template is pristine (trust auth, no
//! settings): each cluster writes its own configuration into its copy.

use std::path::Path;
use std::process::Command;

use serverproc::{RunAs, Template};

use crate::Error;

static TEMPLATE: Template = Template::new("pgcluster-template-");

/// Runs initdb into `data_dir` (which must not exist yet or be empty and owned by the server
/// user).
pub(crate) fn initdb(bindir: &Path, data_dir: &Path, run_as: RunAs) -> Result<(), Error> {
    let mut cmd = Command::new(bindir.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        .env("LC_ALL", "C")
        .current_dir(data_dir.parent().unwrap_or(Path::new("/")));
    run_as.apply(&mut cmd);
    Ok(serverproc::run(cmd, None)?)
}

/// Fills `data_dir` (to be created) with a fresh cluster, copying the process-wide template
/// when one exists for `bindir`, creating it on first use.
pub(crate) fn materialize(bindir: &Path, data_dir: &Path, run_as: RunAs) -> Result<(), Error> {
    TEMPLATE.copy_to(bindir, run_as, data_dir, |template_data| {
        initdb(bindir, template_data, run_as)?;
        crate::cluster::register_exit_cleanup();
        Ok(())
    })
}

/// Removes the template (called at process exit).
pub(crate) fn remove() {
    TEMPLATE.remove();
}
