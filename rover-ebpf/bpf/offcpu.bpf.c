/* offcpu.bpf.c: off-CPU time. On sched_switch the task going off CPU (still
 * `current`) leaves a timestamp, its state and its user stack; when it is
 * switched back in, the time it was away is added to {tgid, tid, stacks,
 * state}. Its kernel stack is taken then, from its saved context, and only
 * for blocks that pass the filters: unwinding the kernel stack is the
 * costliest step, and most context switches are short blocks. */
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

struct offcpu_kstacks {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct rover_kernel_stack);
};

struct offcpu_kstacks offcpu_kstacks0 SEC(".maps");
struct offcpu_kstacks offcpu_kstacks1 SEC(".maps");

/* Room to unwind a kernel stack into before it is hashed and stored. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rover_kernel_stack);
} offcpu_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct rover_offcpu_start);
} offcpu_start SEC(".maps");

#ifdef ROVER_UNWIND
#include "unwind.h"
#endif

struct kernel_stack_ref {
	__u64 hash;
	__u32 buffer;
	__s32 err;
};

/* FNV-1a over the ips; 0 is kept for "no stack". */
static __always_inline __u64 hash_ips(const __u64 *ips, long bytes)
{
	__u64 hash = 0xcbf29ce484222325ULL;

	for (int i = 0; i < ROVER_MAX_STACK_DEPTH; i++) {
		if (i * 8 >= bytes)
			break;
		hash ^= ips[i];
		hash *= 0x100000001b3ULL;
	}
	return hash ? hash : 1;
}

/* Stores the `bytes` of ips unwound into `stack` in the active half. */
static __always_inline void store_kernel_stack(struct rover_kernel_stack *stack, long bytes,
					       struct kernel_stack_ref *ref)
{
	void *kstacks;
	long err;

	ref->hash = 0;
	ref->err = 0;
	ref->buffer = rover_active_buffer();
	if (bytes < 0) {
		ref->err = bytes;
		rover_error(ROVER_ERR_STACK_OTHER);
		return;
	}
	if (bytes == 0)
		return;
	kstacks = ref->buffer ? (void *)&offcpu_kstacks1 : (void *)&offcpu_kstacks0;
	ref->hash = hash_ips(stack->ips, bytes);
	if (bpf_map_lookup_elem(kstacks, &ref->hash))
		return;
	err = bpf_map_update_elem(kstacks, &ref->hash, stack, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		ref->hash = 0;
		ref->err = -ENOMEM;
		rover_error(ROVER_ERR_STACK_MAP_FULL);
	}
}

static __always_inline struct rover_kernel_stack *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&offcpu_scratch, &zero);
}

/* Adds a block of `delta` ns that left `start` to the counts, when it passes
 * the filters. `kernel` replaces the start record's kernel stack (taken at
 * switch-in), or is NULL to keep it (taken at switch-out). */
static __always_inline void count_block(struct rover_offcpu_start *start, __u32 tid, __u64 delta,
					const char *comm, struct kernel_stack_ref *kernel)
{
	struct rover_offcpu_value initial;
	struct rover_offcpu_key key;

	if (delta < min_block_ns || delta > max_block_ns)
		return;
	__builtin_memset(&key, 0, sizeof(key));
	key.tgid = start->tgid;
	key.tid = tid;
	key.user_stack_id = start->user_stack_id;
	key.user_stack_buffer = start->user_stack_buffer;
	key.kernel_stack_hash = start->kernel_stack_hash;
	key.kernel_stack_buffer = start->kernel_stack_buffer;
	key.kernel_stack_err = start->kernel_stack_err;
	key.state = start->state;
	key.user_stack_status = start->user_stack_status;
	key.user_stack_hash = start->user_stack_hash;
	if (kernel) {
		key.kernel_stack_hash = kernel->hash;
		key.kernel_stack_buffer = kernel->buffer;
		key.kernel_stack_err = kernel->err;
	}
	bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), comm);
	initial.switches = 1;
	initial.total_ns = delta;
	if (rover_active_buffer())
		rover_count(&offcpu_counts1, &key, &initial, 1, delta, true);
	else
		rover_count(&offcpu_counts0, &key, &initial, 1, delta, true);
}

