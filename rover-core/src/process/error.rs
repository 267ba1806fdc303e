//! Why a process could not be read or a selector not built.

use std::io;
use std::path::PathBuf;

/// Why [`ProcessInfo::read`](super::ProcessInfo::read), a listing, a
/// support probe or a [`Selector`](super::Selector) failed.
///
/// A process that exits while it is read is [`Error::NoSuchProcess`];
/// listings skip those rather than fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process does not exist (any more).
    #[error("no process {pid}")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// The process has no executable: a kernel thread (or a zombie).
    #[error("process {pid} has no executable (a kernel thread, or exited)")]
    NoExecutable {
        /// The process.
        pid: u32,
    },
    /// A file could not be read (permission, or an I/O error).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A file did not have the format the kernel documents.
    #[error("unexpected contents in {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// A command-line pattern is not a valid regular expression.
    #[error("invalid command-line pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern given.
        pattern: String,
        /// The regex crate's explanation.
        source: Box<regex::Error>,
    },
    /// A container id to select by is not a full id or a prefix of at
    /// least 12 hex digits.
    #[error(
        "invalid container id {given:?}: expected at least {} hex digits",
        super::container::MIN_ID_PREFIX
    )]
    ContainerId {
        /// The id given.
        given: String,
    },
}

impl Error {
    /// The error for reading `path` of process `pid`: a vanished process
    /// (`ENOENT`, `ESRCH`) is [`Error::NoSuchProcess`].
    pub(crate) fn proc(pid: u32, path: PathBuf, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
            Error::NoSuchProcess { pid }
        } else {
            Error::Read { path, source }
        }
    }
}
