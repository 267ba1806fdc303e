//! The Rust mirror of `bpf/rover.h`: keys, values and constants shared with
//! the eBPF programs. Layouts are checked field by field in the tests below.

/// Frames kept per stack (the stack maps' value is this many `u64` ips).
pub const MAX_STACK_DEPTH: usize = 127;
/// Length of a task's command name, NUL padded.
pub const COMM_LEN: usize = 16;

/// `target_mode`: record every task.
pub const TARGET_ALL: u32 = 0;
/// `target_mode`: record tasks whose tgid is in `target_pids`.
pub const TARGET_PIDS: u32 = 1;
/// `target_mode`: record tasks of the cgroup whose id is `target_cgroup`.
pub const TARGET_CGROUP: u32 = 2;

/// Off-CPU state bit: switched out while runnable (preempted or yielded).
pub const STATE_PREEMPTED: u32 = 1 << 0;
/// Off-CPU state bit: interruptible sleep (waiting on a lock, socket, timer...).
pub const STATE_INTERRUPTIBLE: u32 = 1 << 1;
/// Off-CPU state bit: uninterruptible sleep (typically disk I/O).
pub const STATE_UNINTERRUPTIBLE: u32 = 1 << 2;
/// Off-CPU state bit: any other state (stopped, traced, idle kernel waits).
pub const STATE_OTHER: u32 = 1 << 3;

/// Error map index: the stack map had no free slot (`-ENOMEM`).
pub const ERR_STACK_MAP_FULL: u32 = 0;
/// Error map index: another stack already held the stack's bucket (`-EEXIST`).
pub const ERR_STACK_COLLISION: u32 = 1;
/// Error map index: taking a stack failed for another reason.
pub const ERR_STACK_OTHER: u32 = 2;
/// Error map index: the count map was full, the sample was dropped.
pub const ERR_COUNT_MAP_FULL: u32 = 3;
/// Error map index: the off-CPU start map was full, the block was dropped.
pub const ERR_START_MAP_FULL: u32 = 4;
/// Error map index, not a drop: an off-CPU block whose switch-in the kernel
/// did not report (some kernels, in some VMs, at times skip one), counted at
/// the task's next switch-out with an estimated end.
pub const ERR_SWITCH_IN_UNSEEN: u32 = 5;
/// Number of error map entries.
pub const ERR_MAX: u32 = 6;
/// `kernel_stack_err` of a block whose switch-in was not reported, where the
/// kernel stack is taken at switch-in: it could not be taken. Outside the
/// errno range.
pub const STACK_ERR_SWITCH_IN_UNSEEN: i32 = -4096;

/// Key of the on-CPU count maps (`struct rover_oncpu_key`); the value is a
/// `u64` sample count.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnCpuKey {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// User stack id in the stack map of the same buffer, or a negative errno.
    pub user_stack_id: i32,
    /// Kernel stack id in the stack map of the same buffer, or a negative errno.
    pub kernel_stack_id: i32,
    /// Unwound from tables (`user_stack_status` not [`USTACK_FP`]): the
    /// user stack's key in `ustacks` of the same buffer, 0 for none.
    pub user_stack_hash: u64,
    /// One `USTACK_*` value: how the user stack was taken.
    pub user_stack_status: u32,
    /// Padding, always 0.
    pub reserved: u32,
    /// The thread's command name, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// A kernel stack stored by the off-CPU program (`struct rover_kernel_stack`,
/// maps `offcpu_kstacks{0,1}` keyed by a hash of the ips); unused slots are 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelStack {
    /// Instruction pointers, leaf first.
    pub ips: [u64; MAX_STACK_DEPTH],
}

