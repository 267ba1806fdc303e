//! The exporter's thread: takes the oldest queued window, encodes it,
//! delivers it with retries, and counts what became of it; at shutdown it
//! delivers what is queued until the deadline, then counts the rest.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures::future::Either;
use tokio::sync::{Notify, watch};

use super::Retry;
use super::queue::{Item, Outcome, Queue};
use super::retry::jitter;
use super::transport::{Attempt, Transport};

/// What the exporter's handles and its thread share.
pub(crate) struct Shared {
    pub queue: Mutex<Queue>,
    /// Wakes the thread: a window was queued, or the queue closed.
    pub wake: Notify,
    /// When shutdown must end, once asked.
    pub deadline: watch::Sender<Option<Instant>>,
    /// Set by the thread when it ends.
    pub done: Mutex<bool>,
    pub done_signal: Condvar,
}

impl Shared {
    pub fn new(capacity: usize) -> Self {
        Shared {
            queue: Mutex::new(Queue::new(capacity)),
            wake: Notify::new(),
            deadline: watch::channel(None).0,
            done: Mutex::new(false),
            done_signal: Condvar::new(),
        }
    }

    pub fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a window and wakes the thread; `false` once closed.
    pub fn push(&self, item: Item) -> bool {
        let queued = self.queue().push(item);
        if queued {
            self.wake.notify_one();
        }
        queued
    }

    fn past_deadline(&self) -> bool {
        self.deadline
            .borrow()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// Marks the thread done when it ends, even by a panic: the queue closes,
/// what it still holds is counted as cut off, and windows sent later are
/// counted dropped as they come (nothing would deliver them).
struct DoneOnDrop(Arc<Shared>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        {
            let mut queue = self.0.queue();
            queue.close();
            queue.cut_off();
            if std::thread::panicking() {
                queue.stats_mut().last_error =
                    Some("the exporter's thread panicked; nothing more is delivered".into());
            }
        }
        *self.0.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.0.done_signal.notify_all();
    }
}

/// The thread's body.
pub(crate) fn run(
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
    mut transport: Transport,
    retry: Retry,
) {
    let _done = DoneOnDrop(shared.clone());
    runtime.block_on(async {
        loop {
            if shared.past_deadline() {
                shared.queue().cut_off();
                break;
            }
            let next = {
                let mut queue = shared.queue();
                match queue.pop() {
                    Some(item) => Some(item),
                    None if queue.is_closed() => break,
                    None => None,
                }
            };
            let Some(item) = next else {
                shared.wake.notified().await;
                continue;
            };
            let delivery = std::pin::pin!(deliver(&shared, &mut transport, &item, retry));
            let cut_off = std::pin::pin!(deadline(shared.deadline.subscribe()));
            let outcome = match futures::future::select(delivery, cut_off).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(((), _)) => Outcome::CutOff,
            };
            shared.queue().finish(outcome);
        }
    });
}

/// Resolves when shutdown's deadline passes (never before shutdown).
async fn deadline(mut deadline: watch::Receiver<Option<Instant>>) {
    loop {
        let current = *deadline.borrow_and_update();
        if let Some(at) = current {
            tokio::time::sleep_until(at.into()).await;
            return;
        }
        if deadline.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Every attempt at one window, the waits between them included.
async fn deliver(shared: &Shared, transport: &mut Transport, item: &Item, retry: Retry) -> Outcome {
    let payload = match transport.encode(item) {
        Ok(payload) => payload,
        Err(error) => {
            shared.queue().stats_mut().last_error = Some(error);
            return Outcome::Failed;
        }
    };
    let mut attempt = 1;
    loop {
        match transport.attempt(&payload).await {
            Attempt::Delivered { rejected, message } => {
                if rejected > 0 {
                    let mut queue = shared.queue();
                    let stats = queue.stats_mut();
                    stats.rejected_profiles += rejected;
                    stats.partially_rejected += 1;
                    stats.last_rejection = Some(message);
                }
                return Outcome::Sent;
            }
            Attempt::Refused(error) => {
                shared.queue().stats_mut().last_error = Some(error);
                return Outcome::Failed;
            }
            Attempt::Retry { error, after } => {
                shared.queue().stats_mut().last_error = Some(error);
                if attempt >= retry.max_attempts {
                    return Outcome::GaveUp;
                }
                tokio::time::sleep(retry.delay(attempt, after, jitter())).await;
                attempt += 1;
                shared.queue().stats_mut().retries += 1;
            }
        }
    }
}
