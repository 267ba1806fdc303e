//! What a drain returns, the same for both programs: counts per thread and
//! stacks, stacks as instruction pointers, why a stack is missing, and the
//! per-CPU counters of what was dropped.

use rover_ebpf::abi;

use crate::profile::SampleValue;

/// What was counted for one thread and pair of stacks (and, off CPU, one
/// task state) during a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread command name.
    pub comm: String,
    /// The user-space stack, leaf first. Unwound from tables, an address
    /// the unwinder found with frame pointers (a module without a table)
    /// has [`abi::UNWIND_FP_FRAME`] set.
    pub user_stack: StackSlot,
    /// How the user stack was walked, and where an unwound one stopped.
    pub user_walk: UserWalk,
    /// The kernel stack, leaf first (off CPU: `__schedule` and up).
    pub kernel_stack: StackSlot,
    /// On-CPU samples, or off-CPU switches and nanoseconds in one state.
    pub value: SampleValue,
}

/// One drained window of either program. Off CPU, a block is counted in
/// the window in which the task came back on CPU.
///
/// ```no_run
/// use rover_core::loader::{OnCpuConfig, OnCpuProgram};
/// use rover_core::profile::SampleValue;
///
/// let mut program = OnCpuProgram::attach(&OnCpuConfig::default())?;
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// let window = program.drain()?;
/// let samples: u64 = window
///     .entries
///     .iter()
///     .map(|e| match e.value {
///         SampleValue::OnCpu { samples } => samples,
///         SampleValue::OffCpu { switches, .. } => switches,
///     })
///     .sum();
/// println!("{samples} samples, {} dropped", window.dropped().dropped_samples());
/// # Ok::<(), rover_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawWindow {
    /// Counts per thread and stacks.
    pub entries: Vec<RawEntry>,
    /// Instruction pointers, leaf first, referenced by [`StackSlot::Stack`].
    pub stacks: Vec<Vec<u64>>,
    /// Per CPU, what could not be recorded during the window.
    pub errors: Vec<ErrorCounts>,
    /// The unwinder's table service at the drain, when the program
    /// unwinds from tables.
    pub unwinder: Option<rover_unwind::UnwinderStats>,
}

impl RawWindow {
    /// What could not be recorded during the window, summed over CPUs.
    pub fn dropped(&self) -> ErrorCounts {
        ErrorCounts::sum(&self.errors)
    }
}

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

/// How a user stack was walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserWalk {
    /// With frame pointers (`bpf_get_stackid`).
    FramePointers,
    /// Unwound from tables to the outermost frame: the stack is complete.
    Complete,
    /// Unwound from tables until it stopped, for this reason: the frames
    /// up to there are kept.
    Stopped(WalkStop),
}

/// Why an unwound user stack stopped before its outermost frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WalkStop {
    /// It had the most frames a stack keeps (127).
    Truncated,
    /// The process's mappings were not loaded yet (it is new to the
    /// session); they are being loaded.
    ProcessPending,
    /// A module's table was not loaded yet (being built, or evicted).
    TablePending,
    /// No table row covers an address (code without call-frame
    /// information).
    NoRow,
    /// Stack memory could not be read (not paged in, or unmapped).
    ReadFailed,
    /// A rule the unwinder does not follow.
    Unsupported,
    /// An address in none of the process's executable mappings.
    Unmapped,
    /// The task had no user registers (a kernel thread): no user stack.
    NoRegisters,
    /// A frame went nowhere (no progress, or RBP unknown).
    BadFrame,
    /// The stack map was full: the frames were lost.
    StoreFull,
    /// A status this version does not know.
    Other(u32),
}

impl UserWalk {
    pub(crate) fn from_status(status: u32) -> UserWalk {
        UserWalk::Stopped(match status {
            abi::USTACK_FP => return UserWalk::FramePointers,
            abi::USTACK_COMPLETE => return UserWalk::Complete,
            abi::USTACK_TRUNCATED => WalkStop::Truncated,
            abi::USTACK_NO_PROCESS => WalkStop::ProcessPending,
            abi::USTACK_TABLE_PENDING => WalkStop::TablePending,
            abi::USTACK_NO_ROW => WalkStop::NoRow,
            abi::USTACK_READ_FAILED => WalkStop::ReadFailed,
            abi::USTACK_UNSUPPORTED => WalkStop::Unsupported,
            abi::USTACK_UNMAPPED => WalkStop::Unmapped,
            abi::USTACK_NO_REGS => WalkStop::NoRegisters,
            abi::USTACK_BAD_FRAME => WalkStop::BadFrame,
            abi::USTACK_STORE_FULL => WalkStop::StoreFull,
            other => WalkStop::Other(other),
        })
    }
}

impl WalkStop {
    /// A short description, as the profile's marker frame names it.
    pub fn describe(&self) -> &'static str {
        match self {
            WalkStop::Truncated => "127 frames",
            WalkStop::ProcessPending => "process not loaded yet",
            WalkStop::TablePending => "table not loaded yet",
            WalkStop::NoRow => "no unwind row",
            WalkStop::ReadFailed => "stack unreadable",
            WalkStop::Unsupported => "unsupported unwind rule",
            WalkStop::Unmapped => "address not mapped",
            WalkStop::NoRegisters => "no user registers",
            WalkStop::BadFrame => "bad frame",
            WalkStop::StoreFull => "stack map full",
            WalkStop::Other(_) => "unknown reason",
        }
    }
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
    /// missing ([`StackLoss::SwitchInUnseen`]). Left out of every sum below.
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

    /// Samples (on-CPU) or blocks (off-CPU) not counted at all, because the
    /// count map or the start map was full.
    pub fn dropped_samples(&self) -> u64 {
        self.count_map_full + self.start_map_full
    }

    /// Stacks lost: not recorded, for samples that were still counted (in
    /// a window's stats, `WindowStats::lost_stacks` says why, by
    /// [`StackLoss`], weighted by the samples that lost them).
    pub fn lost_stacks(&self) -> u64 {
        self.stack_map_full + self.stack_collision + self.stack_other
    }

    /// Everything the kernel side could not record:
    /// [`dropped_samples`](Self::dropped_samples) plus
    /// [`lost_stacks`](Self::lost_stacks).
    pub fn dropped_or_lost(&self) -> u64 {
        self.dropped_samples() + self.lost_stacks()
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
