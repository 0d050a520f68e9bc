//! The MariaDB installation: its programs, the per-process template data directory and each
//! server's option file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serverproc::{RunAs, Template};

use crate::Error;
use crate::conf::quoted_path;

/// The programs of Debian's `mariadb-server`.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    pub(crate) mariadbd: PathBuf,
    install_db: PathBuf,
}

const PACKAGE: &str = "mariadb-server";

impl Programs {
    /// Finds `mariadbd` and `mariadb-install-db`.
    pub(crate) fn find() -> Result<Programs, Error> {
        let find = |program| {
            serverproc::find_program(program)
                .ok_or(Error::NotInstalled { program, package: PACKAGE })
        };
        Ok(Programs { mariadbd: find("mariadbd")?, install_db: find("mariadb-install-db")? })
    }
}

/// Who runs `mariadbd`: ourselves, or the `mysql` user when we are root (mariadbd refuses
/// root unless told otherwise, and should).
pub(crate) fn run_as() -> Result<RunAs, Error> {
    RunAs::detect("mysql").map_err(|e| match e {
        serverproc::Error::NoSuchUser { .. } => {
            Error::NoServiceUser { user: "mysql", program: "mariadbd", package: PACKAGE }
        }
        other => other.into(),
    })
}

/// Settings the data directory is created with and served with: the redo log's size (a
/// different size makes every start rewrite it).
const REDO_LOG_SIZE: &str = "16M";

/// Run once into the template: `root` may log in from 127.0.0.1, ::1 and the socket
/// (`mariadb-install-db` creates those accounts, without a password); the account for the
/// machine's host name is dropped, since `skip-name-resolve` ignores it with a warning.
const TEMPLATE_SQL: &str = "\
DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
";

static TEMPLATE: Template = Template::new("testservers-mariadb-template-");

/// Fills `data_dir` (to be created) with a fresh data directory, copying the process-wide
/// template, made on first use by `mariadb-install-db` (about 2.5 s).
pub(crate) fn materialize(
    programs: &Programs,
    run_as: RunAs,
    data_dir: &Path,
) -> Result<(), Error> {
    TEMPLATE.copy_to(&programs.mariadbd, run_as, data_dir, |template_data| {
        let dir = template_data.parent().unwrap_or(Path::new("/"));
        let options = dir.join("install.cnf");
        // A temporary directory of its own: see `option_file`.
        let tmp = dir.join("tmp");
        serverproc::private_dir(&tmp, run_as)?;
        let text = format!(
            "[mariadbd]\ninnodb-log-file-size = {REDO_LOG_SIZE}\nskip-log-bin\ntmpdir = {}\n",
            quoted_path(&tmp)?
        );
        serverproc::private_file(&options, text.as_bytes(), run_as)?;
        let users = dir.join("users.sql");
        serverproc::private_file(&users, TEMPLATE_SQL.as_bytes(), run_as)?;
        let mut cmd = Command::new(&programs.install_db);
        // `--defaults-file` must come first.
        cmd.arg(format!("--defaults-file={}", options.display()))
            .arg(format!("--datadir={}", template_data.display()))
            .arg(format!("--extra-file={}", users.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg("--skip-name-resolve")
            .current_dir(dir);
        run_as.apply(&mut cmd);
        serverproc::run(cmd, None)?;
        crate::exit::register_cleanup();
        Ok(())
    })
}

/// Removes the template (at process exit).
pub(crate) fn remove_template() {
    TEMPLATE.remove();
}

/// Where a server's files are.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) base: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) options: PathBuf,
    pub(crate) tmp: PathBuf,
}

impl Paths {
    pub(crate) fn new(base: &Path) -> Paths {
        Paths {
            base: base.to_path_buf(),
            data_dir: base.join("data"),
            socket: base.join("mariadbd.sock"),
            options: base.join("my.cnf"),
            tmp: base.join("tmp"),
        }
    }
}

/// What goes into the option file besides the paths and the port.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub(crate) binlog: bool,
    pub(crate) fast_unsafe: bool,
    /// Caller settings, validated, written last so they override ours.
    pub(crate) settings: Vec<(String, String)>,
}

/// The option file of a server on `port`: `[mariadbd]` settings for tests.
pub(crate) fn option_file(paths: &Paths, port: u16, options: &Options) -> Result<String, Error> {
    let mut lines = vec![
        "# written by testservers".to_owned(),
        "[mariadbd]".to_owned(),
        format!("datadir = {}", quoted_path(&paths.data_dir)?),
        format!("socket = {}", quoted_path(&paths.socket)?),
        format!("pid-file = {}", quoted_path(&paths.base.join("mariadbd.pid"))?),
        // mariadbd deletes every `#sql*` file of its tmpdir when it starts: servers sharing
        // /tmp would delete each other's temporary tables.
        format!("tmpdir = {}", quoted_path(&paths.tmp)?),
        format!("port = {port}"),
        "bind-address = 127.0.0.1".to_owned(),
        "skip-name-resolve".to_owned(),
    ];
    let mut settings: Vec<(&str, &str)> = vec![
        ("character-set-server", "utf8mb4"),
        ("collation-server", "utf8mb4_general_ci"),
        // Strict: bad values fail instead of being truncated with a warning.
        ("sql-mode", "TRADITIONAL"),
        ("default-time-zone", "+00:00"),
        // `LOAD DATA LOCAL INFILE` allowed on the server side.
        ("local-infile", "1"),
        ("max-connections", "200"),
        ("innodb-buffer-pool-size", "64M"),
        ("innodb-log-file-size", REDO_LOG_SIZE),
        // The default 12 MB temporary tablespace is written in full at every start.
        ("innodb-temp-data-file-path", "ibtmp1:1M:autoextend"),
    ];
    if options.binlog {
        settings.extend([("log-bin", "binlog"), ("binlog-format", "ROW"), ("server-id", "1")]);
    } else {
        lines.push("skip-log-bin".to_owned());
    }
    if options.fast_unsafe {
        // Commits survive a crash of the server, not of the machine.
        settings.extend([
            ("innodb-flush-log-at-trx-commit", "2"),
            ("innodb-doublewrite", "0"),
            ("sync-binlog", "0"),
        ]);
    }
    settings.extend(options.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    lines.extend(settings.into_iter().map(|(name, value)| format!("{name} = {value}")));
    lines.push(String::new());
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_file_has_the_test_settings_and_the_callers_last() {
        let paths = Paths::new(Path::new("/tmp/x"));
        let options = Options {
            binlog: false,
            fast_unsafe: true,
            settings: vec![("innodb-buffer-pool-size".into(), "256M".into())],
        };
        let text = option_file(&paths, 3307, &options).unwrap();
        assert!(text.starts_with("# written by testservers\n[mariadbd]\n"), "{text}");
        assert!(text.contains("datadir = \"/tmp/x/data\"\n"), "{text}");
        assert!(text.contains("port = 3307\n"));
        assert!(text.contains("skip-log-bin\n"));
        assert!(text.contains("innodb-flush-log-at-trx-commit = 2\n"));
        let ours = text.find("innodb-buffer-pool-size = 64M").unwrap();
        let theirs = text.find("innodb-buffer-pool-size = 256M").unwrap();
        assert!(ours < theirs, "the caller's setting comes last and wins");

        let binlog = Options { binlog: true, ..Options::default() };
        let text = option_file(&paths, 3307, &binlog).unwrap();
        assert!(text.contains("log-bin = binlog\n") && !text.contains("skip-log-bin"), "{text}");
        assert!(!text.contains("innodb-flush-log-at-trx-commit"), "durable by default");
    }
}