/// Key of the off-CPU count maps (`struct rover_offcpu_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffCpuKey {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// User stack id in stack map `user_stack_buffer`, or a negative errno.
    pub user_stack_id: i32,
    /// Which half (0 or 1) of `offcpu_stacks` holds the user stack.
    pub user_stack_buffer: u32,
    /// Key of the kernel stack in `offcpu_kstacks{kernel_stack_buffer}`; 0 for none.
    pub kernel_stack_hash: u64,
    /// Which half (0 or 1) of `offcpu_kstacks` holds the kernel stack.
    pub kernel_stack_buffer: u32,
    /// With a hash of 0: the helper's negative errno, or 0 for an empty stack.
    pub kernel_stack_err: i32,
    /// One `STATE_*` bit: the task's state when it went off CPU.
    pub state: u32,
    /// One `USTACK_*` value: how the user stack was taken.
    pub user_stack_status: u32,
    /// Unwound from tables: the user stack's key in `ustacks{user_stack_buffer}`, 0 for none.
    pub user_stack_hash: u64,
    /// The thread's command name, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// Value of the off-CPU count maps (`struct rover_offcpu_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffCpuCounts {
    /// Times the task went off CPU with this key.
    pub switches: u64,
    /// Total nanoseconds off CPU.
    pub total_ns: u64,
}

/// What a task left at switch-out until it runs again
/// (`struct rover_offcpu_start`, map `offcpu_start` keyed by tid).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffCpuStart {
    /// `bpf_ktime_get_ns()` at switch-out.
    pub timestamp_ns: u64,
    /// Process id.
    pub tgid: u32,
    /// User stack id in stack map `user_stack_buffer`, or a negative errno.
    pub user_stack_id: i32,
    /// Which half (0 or 1) of `offcpu_stacks` holds the user stack.
    pub user_stack_buffer: u32,
    /// One `STATE_*` bit.
    pub state: u32,
    /// Kernel stack hash when taken at switch-out (classic tracepoint), else 0.
    pub kernel_stack_hash: u64,
    /// Which half of `offcpu_kstacks` holds that kernel stack.
    pub kernel_stack_buffer: u32,
    /// With a hash of 0: the helper's negative errno, or 0.
    pub kernel_stack_err: i32,
    /// The task's `se.sum_exec_runtime` at switch-out, to date the end of a
    /// block whose switch-in the kernel did not report.
    pub runtime_ns: u64,
    /// Unwound from tables: the user stack's key in `ustacks{user_stack_buffer}`.
    pub user_stack_hash: u64,
    /// One `USTACK_*` value.
    pub user_stack_status: u32,
    /// Padding, always 0.
    pub reserved: u32,
}

/// Executable mappings kept per process by the unwinder.
pub const UNWIND_MAX_MAPPINGS: usize = 128;
/// `table_start` of a mapping without a table: walked with frame pointers.
pub const UNWIND_NO_TABLE: u32 = 0xffff_ffff;
/// `table_start` of a mapping whose table is not loaded yet.
pub const UNWIND_TABLE_PENDING: u32 = 0xffff_fffe;
/// Bit set on a user instruction pointer found with frame pointers.
pub const UNWIND_FP_FRAME: u64 = 1 << 63;

/// `user_stack_status`: frame pointers (`bpf_get_stackid`), see `user_stack_id`.
pub const USTACK_FP: u32 = 0;
/// `user_stack_status`: unwound to the outermost frame.
pub const USTACK_COMPLETE: u32 = 1;
/// `user_stack_status`: cut at [`MAX_STACK_DEPTH`] frames.
pub const USTACK_TRUNCATED: u32 = 2;
/// `user_stack_status`: the process's mappings were not loaded yet.
pub const USTACK_NO_PROCESS: u32 = 3;
/// `user_stack_status`: a module's table was not loaded yet.
pub const USTACK_TABLE_PENDING: u32 = 4;
/// `user_stack_status`: no table row covers an address.
pub const USTACK_NO_ROW: u32 = 5;
/// `user_stack_status`: stack memory could not be read.
pub const USTACK_READ_FAILED: u32 = 6;
/// `user_stack_status`: a rule the unwinder does not follow.
pub const USTACK_UNSUPPORTED: u32 = 7;
/// `user_stack_status`: an address in no executable mapping.
pub const USTACK_UNMAPPED: u32 = 8;
/// `user_stack_status`: no user registers (a kernel thread): no user stack.
pub const USTACK_NO_REGS: u32 = 9;
/// `user_stack_status`: a frame went nowhere (no progress, RBP unknown).
pub const USTACK_BAD_FRAME: u32 = 10;
/// `user_stack_status`: the stack map was full, the frames were lost.
pub const USTACK_STORE_FULL: u32 = 11;
/// Number of `USTACK_*` values.
pub const USTACK_MAX: u32 = 12;

