//! The bounded queue between a source's thread and the consumer: a
//! `Stream` for async code, blocking and non-blocking reads for the rest.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

use super::ProcessEvent;

pub(crate) struct Queue {
    state: Mutex<State>,
    readable: Condvar,
    writable: Condvar,
    waker: AtomicWaker,
    capacity: usize,
}

#[derive(Default)]
struct State {
    events: VecDeque<ProcessEvent>,
    /// The source is done: nothing more will come.
    ended: bool,
    /// The consumer is gone: the source should stop.
    closed: bool,
}

/// Why an event could not be queued without waiting.
pub(crate) enum Full {
    /// The queue holds `capacity` events: here is the event back.
    Full(ProcessEvent),
    /// The consumer is gone.
    Closed,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Queue {
            state: Mutex::new(State::default()),
            readable: Condvar::new(),
            writable: Condvar::new(),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` if there is room.
    pub(crate) fn try_push(&self, event: ProcessEvent) -> Result<(), Full> {
        let mut state = self.lock();
        if state.closed {
            return Err(Full::Closed);
        }
        if state.events.len() >= self.capacity {
            return Err(Full::Full(event));
        }
        state.events.push_back(event);
        drop(state);
        self.readable.notify_one();
        self.waker.wake();
        Ok(())
    }

    /// Queues `event`, waiting for room; `false` when the consumer is gone.
    pub(crate) fn push(&self, event: ProcessEvent) -> bool {
        let mut state = self.lock();
        while state.events.len() >= self.capacity && !state.closed {
            state = self
                .writable
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return false;
        }
        state.events.push_back(event);
        drop(state);
        self.readable.notify_one();
        self.waker.wake();
        true
    }

    /// The source is done; the consumer sees the end after what is queued.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
        self.readable.notify_all();
        self.waker.wake();
    }

    /// The consumer is gone; a waiting source wakes up and stops.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.events.clear();
        drop(state);
        self.writable.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn take(&self, state: &mut State) -> Option<ProcessEvent> {
        let event = state.events.pop_front();
        if event.is_some() {
            self.writable.notify_one();
        }
        event
    }

    /// An event if one is queued, without waiting.
    pub(crate) fn try_pop(&self) -> Option<ProcessEvent> {
        let mut state = self.lock();
        self.take(&mut state)
    }

    /// The next event, waiting up to `timeout` (forever for `None`); `None`
    /// at the end or when the time is up.
    pub(crate) fn pop(&self, timeout: Option<Duration>) -> Option<ProcessEvent> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut state = self.lock();
        loop {
            if let Some(event) = self.take(&mut state) {
                return Some(event);
            }
            if state.ended {
                return None;
            }
            state = match deadline {
                None => self
                    .readable
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.readable
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// The next event as [`Queue::pop`] waits for it, and every other one
    /// queued by then, up to `max` in all.
    pub(crate) fn pop_batch(&self, timeout: Duration, max: usize) -> Vec<ProcessEvent> {
        let Some(first) = self.pop(Some(timeout)) else {
            return Vec::new();
        };
        let mut batch = vec![first];
        let mut state = self.lock();
        let more = max.saturating_sub(1).min(state.events.len());
        batch.extend(state.events.drain(..more));
        drop(state);
        self.writable.notify_all();
        batch
    }

    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<ProcessEvent>> {
        let mut state = self.lock();
        if let Some(event) = self.take(&mut state) {
            return Poll::Ready(Some(event));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        // Registered under the lock: a push after it wakes this waker.
        self.waker.register(cx.waker());
        Poll::Pending
    }

    /// Whether the source is done and everything it queued was taken.
    pub(crate) fn is_finished(&self) -> bool {
        let state = self.lock();
        state.ended && state.events.is_empty()
    }
}
