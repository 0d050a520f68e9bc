//! `docker/`: no Docker engine runs here, so check everything that can be checked without one.
//! The compose file parses and wires the services together, its `pgmirror` command line (and
//! those in docs/docker.md) parse with the real CLI, every file it mounts exists (the schema is
//! the one the tests use), the init scripts run in order on a real PostgreSQL 15, and the
//! Dockerfile builds the real package.

use std::path::{Path, PathBuf};

use clap::Parser;
use pgconn::ConnConfig;
use pgmirror::cli::{Cli, Command};
use serde_norway::Value;
use tablesync::{QualifiedName, TablePattern};

use crate::common::database;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let path = repo().join("docker/compose.yml");
    let text = std::fs::read_to_string(&path).expect("read docker/compose.yml");
    serde_norway::from_str(&text).expect("docker/compose.yml is valid YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("compose has no service {name:?}"))
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A compose `command`/`test` as words: a list as is, a string split on whitespace.
fn words(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(string).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        other => panic!("expected a command, got {other:?}"),
    }
}

/// A service's `environment`, in map or `KEY=value` list form.
fn env(svc: &Value, key: &str) -> Option<String> {
    match svc.get("environment")? {
        Value::Mapping(m) => m.get(key).map(string),
        Value::Sequence(items) => items.iter().map(string).find_map(|kv| {
            kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_owned())
        }),
        _ => None,
    }
}

/// `host:container` pairs of a service's bind mounts, host paths resolved against docker/.
fn mounts(svc: &Value) -> Vec<(PathBuf, String)> {
    let Some(Value::Sequence(vols)) = svc.get("volumes") else { return Vec::new() };
    vols.iter()
        .map(|v| {
            let spec = string(v);
            let mut parts = spec.split(':');
            let host = parts.next().expect("host path");
            let container = parts.next().unwrap_or_else(|| panic!("volume {spec:?} has no target"));
            (repo().join("docker").join(host), container.to_owned())
        })
        .collect()
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|e| panic!("{} does not exist: {e}", p.display()))
}

/// A connection string with no environment behind it, so only what it says counts.
fn conn(url: &str) -> ConnConfig {
    ConnConfig::parse_with_env(url, &|_| None).expect("connection string parses")
}

#[test]
fn compose_file_names_the_services_settings_and_healthchecks() {
    let compose = compose();
    let primary = service(&compose, "primary");
    let replica = service(&compose, "replica");
    let mirror = service(&compose, "pgmirror");

    for (name, svc) in [("primary", primary), ("replica", replica)] {
        assert_eq!(svc.get("image").map(string).as_deref(), Some("postgres:15"), "{name}");
        let test = words(svc.get("healthcheck").and_then(|h| h.get("test")).expect("healthcheck"));
        assert!(test.iter().any(|w| w == "pg_isready"), "{name} healthcheck: {test:?}");
        // During initdb the image's temporary server listens on the socket only; a TCP check
        // cannot pass before the real server is up.
        assert!(test.windows(2).any(|w| w[0] == "-h" && w[1] == "127.0.0.1"), "{test:?}");
        assert!(env(svc, "POSTGRES_PASSWORD").is_some(), "{name} needs POSTGRES_PASSWORD");
        assert_eq!(env(svc, "POSTGRES_DB").as_deref(), Some("store"), "{name}");
    }

    let args = words(primary.get("command").expect("primary command"));
    assert_eq!(args.first().map(String::as_str), Some("postgres"));
    for setting in ["wal_level=logical", "max_replication_slots=10", "max_wal_senders=10"] {
        assert!(
            args.windows(2).any(|w| w[0] == "-c" && w[1] == setting),
            "primary lacks -c {setting}: {args:?}"
        );
    }

    let depends = mirror.get("depends_on").expect("pgmirror depends_on");
    for dep in ["primary", "replica"] {
        let cond = depends.get(dep).and_then(|d| d.get("condition")).map(string);
        assert_eq!(cond.as_deref(), Some("service_healthy"), "pgmirror waits for {dep}");
    }
    let ports: Vec<String> = match mirror.get("ports") {
        Some(Value::Sequence(p)) => p.iter().map(string).collect(),
        other => panic!("pgmirror ports: {other:?}"),
    };
    assert!(ports.iter().any(|p| p == "9187:9187"), "{ports:?}");

    let build = mirror.get("build").expect("pgmirror build");
    let context = repo().join("docker").join(string(build.get("context").expect("context")));
    assert_eq!(canonical(&context), canonical(repo()), "build context is the repository root");
    let dockerfile = context.join(string(build.get("dockerfile").expect("dockerfile")));
    assert_eq!(canonical(&dockerfile), canonical(&repo().join("docker/Dockerfile")));
}

