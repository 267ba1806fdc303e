//! Sets of off-CPU task states to filter on, and the state bits of the ABI.

use std::ops::BitOr;

use rover_ebpf::abi;

use crate::profile::OffCpuState;

/// A set of [`OffCpuState`]s, e.g. `TaskStates::INTERRUPTIBLE | TaskStates::UNINTERRUPTIBLE`.
///
/// ```
/// use rover_core::TaskStates;
/// use rover_core::profile::OffCpuState;
///
/// let sleeping = TaskStates::INTERRUPTIBLE | TaskStates::UNINTERRUPTIBLE;
/// assert!(sleeping.contains(OffCpuState::Uninterruptible));
/// assert!(!sleeping.contains(OffCpuState::Preempted));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskStates(u32);

impl TaskStates {
    /// Preempted or yielded.
    pub const PREEMPTED: TaskStates = TaskStates(abi::STATE_PREEMPTED);
    /// Interruptible sleep.
    pub const INTERRUPTIBLE: TaskStates = TaskStates(abi::STATE_INTERRUPTIBLE);
    /// Uninterruptible sleep.
    pub const UNINTERRUPTIBLE: TaskStates = TaskStates(abi::STATE_UNINTERRUPTIBLE);
    /// Any other state.
    pub const OTHER: TaskStates = TaskStates(abi::STATE_OTHER);
    /// Every state.
    pub const ALL: TaskStates = TaskStates(
        abi::STATE_PREEMPTED
            | abi::STATE_INTERRUPTIBLE
            | abi::STATE_UNINTERRUPTIBLE
            | abi::STATE_OTHER,
    );

    /// The mask as the program reads it.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether `state` is in the set.
    pub fn contains(self, state: OffCpuState) -> bool {
        self.0 & state_bit(state) != 0
    }

    /// Whether the set holds no state (it would count nothing).
    pub fn is_empty(self) -> bool {
        self.0 & TaskStates::ALL.0 == 0
    }
}

impl Default for TaskStates {
    fn default() -> Self {
        TaskStates::ALL
    }
}

impl BitOr for TaskStates {
    type Output = TaskStates;

    fn bitor(self, other: TaskStates) -> TaskStates {
        TaskStates(self.0 | other.0)
    }
}

impl From<OffCpuState> for TaskStates {
    fn from(state: OffCpuState) -> Self {
        TaskStates(state_bit(state))
    }
}

fn state_bit(state: OffCpuState) -> u32 {
    match state {
        OffCpuState::Preempted => abi::STATE_PREEMPTED,
        OffCpuState::Interruptible => abi::STATE_INTERRUPTIBLE,
        OffCpuState::Uninterruptible => abi::STATE_UNINTERRUPTIBLE,
        OffCpuState::Other => abi::STATE_OTHER,
    }
}

/// The state of a `STATE_*` bit the off-CPU program recorded.
pub(crate) fn state_from_bit(bit: u32) -> OffCpuState {
    match bit {
        abi::STATE_PREEMPTED => OffCpuState::Preempted,
        abi::STATE_INTERRUPTIBLE => OffCpuState::Interruptible,
        abi::STATE_UNINTERRUPTIBLE => OffCpuState::Uninterruptible,
        _ => OffCpuState::Other,
    }
}

#[cfg(test)]
impl TaskStates {
    pub(crate) fn from_bits_for_test(bits: u32) -> Self {
        TaskStates(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_contain_their_states() {
        let sleeping = TaskStates::INTERRUPTIBLE | TaskStates::UNINTERRUPTIBLE;
        assert!(sleeping.contains(OffCpuState::Interruptible));
        assert!(sleeping.contains(OffCpuState::Uninterruptible));
        assert!(!sleeping.contains(OffCpuState::Preempted));
        assert_eq!(TaskStates::ALL.bits(), 0b1111);
        for bit in [1, 2, 4, 8] {
            assert!(TaskStates(bit).contains(state_from_bit(bit)));
        }
        for state in OffCpuState::ALL {
            assert_eq!(state_from_bit(state_bit(state)), state);
            assert!(TaskStates::ALL.contains(state));
        }
        assert!(TaskStates(0).is_empty());
        assert!(!TaskStates::from(OffCpuState::Other).is_empty());
    }
}
