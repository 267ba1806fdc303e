//! What a profile counts: on-CPU samples, and off-CPU switches and time by
//! the state the task was in when it left the CPU.

use std::fmt;

/// The kinds of measurement a profile can hold; one profile may hold both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// Samples taken while threads ran on a CPU (timer-driven).
    OnCpu,
    /// Time threads spent off CPU, measured at context switches.
    OffCpu,
}

/// The state a task was in when it was switched off CPU.
///
/// ```
/// # fn demo(entry: &rover_core::profile::Entry) {
/// use rover_core::profile::OffCpuState;
/// for state in OffCpuState::ALL {
///     let v = entry.value.off_cpu(state);
///     println!("{state}: {} switches, {} ns", v.switches, v.nanos);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OffCpuState {
    /// Interruptible sleep (`S`): waiting for an event, a lock, a timer, a socket.
    Interruptible,
    /// Uninterruptible sleep (`D`): usually waiting for disk I/O.
    Uninterruptible,
    /// Still runnable (`R`) when switched out: preempted, waiting for a CPU.
    Preempted,
    /// Any other state (stopped, traced, dead, parked, ...).
    Other,
}

impl OffCpuState {
    /// Every state, in the order exports list them.
    pub const ALL: [OffCpuState; 4] = [
        OffCpuState::Interruptible,
        OffCpuState::Uninterruptible,
        OffCpuState::Preempted,
        OffCpuState::Other,
    ];

    /// The state's slot in a row's off-CPU values.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, used in labels and reports.
    pub fn name(self) -> &'static str {
        match self {
            OffCpuState::Interruptible => "interruptible",
            OffCpuState::Uninterruptible => "uninterruptible",
            OffCpuState::Preempted => "preempted",
            OffCpuState::Other => "other",
        }
    }
}

impl fmt::Display for OffCpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Off-CPU totals for one state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OffCpuValue {
    /// Times the thread was switched off CPU.
    pub switches: u64,
    /// Total nanoseconds it stayed off CPU.
    pub nanos: u64,
}

impl OffCpuValue {
    /// Adds `switches` and `nanos`, saturating: the one place off-CPU
    /// totals grow, whether from a sample or from another row.
    #[inline]
    pub(crate) fn add(&mut self, switches: u64, nanos: u64) {
        self.switches = self.switches.saturating_add(switches);
        self.nanos = self.nanos.saturating_add(nanos);
    }
}

/// Adds one row's per-state off-CPU values into another's.
#[inline]
pub(crate) fn add_states(mine: &mut [OffCpuValue; 4], theirs: &[OffCpuValue; 4]) {
    for (mine, theirs) in mine.iter_mut().zip(theirs) {
        mine.add(theirs.switches, theirs.nanos);
    }
}

/// Everything counted for one (thread, stack) pair, as
/// [`Profile::entries`](super::Profile::entries) reads it.
///
/// ```
/// # fn demo(profile: &rover_core::profile::Profile) {
/// use rover_core::profile::{Metric, OffCpuState};
/// for entry in profile.entries() {
///     let disk = entry.value.off_cpu(OffCpuState::Uninterruptible);
///     println!("{} samples, {} ns in D state", entry.value.samples, disk.nanos);
///     assert!(entry.value.get(Metric::OffCpuNanos) >= disk.nanos);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Value {
    /// On-CPU samples.
    pub samples: u64,
    /// Off-CPU totals, one per state, in `OffCpuState::index` order.
    pub(crate) off_cpu: [OffCpuValue; 4],
}

impl Value {
    /// The off-CPU totals for one task state.
    pub fn off_cpu(&self, state: OffCpuState) -> OffCpuValue {
        self.off_cpu[state.index()]
    }

    /// The amount of `metric` in this value (off-CPU metrics summed over
    /// states).
    pub fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::OnCpuSamples => self.samples,
            Metric::OffCpuNanos => self
                .off_cpu
                .iter()
                .map(|v| v.nanos)
                .fold(0, u64::saturating_add),
            Metric::OffCpuSwitches => self
                .off_cpu
                .iter()
                .map(|v| v.switches)
                .fold(0, u64::saturating_add),
        }
    }

    /// True when nothing was counted.
    pub(crate) fn is_zero(&self) -> bool {
        *self == Value::default()
    }
}

/// One observation handed to the profile builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleValue {
    /// On-CPU samples (the kernel side aggregates, so often more than one).
    OnCpu {
        /// Number of samples.
        samples: u64,
    },
    /// Off-CPU time in one state.
    OffCpu {
        /// The state the task left the CPU in.
        state: OffCpuState,
        /// Number of switches aggregated.
        switches: u64,
        /// Total nanoseconds off CPU over those switches.
        nanos: u64,
    },
}

impl SampleValue {
    /// The kind of profile this observation belongs to.
    pub(crate) fn kind(&self) -> ProfileKind {
        match self {
            SampleValue::OnCpu { .. } => ProfileKind::OnCpu,
            SampleValue::OffCpu { .. } => ProfileKind::OffCpu,
        }
    }
}

/// Which number to read from a [`Value`] when ranking, exporting or comparing.
///
/// The names are the scheme of every export option: `OnCpuSamples` is what
/// the `on_cpu` constructors draw, `OffCpuNanos` the `off_cpu` ones and
/// `OffCpuSwitches` the `off_cpu_switches` ones.
///
/// ```
/// # fn demo(profile: &rover_core::Profile) {
/// use rover_core::profile::Metric;
/// let blocked_ms = profile.total(Metric::OffCpuNanos) / 1_000_000;
/// let switches = profile.total(Metric::OffCpuSwitches);
/// println!("{blocked_ms} ms off CPU over {switches} switches");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// On-CPU sample count.
    OnCpuSamples,
    /// Nanoseconds off CPU, all states.
    OffCpuNanos,
    /// Off-CPU switch count, all states.
    OffCpuSwitches,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_add_per_state_and_sum_per_metric() {
        let mut v = Value {
            samples: 3,
            ..Value::default()
        };
        v.off_cpu[OffCpuState::Uninterruptible.index()].add(2, 500);
        v.off_cpu[OffCpuState::Interruptible.index()].add(1, 100);
        assert_eq!(v.get(Metric::OnCpuSamples), 3);
        assert_eq!(v.get(Metric::OffCpuNanos), 600);
        assert_eq!(v.get(Metric::OffCpuSwitches), 3);
        assert_eq!(v.off_cpu(OffCpuState::Uninterruptible).nanos, 500);
        let mut w = v;
        add_states(&mut w.off_cpu, &v.off_cpu);
        assert_eq!(w.get(Metric::OffCpuNanos), 1200);
        assert!(!w.is_zero());
        assert!(Value::default().is_zero());
    }

    #[test]
    fn off_cpu_totals_saturate() {
        let mut v = OffCpuValue {
            switches: u64::MAX,
            nanos: 1,
        };
        v.add(1, u64::MAX);
        assert_eq!((v.switches, v.nanos), (u64::MAX, u64::MAX));
    }
}
