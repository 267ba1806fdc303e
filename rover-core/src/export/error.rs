//! Errors of the exporters.

use std::io;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Writing the output failed.
    #[error("writing the export failed: {0}")]
    Io(#[from] io::Error),
    /// There is nothing to draw for the chosen metric.
    #[error("the profile has no {0} to export")]
    Empty(&'static str),
}
