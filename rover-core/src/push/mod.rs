//! Pushing profiles to a backend while a session runs: OTLP profiles over
//! gRPC or HTTP (to an OpenTelemetry Collector, Grafana Alloy, …) and pprof
//! to Pyroscope's ingest. Only with the `push` feature.
//!
//! An [`Exporter`] never holds a session back: it runs on a thread of its
//! own (with a single-threaded tokio runtime inside, so the caller's
//! executor, if any, does not matter), and [`Exporter::send`] only queues.
//! The queue is bounded; when it is full the oldest window is dropped and
//! counted. A backend that is down, slow or refusing gets retries with
//! exponential backoff ([`Retry`]). [`Exporter::stats`] counts what became
//! of every window ([`PushStats`]); [`Exporter::shutdown`] delivers what is
//! queued within a timeout.
//!
//! ```no_run
//! use std::time::Duration;
//! use rover_core::export::Labels;
//! use rover_core::push::Exporter;
//!
//! let profiler = rover_core::Profiler::new()?;
//! let mut session = profiler.on_cpu().pids([1234]).start()?;
//! let exporter = Exporter::builder()
//!     .otlp_grpc("http://localhost:4317")
//!     .labels(Labels::new().service("checkout"))
//!     .build()?;
//! let following = exporter.follow(session.windows())?;
//! std::thread::sleep(Duration::from_secs(60));
//! let profile = session.stop_blocking()?;
//! following.wait();
//! let stats = exporter.shutdown(Duration::from_secs(5));
//! println!("{} windows sent, {} dropped", stats.sent, stats.dropped());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod env;
mod error;
mod pyroscope;
mod queue;
mod retry;
mod transport;
mod worker;

use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

pub use builder::{ExporterBuilder, Protocol};
pub use error::Error;
pub use queue::PushStats;
pub use retry::Retry;

use crate::Window;
use crate::profile::{Profile, ProfileKind};
use queue::Item;
use worker::Shared;

/// How long [`Exporter::shutdown`] waits past its timeout for the thread
/// to notice it (the thread checks the deadline itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Pushes windows to one backend from a thread of its own; see the
/// [module](self) documentation. `Send` and `Sync`: share it by reference
/// or in an `Arc`.
///
/// Dropping it is [`shutdown`](Exporter::shutdown) with the builder's
/// [`shutdown_timeout`](ExporterBuilder::shutdown_timeout) (5 s by
/// default): it never waits longer.
pub struct Exporter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// A builder with the defaults: no destination yet, 10 s per attempt,
    /// a queue of 64 windows, [`Retry::default`].
    pub fn builder() -> ExporterBuilder {
        ExporterBuilder::default()
    }

    fn start(config: ExporterBuilder) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Start)?;
        let transport = {
            let _context = runtime.enter();
            transport::Transport::new(&config)?
        };
        let shared = Arc::new(Shared::new(config.queue_capacity));
        let thread = {
            let shared = shared.clone();
            let retry = config.retry;
            std::thread::Builder::new()
                .name("rover-push".into())
                .spawn(move || worker::run(shared, runtime, transport, retry))
                .map_err(Error::Start)?
        };
        Ok(Exporter {
            shared,
            thread: Some(thread),
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// Queues a copy of `window` for delivery. Never blocks: when the queue
    /// is full, the oldest queued window is dropped (and counted in
    /// [`PushStats::dropped_queue_full`]).
    pub fn send(&self, window: &Window) {
        self.send_profile(window.profile.clone(), window.kind);
    }

    /// Queues `profile` (a window, or any profile) of `kind` for delivery,
    /// as [`send`](Exporter::send) does. `kind` names Pyroscope's series
    /// (`.cpu` or `.off_cpu`); OTLP takes the sample types from the profile.
    pub fn send_profile(&self, profile: Profile, kind: ProfileKind) {
        self.shared.push(Item { profile, kind });
    }

    /// Follows a stream of windows (such as [`Session::windows`](crate::Session::windows)),
    /// sending each, on a thread of its own that drains the stream as fast
    /// as it fills, so the session's stream never backs up. The thread ends
    /// with the stream (when the session stops), or at the first window
    /// after the exporter shut down.
    ///
    /// ```no_run
    /// # fn run(mut session: rover_core::Session, exporter: rover_core::push::Exporter) -> Result<(), Box<dyn std::error::Error>> {
    /// let following = exporter.follow(session.windows())?;
    /// let profile = session.stop_blocking()?;
    /// println!("{} windows followed", following.wait());
    /// # Ok(()) }
    /// ```
    pub fn follow(
        &self,
        windows: impl Stream<Item = Window> + Send + Unpin + 'static,
    ) -> Result<Following, Error> {
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("rover-push-follow".into())
            .spawn(move || {
                let mut windows = windows;
                let mut followed = 0;
                while let Some(window) = futures::executor::block_on(windows.next()) {
                    if !shared.push(Item {
                        profile: window.profile,
                        kind: window.kind,
                    }) {
                        break;
                    }
                    followed += 1;
                }
                followed
            })
            .map_err(Error::Start)?;
        Ok(Following { thread })
    }

    /// What became of the windows so far.
    pub fn stats(&self) -> PushStats {
        self.shared.queue().stats()
    }

    /// Stops taking windows, delivers those queued (retrying as configured)
    /// until `timeout` has passed, and returns the final counts: what was
    /// still queued or on its way at the deadline is counted in
    /// [`PushStats::dropped_at_shutdown`].
    pub fn shutdown(mut self, timeout: Duration) -> PushStats {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> PushStats {
        let Some(thread) = self.thread.take() else {
            return self.stats();
        };
        self.shared.queue().close();
        let deadline = Instant::now() + timeout;
        self.shared.deadline.send_replace(Some(deadline));
        self.shared.wake.notify_one();
        let give_up = deadline + SHUTDOWN_GRACE;
        let mut done = self
            .shared
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while !*done {
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            done = self
                .shared
                .done_signal
                .wait_timeout(done, give_up - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let finished = *done;
        drop(done);
        if finished {
            // The thread has left its loop; joining only reaps it.
            let _ = thread.join();
        }
        self.stats()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop(self.shutdown_timeout);
    }
}

/// The thread of [`Exporter::follow`].
#[derive(Debug)]
pub struct Following {
    thread: JoinHandle<u64>,
}

impl Following {
    /// Waits for the stream to end; the number of windows it queued.
    pub fn wait(self) -> u64 {
        self.thread.join().unwrap_or(0)
    }

    /// Whether the stream has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exporter_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Exporter>();
        check::<Following>();
    }
}