/* The task going off CPU still has a start record: it ran again without the
 * kernel reporting its switch-in (some kernels, in some VMs, at times skip
 * one). It has run without a break since then (every switch-out is
 * reported), so its block ended `runtime - start->runtime_ns` before now.
 * Counted here, rather than lost; the kernel stack, where it is taken at
 * switch-in, cannot be any more. */
static __always_inline void close_unseen(__u32 tid, const char *comm, __u64 now, __u64 runtime,
					 bool kernel_at_out)
{
	struct rover_offcpu_start *start = bpf_map_lookup_elem(&offcpu_start, &tid);
	struct kernel_stack_ref unseen = {
		.hash = 0,
		.buffer = 0,
		.err = ROVER_STACK_ERR_SWITCH_IN_UNSEEN,
	};
	__u64 ran, elapsed;

	if (!start)
		return;
	rover_error(ROVER_ERR_SWITCH_IN_UNSEEN);
	ran = runtime > start->runtime_ns ? runtime - start->runtime_ns : 0;
	elapsed = now > start->timestamp_ns ? now - start->timestamp_ns : 0;
	count_block(start, tid, elapsed > ran ? elapsed - ran : 0, comm,
		    kernel_at_out ? 0 : &unseen);
	bpf_map_delete_elem(&offcpu_start, &tid);
}

/* The user stack must be taken here, in the task's own context: the user
 * stack of a task that is not `current` cannot be read. `kernel_now` takes
 * the kernel stack here too, for the hook that cannot reach it later.
 * `state` is 0 for a task that exits: it only closes what it left. */
static __always_inline bool switch_out(void *ctx, __u32 state, bool kernel_now, const char *comm)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rover_offcpu_start start;
	struct kernel_stack_ref kernel;
	struct rover_kernel_stack *stack;
	struct task_struct *task;
	__u32 tid = (__u32)id;
	__u64 now, runtime;

	if (!rover_targeted(id >> 32, tid))
		return false;
	/* Read only for targeted tasks: this runs at every context switch. */
	task = (struct task_struct *)bpf_get_current_task();
	runtime = BPF_CORE_READ(task, se.sum_exec_runtime);
	now = bpf_ktime_get_ns();
	close_unseen(tid, comm, now, runtime, kernel_now);
	if (!(state & state_mask))
		return false;
	start.timestamp_ns = now;
	start.tgid = id >> 32;
	start.state = state;
	start.runtime_ns = runtime;
	start.user_stack_buffer = rover_active_buffer();
	start.user_stack_hash = 0;
	start.user_stack_status = ROVER_USTACK_FP;
	start.reserved = 0;
#ifdef ROVER_UNWIND
	start.user_stack_id = 0;
#else
	if (start.user_stack_buffer)
		start.user_stack_id = rover_stack_id(ctx, &offcpu_stacks1, BPF_F_USER_STACK);
	else
		start.user_stack_id = rover_stack_id(ctx, &offcpu_stacks0, BPF_F_USER_STACK);
#endif
	start.kernel_stack_hash = 0;
	start.kernel_stack_buffer = 0;
	start.kernel_stack_err = 0;
	if (kernel_now) {
		stack = scratch();
		if (stack) {
			/* Starts at __schedule, or at __traceiter_sched_switch
			 * when other probes share the tracepoint: no fixed skip. */
			store_kernel_stack(stack, bpf_get_stack(ctx, stack->ips, sizeof(stack->ips), 0),
					   &kernel);
			start.kernel_stack_hash = kernel.hash;
			start.kernel_stack_buffer = kernel.buffer;
			start.kernel_stack_err = kernel.err;
		}
	}
#ifdef ROVER_UNWIND
	/* The user stack is unwound by the step program, which stores the
	 * start record when it is done. */
	{
		struct unwind_pt_regs regs;
		struct unwind_state *st;

		if (unwind_task_regs(&regs))
			st = unwind_begin(&regs, start.tgid, tid, start.user_stack_buffer);
		else
			st = unwind_begin_empty(start.tgid, tid, start.user_stack_buffer,
						ROVER_USTACK_NO_REGS);
		if (st) {
			st->record.offcpu.start = start;
			return true;
		}
		start.user_stack_status = ROVER_USTACK_NO_REGS;
	}
