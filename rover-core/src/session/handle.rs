//! The handle of a running session: its window stream, `stop`, and detach
//! on drop.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use futures::channel::{mpsc, oneshot};

use super::drain::{Control, Sink, WindowSink};
use super::window::Window;
use crate::Error;
use crate::profile::{Profile, ProfileKind};

/// How many windows the stream holds for a consumer that is behind; later
/// windows are left out of the stream (counted in `WindowStats::windows_skipped`)
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
    control: Option<SyncSender<Control>>,
    done: Option<oneshot::Receiver<Result<Profile, Error>>>,
    sink: WindowSink,
}

impl Session {
    pub(crate) fn new(
        kind: ProfileKind,
        control: SyncSender<Control>,
        done: oneshot::Receiver<Result<Profile, Error>>,
        sink: WindowSink,
    ) -> Self {
        Session {
            kind,
            control: Some(control),
            done: Some(done),
            sink,
        }
    }

    /// Whether this is an on-CPU or an off-CPU session.
    pub fn kind(&self) -> ProfileKind {
        self.kind
    }

    /// The stream of windows, each a symbolized profile with its statistics.
    /// It ends when the session stops (after the last window) or fails.
    /// Windows start flowing from the first call; calling again replaces the
    /// previous stream, which then ends.
    ///
    /// ```no_run
    /// # fn run(mut session: rover_core::Session) {
    /// use futures::StreamExt;
    /// let mut windows = session.windows();
    /// futures::executor::block_on(async {
    ///     while let Some(window) = windows.next().await {
    ///         println!("{} samples, {} lost", window.stats.samples, window.stats.lost.total());
    ///     }
    /// });
    /// # }
    /// ```
    pub fn windows(&mut self) -> impl Stream<Item = Window> + Send + Unpin + 'static {
        let (sender, receiver) = mpsc::channel(STREAM_CAPACITY);
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if !sink.closed {
            sink.sender = Some(sender);
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

    /// Replaces the processes a session started with `pids(...)` records,
    /// while it runs: an agent following a service's processes as they come
    /// and go. What was counted before stays in its window; tasks of a
    /// dropped process that are off CPU already are still counted when they
    /// come back (their block started while targeted). Fails for a session
    /// that targets a cgroup or every process, and for a pid list the
    /// program's pid map cannot hold. The future waits only on a channel;
    /// it resolves once the drain thread has applied the change (after the
    /// window it may be draining).
    pub async fn set_pids(&self, pids: impl IntoIterator<Item = u32>) -> Result<(), Error> {
        let Some(control) = &self.control else {
            return Err(Error::DrainThreadLost);
        };
        let (reply, result) = oneshot::channel();
        let pids: Vec<u32> = pids.into_iter().collect();
        // The queue holds one request; a second waits for the thread to take
        // the first, which it does between windows.
        control
            .send(Control::SetPids(pids, reply))
            .map_err(|_| Error::DrainThreadLost)?;
        result.await.unwrap_or(Err(Error::DrainThreadLost))
    }

    /// [`Session::set_pids`] for code without an executor.
    pub fn set_pids_blocking(&self, pids: impl IntoIterator<Item = u32>) -> Result<(), Error> {
        futures::executor::block_on(self.set_pids(pids))
    }

    fn request_stop(&mut self) -> Option<oneshot::Receiver<Result<Profile, Error>>> {
        if let Some(control) = self.control.take() {
            // A full or closed queue means the thread is stopping already.
            let _ = control.try_send(Control::Stop);
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
