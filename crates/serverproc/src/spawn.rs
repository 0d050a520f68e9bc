//! The spawner thread, signals and `/proc` look-ups.
//!
//! # Why a spawner thread
//! A server must not outlive the test process, even when that process is killed with SIGKILL
//! (no destructor, no `atexit`). Linux's `PR_SET_PDEATHSIG` delivers a signal to the child
//! when its parent dies, but "parent" is the *thread* that forked it: a server spawned from a
//! short-lived test thread would be signalled as soon as that test's thread ends. So every
//! server is forked by one dedicated thread that lives as long as the process. When the
//! process dies, that thread dies with it and the kernel sends each server its death signal.
//! The signal is set in `pre_exec`, which std runs after the uid/gid change, because changing
//! credentials clears it.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, libc::c_int, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` (already configured) from the long-lived spawner thread, in its own process
/// group, with `PR_SET_PDEATHSIG = death_signal`: the kernel sends it that signal when this
/// process dies, however it dies.
///
/// # Errors
/// The spawn failed, or the parent died between fork and exec.
pub fn spawn_tied(mut cmd: Command, death_signal: libc::c_int) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("serverproc-spawner".into())
            .spawn(move || {
                // Lives until the process exits: every sender is kept in the static.
                for (cmd, signal, reply) in rx {
                    let _ = reply.send(spawn_with_deathsig(cmd, signal));
                }
            })
            .expect("spawning the serverproc spawner thread");
        Mutex::new(tx)
    });
    // Own process group: a terminal's Ctrl-C hits the test process, not the server directly;
    // the server then goes down via the death signal.
    cmd.process_group(0);
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((cmd, death_signal, reply_tx))
        .map_err(|_| io::Error::other("serverproc spawner thread is gone"))?;
    reply_rx.recv().map_err(|_| io::Error::other("serverproc spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn spawn_with_deathsig(mut cmd: Command, signal: libc::c_int) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl and getppid; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody will signal us.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other("parent exited before the server started"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to process `pid`. Returns false when the process does not exist.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The pids of the direct children of `pid` (read from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a live (non-zombie) process with this pid exists.
pub fn process_exists(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // Field 3, after the parenthesised command name, is the state; `Z` = zombie, `X` = dead.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Registers `f` to run at process exit (the test harness leaves through `exit()`, which
/// runs `atexit` handlers but no destructors of statics). `f` must not unwind.
#[allow(unsafe_code)]
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: registering a plain function pointer; the handler catches panics itself.
    unsafe {
        libc::atexit(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_children() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        assert!(children_of(std::process::id()).contains(&child.id()));
        assert_eq!(parent_of(child.id()), Some(std::process::id()));
        assert!(process_exists(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!process_exists(child.id()));
    }

    #[test]
    fn a_tied_child_is_a_child_of_this_process() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = spawn_tied(cmd, libc::SIGKILL).unwrap();
        // The spawner is one of this process's threads: the server is our child.
        assert_eq!(parent_of(child.id()), Some(std::process::id()));
        assert!(send_signal(child.id(), libc::SIGTERM));
        assert!(!child.wait().unwrap().success());
        assert!(!send_signal(u32::MAX, libc::SIGTERM), "no such pid");
    }
}