#endif
	if (bpf_map_update_elem(&offcpu_start, &tid, &start, BPF_ANY))
		rover_error(ROVER_ERR_START_MAP_FULL);
	return false;
}

/* `next` is the task coming back when its kernel stack is to be taken now,
 * or NULL when switch_out took it. */
static __always_inline void switch_in(__u32 tid, const char *comm, struct task_struct *next)
{
	struct rover_offcpu_start *start = bpf_map_lookup_elem(&offcpu_start, &tid);
	struct kernel_stack_ref kernel, *taken = 0;
	struct rover_kernel_stack *stack;
	__u64 delta;

	if (!start)
		return;
	delta = bpf_ktime_get_ns() - start->timestamp_ns;
	if (next && delta >= min_block_ns && delta <= max_block_ns) {
		stack = scratch();
		if (stack) {
			store_kernel_stack(stack,
					   bpf_get_task_stack(next, stack->ips, sizeof(stack->ips), 0),
					   &kernel);
			taken = &kernel;
		}
	}
	count_block(start, tid, delta, comm, taken);
	/* Deleted only after counting: the loader relies on a block being
	 * visible in the start map or in the count map at every moment. */
	bpf_map_delete_elem(&offcpu_start, &tid);
}

#ifdef ROVER_UNWIND
static __always_inline void unwind_finish(void *ctx, struct unwind_state *st)
{
	struct rover_offcpu_start *start = &st->record.offcpu.start;

	start->user_stack_hash = unwind_store(st);
	start->user_stack_status = st->status;
	if (bpf_map_update_elem(&offcpu_start, &st->tid, start, BPF_ANY))
		rover_error(ROVER_ERR_START_MAP_FULL);
	rover_leave(rover_seq());
}

/* Runs the walk switch_out began: its step program, or the end at once. */
static __always_inline int unwind_run(void *ctx)
{
	struct unwind_state *st = unwind_state_get();

	if (!st) {
		rover_leave(rover_seq());
		return 0;
	}
	if (st->depth)
		bpf_tail_call(ctx, &unwind_progs, 0);
	unwind_finish(ctx, st);
	return 0;
}

/* The unwinder's step programs, one per hook type, run by tail calls. */
SEC("tp_btf/sched_switch")
int rover_offcpu_btf_unwind(__u64 *ctx)
{
	return unwind_continue(ctx);
}

SEC("tracepoint/sched/sched_switch")
int rover_offcpu_tp_unwind(void *ctx)
{
	return unwind_continue(ctx);
}
#else
static __always_inline int unwind_run(void *ctx)
{
	return 0;
}
#endif

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
 * switch-in, so it is not recorded (it only closes an unseen switch-in). */
SEC("tp_btf/sched_switch")
int rover_offcpu_btf(__u64 *ctx)
{
	bool preempt = ctx[0];
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct task_struct *next = (struct task_struct *)ctx[2];
	__u32 state = state_of_task(preempt, prev);
	__u64 *seq = rover_enter();

	/* In, then out: in unwind mode switch_out ends in a tail call. */
	switch_in(next->pid, next->comm, next);
	if (switch_out(ctx, state, false, prev->comm))
		return unwind_run(ctx);
	rover_leave(seq);
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

/* Fallback where BTF-typed tracepoints are unavailable. It only knows the
 * next task's pid, so the kernel stack is taken at switch-out. */
SEC("tracepoint/sched/sched_switch")
int rover_offcpu_tp(struct trace_event_raw_sched_switch *ctx)
{
	__u32 state = state_of_report(ctx->prev_state);
	__u64 *seq = rover_enter();

	switch_in(ctx->next_pid, ctx->next_comm, 0);
	if (switch_out(ctx, state, true, ctx->prev_comm))
		return unwind_run(ctx);
	rover_leave(seq);
	return 0;
}
