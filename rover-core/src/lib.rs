//! rover-core: typed async eBPF profiling sessions (on-CPU and off-CPU) and
//! the aggregated profiles they produce.
#![warn(missing_docs)]

pub mod export;
pub mod loader;
pub mod profile;
