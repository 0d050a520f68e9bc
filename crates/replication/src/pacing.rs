//! Reading a catch-up backlog in large gulps.
//!
//! A walsender flushes its socket after every pgoutput message. When the
//! consumer drains the socket as fast as data arrives, each of those sends
//! becomes a TCP segment of its own and a wake-up of the reader, and on a
//! small machine the walsender spends most of its CPU in the kernel doing that:
//! over loopback, a send into an open window carries its segment into the
//! reader's socket in the sender's own system call. PostgreSQL's own subscriber
//! escapes it by being slow: its receive window stays closed, the walsender's
//! sends only append to its socket's queue, and the subscriber's reads, as they
//! open the window, move that queue across in large segments.
//!
//! While catching up over a near link, pgmirror does the same on purpose: it
//! caps the receive buffer so the window closes after a few dozen kilobytes,
//! and after a read that leaves less than a quarter of that waiting it pauses
//! and then takes at most half a window, so the walsender meets a closed window
//! for most of its sends; when more is waiting, the walsender is ahead and the
//! next read goes at once and takes all there is, so it is never held back. The
//! pause follows the walsender's pace: about as long as it takes to fill the
//! window (see [`Pacer::after_pause`]).
//!
//! A sender does not send into a window smaller than its segments, which over
//! loopback are up to 64 kB but never above half the widest window it has seen;
//! so a link with such segments has every window clamped to 64 kB from its
//! start, and one whose window grew wider anyway keeps a larger buffer and
//! unpaced reads. Over a far link the window is left alone (it would throttle
//! the link), and the kernel is asked not to wake pgmirror before a good amount
//! has arrived (`SO_RCVLOWAT`), reading whatever is there at least every
//! [`BULK_READ_WAIT`]. Live streaming wakes on every byte.

use std::os::fd::RawFd;
use std::time::Duration;

/// Receive buffer while catching up over a near link (`SO_RCVBUF`; Linux doubles it):
/// small enough that the window closes within a pause. Measured over loopback on Linux
/// 6.18 with a 2 ms pause: 16 kB stalled a catch-up for minutes (its window was below
/// the walsender's segments), 64 kB kept the walsender's CPU as high as without pausing.
const BULK_RCVBUF: usize = 32 * 1024;
/// Receive buffer while catching up over a near link whose segments may not fit
/// [`BULK_RCVBUF`]'s window (see [`segments_fit`]): reads are not paced then.
const UNFIT_BULK_RCVBUF: usize = 128 * 1024;
/// Longest pause, while catching up over a near link, after a read that left less than
/// [`AHEAD`] waiting, and the first one of each catch-up.
/// Over loopback (Linux 6.18, docs/performance-notes.md), on a machine where a walsender
/// took 1.3-1.6 s of CPU for 100k one-row transactions with fsync on: 4 ms still let the
/// window open in some runs (3k-61k segments over six), 8 ms kept it shut in all six
/// (0.6k-1.6k). A walsender three times faster fills the window in a fraction of that and
/// then waits for the rest of the pause, hence [`Pacer::after_pause`].
const LONGEST_PAUSE: Duration = Duration::from_millis(8);
/// Shortest pause: below it, pausing saves the walsender nothing over reading at once.
const SHORTEST_PAUSE: Duration = Duration::from_micros(500);
/// The most a read right after a pause takes: half of what the window holds (Linux doubles
/// [`BULK_RCVBUF`]).
const BULK_GULP: usize = BULK_RCVBUF;
/// This much waiting right after a read, over a near link while catching up, means the
/// walsender is ahead: a quarter of what the window holds. A read of [`BULK_GULP`] from a full
/// window leaves a little less than that (a full window held 63 kB of data over loopback,
/// not 64), and the rest of a segment partly read keeps its memory and the window closed
/// until it is read: pausing then would only leave the walsender waiting.
const AHEAD: usize = BULK_GULP / 2;
/// Wake-up threshold while catching up over a far link (`SO_RCVLOWAT`).
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
    /// The receive buffer was shrunk for bulk reading (near link).
    shrunk: bool,
    /// Bulk reads are paced: the buffer was shrunk to [`BULK_RCVBUF`].
    paced: bool,
    /// The next paced read pauses first.
    pause_next: bool,
    /// How long it pauses (see [`Pacer::after_pause`]).
    pause: Duration,
    /// The most bytes found queued at the end of the latest pauses: about what the window
    /// holds when closed, once at least [`BULK_GULP`].
    fullest: usize,
    /// The widest receive window announced so far, as far as known (see [`segments_fit`]).
    widest: u32,
    /// The `SO_RCVLOWAT` currently set.
    lowat: usize,
    /// Bulk reading is off for good because the socket refused an option.
    broken: bool,
}

