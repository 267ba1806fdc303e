/* rover.h: the ABI shared by rover's eBPF programs and the Rust loader.
 * Every key, value and constant both sides read lives here; the Rust mirror is
 * rover-ebpf/src/abi.rs and its layout tests must change with this file. */
#ifndef ROVER_H
#define ROVER_H

/* Frames kept per stack, the kernel's own limit for stack-trace maps. */
#define ROVER_MAX_STACK_DEPTH 127
#define ROVER_COMM_LEN 16

/* Which tasks a program records (global `target_mode`). */
#define ROVER_TARGET_ALL 0
#define ROVER_TARGET_PIDS 1
#define ROVER_TARGET_CGROUP 2

/* Off-CPU task states, one bit each so a mask can select several. */
#define ROVER_STATE_PREEMPTED (1u << 0)
#define ROVER_STATE_INTERRUPTIBLE (1u << 1)
#define ROVER_STATE_UNINTERRUPTIBLE (1u << 2)
#define ROVER_STATE_OTHER (1u << 3)

/* Indexes of the per-CPU error map: why an event was not recorded in full. */
#define ROVER_ERR_STACK_MAP_FULL 0
#define ROVER_ERR_STACK_COLLISION 1
#define ROVER_ERR_STACK_OTHER 2
#define ROVER_ERR_COUNT_MAP_FULL 3
#define ROVER_ERR_START_MAP_FULL 4
/* Not a drop: a block whose switch-in the kernel did not report (some
 * kernels, in some VMs, at times skip a switch-in), counted at the task's next
 * switch-out with an estimated end and, where the kernel stack is taken at
 * switch-in, without it. */
#define ROVER_ERR_SWITCH_IN_UNSEEN 5
#define ROVER_ERR_MAX 6

/* `kernel_stack_err` of such a block when its kernel stack, taken at
 * switch-in, could not be: outside the errno range. */
#define ROVER_STACK_ERR_SWITCH_IN_UNSEEN (-4096)

/* On-CPU count key; the value is a __u64 sample count. Stack ids index the
 * stack map of the same buffer as the count map holding the key; a negative
 * id is the helper's error (-EFAULT: no such stack, e.g. a kernel thread). */
struct rover_oncpu_key {
	__u32 tgid;
	__u32 tid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	/* Unwound from tables (user_stack_status not ROVER_USTACK_FP): the key
	 * of the user stack in `ustacks` of the same buffer, 0 for none. */
	__u64 user_stack_hash;
	__u32 user_stack_status;
	__u32 reserved;
	char comm[ROVER_COMM_LEN];
};

/* A kernel stack of the off-CPU program, stored by the program itself in a
 * hash map keyed by a hash of its ips, because it is taken at switch-in from
 * the task's saved context (bpf_get_task_stack), where bpf_get_stackid cannot
 * be used. Unused slots are 0. */
struct rover_kernel_stack {
	__u64 ips[ROVER_MAX_STACK_DEPTH];
};

/* Off-CPU aggregation key. The user stack is taken at switch-out, in the
 * task's own context, possibly windows before the block is counted, so each
 * stack names the half (0 or 1) of the stack maps it was stored in. A kernel
 * stack hash of 0 means no stack; `kernel_stack_err` then holds the helper's
 * negative errno, or 0 when the stack was empty. */
struct rover_offcpu_key {
	__u32 tgid;
	__u32 tid;
	__s32 user_stack_id;
	__u32 user_stack_buffer;
	__u64 kernel_stack_hash;
	__u32 kernel_stack_buffer;
	__s32 kernel_stack_err;
	__u32 state;
	/* ROVER_USTACK_*: how the user stack was taken. */
	__u32 user_stack_status;
	/* Unwound from tables: the user stack's key in `ustacks`
	 * `user_stack_buffer`, 0 for none. */
	__u64 user_stack_hash;
	char comm[ROVER_COMM_LEN];
};

struct rover_offcpu_value {
	__u64 switches;
	__u64 total_ns;
};

/* What a task left at switch-out, keyed by tid, until it runs again. The
 * kernel stack fields are set only where the kernel stack is taken at
 * switch-out (the classic tracepoint, which cannot reach the next task). */
struct rover_offcpu_start {
	__u64 timestamp_ns;
	__u32 tgid;
	__s32 user_stack_id;
	__u32 user_stack_buffer;
	__u32 state;
	__u64 kernel_stack_hash;
	__u32 kernel_stack_buffer;
	__s32 kernel_stack_err;
	/* The task's `se.sum_exec_runtime` at switch-out: when the kernel does
	 * not report its switch-in, the time it ran since then, known at its next
	 * switch-out, tells when the block ended. */
	__u64 runtime_ns;
	__u64 user_stack_hash;
	__u32 user_stack_status;
	__u32 reserved;
};

/* In-kernel unwinding from tables built in user space (the `unwind`
 * variants of the programs). */

/* Executable mappings kept per process, sorted by address. */
#define ROVER_UNWIND_MAX_MAPPINGS 128
/* `table_start` of a mapping without a table (JIT code, anonymous memory, a
 * file without call-frame information): walked with frame pointers. */
#define ROVER_UNWIND_NO_TABLE 0xffffffff
/* `table_start` of a mapping whose table is not loaded yet: the walk stops
 * there, ROVER_USTACK_TABLE_PENDING. */
