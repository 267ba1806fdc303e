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
#define ROVER_ERR_MAX 5

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

/* Off-CPU aggregation key. `stack_buffer` names the stack map (0 or 1) the
 * ids belong to: stacks are taken at switch-out, which may be in an earlier
 * window than the switch-in that counts the block. */
struct rover_offcpu_key {
	__u32 tgid;
	__u32 tid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 state;
	__u32 stack_buffer;
	char comm[ROVER_COMM_LEN];
};

struct rover_offcpu_value {
	__u64 switches;
	__u64 total_ns;
};

/* What a task left at switch-out, keyed by tid, until it runs again. */
struct rover_offcpu_start {
	__u64 timestamp_ns;
	__u32 tgid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	__u32 state;
	__u32 stack_buffer;
	__u32 reserved;
};

#endif
