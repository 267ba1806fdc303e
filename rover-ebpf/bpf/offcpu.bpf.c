/* offcpu.bpf.c: off-CPU time. On sched_switch the task going off CPU (still
 * `current`) leaves its stacks, state and a timestamp; when it is switched
 * back in, the time it was away is added to {tgid, tid, stacks, state}. */
#include "common.h"

const volatile __u64 min_block_ns = 1;
const volatile __u64 max_block_ns = ~0ULL;
const volatile __u32 state_mask = ROVER_STATE_PREEMPTED | ROVER_STATE_INTERRUPTIBLE |
				  ROVER_STATE_UNINTERRUPTIBLE | ROVER_STATE_OTHER;

struct offcpu_counts {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rover_offcpu_key);
	__type(value, struct rover_offcpu_value);
};

struct offcpu_counts offcpu_counts0 SEC(".maps");
struct offcpu_counts offcpu_counts1 SEC(".maps");
ROVER_STACK_MAP(offcpu_stacks0, 8192);
ROVER_STACK_MAP(offcpu_stacks1, 8192);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct rover_offcpu_start);
} offcpu_start SEC(".maps");

/* Stacks must be taken here, in the task's own context: the user stack of a
 * task that is not `current` cannot be read. */
static __always_inline void switch_out(void *ctx, __u32 state)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rover_offcpu_start start;
	__u32 tid = (__u32)id;

	if (!(state & state_mask) || !rover_targeted(id >> 32, tid))
		return;
	start.timestamp_ns = bpf_ktime_get_ns();
	start.tgid = id >> 32;
	start.state = state;
	start.reserved = 0;
	if (rover_active_buffer()) {
		start.stack_buffer = 1;
		start.user_stack_id = rover_stack_id(ctx, &offcpu_stacks1, BPF_F_USER_STACK);
		start.kernel_stack_id = rover_stack_id(ctx, &offcpu_stacks1, 0);
	} else {
		start.stack_buffer = 0;
		start.user_stack_id = rover_stack_id(ctx, &offcpu_stacks0, BPF_F_USER_STACK);
		start.kernel_stack_id = rover_stack_id(ctx, &offcpu_stacks0, 0);
	}
	if (bpf_map_update_elem(&offcpu_start, &tid, &start, BPF_ANY))
		rover_error(ROVER_ERR_START_MAP_FULL);
}

static __always_inline void switch_in(__u32 tid, const char *comm)
{
	struct rover_offcpu_start *start = bpf_map_lookup_elem(&offcpu_start, &tid);
	struct rover_offcpu_value initial;
	struct rover_offcpu_key key;
	__u64 delta;

	if (!start)
		return;
	delta = bpf_ktime_get_ns() - start->timestamp_ns;
	if (delta >= min_block_ns && delta <= max_block_ns) {
		__builtin_memset(&key, 0, sizeof(key));
		key.tgid = start->tgid;
		key.tid = tid;
		key.user_stack_id = start->user_stack_id;
		key.kernel_stack_id = start->kernel_stack_id;
		key.state = start->state;
		key.stack_buffer = start->stack_buffer;
		bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), comm);
		initial.switches = 1;
		initial.total_ns = delta;
		if (rover_active_buffer())
			rover_count(&offcpu_counts1, &key, &initial, 1, delta, true);
		else
			rover_count(&offcpu_counts0, &key, &initial, 1, delta, true);
	}
	/* Deleted only after counting: the loader relies on a block being
	 * visible in the start map or in the count map at every moment. */
	bpf_map_delete_elem(&offcpu_start, &tid);
}

static __always_inline __u32 state_of_task(bool preempt, struct task_struct *prev)
{
	__u32 raw;

	if (bpf_core_field_exists(prev->__state))
		raw = BPF_CORE_READ(prev, __state);
	else
		raw = BPF_CORE_READ((struct task_struct___pre514 *)prev, state);
	if (raw & TASK_DEAD)
		return 0;
	if (preempt || raw == TASK_RUNNING)
		return ROVER_STATE_PREEMPTED;
	if (raw & TASK_INTERRUPTIBLE)
		return ROVER_STATE_INTERRUPTIBLE;
	if ((raw & TASK_UNINTERRUPTIBLE) && !(raw & TASK_NOLOAD))
		return ROVER_STATE_UNINTERRUPTIBLE;
	return ROVER_STATE_OTHER;
}

/* An exiting task's last switch-out (state 0 here) is never followed by a
 * switch-in, so it is not recorded. */
SEC("tp_btf/sched_switch")
int rover_offcpu_btf(__u64 *ctx)
{
	bool preempt = ctx[0];
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct task_struct *next = (struct task_struct *)ctx[2];
	__u32 state = state_of_task(preempt, prev);

	if (state)
		switch_out(ctx, state);
	switch_in(BPF_CORE_READ(next, pid), next->comm);
	return 0;
}

static __always_inline __u32 state_of_report(long report)
{
	if (report & (REPORT_DEAD | REPORT_ZOMBIE))
		return 0;
	if (report == 0 || report >= REPORT_MAX)
		return ROVER_STATE_PREEMPTED;
	if (report == REPORT_INTERRUPTIBLE)
		return ROVER_STATE_INTERRUPTIBLE;
	if (report == REPORT_UNINTERRUPTIBLE)
		return ROVER_STATE_UNINTERRUPTIBLE;
	return ROVER_STATE_OTHER;
}

/* Fallback where BTF-typed tracepoints are unavailable. */
SEC("tracepoint/sched/sched_switch")
int rover_offcpu_tp(struct trace_event_raw_sched_switch *ctx)
{
	__u32 state = state_of_report(ctx->prev_state);

	if (state)
		switch_out(ctx, state);
	switch_in(ctx->next_pid, ctx->next_comm);
	return 0;
}
