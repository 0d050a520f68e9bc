//! Reading a catch-up backlog in large gulps.
//!
//! A walsender flushes its socket after every pgoutput message. When the
//! consumer drains the socket as fast as data arrives, each of those sends
//! becomes a TCP segment of its own and a wake-up of the reader, and on a
//! small machine the walsender spends most of its CPU in the kernel doing that
//! (measured with `perf`: about 2x the walsender CPU of the native subscriber on
//! 100k one-row transactions). PostgreSQL's own subscriber escapes it by being
//! slow: its receive window fills, and the walsender's sends just append to the
//! socket's queue.
//!
//! While catching up, pgmirror does the same on purpose: it caps the receive
//! buffer so the window closes, asks the kernel not to wake it before a good
//! amount has arrived (`SO_RCVLOWAT`), and reads whatever is there at least every
//! [`BULK_READ_WAIT`], so a quiet stream is never held back longer than that. Live
//! streaming keeps the default buffer and wakes on every byte.

use std::os::fd::RawFd;
use std::time::Duration;

/// Receive buffer while catching up (`SO_RCVBUF`; Linux doubles it). Small
/// enough that the window closes between reads on a fast link.
const BULK_RCVBUF: usize = 128 * 1024;
/// Wake-up threshold while catching up (`SO_RCVLOWAT`).
pub(crate) const BULK_LOWAT: usize = 64 * 1024;
/// Longest wait, while reading a backlog in bulk, before reading whatever has arrived.
pub const BULK_READ_WAIT: Duration = Duration::from_millis(10);
/// Receive buffer for live streaming (after bulk reading locked autotuning).
const LIVE_RCVBUF: usize = 4 * 1024 * 1024;
/// Above this round-trip time (microseconds) a small window would throttle the
/// link, so only the wake-up threshold is used.
const SMALL_WINDOW_MAX_RTT_MICROS: u32 = 2_000;

/// The receive side of one TCP socket, switched between live and bulk reading.
#[derive(Debug)]
pub(crate) struct Pacer {
    fd: RawFd,
    bulk: bool,
    /// The receive buffer was shrunk for bulk reading.
    shrunk: bool,
    /// The `SO_RCVLOWAT` currently set.
    lowat: usize,
    /// Bulk reading is off for good because the socket refused an option.
    broken: bool,
}

impl Pacer {
    /// Starts in live mode. `fd` must stay open as long as the pacer is used.
    pub(crate) fn new(fd: RawFd) -> Self {
        Pacer { fd, bulk: false, shrunk: false, lowat: 1, broken: false }
    }

    /// Whether bulk reading is on.
    pub(crate) fn is_bulk(&self) -> bool {
        self.bulk
    }

    /// Switches between bulk and live reading.
    pub(crate) fn set_bulk(&mut self, bulk: bool) {
        if bulk == self.bulk || self.broken {
            return;
        }
        let ok = if bulk {
            let near =
                round_trip_micros(self.fd).is_some_and(|rtt| rtt <= SMALL_WINDOW_MAX_RTT_MICROS);
            self.shrunk = near && set_option(self.fd, libc::SO_RCVBUF, BULK_RCVBUF);
            self.set_lowat(BULK_LOWAT)
        } else {
            let restored = !self.shrunk || set_option(self.fd, libc::SO_RCVBUF, LIVE_RCVBUF);
            self.shrunk = false;
            restored && self.set_lowat(1)
        };
        if ok {
            self.bulk = bulk;
            tracing::debug!(bulk, small_window = self.shrunk, "replication socket reading mode");
        } else {
            // Never leave a half-applied mode behind: live reading always works.
            self.broken = true;
            self.bulk = false;
            let _ = self.set_lowat(1);
            if self.shrunk {
                self.shrunk = !set_option(self.fd, libc::SO_RCVBUF, LIVE_RCVBUF);
            }
        }
    }

    /// Sets `SO_RCVLOWAT` unless it already has that value.
    pub(crate) fn set_lowat(&mut self, lowat: usize) -> bool {
        if self.lowat == lowat {
            return true;
        }
        let ok = set_option(self.fd, libc::SO_RCVLOWAT, lowat);
        if ok {
            self.lowat = lowat;
        }
        ok
    }
}

