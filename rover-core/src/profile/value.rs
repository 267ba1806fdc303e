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
    /// Every state, in index order.
    pub const ALL: [OffCpuState; 4] = [
        OffCpuState::Interruptible,
        OffCpuState::Uninterruptible,
        OffCpuState::Preempted,
        OffCpuState::Other,
    ];

    /// Index of the state in [`Value::off_cpu`].
    pub fn index(self) -> usize {
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

/// Everything counted for one (thread, stack) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Value {
    /// On-CPU samples.
    pub samples: u64,
    /// Off-CPU totals, indexed by [`OffCpuState::index`].
    pub off_cpu: [OffCpuValue; 4],
}

impl Value {
    /// Adds one observation.
    pub fn add(&mut self, sample: SampleValue) {
        match sample {
            SampleValue::OnCpu { samples } => self.samples = self.samples.saturating_add(samples),
            SampleValue::OffCpu {
                state,
                switches,
                nanos,
            } => {
                let slot = &mut self.off_cpu[state.index()];
                slot.switches = slot.switches.saturating_add(switches);
                slot.nanos = slot.nanos.saturating_add(nanos);
            }
        }
    }

    /// Adds another value, field by field.
    pub fn merge(&mut self, other: &Value) {
        self.samples = self.samples.saturating_add(other.samples);
        for (mine, theirs) in self.off_cpu.iter_mut().zip(&other.off_cpu) {
            mine.switches = mine.switches.saturating_add(theirs.switches);
            mine.nanos = mine.nanos.saturating_add(theirs.nanos);
        }
    }

    /// The amount of `metric` in this value (off-CPU metrics summed over states).
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
    pub fn is_zero(&self) -> bool {
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
    pub fn kind(&self) -> ProfileKind {
        match self {
            SampleValue::OnCpu { .. } => ProfileKind::OnCpu,
            SampleValue::OffCpu { .. } => ProfileKind::OffCpu,
        }
    }
}

/// Which number to read from a [`Value`] when ranking, exporting or comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// On-CPU sample count.
    OnCpuSamples,
    /// Nanoseconds off CPU, all states.
    OffCpuNanos,
    /// Off-CPU switch count, all states.
    OffCpuSwitches,
}

impl Metric {
    /// The profile kind this metric reads.
    pub fn kind(self) -> ProfileKind {
        match self {
            Metric::OnCpuSamples => ProfileKind::OnCpu,
            Metric::OffCpuNanos | Metric::OffCpuSwitches => ProfileKind::OffCpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_add_per_state_and_sum_per_metric() {
        let mut v = Value::default();
        v.add(SampleValue::OnCpu { samples: 3 });
        v.add(SampleValue::OffCpu {
            state: OffCpuState::Uninterruptible,
            switches: 2,
            nanos: 500,
        });
        v.add(SampleValue::OffCpu {
            state: OffCpuState::Interruptible,
            switches: 1,
            nanos: 100,
        });
        assert_eq!(v.get(Metric::OnCpuSamples), 3);
        assert_eq!(v.get(Metric::OffCpuNanos), 600);
        assert_eq!(v.get(Metric::OffCpuSwitches), 3);
        assert_eq!(v.off_cpu[OffCpuState::Uninterruptible.index()].nanos, 500);
        let mut w = v;
        w.merge(&v);
        assert_eq!(w.get(Metric::OffCpuNanos), 1200);
        assert!(!w.is_zero());
        assert!(Value::default().is_zero());
    }
}
