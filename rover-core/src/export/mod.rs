//! Exports of a [`Profile`](crate::profile::Profile) into the formats the
//! usual tools read: folded stacks, SVG flame graphs (plain and
//! differential, through `inferno`) and pprof.

mod error;
mod flamegraph;
mod folded;
mod pprof;

pub use error::ExportError;
pub use flamegraph::{FlameGraphOptions, write_differential_flamegraph, write_flamegraph};
pub use folded::{FoldedOptions, FoldedPrefix, folded_lines, write_folded};
pub use pprof::write_pprof;
