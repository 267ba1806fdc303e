//! Errors that fail a whole request (as opposed to one address, whose failure
//! is carried as data in [`crate::Unknown`]).

use std::path::PathBuf;

/// An error that prevents symbolizing a whole batch: the source itself is
/// unusable (missing file, missing process, unreadable kallsyms).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ELF file given as the source could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ELF object this crate can read.
    #[error("{path} is not a readable ELF file: {reason}")]
    InvalidElf {
        /// The file that was asked for.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The process does not exist (or has exited).
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The process id that was asked for.
        pid: u32,
    },
    /// A file under `/proc` could not be read.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The `/proc` file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A perf-map file could not be read.
    #[error("cannot read perf map {path}: {source}")]
    PerfMap {
        /// The perf-map file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}
