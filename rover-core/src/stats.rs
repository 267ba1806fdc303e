//! What a session measured about itself in one window: samples taken and
//! dropped, stacks lost, symbolization misses and the time spent draining.
//!
//! Two words, two meanings: a *dropped* sample was not counted at all (a
//! map was full), a *lost* stack belongs to a sample that was counted but
//! whose stack could not be recorded.

use std::time::Duration;

use rover_symbolize::Reason;

use crate::loader::{ErrorCounts, StackLoss, UserWalk, WalkStop};

/// Statistics of one window of a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Window number, from 0.
    pub index: u64,
    /// How long the window lasted (from the previous drain to this one).
    pub duration: Duration,
    /// On-CPU samples, or off-CPU blocks, counted in the window.
    pub samples: u64,
    /// Off-CPU sessions: nanoseconds off CPU counted in the window.
    pub off_cpu_nanos: u64,
    /// Distinct (thread, stacks) keys the kernel side counted.
    pub keys: usize,
    /// Distinct stacks (kernel and user stacks, as the kernel recorded them).
    pub distinct_stacks: usize,
    /// What the kernel side could not record (dropped samples, lost
    /// stacks), by reason, summed over CPUs.
    pub dropped: ErrorCounts,
    /// Samples counted whose user or kernel stack was lost, by why.
    pub lost_stacks: Vec<(StackLoss, u64)>,
    /// Samples (on-CPU) or blocks (off-CPU) by how their user stack was
    /// walked: with frame pointers, unwound completely, or unwound until
    /// it stopped, with the reason (such stacks end in an
    /// [`FrameKind::Truncated`](crate::profile::FrameKind::Truncated) frame).
    pub user_walks: Vec<(UserWalk, u64)>,
    /// How symbolization of the window went.
    pub symbolization: SymbolizationStats,
    /// Time to swap and read the kernel maps.
    pub drain_time: Duration,
    /// Time to symbolize the window and build its profile.
    pub symbolize_time: Duration,
    /// Windows left out of this stream before this one because its consumer
    /// was behind (they are still in the profile `stop()` returns).
    pub windows_skipped: u64,
    /// What the profiler's process tracker did so far (all its sessions,
    /// since it started): see [`ProcessTracking`].
    pub processes: ProcessTracking,
}

/// Counts of the process tracker, which captures processes while they live
/// so that they are symbolized after they exit, and releases them after
/// their last window (docs/processes.md, "Short-lived processes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessTracking {
    /// Captures taken (a process is captured again at each exec and code
    /// mapping).
    pub captured: u64,
    /// Captures that failed: the process was gone when its event was read.
    pub capture_failed: u64,
    /// Processes not captured because the bound was reached.
    pub capture_skipped: u64,
    /// Processes released after they exited.
    pub released: u64,
    /// Processes captured and not released now.
    pub held: u64,
}

impl WindowStats {
    /// Samples (on-CPU) or blocks (off-CPU) the kernel side dropped because
    /// a map was full: not in `samples`, nor in any profile.
    /// [`ErrorCounts::dropped_or_lost`] adds the lost stacks.
    ///
    /// ```no_run
    /// # fn show(stats: &rover_core::WindowStats) {
    /// println!(
    ///     "{} samples, {} dropped, {} with a lost stack",
    ///     stats.samples,
    ///     stats.dropped_samples(),
    ///     stats.lost_stack_samples(),
    /// );
    /// # }
    /// ```
    pub fn dropped_samples(&self) -> u64 {
        self.dropped.dropped_samples()
    }

    /// Samples whose user stack was unwound from tables but stopped early,
    /// for this reason.
    pub fn stopped_walks(&self, reason: WalkStop) -> u64 {
        self.user_walks
            .iter()
            .filter(|(walk, _)| *walk == UserWalk::Stopped(reason))
            .map(|(_, n)| n)
            .sum()
    }

    /// Samples counted (in `samples`) whose user or kernel stack was lost:
    /// the sum of `lost_stacks`. A sample that lost both counts twice.
    pub fn lost_stack_samples(&self) -> u64 {
        self.lost_stacks.iter().map(|(_, n)| n).sum()
    }
}

/// How the addresses of one window were symbolized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolizationStats {
    /// Distinct addresses looked up (each distinct stack once per window).
    pub addresses: u64,
    /// Of those, how many could not be resolved, by reason.
    pub misses: Vec<(Reason, u64)>,
    /// Sources (a process, the kernel) that could not be read at all, with
    /// the error; their addresses are counted in `misses` as unmapped.
    pub failed_sources: Vec<(String, String)>,
}

impl SymbolizationStats {
    /// All unresolved addresses.
    pub fn missed(&self) -> u64 {
        self.misses.iter().map(|(_, n)| n).sum()
    }

    pub(crate) fn count_miss(&mut self, reason: &Reason) {
        match self.misses.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => self.misses.push((reason.clone(), 1)),
        }
    }
}
