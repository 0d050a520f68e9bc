//! Running server programs as the right OS user, and the postmaster spawner thread.
//!
//! # Why a spawner thread
//! A postmaster must not outlive the test process, even when that process is killed with
//! SIGKILL (no destructor, no `atexit`). Linux's `PR_SET_PDEATHSIG` delivers a signal to the
//! child when its parent dies, but "parent" is the *thread* that forked it: a postmaster
//! spawned from a short-lived test thread would be signalled as soon as that test's thread
//! ends. So every postmaster is forked by one dedicated thread that lives as long as the
//! process. When the process dies, that thread dies with it and the kernel sends each
//! postmaster SIGQUIT (immediate shutdown: it stops its backends and removes its shared
//! memory and socket files). The death signal is set in `pre_exec`, which std runs after the
//! uid/gid change, because changing credentials clears it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::Error;
use crate::error::IoContext;

/// The OS identity the server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// Run as the current (non-root) user.
    Current,
    /// We are root: run as this uid/gid (the `postgres` user).
    User {
        /// Target uid.
        uid: u32,
        /// Target gid.
        gid: u32,
    },
}

impl RunAs {
    /// Decides who runs the server: ourselves, or `postgres` when we are root.
    pub(crate) fn detect() -> Result<Self, Error> {
        if !is_root() {
            return Ok(RunAs::Current);
        }
        lookup_user("postgres")
            .map(|(uid, gid)| RunAs::User { uid, gid })
            .ok_or(Error::NoPostgresUser)
    }

    /// Applies the identity to a command.
    pub(crate) fn apply(self, cmd: &mut Command) {
        if let RunAs::User { uid, gid } = self {
            cmd.uid(uid).gid(gid);
        }
    }

    /// Hands a path we created over to the server user (no-op when not root).
    pub(crate) fn chown(self, path: &Path) -> Result<(), Error> {
        if let RunAs::User { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .ctx(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    /// Recursively hands a tree over to the server user.
    pub(crate) fn chown_tree(self, root: &Path) -> Result<(), Error> {
        if self == RunAs::Current {
            return Ok(());
        }
        self.chown(root)?;
        if fs::symlink_metadata(root).ctx(|| format!("stat {}", root.display()))?.is_dir() {
            for entry in fs::read_dir(root).ctx(|| format!("read dir {}", root.display()))? {
                let entry = entry.ctx(|| format!("read dir {}", root.display()))?;
                self.chown_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

fn is_root() -> bool {
    // geteuid cannot fail; std has no safe wrapper, so read it from /proc instead of `unsafe`.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Looks a user up in /etc/passwd, returning (uid, gid).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// Creates a directory that only the server user can access (mode 0700).
pub(crate) fn private_dir(path: &Path, run_as: RunAs) -> Result<(), Error> {
    fs::create_dir_all(path).ctx(|| format!("create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .ctx(|| format!("chmod {}", path.display()))?;
    run_as.chown(path)
}

/// Runs a helper program to completion, feeding `stdin`, and fails with its output if it
/// exits unsuccessfully. Secrets are passed via stdin, never argv.
pub(crate) fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Result<(), Error> {
    use std::io::Write;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ctx(|| format!("spawn {program}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was configured as piped");
        pipe.write_all(input).ctx(|| format!("write stdin of {program}"))?;
    }
    let out = child.wait_with_output().ctx(|| format!("wait for {program}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(Error::CommandFailed { program, status: out.status, output })
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` (already configured) from the long-lived spawner thread, with
/// `PR_SET_PDEATHSIG = SIGQUIT` and its own process group.
pub(crate) fn spawn_postmaster(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pgcluster-spawner".into())
            .spawn(move || {
                // Lives until the process exits: every sender is kept in the static.
                for (cmd, reply) in rx {
                    let _ = reply.send(spawn_with_deathsig(cmd));
                }
            })
            .expect("spawning the pgcluster spawner thread");
        Mutex::new(tx)
    });
    // Own process group: a terminal's Ctrl-C hits the test process, not the postmaster
    // directly; the postmaster then goes down via the death signal.
    cmd.process_group(0);
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("pgcluster spawner thread is gone"))?;
    reply_rx.recv().map_err(|_| io::Error::other("pgcluster spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn spawn_with_deathsig(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl and getppid; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
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
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The pids of the direct children of `pid` (read from /proc).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
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
pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // Field 3, after the parenthesised command name, is the state; `Z` = zombie, `X` = dead.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Registers `f` to run at process exit (the test harness leaves through `exit()`, which
/// runs `atexit` handlers but no destructors of statics).
#[allow(unsafe_code)]
pub(crate) fn at_exit(f: extern "C" fn()) {
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
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn looks_up_root() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-pgcluster"), None);
    }
}