impl Pacer {
    /// Starts in live mode. `fd` must stay open as long as the pacer is used.
    pub(crate) fn new(fd: RawFd) -> Self {
        clamp_window(fd);
        Pacer {
            fd,
            bulk: false,
            shrunk: false,
            paced: false,
            pause_next: false,
            pause: LONGEST_PAUSE,
            fullest: 0,
            widest: 0,
            lowat: 1,
            broken: false,
        }
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
            let link = link(self.fd);
            self.widest = self.widest.max(link.map_or(u32::MAX, |l| l.rcv_ssthresh));
            let near = link.is_some_and(|l| l.rtt_micros <= SMALL_WINDOW_MAX_RTT_MICROS);
            let fits = link.is_some_and(|l| segments_fit(l.advmss, self.widest));
            let buffer = if fits { BULK_RCVBUF } else { UNFIT_BULK_RCVBUF };
            self.shrunk = near && set_option(self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, buffer);
            self.paced = self.shrunk && fits;
            self.pause_next = false;
            self.pause = LONGEST_PAUSE;
            self.fullest = 0;
            // A paced read wants whatever is there; the threshold is for the others.
            self.paced || self.set_lowat(BULK_LOWAT)
        } else {
            let restored =
                !self.shrunk || set_option(self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, LIVE_RCVBUF);
            self.shrunk = false;
            self.paced = false;
            restored && self.set_lowat(1)
        };
        if ok {
            self.bulk = bulk;
            tracing::debug!(
                bulk,
                small_window = self.shrunk,
                paced = self.paced,
                widest = self.widest,
                pause_us = self.pause.as_micros(),
                "replication socket reading mode"
            );
        } else {
            // Never leave a half-applied mode behind: live reading always works.
            self.broken = true;
            self.bulk = false;
            self.paced = false;
            let _ = self.set_lowat(1);
            if self.shrunk {
                self.shrunk = !set_option(self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, LIVE_RCVBUF);
            }
        }
    }

    /// Whether bulk reads are paced: on a near link whose segments fit the small window.
    pub(crate) fn is_paced(&self) -> bool {
        self.bulk && self.paced
    }

    /// How long the next paced read should pause first, if it should (see
    /// [`Pacer::after_read`]).
    pub(crate) fn pause(&self) -> Option<Duration> {
        self.pause_next.then_some(self.pause)
    }

    /// Adapts the pause to what the walsender sent during the one that just ended.
    ///
    /// A window found full was full for part of the pause, with the walsender waiting for
    /// pgmirror: the next pause is shorter. One not yet full took the walsender's sends, each
    /// crossing as a segment of its own, for all of it: the next pause is longer, and the
    /// pause settles at about the time the walsender takes to fill the window. Until the
    /// socket has held [`BULK_GULP`], what a closed window holds is not known and the pause
    /// stays as it is.
    pub(crate) fn after_pause(&mut self) {
        let Some(queued) = queued_bytes(self.fd) else { return };
        // The most recent pauses say what the window holds: the first ones of a catch-up
        // can find more, sent into the wider window announced before the buffer shrank.
        self.fullest = queued.max(self.fullest - self.fullest / 16);
        if self.fullest < BULK_GULP {
            return;
        }
        self.pause = if queued >= self.fullest - self.fullest / 8 {
            (self.pause * 3 / 4).max(SHORTEST_PAUSE)
        } else {
            (self.pause * 3 / 2).min(LONGEST_PAUSE)
        };
    }

    /// The most the next paced read may take: after a pause, [`BULK_GULP`]; else all there is.
    ///
    /// During a pause the walsender's sends fill what the last read opened of the window.
    /// Taking half of it leaves the rest queued, so the window reopens by half and the
    /// walsender's next sends soon meet it closed again; a read that takes everything
    /// reopens all of it to sends that each cross as a segment of their own when the
    /// walsender is slower than the pause (100k one-row transactions, Linux 6.18, one round:
    /// 44k-170k segments against 1.0k-18k; that backlog still falls either way from one run to
    /// the next, docs/performance-notes.md). A read that follows a gulp takes everything, so
    /// that a walsender ahead of pgmirror has its queue moved a whole window at a time.
    pub(crate) fn read_limit(&self) -> Option<u64> {
        self.pause_next.then_some(BULK_GULP as u64)
    }

    /// Notes, after a paced read, whether the next read pauses: unless at least
    /// [`AHEAD`] is already waiting behind it.
    ///
    /// A read opens the window, and the walsender's queued sends cross at once, in the
    /// read's own system call over loopback: that much data waiting right after a read means
    /// the walsender is ahead, and the next read goes at once. Otherwise pausing now, with
    /// the window refilled from what the walsender had queued, leaves its next sends to queue
    /// behind the closed window. The size of the read itself says less: a read is large
    /// whenever pgmirror took a while over the one before, even with the walsender in step.
    /// Through TLS, what is buffered in plaintext is not in the socket, so there the next
    /// read pauses only when the socket is empty.
    pub(crate) fn after_read(&mut self, tls: bool) {
        let waiting = queued_bytes(self.fd);
        self.pause_next = if tls { waiting == Some(0) } else { waiting.is_some_and(|w| w < AHEAD) };
    }

    /// Sets `SO_RCVLOWAT` unless it already has that value.
    pub(crate) fn set_lowat(&mut self, lowat: usize) -> bool {
        if self.lowat == lowat {
            return true;
        }
        let ok = set_option(self.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, lowat);
        if ok {
            self.lowat = lowat;
        }
        ok
    }
}

