//! The exporter's bounded queue and its counts: a window is accepted into
//! it, and leaves it delivered, dropped or failed, each counted, so that
//! the counts always add up.

use std::collections::VecDeque;

use crate::profile::{Profile, ProfileKind};

/// What the exporter did with the windows it was given.
///
/// At every moment `sent + dropped() + failed + queued + in_flight ==
/// accepted` ([`PushStats::accounted`]): a window is delivered, or counted
/// as dropped or failed, or still on its way.
///
/// ```no_run
/// # fn show(exporter: &rover_core::push::Exporter) {
/// let stats = exporter.stats();
/// println!(
///     "{} sent, {} dropped (queue full {}, gave up {}), {} failed, {} retries, peak queue {}",
///     stats.sent, stats.dropped(), stats.dropped_queue_full, stats.dropped_gave_up,
///     stats.failed, stats.retries, stats.peak_queued
/// );
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushStats {
    /// Windows given to the exporter (`send`, `send_profile`, `follow`).
    pub accepted: u64,
    /// Windows the backend took (including those it took only in part:
    /// see `partially_rejected`).
    pub sent: u64,
    /// Attempts after the first, over all windows.
    pub retries: u64,
    /// Windows dropped because the queue was full when a newer one came:
    /// the oldest queued window makes room.
    pub dropped_queue_full: u64,
    /// Windows dropped after their last attempt failed with an error worth
    /// retrying (the backend down, slow or saying "later").
    pub dropped_gave_up: u64,
    /// Windows still queued or on their way when `shutdown`'s time ran out,
    /// and any sent after the exporter stopped (shut down, or its thread
    /// gone: then `last_error` says so).
    pub dropped_at_shutdown: u64,
    /// Windows the backend refused with an error not worth retrying (such as
    /// gRPC `INVALID_ARGUMENT`, HTTP 400), or that could not be encoded.
    pub failed: u64,
    /// Profiles the backend reported rejecting in a partial success
    /// (`partial_success.rejected_profiles`), over all windows sent.
    pub rejected_profiles: u64,
    /// Windows sent whose answer reported rejected profiles.
    pub partially_rejected: u64,
    /// Windows waiting in the queue now.
    pub queued: usize,
    /// Windows being delivered now (0 or 1).
    pub in_flight: usize,
    /// The most windows ever queued at once (never above the capacity).
    pub peak_queued: usize,
    /// The last error a delivery attempt met, if any.
    pub last_error: Option<String>,
    /// The message of the last partial success that rejected profiles.
    pub last_rejection: Option<String>,
}

impl PushStats {
    /// Every dropped window: queue full, given up, and cut off by shutdown.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_gave_up + self.dropped_at_shutdown
    }

    /// `sent + dropped() + failed + queued + in_flight`: equal to
    /// `accepted`, always.
    pub fn accounted(&self) -> u64 {
        self.sent + self.dropped() + self.failed + self.queued as u64 + self.in_flight as u64
    }
}

/// A window waiting to be pushed.
#[derive(Debug)]
pub(crate) struct Item {
    pub profile: Profile,
    pub kind: ProfileKind,
}

/// The queue with its counts, behind the exporter's lock.
#[derive(Debug)]
pub(crate) struct Queue {
    items: VecDeque<Item>,
    capacity: usize,
    closed: bool,
    stats: PushStats,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Queue {
            items: VecDeque::with_capacity(capacity),
            capacity,
            closed: false,
            stats: PushStats::default(),
        }
    }

    /// Queues `item`, dropping the oldest queued one if full. Once closed
    /// (shut down, or the thread gone) the item is counted as cut off, and
    /// `false`.
    pub fn push(&mut self, item: Item) -> bool {
        self.stats.accepted += 1;
        if self.closed {
            drop(item);
            self.stats.dropped_at_shutdown += 1;
            return false;
        }
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.stats.dropped_queue_full += 1;
        }
        self.items.push_back(item);
        self.stats.peak_queued = self.stats.peak_queued.max(self.items.len());
        true
    }

    /// The oldest item, now in flight until [`Queue::finish`].
    pub fn pop(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        self.stats.in_flight += 1;
        Some(item)
    }

    /// Ends the flight of a popped item with what became of it.
    pub fn finish(&mut self, outcome: Outcome) {
        self.stats.in_flight = self.stats.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Sent => self.stats.sent += 1,
            Outcome::GaveUp => self.stats.dropped_gave_up += 1,
            Outcome::Failed => self.stats.failed += 1,
            Outcome::CutOff => self.stats.dropped_at_shutdown += 1,
        }
    }

    /// Counts everything still queued as cut off by shutdown.
    pub fn cut_off(&mut self) {
        self.stats.dropped_at_shutdown += self.items.len() as u64;
        self.items.clear();
    }

    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn stats_mut(&mut self) -> &mut PushStats {
        &mut self.stats
    }

    pub fn stats(&self) -> PushStats {
        PushStats {
            queued: self.items.len(),
            ..self.stats.clone()
        }
    }
}

/// What became of a window taken from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    GaveUp,
    Failed,
    CutOff,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        Item {
            profile: Profile::new(),
            kind: ProfileKind::OnCpu,
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_the_counts_add_up() {
        let mut queue = Queue::new(3);
        for _ in 0..5 {
            assert!(queue.push(item()));
            assert_eq!(queue.stats().accounted(), queue.stats().accepted);
        }
        let stats = queue.stats();
        assert_eq!((stats.accepted, stats.queued, stats.peak_queued), (5, 3, 3));
        assert_eq!(stats.dropped_queue_full, 2);
        let first = queue.pop().unwrap();
        drop(first);
        assert_eq!(queue.stats().in_flight, 1);
        assert_eq!(queue.stats().accounted(), 5);
        queue.finish(Outcome::Sent);
        queue.pop().unwrap();
        queue.finish(Outcome::GaveUp);
        queue.close();
        queue.cut_off();
        assert!(!queue.push(item()), "a closed queue takes nothing");
        let stats = queue.stats();
        assert_eq!(
            (stats.sent, stats.dropped_gave_up, stats.dropped_at_shutdown),
            (1, 1, 2),
            "one cut off, one sent after the close"
        );
        assert_eq!((stats.queued, stats.in_flight), (0, 0));
        assert_eq!(stats.accepted, 6);
        assert_eq!(stats.accounted(), stats.accepted);
        assert_eq!(stats.dropped(), 5);
    }
}
