//! What a drain returns besides the counts: stacks as instruction pointers,
//! why a stack is missing, and the per-CPU counters of what was dropped.

use rover_ebpf::abi;

/// Where an entry's stack is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StackSlot {
    /// Index into the window's `stacks`.
    Stack(usize),
    /// There is no such stack: a kernel thread has no user stack, a task
    /// sampled in user space may have an empty kernel stack.
    Empty,
    /// The stack existed but was not recorded.
    Lost(StackLoss),
}

/// Why a stack was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StackLoss {
    /// The stack map was full (raise `MapSizes::stacks`).
    MapFull,
    /// Another stack held the same hash bucket of the stack map.
    Collision,
    /// `bpf_get_stackid` failed with this errno.
    Errno(i32),
    /// The id was recorded but the stack was gone when drained.
    Vanished,
    /// The kernel did not report the task's switch-in (some kernels, in
    /// some VMs, at times skip one), where the off-CPU program takes the kernel
    /// stack: the block is counted, its kernel stack could not be taken.
    SwitchInUnseen,
}

impl StackLoss {
    pub(crate) fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOMEM => StackLoss::MapFull,
            libc::EEXIST => StackLoss::Collision,
            errno if errno == -abi::STACK_ERR_SWITCH_IN_UNSEEN => StackLoss::SwitchInUnseen,
            errno => StackLoss::Errno(errno),
        }
    }
}

/// Events the programs could not record in full on one CPU during a window
/// (the `errors` map, as differences since the previous drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorCounts {
    /// Stacks dropped because the stack map was full.
    pub stack_map_full: u64,
    /// Stacks dropped because their bucket held another stack.
    pub stack_collision: u64,
    /// Stacks dropped for another reason.
    pub stack_other: u64,
    /// Samples or blocks dropped because the count map was full.
    pub count_map_full: u64,
    /// Off-CPU blocks dropped because the start map was full.
    pub start_map_full: u64,
    /// Not a drop: off-CPU blocks whose switch-in the kernel did not report
    /// (some kernels, in some VMs, at times skip one). Each is
    /// still counted, at the task's next switch-out, its end dated by the
    /// CPU time the task used since; with the BTF hook its kernel stack is
    /// missing ([`StackLoss::SwitchInUnseen`]). Left out of [`total`](Self::total).
    pub switch_in_unseen: u64,
}

impl ErrorCounts {
    pub(crate) fn from_slots(slots: &[u64; abi::ERR_MAX as usize]) -> Self {
        ErrorCounts {
            stack_map_full: slots[abi::ERR_STACK_MAP_FULL as usize],
            stack_collision: slots[abi::ERR_STACK_COLLISION as usize],
            stack_other: slots[abi::ERR_STACK_OTHER as usize],
            count_map_full: slots[abi::ERR_COUNT_MAP_FULL as usize],
            start_map_full: slots[abi::ERR_START_MAP_FULL as usize],
            switch_in_unseen: slots[abi::ERR_SWITCH_IN_UNSEEN as usize],
        }
    }

    pub(crate) fn saturating_sub(&self, earlier: &Self) -> Self {
        ErrorCounts {
            stack_map_full: self.stack_map_full.saturating_sub(earlier.stack_map_full),
            stack_collision: self.stack_collision.saturating_sub(earlier.stack_collision),
            stack_other: self.stack_other.saturating_sub(earlier.stack_other),
            count_map_full: self.count_map_full.saturating_sub(earlier.count_map_full),
            start_map_full: self.start_map_full.saturating_sub(earlier.start_map_full),
            switch_in_unseen: self
                .switch_in_unseen
                .saturating_sub(earlier.switch_in_unseen),
        }
    }

    /// All dropped events of every kind (`switch_in_unseen` is not a drop).
    pub fn total(&self) -> u64 {
        self.stack_map_full
            + self.stack_collision
            + self.stack_other
            + self.count_map_full
            + self.start_map_full
    }

    /// Sums counters, e.g. of every CPU.
    pub fn sum<'a>(counts: impl IntoIterator<Item = &'a ErrorCounts>) -> ErrorCounts {
        counts
            .into_iter()
            .fold(ErrorCounts::default(), |acc, c| ErrorCounts {
                stack_map_full: acc.stack_map_full + c.stack_map_full,
                stack_collision: acc.stack_collision + c.stack_collision,
                stack_other: acc.stack_other + c.stack_other,
                count_map_full: acc.count_map_full + c.count_map_full,
                start_map_full: acc.start_map_full + c.start_map_full,
                switch_in_unseen: acc.switch_in_unseen + c.switch_in_unseen,
            })
    }
}

/// A task's command name from its NUL-padded kernel form.
pub(crate) fn comm_string(comm: &[u8; abi::COMM_LEN]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