/// What `tcp_info` says about a connected TCP socket's link.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// The path's round trip, in microseconds.
    rtt_micros: u32,
    /// The segment size we announced: the largest the primary may send us.
    advmss: u32,
    /// The receive window's current ceiling: the widest window announced since the receive
    /// buffer was last shrunk (it only grows otherwise).
    rcv_ssthresh: u32,
}

/// The link of a TCP socket, from `tcp_info`.
///
/// The round trip is the kernel's windowed minimum, which the smoothed estimate only
/// approaches on a quiet link. During a catch-up the primary is busy and acknowledges our
/// status updates late, so the smoothed value of a loopback link read over 2 ms in two of
/// three bench runs, the window was left wide open, and the walsender spent about twice the
/// CPU.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn link(fd: RawFd) -> Option<Link> {
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
    Some(Link {
        rtt_micros: path_round_trip(info.tcpi_rtt, info.tcpi_min_rtt),
        advmss: info.tcpi_advmss,
        rcv_ssthresh: info.tcpi_rcv_ssthresh,
    })
}

/// The path's round trip from `tcp_info`: the minimum when the kernel reports one (a kernel
/// whose `tcp_info` ends before that field leaves it zero), else the smoothed estimate.
#[cfg(target_os = "linux")]
fn path_round_trip(smoothed: u32, minimum: u32) -> u32 {
    if minimum > 0 { minimum } else { smoothed }
}

/// Elsewhere the link is unknown, so the window is left alone.
#[cfg(not(target_os = "linux"))]
fn link(_fd: RawFd) -> Option<Link> {
    None
}

