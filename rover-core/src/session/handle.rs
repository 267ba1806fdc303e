//! The handle of a running session: its window stream, `stop`, and detach
//! on drop.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use futures::channel::{mpsc, oneshot};

use super::drain::{Control, Sink, Subscriber, WindowSink};
use super::window::Window;
use crate::Error;
use crate::StackMode;
use crate::profile::{Profile, ProfileKind};

/// How many windows each stream holds for a consumer that is behind; later
/// windows are left out of that stream (counted in `WindowStats::windows_skipped`)
/// but still added to the profile `stop()` returns.
const STREAM_CAPACITY: usize = 16;

/// A running on-CPU or off-CPU session.
///
/// Its windows arrive on [`Session::windows`]; [`Session::stop`] ends it
/// and returns everything it recorded; dropping the handle detaches the
/// program without waiting. Works from any executor: draining happens on
/// the session's own thread and results cross through `futures` channels.
#[derive(Debug)]
pub struct Session {
    kind: ProfileKind,
    stack_mode: StackMode,
    stack_fallback: Option<String>,
    control: Option<Sender<Control>>,
    done: Option<oneshot::Receiver<Result<Profile, Error>>>,
    sink: WindowSink,
}

impl Session {
    pub(crate) fn new(
        kind: ProfileKind,
        (stack_mode, stack_fallback): (StackMode, Option<String>),
        control: Sender<Control>,
        done: oneshot::Receiver<Result<Profile, Error>>,
        sink: WindowSink,
    ) -> Self {
        Session {
            kind,
            stack_mode,
            stack_fallback,
            control: Some(control),
            done: Some(done),
            sink,
        }
    }

    /// Whether this is an on-CPU or an off-CPU session.
    pub fn kind(&self) -> ProfileKind {
        self.kind
    }

    /// How the session walks user stacks: [`StackMode::Dwarf`] (unwind
    /// tables in the kernel) or [`StackMode::FramePointers`], as the
    /// requested mode resolved on this kernel (never `Auto`).
    pub fn stack_mode(&self) -> StackMode {
        self.stack_mode
    }

    /// Why a session asked for [`StackMode::Auto`] walks frame pointers,
    /// when it does (the kernel lacks what the unwinder needs).
    pub fn stack_mode_fallback(&self) -> Option<&str> {
        self.stack_fallback.as_deref()
    }

    /// A stream of windows, each a symbolized profile with its statistics.
    /// It ends when the session stops (after the last window) or fails.
    ///
    /// Every call returns a stream of its own that receives every window
    /// drained from then on: a second call does not end the first, and two
    /// consumers (say, an exporter and a dashboard) each see every window.
    /// A stream asked for after the session ended is empty. Each stream
    /// holds up to 16 windows for a consumer that is behind; later ones are
    /// left out of it (counted in `WindowStats::windows_skipped`) but are
    /// still in the profile `stop()` returns. Dropping a stream is fine.
    ///
    /// ```no_run
    /// # fn run(mut session: rover_core::Session) {
    /// use futures::StreamExt;
    /// let mut windows = session.windows();
    /// futures::executor::block_on(async {
    ///     while let Some(window) = windows.next().await {
    ///         println!("{} samples, {} dropped", window.stats.samples, window.stats.dropped_samples());
    ///     }
    /// });
    /// # }
    /// ```
    pub fn windows(&mut self) -> impl Stream<Item = Window> + Send + Unpin + 'static {
        let (sender, receiver) = mpsc::channel(STREAM_CAPACITY);
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if !sink.closed {
            sink.subscribers.push(Subscriber { sender, skipped: 0 });
        }
        receiver
    }

    /// Stops the session: the last window is drained, the program detached,
    /// and the whole profile (every window merged) returned. The future only
    /// waits on a channel, never blocking the executor's thread; it resolves
    /// after at most one drain and symbolization of the last window.
    pub async fn stop(mut self) -> Result<Profile, Error> {
        let done = self.request_stop();
        match done {
            Some(done) => done.await.unwrap_or(Err(Error::DrainThreadLost)),
            None => Err(Error::DrainThreadLost),
        }
    }

    /// [`Session::stop`] for code without an executor: blocks the calling
    /// thread until the whole profile is ready.
    pub fn stop_blocking(self) -> Result<Profile, Error> {
        futures::executor::block_on(self.stop())
    }

    /// Replaces the processes a session started with `.pids(..)` records,
    /// while it runs: an agent following a service's processes as they come
    /// and go. What was counted before stays in its window; tasks of a
    /// dropped process that are off CPU already are still counted when they
    /// come back (their block started while targeted).
    ///
    /// Fails with [`ConfigError::NotAPidsSession`](crate::ConfigError::NotAPidsSession)
    /// for a session that follows a cgroup or every process, and with the
    /// same errors as `.pids(..)` at start for a bad list (the program
    /// checks both, as it does for a loader user). Nothing here blocks: the request
    /// is queued at once (behind any other, without waiting for it) and the
    /// future resolves once the drain thread has applied it, after the
    /// window it may be draining. A request queued by a future that is then
    /// dropped is still applied, and never holds up [`Session::stop`].
    pub async fn set_pids(&self, pids: impl IntoIterator<Item = u32>) -> Result<(), Error> {
        let Some(control) = &self.control else {
            return Err(Error::DrainThreadLost);
        };
        let (reply, result) = oneshot::channel();
        control
            .send(Control::SetPids(pids.into_iter().collect(), reply))
            .map_err(|_| Error::DrainThreadLost)?;
        result.await.unwrap_or(Err(Error::DrainThreadLost))
    }

    /// [`Session::set_pids`] for code without an executor.
    pub fn set_pids_blocking(&self, pids: impl IntoIterator<Item = u32>) -> Result<(), Error> {
        futures::executor::block_on(self.set_pids(pids))
    }

    fn request_stop(&mut self) -> Option<oneshot::Receiver<Result<Profile, Error>>> {
        if let Some(control) = self.control.take() {
            // Queued behind any pid change; refused only by a thread that
            // is gone, whose result `done` then reports.
            let _ = control.send(Control::Stop);
        }
        self.done.take()
    }
}

impl Drop for Session {
    /// Detaches: the drain thread sees the control channel close, drops the
    /// program (detaching it and closing its fds) and exits, without
    /// draining a last window. Nothing here blocks.
    fn drop(&mut self) {
        self.control.take();
    }
}

pub(crate) fn new_sink() -> WindowSink {
    Arc::new(Mutex::new(Sink::default()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_and_streams_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Session>();
        send_sync::<crate::Profiler>();
        send_sync::<super::Window>();
    }
}
