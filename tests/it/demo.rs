//! `pgmirror demo`, the README's main job, run end to end as a user would.

use std::process::Command;

#[test]
fn demo_runs_the_whole_lab_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["demo", "--orders", "500", "--transactions", "50"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pgmirror demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for step in [
        "all 20 checks passed",
        "replica equals primary",
        "pg_stat_replication on the primary: application_name=pgmirror",
        "the replica still serves reads",
        "replication resumed",
        "all 4 tables match",
        "both clusters removed",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}

/// Ctrl-C in the middle of the lab removes both clusters and exits 0.
#[test]
fn ctrl_c_in_demo_removes_the_clusters_and_exits_0() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_pgmirror"))
        .args(["demo", "--orders", "500", "--transactions", "50"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgmirror demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ports = Vec::new();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(port) = line.split("127.0.0.1:").nth(1) {
            let port: String = port.chars().take_while(char::is_ascii_digit).collect();
            ports.push(port.parse::<u16>().unwrap());
        }
        if line.starts_with("== 3.") {
            break;
        }
    }
    assert_eq!(ports.len(), 2, "{seen}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("finishing the current transaction"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{seen}{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("Interrupted") && l.contains("both clusters removed")));
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a cluster still listens on {port}"
        );
    }
}