/// The round-trip time of a TCP socket's path, in microseconds: the kernel's windowed
/// minimum, which the smoothed estimate only approaches on a quiet link. During a catch-up the
/// primary is busy and acknowledges our status updates late, so the smoothed value of a
/// loopback link read over 2 ms in two of three bench runs, the window was left wide open, and
/// the walsender spent about twice the CPU.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn round_trip_micros(fd: RawFd) -> Option<u32> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: `fd` is an open TCP socket; `info` is a zeroed `tcp_info` of `len`
    // bytes and the kernel writes at most `len` bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    // SAFETY: zero is a valid value for every field, and the kernel filled a prefix.
    let info = (rc == 0).then(|| unsafe { info.assume_init() })?;
    Some(path_round_trip(info.tcpi_rtt, info.tcpi_min_rtt))
}

/// The path's round trip from `tcp_info`: the minimum when the kernel reports one (a kernel
/// whose `tcp_info` ends before that field leaves it zero), else the smoothed estimate.
#[cfg(target_os = "linux")]
fn path_round_trip(smoothed: u32, minimum: u32) -> u32 {
    if minimum > 0 { minimum } else { smoothed }
}

/// Elsewhere the round-trip time is unknown, so the window is left alone.
#[cfg(not(target_os = "linux"))]
fn round_trip_micros(_fd: RawFd) -> Option<u32> {
    None
}

/// `setsockopt(fd, SOL_SOCKET, name, value)`; false on failure.
#[allow(unsafe_code)]
fn set_option(fd: RawFd, name: libc::c_int, value: usize) -> bool {
    let Ok(value) = libc::c_int::try_from(value) else {
        return false;
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is a socket owned by the connection for as long as the pacer
    // lives, and the option value is a valid c_int of the given length.
    let rc =
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, name, (&raw const value).cast(), len) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            option = name,
            "setsockopt failed; reading the replication stream without pacing"
        );
    }
    rc == 0
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    #[allow(unsafe_code)]
    fn get_option(fd: RawFd, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap();
        // SAFETY: an open socket and a c_int-sized out parameter.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &raw mut len)
        };
        assert_eq!(rc, 0);
        value
    }

    #[test]
    fn bulk_mode_sets_and_clears_the_wakeup_threshold() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = stream.as_raw_fd();
        let mut pacer = Pacer::new(fd);
        assert!(!pacer.is_bulk());

        pacer.set_bulk(true);
        assert!(pacer.is_bulk());
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 64 * 1024);
        if cfg!(target_os = "linux") {
            // Loopback is near: the window is capped too (Linux doubles the value).
            assert_eq!(get_option(fd, libc::SO_RCVBUF), 2 * 128 * 1024);
        }

        assert!(pacer.set_lowat(1));
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 1);
        assert!(pacer.set_lowat(BULK_LOWAT));

        pacer.set_bulk(false);
        assert!(!pacer.is_bulk());
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 1);
        assert!(get_option(fd, libc::SO_RCVBUF) >= 4 * 1024 * 1024);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_near_link_still_counts_as_near() {
        // Smoothed RTT inflated by a busy primary's late ACKs; the path's minimum is 40 us.
        let rtt = path_round_trip(38_000, 40);
        assert!(rtt <= SMALL_WINDOW_MAX_RTT_MICROS, "{rtt}");
        // A far link stays far, and a kernel without a minimum falls back to the estimate.
        assert_eq!(path_round_trip(30_000, 25_000), 25_000);
        assert_eq!(path_round_trip(1_500, 0), 1_500);
    }

    #[test]
    fn a_socket_that_refuses_options_stays_live() {
        // Not a socket: every option fails, and reading stays in live mode.
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut pacer = Pacer::new(file.as_raw_fd());
        pacer.set_bulk(true);
        assert!(!pacer.is_bulk());
        pacer.set_bulk(true);
        assert!(!pacer.is_bulk());
    }
}
