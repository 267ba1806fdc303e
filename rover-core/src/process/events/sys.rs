//! The two syscalls the source threads wait with: an eventfd that the
//! consumer signals to stop them, and `poll` on it (and the ring buffer).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Stop was asked for.
    Stop,
    /// The other fd is readable.
    Ready,
    /// The time was up.
    Timeout,
}

/// Signalled once, by the consumer, to stop a source's thread.
#[derive(Debug)]
pub(crate) struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the fd is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(StopSignal {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot
        // fail but by overflowing the counter, which still leaves it readable.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Waits until stop is signalled, `other` is readable, or `timeout`
    /// passed (`None`: no limit). Interrupted waits are retried as timeouts.
    pub(crate) fn wait(&self, other: Option<BorrowedFd<'_>>, timeout: Option<Duration>) -> Wake {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: other.map_or(-1, |fd| fd.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let millis = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        // SAFETY: `fds` is a live array of two pollfds (a negative fd is
        // ignored by poll).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
        if ready <= 0 {
            return Wake::Timeout;
        }
        if fds[0].revents != 0 {
            Wake::Stop
        } else {
            Wake::Ready
        }
    }
}
