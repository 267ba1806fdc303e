//! Continuous profiling: policies that watch processes and profile one by
//! themselves when it crosses a threshold, as Apache SkyWalking Rover's
//! agent does.
//!
//! A [`Policy`] says which processes to watch ([`PolicyBuilder::match_regex`],
//! [`PolicyBuilder::select`]), what to check on them every `interval`
//! ([`Check`]: the current CPU rate, the thread count, the load average, or
//! a check of the caller's), and when a run of breaches triggers: `count`
//! of the last `period` checks above `threshold`. A trigger starts an
//! on-CPU or off-CPU session on that process for `execute`; afterwards the
//! process is silent for `silence`. A [`ContinuousProfiler`] applies its
//! policies on a thread of its own (no executor assumed) and reports
//! [`Event`]s: each trigger, then its session's [`Profile`](crate::Profile)
//! or why there is none. See `docs/continuous.md` for the rules in full.
//!
//! ```no_run
//! use std::time::Duration;
//! use rover_core::continuous::{Check, ContinuousProfiler, Event, Policy};
//! use rover_core::export::{FoldedOptions, write_folded};
//!
//! let profiler = rover_core::Profiler::new()?;
//! let hot = Policy::builder(Check::CpuPercent, 50.0)
//!     .match_regex("^my-service$")
//!     .period(3)
//!     .count(2)
//!     .execute(Duration::from_secs(5))
//!     .silence(Duration::from_secs(120))
//!     .build()?;
//! let continuous = ContinuousProfiler::new(&profiler).policy(hot).start()?;
//! let events = continuous.events();
//! while let Ok(event) = events.next_blocking(Duration::from_secs(60)) {
//!     if let Event::Profiled { trigger, profile, .. } = event {
//!         let file = std::fs::File::create(format!("{}.folded", trigger.pid))?;
//!         write_folded(&profile, &FoldedOptions::on_cpu(), file)?;
//!     }
//! }
//! let stats = continuous.stop_blocking();
//! println!("{} triggers, {} skipped", stats.triggered, stats.skipped);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod events;
mod policy;
mod proc;
mod runtime;
mod select;
mod window;

pub use events::{Ended, Event, Events, Trigger};
pub use policy::{
    Check, DEFAULT_INTERVAL, MAX_PERIOD, MIN_INTERVAL, Mode, Policy, PolicyBuilder, PolicyError,
    ProcessCheck,
};
pub use proc::CpuReading;
pub use runtime::{Continuous, ContinuousProfiler, ContinuousStats, DEFAULT_MAX_SESSIONS};
pub use select::{Matches, ProcessMeta};