/// Whether the primary's segments always fit in the small bulk window.
///
/// A sender does not send into a window smaller than its segment size except by a probe
/// every 200 ms or more, and its segment size is our announced one (`advmss`), bounded by
/// half the widest window we ever announced. Over loopback (64 kB segments) a window that had
/// once grown past 64 kB would leave the small one all but stalled (a 16 kB buffer did:
/// minutes for a backlog of seconds). Network interfaces' segments (1.5 or 9 kB) always fit.
fn segments_fit(advmss: u32, widest_window: u32) -> bool {
    advmss.min(widest_window / 2) <= LARGEST_FITTING_SEGMENT
}

/// The largest segment the bulk window (half of its buffer) is known to take.
const LARGEST_FITTING_SEGMENT: u32 = 32 * 1024;
/// The window clamp (`TCP_WINDOW_CLAMP`) of a link with larger segments than that.
#[cfg(target_os = "linux")]
const WINDOW_CLAMP: usize = 64 * 1024;

/// Bytes waiting in a socket's receive queue (`FIONREAD`); `None` on failure.
#[allow(unsafe_code)]
fn queued_bytes(fd: RawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: `fd` is a socket owned by the connection for as long as the pacer
    // lives, and FIONREAD writes one c_int.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &raw mut queued) };
    if rc == 0 { usize::try_from(queued).ok() } else { None }
}

/// Loopback's segments (64 kB) fit the small bulk window only while every window announced
/// stays within 64 kB (see [`segments_fit`]): a link with segments that large gets its
/// window clamped before the first one. Receive-buffer autotuning raises the clamp as it
/// grows the buffer (a window of 89 kB was seen before a backlog was recognised as one), so
/// the buffer is fixed at the live size first.
#[cfg(target_os = "linux")]
fn clamp_window(fd: RawFd) {
    if link(fd).is_some_and(|l| l.advmss > LARGEST_FITTING_SEGMENT)
        && set_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, LIVE_RCVBUF)
    {
        set_option(fd, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, WINDOW_CLAMP);
    }
}

/// Elsewhere the link is unknown and reads are never paced.
#[cfg(not(target_os = "linux"))]
fn clamp_window(_fd: RawFd) {}

