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
	__u32 reserved;
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
};

#endif
