//! Process discovery from `/proc`: what each process is ([`ProcessInfo`]),
//! which container and cgroup it runs in ([`ContainerId`]), whether rover
//! can profile it well ([`ProfileSupport`]), and [`Selector`]s to pick
//! processes by name, command line, executable, cgroup or container; and
//! [`events`], a stream of what happens to processes (fork, exec, exit,
//! executable mappings) from kernel tracepoints or `/proc` polling.
//!
//! Nothing here needs eBPF or privileges beyond reading `/proc` (another
//! user's executable, namespaces and environment need root or
//! `CAP_SYS_PTRACE`). See `docs/processes.md`.
//!
//! ```no_run
//! use rover_core::process::Selector;
//!
//! for process in Selector::comm("nginx").select()? {
//!     println!("{} in {:?} (container pid {:?})", process.pid, process.container_id, process.container_pid());
//! }
//! # Ok::<(), rover_core::process::Error>(())
//! ```

mod container;
mod error;
pub mod events;
pub(crate) mod info;
mod selector;
mod support;

pub use container::{CgroupLine, ContainerId, ContainerRuntime, MIN_ID_PREFIX};
pub use error::Error;
pub use info::{Namespaces, ProcessInfo, processes};
pub use selector::Selector;
pub use support::{FramePointers, ProfileSupport, SupportCache};
