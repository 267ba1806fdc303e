//! Profiling sessions: typed builders, the running [`Session`] handle, its
//! window stream and the drain thread behind it.
//!
//! A session owns one attached eBPF program. Its drain thread wakes every
//! window, swaps the program's double-buffered maps, symbolizes the drained
//! stacks through the profiler's shared symbolizer and publishes a
//! [`Window`]. Sessions are independent: each loads its own program with its
//! own target filter and maps, so two sessions never see each other's samples.

mod assemble;
mod builder;
mod drain;
mod handle;
#[cfg(feature = "unstable-loader")]
mod symbolize;
pub(crate) mod tracker;
mod window;

pub use builder::{OffCpuBuilder, OffCpuSettings, OnCpuBuilder, OnCpuSettings, SessionBuilder};
pub use handle::Session;
#[cfg(feature = "unstable-loader")]
pub use symbolize::WindowSymbolizer;
pub use window::Window;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;
use rover_symbolize::Symbolizer;

use crate::Error;
use crate::loader::Program;
use crate::profile::ProfileKind;
use assemble::Assembler;
use drain::Drain;

/// The shortest window: draining costs a few map reads and a symbolization
/// pass, which shorter windows would repeat for little data.
pub const MIN_WINDOW: Duration = Duration::from_millis(10);

/// The default window length.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

/// Spawns the drain thread of an attached program and returns its handle.
fn spawn(
    program: Box<dyn Program>,
    symbolizer: Arc<Symbolizer>,
    subscription: tracker::Subscription,
    frequency_hz: Option<u64>,
    window: Duration,
) -> Result<Session, Error> {
    let kind = program.kind();
    let stacks = program.stack_walk();
    // Unbounded: neither a stop nor a pid change ever waits for, or is
    // refused because of, a request still queued.
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let sink = handle::new_sink();
    let drain = Drain {
        program,
        assembler: Assembler::new(symbolizer, kind, frequency_hz)
            .with_tracker(subscription.tracker().clone()),
        window,
        subscription,
        control: control_rx,
        sink: sink.clone(),
        done: done_tx,
    };
    std::thread::Builder::new()
        .name(format!("rover-drain-{}", kind_name(kind)))
        .spawn(move || drain.run())
        .map_err(Error::Thread)?;
    Ok(Session::new(kind, stacks, control_tx, done_rx, sink))
}

fn kind_name(kind: ProfileKind) -> &'static str {
    match kind {
        ProfileKind::OnCpu => "oncpu",
        ProfileKind::OffCpu => "offcpu",
    }
}

/// Now, as nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
