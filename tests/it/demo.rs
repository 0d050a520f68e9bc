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
        "all 16 checks passed",
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
