//! Profiling sessions: typed builders, the running [`Session`] handle, its
//! window stream and the drain thread behind it.
//!
//! A session owns one attached eBPF program. Its drain thread wakes every
//! window, swaps the program's double-buffered maps, symbolizes the drained
//! stacks through the profiler's shared symbolizer and publishes a
//! [`Window`]. Sessions are independent: each loads its own program with its
//! own target filter and maps, so two sessions never see each other's samples.

mod assemble;
mod drain;
mod handle;
mod offcpu;
mod oncpu;
mod program;
mod symbolize;
mod targeting;
mod window;

pub use handle::Session;
pub use offcpu::OffCpuBuilder;
pub use oncpu::OnCpuBuilder;
pub use symbolize::WindowSymbolizer;
pub use window::Window;

use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use rover_symbolize::Symbolizer;

use crate::Error;
use assemble::Assembler;
use drain::{Control, Drain};
use program::Program;

/// The shortest window: draining costs a few map reads and a symbolization
/// pass, which shorter windows would repeat for little data.
pub const MIN_WINDOW: Duration = Duration::from_millis(10);

/// The default window length.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

fn check_window(window: Duration) -> Result<(), Error> {
    if window < MIN_WINDOW {
        return Err(Error::InvalidConfig(format!(
            "window {window:?} is shorter than the minimum of {MIN_WINDOW:?}"
        )));
    }
    Ok(())
}

/// Spawns the drain thread of an attached program and returns its handle.
fn spawn(
    program: Program,
    symbolizer: Arc<Symbolizer>,
    frequency_hz: Option<u64>,
    window: Duration,
) -> Result<Session, Error> {
    let kind = program.kind();
    let (control_tx, control_rx) = std::sync::mpsc::sync_channel::<Control>(1);
    let (done_tx, done_rx) = oneshot::channel();
    let sink = handle::new_sink();
    let drain = Drain {
        program,
        assembler: Assembler::new(symbolizer, kind, frequency_hz),
        window,
        control: control_rx,
        sink: sink.clone(),
        done: done_tx,
    };
    std::thread::Builder::new()
        .name(format!("rover-drain-{}", kind_name(kind)))
        .spawn(move || drain.run())
        .map_err(Error::Thread)?;
    Ok(Session::new(kind, control_tx, done_rx, sink))
}

fn kind_name(kind: crate::profile::ProfileKind) -> &'static str {
    match kind {
        crate::profile::ProfileKind::OnCpu => "oncpu",
        crate::profile::ProfileKind::OffCpu => "offcpu",
    }
}