#[test]
fn compose_mounts_existing_files_and_the_tests_own_schema() {
    let compose = compose();
    let mounts = mounts(service(&compose, "primary"));
    assert!(!mounts.is_empty());
    for (host, container) in &mounts {
        assert!(host.is_file(), "mounted file {} does not exist", host.display());
        assert!(container.starts_with("/docker-entrypoint-initdb.d/"), "{container}");
    }
    let schema = canonical(&repo().join("crates/store/sql/schema.sql"));
    let first = mounts
        .iter()
        .min_by_key(|(_, c)| c.clone())
        .map(|(h, _)| canonical(h))
        .expect("a first init script");
    assert_eq!(first, schema, "the first init script is crates/store/sql/schema.sql");
    assert_eq!(std::fs::read_to_string(&schema).unwrap(), store::SCHEMA_SQL);
}

/// The compose file's pgmirror command, parsed by the real CLI.
#[test]
fn compose_command_parses_with_the_real_cli() {
    let compose = compose();
    let mirror = service(&compose, "pgmirror");
    let mut argv = vec!["pgmirror".to_owned()];
    argv.extend(words(mirror.get("command").expect("pgmirror command")));
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Command::Mirror(args) = cli.command else { panic!("not `mirror`: {argv:?}") };

    // Each --tables value is a comma-separated list.
    let tables: Vec<TablePattern> = args
        .tables
        .tables
        .expect("--tables")
        .iter()
        .flat_map(|t| TablePattern::parse_list(t).expect("table names"))
        .collect();
    let want = store::TABLES.map(|t| TablePattern::Table(QualifiedName::new("public", t)));
    assert_eq!(tables, want.to_vec());
    assert_eq!(args.metrics_addr.as_ref().map(|a| a.port()), Some(9187));
    assert!(args.metrics_addr.is_some_and(|a| a.is_every_interface()), "reachable from outside");

    let password = env(mirror, "PGPASSWORD").expect("pgmirror gets PGPASSWORD");
    let source = args.source.source.as_ref().expect("--source");
    for (url, svc) in [(source, "primary"), (&args.targets.target[0], "replica")] {
        let cfg = conn(url);
        assert_eq!(cfg.host().as_string(), svc, "{svc} is reached by its service name");
        assert_eq!(cfg.port(), 5432);
        assert_eq!(cfg.dbname(), "store");
        assert_eq!(cfg.user(), "postgres");
        assert_eq!(cfg.password(), None, "no password on a command line");
        assert_eq!(env(service(&compose, svc), "POSTGRES_PASSWORD").as_deref(), Some(&*password));
    }
}

/// Every `pgmirror` command shown in docs/docker.md parses with the real CLI.
#[test]
fn documented_commands_parse_with_the_real_cli() {
    let doc = std::fs::read_to_string(repo().join("docs/docker.md")).expect("docs/docker.md");
    let prefix = "docker compose -f docker/compose.yml run --rm pgmirror ";
    let mut seen = Vec::new();
    for line in doc.lines() {
        let Some(rest) = line.trim().strip_prefix(prefix) else { continue };
        let argv: Vec<&str> = std::iter::once("pgmirror").chain(rest.split_whitespace()).collect();
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{line}: {e}"));
        seen.push(format!("{:?}", cli.command).split('(').next().unwrap().to_owned());
    }
    for cmd in ["Status", "Verify", "Drop"] {
        assert!(seen.iter().any(|s| s == cmd), "docs/docker.md shows no `{cmd}`: {seen:?}");
    }
}