/// `cfa_kind` of a signal trampoline row: the interrupted frame's registers
/// are in the ucontext at RSP.
pub const CFA_SIGNAL: u8 = 6;

/// One row of `unwind_rows` (`struct rover_unwind_row`), the layout of
/// `rover_unwind::Row`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnwindRow {
    /// First table address the row covers.
    pub pc: u64,
    /// Offset of the CFA rule.
    pub cfa_offset: i32,
    /// Offset of the RBP rule (the PLT rule's threshold).
    pub rbp_offset: i16,
    /// `ROVER_CFA_*`.
    pub cfa_kind: u8,
    /// `ROVER_RBP_*`.
    pub rbp_kind: u8,
}

/// An executable mapping of a process (`struct rover_unwind_mapping`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnwindMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Table address = address − bias (wrapping).
    pub bias: u64,
    /// First row in `unwind_rows`, or [`UNWIND_NO_TABLE`], [`UNWIND_TABLE_PENDING`].
    pub table_start: u32,
    /// Rows of the table.
    pub table_len: u32,
}

/// A process's executable mappings, sorted by address (`struct
/// rover_unwind_proc`, map `unwind_procs` keyed by tgid).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwindProc {
    /// Mappings in use.
    pub count: u32,
    /// Padding, always 0.
    pub reserved: u32,
    /// The mappings, `count` of them first.
    pub mappings: [UnwindMapping; UNWIND_MAX_MAPPINGS],
}

impl Default for UnwindProc {
    fn default() -> Self {
        UnwindProc {
            count: 0,
            reserved: 0,
            mappings: [UnwindMapping::default(); UNWIND_MAX_MAPPINGS],
        }
    }
}

/// Process event kind (`kind` of [`ProcEvent`]): a new process (not a thread).
pub const PROC_FORK: u32 = 1;
/// Process event kind: an exec; the record is a [`ProcExec`].
pub const PROC_EXEC: u32 = 2;
/// Process event kind: the last thread of a process exited.
pub const PROC_EXIT: u32 = 3;
/// Process event kind: executable code was mapped (mmap or mprotect with
/// `PROT_EXEC`).
pub const PROC_MAP_EXEC: u32 = 4;
/// Bytes of an exec record's file name, NUL terminated.
pub const PROC_FILENAME_LEN: usize = 256;
/// `flags` of a map record: anonymous memory (`MAP_ANONYMOUS` or no fd).
pub const PROC_MAP_ANONYMOUS: u32 = 1 << 0;
/// `flags` of a map record: made executable by `mprotect`.
pub const PROC_MAP_MPROTECT: u32 = 1 << 1;
/// Index in `procevents_drops`: fork records that found the ring full.
pub const PROC_DROP_FORK: u32 = 0;
/// Index in `procevents_drops`: exec records that found the ring full.
pub const PROC_DROP_EXEC: u32 = 1;
/// Index in `procevents_drops`: exit records that found the ring full.
pub const PROC_DROP_EXIT: u32 = 2;
/// Index in `procevents_drops`: map records that found the ring full.
pub const PROC_DROP_MAP_EXEC: u32 = 3;
/// Number of `procevents_drops` entries.
pub const PROC_DROP_MAX: u32 = 4;

/// One record of the process events ring buffer (`struct
/// rover_proc_event`); an exec record is a [`ProcExec`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcEvent {
    /// One `PROC_*` kind.
    pub kind: u32,
    /// The process (tgid).
    pub pid: u32,
    /// The thread: the child for a fork, the thread that called execve (its
    /// id before the exec), the last thread for an exit, the mapping thread.
    pub tid: u32,
    /// Fork: the tgid of the process that forked.
    pub ppid: u32,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub time_ns: u64,
    /// The group leader's `start_boottime` (ns since boot); 0 when unknown.
    pub start_ns: u64,
    /// Map: the mapping's address.
    pub addr: u64,
    /// Map: the mapping's length.
    pub len: u64,
    /// Exit: `task->exit_code`, a wait status.
    pub exit_code: i32,
    /// Map: `PROC_MAP_*` bits.
    pub flags: u32,
    /// The group leader's command name, NUL padded.
    pub comm: [u8; COMM_LEN],
}

