//! The drain thread of a session: every window it swaps the kernel maps,
//! symbolizes what they held, publishes the window and adds it to the whole
//! profile. It runs on its own std thread, so no executor is assumed.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};

use super::assemble::Assembler;
use super::tracker::Subscription;
use super::unix_nanos;
use super::window::Window;
use crate::Error;
use crate::loader::Program;
use crate::profile::Profile;
use crate::stats::WindowStats;

/// What the session handle asks of its drain thread.
pub(crate) enum Control {
    /// Drain the last window, detach and hand back the whole profile.
    Stop,
    /// Replace the target processes of a pids session, and say how it went.
    SetPids(Vec<u32>, oneshot::Sender<Result<(), Error>>),
}

/// Where the drain thread publishes windows: one sender per stream asked
/// for, so no window is buffered for a session nobody watches.
pub(crate) type WindowSink = Arc<Mutex<Sink>>;

#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub subscribers: Vec<Subscriber>,
    /// The session is over: a stream asked for now must end at once.
    pub closed: bool,
}

#[derive(Debug)]
pub(crate) struct Subscriber {
    pub sender: mpsc::Sender<Window>,
    /// Windows left out of this stream since its last delivered one.
    pub skipped: u64,
}

pub(crate) struct Drain {
    pub program: Box<dyn Program>,
    pub assembler: Assembler,
    pub window: Duration,
    pub subscription: Subscription,
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
            subscription,
            control,
            sink,
            done,
        } = self;
        let kind = program.kind();
        let mut whole = Profile::new();
        whole.declare_kind(kind);
        let session_start = unix_nanos();
        let mut window_start = Instant::now();
        let mut window_start_unix = session_start;
        let mut index = 0;
        let result = loop {
            let wait = window.saturating_sub(window_start.elapsed());
            let last = match control.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => false,
                Ok(Control::Stop) => true,
                Ok(Control::SetPids(pids, reply)) => {
                    // Samples already counted stay in this window. A reply
                    // nobody waits for (its future was dropped) is no error.
                    let result = program.set_targets(&pids);
                    if result.is_ok() {
                        subscription.set_pids(&pids);
                    }
                    let _ = reply.send(result);
                    continue;
                }
                // The handle was dropped: detach without a last window.
                Err(RecvTimeoutError::Disconnected) => break Ok(whole),
            };
            let drain_started = Instant::now();
            let raw = match program.drain() {
                Ok(raw) => raw,
                Err(error) => break Err(error),
            };
            let drained = Instant::now();
            let end_unix = unix_nanos();
            let mut stats = WindowStats {
                index,
                duration: drained.duration_since(window_start),
                drain_time: drained.duration_since(drain_started),
                ..WindowStats::default()
            };
            let profile = assembler.assemble(&raw, window_start_unix, end_unix, &mut stats);
            stats.symbolize_time = drained.elapsed();
            // Processes that exited before this window's swap are done.
            subscription.drained(drain_started);
            stats.processes = subscription.tracker().counts();
            whole.merge(&profile);
            window_start = drained;
            window_start_unix = end_unix;
            index += 1;
            publish(
                &sink,
                Window {
                    kind,
                    profile,
                    stats,
                },
            );
            if last {
                whole.set_time_range(session_start, end_unix);
                break Ok(whole);
            }
        };
        drop(program);
        drop(subscription);
        // Closing the streams tells consumers the session is over.
        let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
        sink.subscribers.clear();
        sink.closed = true;
        drop(sink);
        // The handle may be gone already; nobody is left to tell.
        let _ = done.send(result);
    }
}

/// Sends a window to every stream; a stream whose consumer is behind skips
/// it (counted in its next window's `windows_skipped`), a dropped stream is
/// forgotten.
fn publish(sink: &WindowSink, window: Window) {
    let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
    // One stream is the usual case: its window is moved, not copied.
    if let Some((last, others)) = sink.subscribers.split_last_mut() {
        for subscriber in others {
            subscriber.deliver(window.clone());
        }
        last.deliver(window);
    }
    sink.subscribers.retain(|s| !s.sender.is_closed());
}

impl Subscriber {
    fn deliver(&mut self, mut window: Window) {
        window.stats.windows_skipped = self.skipped;
        match self.sender.try_send(window) {
            Ok(()) => self.skipped = 0,
            Err(error) if error.is_disconnected() => {}
            Err(_) => self.skipped += 1,
        }
    }
}
