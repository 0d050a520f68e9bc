//! Local server processes that die with the process that started them.
//!
//! The plumbing behind throwaway servers for tests, benchmarks and demos (`pgcluster`'s
//! PostgreSQL clusters, `testservers`' MariaDB and NATS servers):
//!
//! - [`spawn_tied`]: every server is forked by one long-lived thread with
//!   `PR_SET_PDEATHSIG`, so the kernel signals it when this process dies, even by SIGKILL;
//! - [`ServerProcess`]: start with readiness polling, stop with a signal and patience,
//!   SIGKILL of the server and its children, the server log and its tail;
//! - [`RunAs`]: running as a service user (`postgres`, `mysql`) when root, with directories
//!   owned by it;
//! - [`Template`]: a data directory initialised once per process and copied for each server;
//! - [`free_port`], [`unique_name`], [`at_exit`] for clean-up of process-wide servers.
#![deny(missing_docs)]

mod error;
mod ports;
mod program;
mod server;
mod spawn;
mod template;
mod user;

use std::sync::atomic::{AtomicU64, Ordering};

pub use error::{Error, IoContext, log_tail_says_port_clash};
pub use ports::free_port;
pub use program::{find_program, run};
pub use server::{LogGuard, ServerProcess};
pub use spawn::{at_exit, children_of, process_exists, send_signal, spawn_tied};
pub use template::{Template, copy_tree, tempdir};
pub use user::{RunAs, private_dir, private_file};

/// A process-unique, valid, lower-case identifier: the sanitized `prefix` followed by the
/// process id and a counter, at most 63 bytes. Usable unquoted as a database, slot,
/// publication or stream name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{}_{n}", std::process::id());
    let mut name: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        name.insert(0, 'x');
    }
    name.truncate(63 - suffix.len());
    name.push_str(&suffix);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_and_valid() {
        let a = unique_name("My-Test");
        let b = unique_name("My-Test");
        assert_ne!(a, b);
        assert!(a.starts_with("my_test_"), "{a}");
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63);
        assert!(unique_name("9lives").starts_with("x9lives_"));
        for n in [a, b, long] {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }
}