/// An exec record (`struct rover_proc_exec`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcExec {
    /// What every record has.
    pub event: ProcEvent,
    /// The file name execve was given, NUL terminated.
    pub filename: [u8; PROC_FILENAME_LEN],
}

// SAFETY: plain `repr(C)` integers and byte arrays with no padding (checked
// by the layout tests), so every bit pattern is a valid value.
unsafe impl aya::Pod for OnCpuKey {}
// SAFETY: as above.
unsafe impl aya::Pod for OffCpuKey {}
// SAFETY: as above.
unsafe impl aya::Pod for OffCpuCounts {}
// SAFETY: as above.
unsafe impl aya::Pod for OffCpuStart {}
// SAFETY: as above.
unsafe impl aya::Pod for KernelStack {}
// SAFETY: as above.
unsafe impl aya::Pod for UnwindRow {}
// SAFETY: as above.
unsafe impl aya::Pod for UnwindMapping {}
// SAFETY: as above.
unsafe impl aya::Pod for UnwindProc {}
// SAFETY: as above.
unsafe impl aya::Pod for ProcEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for ProcExec {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn oncpu_key_layout() {
        assert_eq!(size_of::<OnCpuKey>(), 48);
        assert_eq!(align_of::<OnCpuKey>(), 8);
        assert_eq!(offset_of!(OnCpuKey, tgid), 0);
        assert_eq!(offset_of!(OnCpuKey, tid), 4);
        assert_eq!(offset_of!(OnCpuKey, user_stack_id), 8);
        assert_eq!(offset_of!(OnCpuKey, kernel_stack_id), 12);
        assert_eq!(offset_of!(OnCpuKey, user_stack_hash), 16);
        assert_eq!(offset_of!(OnCpuKey, user_stack_status), 24);
        assert_eq!(offset_of!(OnCpuKey, reserved), 28);
        assert_eq!(offset_of!(OnCpuKey, comm), 32);
    }

    #[test]
    fn offcpu_key_layout() {
        assert_eq!(size_of::<OffCpuKey>(), 64);
        assert_eq!(align_of::<OffCpuKey>(), 8);
        assert_eq!(offset_of!(OffCpuKey, tgid), 0);
        assert_eq!(offset_of!(OffCpuKey, tid), 4);
        assert_eq!(offset_of!(OffCpuKey, user_stack_id), 8);
        assert_eq!(offset_of!(OffCpuKey, user_stack_buffer), 12);
        assert_eq!(offset_of!(OffCpuKey, kernel_stack_hash), 16);
        assert_eq!(offset_of!(OffCpuKey, kernel_stack_buffer), 24);
        assert_eq!(offset_of!(OffCpuKey, kernel_stack_err), 28);
        assert_eq!(offset_of!(OffCpuKey, state), 32);
        assert_eq!(offset_of!(OffCpuKey, user_stack_status), 36);
        assert_eq!(offset_of!(OffCpuKey, user_stack_hash), 40);
        assert_eq!(offset_of!(OffCpuKey, comm), 48);
    }

    #[test]
    fn kernel_stack_layout() {
        assert_eq!(size_of::<KernelStack>(), 8 * MAX_STACK_DEPTH);
        assert_eq!(align_of::<KernelStack>(), 8);
    }

    #[test]
    fn offcpu_value_layout() {
        assert_eq!(size_of::<OffCpuCounts>(), 16);
        assert_eq!(align_of::<OffCpuCounts>(), 8);
        assert_eq!(offset_of!(OffCpuCounts, switches), 0);
        assert_eq!(offset_of!(OffCpuCounts, total_ns), 8);
    }

