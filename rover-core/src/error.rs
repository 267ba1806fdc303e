//! The errors of rover's public API: bad configuration, missing privileges or
//! kernel features, and a session that failed while running.

use crate::loader::LoaderError;

/// Why a profiler or a session could not start, or why a session ended badly.
///
/// Privileges, kernel features, nonexistent target pids and out-of-range
/// frequencies are reported by the loader checks and carried in
/// [`Error::Loader`]; its message says what is missing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Checking, loading, attaching or draining the eBPF programs failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// A session was started without saying what to profile.
    #[error(
        "no targets: choose the processes to profile with .pids([..]), .cgroup(path) or .all()"
    )]
    NoTargets,
    /// A session setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The session's drain thread could not be spawned.
    #[error("spawning the session's drain thread failed: {0}")]
    Thread(#[source] std::io::Error),
    /// The drain thread ended without handing back the profile (it panicked).
    #[error("the session's drain thread ended without a result")]
    DrainThreadLost,
}

impl Error {
    /// Whether the error means this process lacks the privileges for eBPF
    /// profiling (not root, or no CAP_BPF and CAP_PERFMON).
    pub fn is_privileges(&self) -> bool {
        matches!(self, Error::Loader(LoaderError::Privileges { .. }))
    }

    /// Whether the error means the kernel lacks a feature rover needs (BTF,
    /// tracefs for the tracepoint fallback).
    pub fn is_kernel_feature(&self) -> bool {
        matches!(
            self,
            Error::Loader(LoaderError::NoBtf | LoaderError::NoTracefs)
        )
    }
}
