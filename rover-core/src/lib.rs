//! rover-core: typed async eBPF profiling sessions (on-CPU and off-CPU) and
//! the aggregated profiles they produce.
//!
//! A [`Profiler`] checks privileges and the kernel once; its builders start
//! [`Session`]s; each session publishes symbolized [`Window`]s on a
//! `futures` stream and returns the whole [`Profile`] from
//! [`Session::stop`]. No executor is assumed: every session drains on its
//! own thread, so tokio, async-std, smol and `futures::executor::block_on`
//! all work.
//!
//! ```no_run
//! use std::time::Duration;
//! use rover_core::export::{FoldedOptions, write_folded};
//!
//! let profiler = rover_core::Profiler::new()?;
//! let on_cpu = profiler.on_cpu().pids([1234]).start()?;
//! let off_cpu = profiler.off_cpu().pids([5678]).min_block(Duration::from_micros(100)).start()?;
//! std::thread::sleep(Duration::from_secs(10));
//! let cpu = on_cpu.stop_blocking()?;
//! let blocked = off_cpu.stop_blocking()?;
//! write_folded(&cpu, &FoldedOptions::on_cpu(), std::fs::File::create("cpu.folded")?)?;
//! println!("{} ms off CPU", blocked.total(rover_core::profile::Metric::OffCpuNanos) / 1_000_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`profile`] (the model and its operations), [`export`] (folded,
//! SVG flame graphs, pprof), [`session`] (builders, handles, windows),
//! [`process`] (listing processes, selectors, containers, and
//! [`process::events`]: a stream of forks, execs, exits and executable
//! mappings), [`continuous`] (policies that start sessions on processes
//! that cross a threshold), and, with the `push` feature, `push` (an
//! exporter that pushes windows to an OTLP or Pyroscope backend from a
//! thread of its own). The low-level eBPF layer sessions are built on
//! (`loader`: attach a program, drain raw windows) is public only with the
//! unstable `unstable-loader` feature, which rover's own kernel tests and
//! benchmarks use; the types of it that sessions take or report are
//! re-exported here.
#![warn(missing_docs)]

pub mod continuous;
mod error;
pub mod export;
#[cfg(feature = "unstable-loader")]
pub mod loader;
#[cfg(not(feature = "unstable-loader"))]
#[allow(dead_code, unused_imports)]
mod loader;
pub mod process;
pub mod profile;
mod profiler;
#[cfg(feature = "push")]
pub mod push;
pub mod session;
mod stats;

pub use error::{ConfigError, Error};
pub use loader::{
    Environment, ErrorCounts, KernelFeature, KernelFeatures, KernelVersion, MapSizes, OffCpuHook,
    StackLoss, StackMode, Support, Targets, TaskStates, UserWalk, WalkStop, Warning,
};
pub use profile::Profile;
pub use profiler::{Profiler, ProfilerBuilder};
pub use session::{OffCpuBuilder, OnCpuBuilder, Session, SessionBuilder, Window};
pub use stats::{ProcessTracking, SymbolizationStats, WindowStats};

/// The README's examples, compiled as doctests so they stay true to the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