#define ROVER_UNWIND_TABLE_PENDING 0xfffffffe
/* Bit set on an instruction pointer found with frame pointers, where the
 * module has no table (user addresses are below 2^47). */
#define ROVER_UNWIND_FP_FRAME (1ULL << 63)

/* How a user stack was taken (`user_stack_status`). */
/* frame pointers, bpf_get_stackid: user_stack_id */
#define ROVER_USTACK_FP 0
/* unwound to the outermost frame */
#define ROVER_USTACK_COMPLETE 1
/* ROVER_MAX_STACK_DEPTH frames */
#define ROVER_USTACK_TRUNCATED 2
/* the process's mappings are not loaded yet */
#define ROVER_USTACK_NO_PROCESS 3
/* a module's table is not loaded yet */
#define ROVER_USTACK_TABLE_PENDING 4
/* no table row covers the address */
#define ROVER_USTACK_NO_ROW 5
/* stack memory could not be read */
#define ROVER_USTACK_READ_FAILED 6
/* a rule the unwinder does not follow */
#define ROVER_USTACK_UNSUPPORTED 7
/* an address in no executable mapping */
#define ROVER_USTACK_UNMAPPED 8
/* no user registers: no user stack */
#define ROVER_USTACK_NO_REGS 9
/* a frame went nowhere (no progress, RBP unknown) */
#define ROVER_USTACK_BAD_FRAME 10
/* the stack map was full: frames lost */
#define ROVER_USTACK_STORE_FULL 11
#define ROVER_USTACK_MAX 12

/* One table row, as rover_unwind::Row lays it out. */
struct rover_unwind_row {
	__u64 pc;
	__s32 cfa_offset;
	__s16 rbp_offset;
	__u8 cfa_kind;
	__u8 rbp_kind;
};

#define ROVER_CFA_NONE 0
#define ROVER_CFA_RSP 1
#define ROVER_CFA_RBP 2
#define ROVER_CFA_PLT 3
#define ROVER_CFA_END 4
#define ROVER_CFA_UNSUPPORTED 5
/* A signal trampoline (__restore_rt): the interrupted frame's registers are
 * in the ucontext at RSP. */
#define ROVER_CFA_SIGNAL 6
#define ROVER_RBP_UNCHANGED 0
#define ROVER_RBP_AT_CFA 1
#define ROVER_RBP_UNSUPPORTED 2

/* An executable mapping: address `a` in [start, end) is table address
 * `a - bias`, looked up in rows [table_start, table_start + table_len) of
 * `unwind_rows`. */
struct rover_unwind_mapping {
	__u64 start;
	__u64 end;
	__u64 bias;
	__u32 table_start;
	__u32 table_len;
};

/* A process's executable mappings (`unwind_procs`, keyed by tgid). */
struct rover_unwind_proc {
	__u32 count;
	__u32 reserved;
	struct rover_unwind_mapping mappings[ROVER_UNWIND_MAX_MAPPINGS];
};

/* Process events (procevents.bpf.c): one record per event in the ring
 * buffer `procevents_ring`, a struct rover_proc_event, followed for
 * ROVER_PROC_EXEC by the file name (ROVER_PROC_FILENAME_LEN bytes, NUL
 * terminated). */
#define ROVER_PROC_FORK 1
#define ROVER_PROC_EXEC 2
#define ROVER_PROC_EXIT 3
#define ROVER_PROC_MAP_EXEC 4
#define ROVER_PROC_FILENAME_LEN 256

/* `flags` of a ROVER_PROC_MAP_EXEC record: how the code was mapped. */
#define ROVER_PROC_MAP_ANONYMOUS (1u << 0)
#define ROVER_PROC_MAP_MPROTECT (1u << 1)

/* Indexes of the per-CPU `procevents_drops` map: records of each kind that
 * found the ring buffer full. */
#define ROVER_PROC_DROP_FORK 0
#define ROVER_PROC_DROP_EXEC 1
#define ROVER_PROC_DROP_EXIT 2
#define ROVER_PROC_DROP_MAP_EXEC 3
#define ROVER_PROC_DROP_MAX 4

struct rover_proc_event {
	/* ROVER_PROC_* */
	__u32 kind;
	/* The process (tgid). */
	__u32 pid;
	/* The thread: the child (= pid) for a fork, the thread that called
	 * execve (its id before the exec) for an exec, the last thread for an
	 * exit, the thread that mapped for a map. */
	__u32 tid;
	/* Fork: the tgid of the process that forked. */
	__u32 ppid;
	/* bpf_ktime_get_boot_ns() at the event. */
	__u64 time_ns;
	/* The process's group leader's start_boottime (ns since boot), what
	 * /proc/PID/stat's starttime is made from; 0 when unknown. */
	__u64 start_ns;
	/* Map: the mapping's address and length. */
	__u64 addr;
	__u64 len;
	/* Exit: task->exit_code, a wait status (code << 8 | signal). */
	__s32 exit_code;
	/* Map: ROVER_PROC_MAP_* bits. */
	__u32 flags;
	/* The group leader's command name. */
	char comm[ROVER_COMM_LEN];
};

struct rover_proc_exec {
	struct rover_proc_event event;
	char filename[ROVER_PROC_FILENAME_LEN];
};

#endif