/// The primary's init scripts, run in the order the postgres image runs them (by file name),
/// on a real PostgreSQL 15, and the SQL the docs run against the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_scripts_and_documented_sql_run_on_postgres() {
    let compose = compose();
    let mut scripts = mounts(service(&compose, "primary"));
    scripts.sort_by(|a, b| a.1.cmp(&b.1));
    let (_db, client) = database(pgcluster::shared(), "docker_init").await;
    for (host, _) in &scripts {
        let sql = std::fs::read_to_string(host).unwrap();
        client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{}: {e}", host.display()));
    }
    let mut counts = Vec::new();
    for table in store::TABLES {
        let (rows, _) = store::table_fingerprint(&client, table).await.expect("fingerprint");
        counts.push(rows);
    }
    assert_eq!(counts, [100, 50, 200, 600], "seed rows of {:?}", store::TABLES);
    let untotalled: i64 = client
        .query_one(
            "SELECT count(*) FROM orders o WHERE total <> \
             (SELECT sum(quantity * unit_price) FROM order_items i WHERE i.order_id = o.id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(untotalled, 0, "order totals match their items");

    // The docs' psql lines, primary first, then replica (here: the same database).
    let doc = std::fs::read_to_string(repo().join("docs/docker.md")).unwrap();
    let statements: Vec<&str> = doc
        .lines()
        .filter(|l| l.contains(" psql -U postgres store -c \""))
        .map(|l| l.split_once("-c \"").unwrap().1.trim_end().trim_end_matches('"'))
        .collect();
    assert_eq!(statements.len(), 2, "an INSERT on the primary and a SELECT on the replica");
    client.batch_execute(statements[0]).await.expect("documented INSERT");
    let rows = client.query(statements[1], &[]).await.expect("documented SELECT");
    assert_eq!(rows.len(), 1, "the SELECT finds the inserted row");
}

#[test]
fn dockerfile_builds_the_real_package_and_runs_it_unprivileged() {
    let text = std::fs::read_to_string(repo().join("docker/Dockerfile")).expect("Dockerfile");
    let package = env!("CARGO_PKG_NAME");
    assert!(
        text.contains(&format!("cargo build --release --locked -p {package}")),
        "the builder builds package {package}"
    );
    // The binary the tests run is the one the image copies and starts.
    let bin = Path::new(env!("CARGO_BIN_EXE_pgmirror")).file_name().unwrap().to_str().unwrap();
    assert!(text.contains(&format!("target/release/{bin}")));
    assert!(text.contains(&format!("ENTRYPOINT [\"{bin}\"]")));
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms, ["FROM rust:1-bookworm AS build", "FROM debian:bookworm-slim"]);
    let user = text.lines().rfind(|l| l.starts_with("USER ")).expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "runs as non-root: {user}");
    assert!(text.contains("ca-certificates"));

    // --locked needs Cargo.lock in the context; the ignore file must keep the sources.
    assert!(repo().join("Cargo.lock").is_file());
    let ignore = std::fs::read_to_string(repo().join("docker/Dockerfile.dockerignore"))
        .expect("docker/Dockerfile.dockerignore");
    let ignored: Vec<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for needed in ["Cargo.lock", "Cargo.toml", "src", "crates", "benches", "examples"] {
        assert!(!ignored.contains(&needed), "{needed} must reach the build context");
    }
    for heavy in ["target", ".git"] {
        assert!(ignored.contains(&heavy), "{heavy} should stay out of the build context");
    }
}
