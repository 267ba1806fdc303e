//! The drain thread of a session: every window it swaps the kernel maps,
//! symbolizes what they held, publishes the window and adds it to the whole
//! profile. It runs on its own std thread, so no executor is assumed.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::channel::{mpsc, oneshot};

use super::assemble::Assembler;
use super::program::Program;
use super::window::Window;
use crate::Error;
use crate::profile::Profile;
use crate::stats::WindowStats;

/// What the session handle asks of its drain thread.
pub(crate) enum Control {
    /// Drain the last window, detach and hand back the whole profile.
    Stop,
    /// Replace the target processes of a pids session, and say how it went.
    SetPids(Vec<u32>, oneshot::Sender<Result<(), Error>>),
}

/// Where the drain thread publishes windows: a sender is set once the user
/// asks for the stream, so no window is buffered for a session nobody watches.
pub(crate) type WindowSink = Arc<Mutex<Sink>>;

#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub sender: Option<mpsc::Sender<Window>>,
    /// The session is over: a stream asked for now must end at once.
    pub closed: bool,
}

pub(crate) struct Drain {
    pub program: Program,
    pub assembler: Assembler,
    pub window: Duration,
    pub control: Receiver<Control>,
    pub sink: WindowSink,
    pub done: oneshot::Sender<Result<Profile, Error>>,
}

impl Drain {
    /// Runs until stopped (final window, then the whole profile is sent) or
    /// until the handle is dropped (detach at once). The program is dropped,
    /// detaching it and closing its fds, before the result is sent.
    pub fn run(self) {
        let Drain {
            mut program,
            mut assembler,
            window,
            control,
            sink,
            done,
        } = self;
        let mut whole = Profile::new();
        whole.declare_kind(program.kind());
        let session_start = unix_nanos();
        let mut window_start = Instant::now();
        let mut window_start_unix = session_start;
        let mut index = 0;
        let mut skipped = 0;
        let result = loop {
            let wait = window.saturating_sub(window_start.elapsed());
            let last = match control.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => false,
                Ok(Control::Stop) => true,
                Ok(Control::SetPids(pids, reply)) => {
                    // Samples already counted stay in this window.
                    let _ = reply.send(program.set_targets(&pids).map_err(Error::Loader));
                    continue;
                }
                // The handle was dropped: detach without a last window.
                Err(RecvTimeoutError::Disconnected) => break Ok(whole),
            };
            let drain_started = Instant::now();
            let raw = match program.drain() {
                Ok(raw) => raw,
                Err(error) => break Err(Error::Loader(error)),
            };
            let drained = Instant::now();
            let end_unix = unix_nanos();
            let mut stats = WindowStats {
                index,
                duration: drained.duration_since(window_start),
                drain_time: drained.duration_since(drain_started),
                windows_skipped: skipped,
                ..WindowStats::default()
            };
            let profile = assembler.assemble(&raw, window_start_unix, end_unix, &mut stats);
            stats.symbolize_time = drained.elapsed();
            whole.merge(&profile);
            window_start = drained;
            window_start_unix = end_unix;
            index += 1;
            if publish(&sink, Window { profile, stats }) {
                skipped = 0;
            } else {
                skipped += 1;
            }
            if last {
                whole.set_time_range(session_start, end_unix);
                break Ok(whole);
            }
        };
        drop(program);
        // Closing the stream tells consumers the session is over.
        let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
        sink.sender = None;
        sink.closed = true;
        drop(sink);
        // The handle may be gone already; nobody is left to tell.
        let _ = done.send(result);
    }
}

/// Sends a window to the stream if anyone listens; false if the consumer is
/// behind and the window was left out of the stream.
fn publish(sink: &WindowSink, window: Window) -> bool {
    let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(sender) = sink.sender.as_mut() else {
        return true;
    };
    match sender.try_send(window) {
        Ok(()) => true,
        Err(error) if error.is_disconnected() => {
            sink.sender = None;
            true
        }
        Err(_) => false,
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
