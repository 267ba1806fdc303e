//! What a continuous profiler reports: triggers, the profiles of their
//! sessions, failures, and the queue that carries them to async and
//! blocking consumers alike.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures::Stream;

use crate::Error;
use crate::profile::{Profile, ProfileKind};

/// A policy fired on a process.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Trigger {
    /// The process.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
    /// The policy's index in the list the profiler was started with.
    pub policy: usize,
    /// The policy's name.
    pub policy_name: String,
    /// The check's name (`cpu_percent`, ...).
    pub check: String,
    /// The window's values that fired it, oldest first (`None`: the check
    /// had no value).
    pub values: Vec<Option<f64>>,
    /// The policy's threshold.
    pub threshold: f64,
    /// What the session records.
    pub kind: ProfileKind,
    /// The policy's check round that fired it, counted from 1 (see
    /// [`Continuous::rounds`](super::Continuous::rounds)).
    pub round: u64,
    /// When it fired.
    pub started_at: SystemTime,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// It ran for the policy's `execute` duration.
    Completed,
    /// The process exited (or its pid now names another process) first;
    /// the profile holds what was recorded until then.
    ProcessExited,
    /// The continuous profiler was stopped first.
    Stopped,
}

/// One thing that happened, in the order it happened for each process.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A policy fired and its session is starting.
    Triggered(Trigger),
    /// A trigger's session ended and recorded this profile.
    Profiled {
        /// What fired it.
        trigger: Trigger,
        /// Everything the session recorded (boxed: a profile is large
        /// next to the other events).
        profile: Box<Profile>,
        /// How long the session ran.
        ran: Duration,
        /// Why it ended.
        ended: Ended,
    },
    /// A trigger's session could not start (e.g. the process exited in
    /// between) or failed while running: nothing was recorded.
    Failed {
        /// What fired it.
        trigger: Trigger,
        /// Why.
        error: Error,
    },
    /// A policy fired while `max_sessions` sessions were running: no
    /// session was started, and the process is watched again from an empty
    /// window.
    Skipped {
        /// What fired.
        trigger: Trigger,
        /// The sessions running at the time.
        running: usize,
    },
}

impl Event {
    /// The trigger the event is about.
    pub fn trigger(&self) -> &Trigger {
        match self {
            Event::Triggered(trigger)
            | Event::Profiled { trigger, .. }
            | Event::Failed { trigger, .. }
            | Event::Skipped { trigger, .. } => trigger,
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Event>,
    closed: bool,
    wakers: Vec<Waker>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

/// The events of a [`Continuous`](super::Continuous) run: a `futures`
/// [`Stream`] (`Send + Unpin`, for any executor) and, for code without one,
/// [`next_blocking`](Self::next_blocking) and
/// [`iter_blocking`](Self::iter_blocking). The stream ends once the run is
/// stopped and every event was taken.
///
/// Every handle (from [`Continuous::events`](super::Continuous::events),
/// or cloned) reads the same queue: each event goes to one of them. The
/// queue is unbounded; a profile waits in it until taken.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Events")
            .field("queued", &state.queue.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl Events {
    pub(crate) fn new() -> Self {
        Events {
            shared: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, event: Event) {
        let wakers = {
            let mut state = self.lock();
            state.queue.push_back(event);
            std::mem::take(&mut state.wakers)
        };
        self.shared.ready.notify_one();
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn close(&self) {
        let wakers = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.wakers)
        };
        self.shared.ready.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The next event, waiting up to `timeout` for one:
    /// [`RecvTimeoutError::Timeout`] if none came,
    /// [`RecvTimeoutError::Disconnected`] once the run is stopped and every
    /// event was taken.
    pub fn next_blocking(&self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Ok(event);
            }
            if state.closed {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            state = self
                .shared
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The events as a blocking iterator: each `next` waits for the next
    /// event; it ends once the run is stopped and every event was taken.
    pub fn iter_blocking(&self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(|| self.next_blocking(Duration::MAX).ok())
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut state = self.lock();
        if let Some(event) = state.queue.pop_front() {
            return Poll::Ready(Some(event));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn trigger(pid: u32) -> Trigger {
        Trigger {
            pid,
            comm: "x".into(),
            cmdline: String::new(),
            policy: 0,
            policy_name: "p".into(),
            check: "cpu_percent".into(),
            values: vec![Some(90.0)],
            threshold: 50.0,
            kind: ProfileKind::OnCpu,
            round: 1,
            started_at: SystemTime::now(),
        }
    }

    #[test]
    fn blocking_and_async_consumers_see_the_queue_then_its_end() {
        let events = Events::new();
        assert_eq!(
            events.next_blocking(Duration::from_millis(10)).err(),
            Some(RecvTimeoutError::Timeout)
        );
        let producer = events.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            producer.push(Event::Triggered(trigger(1)));
            producer.push(Event::Triggered(trigger(2)));
            producer.close();
        });
        let first = events.next_blocking(Duration::from_secs(10));
        assert!(first.is_ok_and(|e| e.trigger().pid == 1));
        let mut stream = events.clone();
        let rest: Vec<u32> = futures::executor::block_on(
            stream.by_ref().map(|e| e.trigger().pid).collect::<Vec<_>>(),
        );
        assert_eq!(rest, [2]);
        assert!(thread.join().is_ok());
        assert_eq!(
            events.next_blocking(Duration::from_secs(1)).err(),
            Some(RecvTimeoutError::Disconnected)
        );
        assert_eq!(events.iter_blocking().count(), 0);
    }

    #[test]
    fn events_cross_threads() {
        fn send_unpin<T: Send + Sync + Unpin>() {}
        send_unpin::<Events>();
        send_unpin::<Event>();
    }
}