/// `setsockopt(fd, level, name, value)`; false on failure.
#[allow(unsafe_code)]
fn set_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: usize) -> bool {
    let Ok(value) = libc::c_int::try_from(value) else {
        return false;
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is a socket owned by the connection for as long as the pacer
    // lives, and the option value is a valid c_int of the given length.
    let rc = unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), len) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            option = name,
            "setsockopt failed on the replication socket"
        );
    }
    rc == 0
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    fn get_option(fd: RawFd, name: libc::c_int) -> libc::c_int {
        get_option_at(fd, libc::SOL_SOCKET, name)
    }

    #[allow(unsafe_code)]
    fn get_option_at(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap();
        // SAFETY: an open socket and a c_int-sized out parameter.
        let rc =
            unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
        assert_eq!(rc, 0);
        value
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn bulk_mode_on_a_near_link_caps_the_window_and_paces_reads() {
        use std::io::{Read, Write};

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let fd = stream.as_raw_fd();
        let mut pacer = Pacer::new(fd);
        assert!(!pacer.is_bulk());
        // Loopback's segments are large: every window stays within 64 kB.
        assert_eq!(get_option_at(fd, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP), 64 * 1024);

        pacer.set_bulk(true);
        assert!(pacer.is_bulk() && pacer.is_paced());
        // Loopback is near: the window is capped (Linux doubles the value) and every
        // byte wakes the reader, whose reads are paced instead.
        assert_eq!(get_option(fd, libc::SO_RCVBUF), 2 * 32 * 1024);
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 1);
        assert_eq!(pacer.pause(), None, "the first read after switching goes at once");

        // Little waiting after a read: pause. A gulp waiting: the walsender is ahead.
        server.write_all(&[7; 100]).unwrap();
        let mut buf = vec![0; 64 * 1024];
        stream.read_exact(&mut buf[..60]).unwrap();
        pacer.after_read(false);
        assert_eq!(pacer.pause(), Some(LONGEST_PAUSE), "40 bytes waiting");
        assert_eq!(pacer.read_limit(), Some(32 * 1024), "after a pause, half a window");
        server.write_all(&buf[..BULK_GULP + 8 * 1024]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The socket holds the most it has held: the walsender waited, the next pause is
        // shorter.
        pacer.after_pause();
        let shorter = LONGEST_PAUSE * 3 / 4;
        stream.read_exact(&mut buf[..40]).unwrap();
        pacer.after_read(false);
        assert_eq!(pacer.pause(), None, "a gulp waiting");
        assert_eq!(pacer.read_limit(), None, "the next read takes the whole gulp");
        stream.read_exact(&mut buf[..BULK_GULP + 8 * 1024]).unwrap();
        server.write_all(&[7; 100]).unwrap();
        stream.read_exact(&mut buf[..60]).unwrap();
        pacer.after_read(false);
        assert_eq!(pacer.pause(), Some(shorter));
        // Far from full after the pause: the walsender is slower, the next pause longer.
        pacer.after_pause();
        assert_eq!(pacer.pause(), Some(LONGEST_PAUSE));
        stream.read_exact(&mut buf[..40]).unwrap();

        // What a read of half a window leaves of a full one (31,744 bytes over loopback) is
        // more than a quarter window: the next read goes at once.
        server.write_all(&buf[..BULK_GULP - 1024 + 60]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        stream.read_exact(&mut buf[..60]).unwrap();
        pacer.after_read(false);
        assert_eq!(pacer.pause(), None, "31,744 bytes waiting");
        stream.read_exact(&mut buf[..BULK_GULP - 1024]).unwrap();

        // Through TLS, only an empty socket pauses.
        server.write_all(&[7; 100]).unwrap();
        stream.read_exact(&mut buf[..60]).unwrap();
        pacer.after_read(true);
        assert_eq!(pacer.pause(), None, "40 bytes still queued");
        stream.read_exact(&mut buf[..40]).unwrap();
        pacer.after_read(true);
        assert!(pacer.pause().is_some());

        pacer.set_bulk(false);
        assert!(!pacer.is_bulk() && !pacer.is_paced());
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 1);
        assert!(get_option(fd, libc::SO_RCVBUF) >= 4 * 1024 * 1024);
    }

    #[test]
    fn the_small_window_needs_the_primarys_segments_to_fit() {
        // A network interface's segments fit whatever the window did.
        assert!(segments_fit(1_448, 4 << 20));
        assert!(segments_fit(8_948, u32::MAX));
        // Loopback's 64 kB segments, bounded by half the widest window announced.
        assert!(segments_fit(65_483, 65_483));
        assert!(segments_fit(65_483, 64 * 1024));
        assert!(!segments_fit(65_483, 256 * 1024));
        assert!(!segments_fit(65_483, u32::MAX), "an unknown window counts as wide");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_window_that_grew_wide_keeps_a_loopback_link_out_of_the_small_window() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        let fd = stream.as_raw_fd();
        let mut pacer = Pacer::new(fd);
        pacer.widest = 1 << 20;
        pacer.set_bulk(true);
        assert!(pacer.is_bulk() && !pacer.is_paced());
        assert_eq!(get_option(fd, libc::SO_RCVBUF), 2 * 128 * 1024);
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 64 * 1024);
        pacer.set_bulk(false);
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 1);
    }

    #[test]
    fn the_wakeup_threshold_is_set_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = stream.as_raw_fd();
        let mut pacer = Pacer::new(fd);
        assert!(pacer.set_lowat(BULK_LOWAT));
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 64 * 1024);
        assert!(pacer.set_lowat(BULK_LOWAT));
        assert!(pacer.set_lowat(1));
        assert_eq!(get_option(fd, libc::SO_RCVLOWAT), 1);
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