    #[test]
    fn offcpu_start_layout() {
        assert_eq!(size_of::<OffCpuStart>(), 64);
        assert_eq!(align_of::<OffCpuStart>(), 8);
        assert_eq!(offset_of!(OffCpuStart, timestamp_ns), 0);
        assert_eq!(offset_of!(OffCpuStart, tgid), 8);
        assert_eq!(offset_of!(OffCpuStart, user_stack_id), 12);
        assert_eq!(offset_of!(OffCpuStart, user_stack_buffer), 16);
        assert_eq!(offset_of!(OffCpuStart, state), 20);
        assert_eq!(offset_of!(OffCpuStart, kernel_stack_hash), 24);
        assert_eq!(offset_of!(OffCpuStart, kernel_stack_buffer), 32);
        assert_eq!(offset_of!(OffCpuStart, kernel_stack_err), 36);
        assert_eq!(offset_of!(OffCpuStart, runtime_ns), 40);
        assert_eq!(offset_of!(OffCpuStart, user_stack_hash), 48);
        assert_eq!(offset_of!(OffCpuStart, user_stack_status), 56);
        assert_eq!(offset_of!(OffCpuStart, reserved), 60);
    }

    #[test]
    fn proc_event_layout() {
        assert_eq!(size_of::<ProcEvent>(), 72);
        assert_eq!(align_of::<ProcEvent>(), 8);
        assert_eq!(offset_of!(ProcEvent, kind), 0);
        assert_eq!(offset_of!(ProcEvent, pid), 4);
        assert_eq!(offset_of!(ProcEvent, tid), 8);
        assert_eq!(offset_of!(ProcEvent, ppid), 12);
        assert_eq!(offset_of!(ProcEvent, time_ns), 16);
        assert_eq!(offset_of!(ProcEvent, start_ns), 24);
        assert_eq!(offset_of!(ProcEvent, addr), 32);
        assert_eq!(offset_of!(ProcEvent, len), 40);
        assert_eq!(offset_of!(ProcEvent, exit_code), 48);
        assert_eq!(offset_of!(ProcEvent, flags), 52);
        assert_eq!(offset_of!(ProcEvent, comm), 56);
        assert_eq!(size_of::<ProcExec>(), 72 + PROC_FILENAME_LEN);
        assert_eq!(offset_of!(ProcExec, filename), 72);
    }

    #[test]
    fn unwind_layouts() {
        assert_eq!(size_of::<UnwindRow>(), 16);
        assert_eq!(offset_of!(UnwindRow, cfa_offset), 8);
        assert_eq!(offset_of!(UnwindRow, rbp_offset), 12);
        assert_eq!(offset_of!(UnwindRow, cfa_kind), 14);
        assert_eq!(offset_of!(UnwindRow, rbp_kind), 15);
        assert_eq!(size_of::<UnwindMapping>(), 32);
        assert_eq!(offset_of!(UnwindMapping, bias), 16);
        assert_eq!(offset_of!(UnwindMapping, table_start), 24);
        assert_eq!(offset_of!(UnwindMapping, table_len), 28);
        assert_eq!(size_of::<UnwindProc>(), 8 + 32 * UNWIND_MAX_MAPPINGS);
        assert_eq!(offset_of!(UnwindProc, mappings), 8);
    }

