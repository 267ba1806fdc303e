//! Exports of a [`Profile`](crate::profile::Profile) into the formats the
//! usual tools read: folded stacks, SVG flame graphs (plain and
//! differential, through `inferno`) and pprof.

mod folded;

pub use folded::{FoldedOptions, FoldedPrefix, folded_lines, write_folded};