    /// A constant changed on one side only would make the programs and the
    /// loader disagree silently.
    #[test]
    fn constants_match_header() {
        let header = include_str!("../bpf/rover.h");
        for (name, value) in [
            ("ROVER_MAX_STACK_DEPTH", MAX_STACK_DEPTH as u32),
            ("ROVER_COMM_LEN", COMM_LEN as u32),
            ("ROVER_TARGET_ALL", TARGET_ALL),
            ("ROVER_TARGET_PIDS", TARGET_PIDS),
            ("ROVER_TARGET_CGROUP", TARGET_CGROUP),
            ("ROVER_ERR_STACK_MAP_FULL", ERR_STACK_MAP_FULL),
            ("ROVER_ERR_STACK_COLLISION", ERR_STACK_COLLISION),
            ("ROVER_ERR_STACK_OTHER", ERR_STACK_OTHER),
            ("ROVER_ERR_COUNT_MAP_FULL", ERR_COUNT_MAP_FULL),
            ("ROVER_ERR_START_MAP_FULL", ERR_START_MAP_FULL),
            ("ROVER_ERR_SWITCH_IN_UNSEEN", ERR_SWITCH_IN_UNSEEN),
            ("ROVER_ERR_MAX", ERR_MAX),
            ("ROVER_UNWIND_MAX_MAPPINGS", UNWIND_MAX_MAPPINGS as u32),
            ("ROVER_USTACK_FP", USTACK_FP),
            ("ROVER_USTACK_COMPLETE", USTACK_COMPLETE),
            ("ROVER_USTACK_TRUNCATED", USTACK_TRUNCATED),
            ("ROVER_USTACK_NO_PROCESS", USTACK_NO_PROCESS),
            ("ROVER_USTACK_TABLE_PENDING", USTACK_TABLE_PENDING),
            ("ROVER_USTACK_NO_ROW", USTACK_NO_ROW),
            ("ROVER_USTACK_READ_FAILED", USTACK_READ_FAILED),
            ("ROVER_USTACK_UNSUPPORTED", USTACK_UNSUPPORTED),
            ("ROVER_USTACK_UNMAPPED", USTACK_UNMAPPED),
            ("ROVER_USTACK_NO_REGS", USTACK_NO_REGS),
            ("ROVER_USTACK_BAD_FRAME", USTACK_BAD_FRAME),
            ("ROVER_USTACK_STORE_FULL", USTACK_STORE_FULL),
            ("ROVER_USTACK_MAX", USTACK_MAX),
            ("ROVER_CFA_SIGNAL", u32::from(CFA_SIGNAL)),
            ("ROVER_PROC_FORK", PROC_FORK),
            ("ROVER_PROC_EXEC", PROC_EXEC),
            ("ROVER_PROC_EXIT", PROC_EXIT),
            ("ROVER_PROC_MAP_EXEC", PROC_MAP_EXEC),
            ("ROVER_PROC_FILENAME_LEN", PROC_FILENAME_LEN as u32),
            ("ROVER_PROC_DROP_FORK", PROC_DROP_FORK),
            ("ROVER_PROC_DROP_EXEC", PROC_DROP_EXEC),
            ("ROVER_PROC_DROP_EXIT", PROC_DROP_EXIT),
            ("ROVER_PROC_DROP_MAP_EXEC", PROC_DROP_MAP_EXEC),
            ("ROVER_PROC_DROP_MAX", PROC_DROP_MAX),
        ] {
            let line = format!("#define {name} {value}\n");
            assert!(header.contains(&line), "rover.h lacks `{}`", line.trim());
        }
        for line in [
            "#define ROVER_UNWIND_NO_TABLE 0xffffffff\n",
            "#define ROVER_UNWIND_TABLE_PENDING 0xfffffffe\n",
            "#define ROVER_UNWIND_FP_FRAME (1ULL << 63)\n",
        ] {
            assert!(header.contains(line), "rover.h lacks `{}`", line.trim());
        }
        assert_eq!(
            (UNWIND_NO_TABLE, UNWIND_TABLE_PENDING),
            (0xffffffff, 0xfffffffe)
        );
        let line =
            format!("#define ROVER_STACK_ERR_SWITCH_IN_UNSEEN ({STACK_ERR_SWITCH_IN_UNSEEN})\n");
        assert!(header.contains(&line), "rover.h lacks `{}`", line.trim());
        for (name, bit) in [
            ("ROVER_STATE_PREEMPTED", STATE_PREEMPTED),
            ("ROVER_STATE_INTERRUPTIBLE", STATE_INTERRUPTIBLE),
            ("ROVER_STATE_UNINTERRUPTIBLE", STATE_UNINTERRUPTIBLE),
            ("ROVER_STATE_OTHER", STATE_OTHER),
            ("ROVER_PROC_MAP_ANONYMOUS", PROC_MAP_ANONYMOUS),
            ("ROVER_PROC_MAP_MPROTECT", PROC_MAP_MPROTECT),
        ] {
            let line = format!("#define {name} (1u << {})\n", bit.trailing_zeros());
            assert!(header.contains(&line), "rover.h lacks `{}`", line.trim());
        }
    }
}
