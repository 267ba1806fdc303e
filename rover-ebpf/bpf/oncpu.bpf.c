/* oncpu.bpf.c: on-CPU sampling. Runs on a software cpu-clock perf event on
 * every CPU and counts samples per {tgid, tid, user stack, kernel stack}. */
#include "common.h"

struct oncpu_counts {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rover_oncpu_key);
	__type(value, __u64);
};

struct oncpu_counts oncpu_counts0 SEC(".maps");
struct oncpu_counts oncpu_counts1 SEC(".maps");
ROVER_STACK_MAP(oncpu_stacks0, 8192);
ROVER_STACK_MAP(oncpu_stacks1, 8192);

#ifndef ROVER_UNWIND
static __always_inline void record(void *ctx, void *counts, void *stacks,
				   __u32 tgid, __u32 tid)
{
	struct rover_oncpu_key key;
	__u64 one = 1;

	__builtin_memset(&key, 0, sizeof(key));
	key.tgid = tgid;
	key.tid = tid;
	key.user_stack_id = rover_stack_id(ctx, stacks, BPF_F_USER_STACK);
	key.kernel_stack_id = rover_stack_id(ctx, stacks, 0);
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	rover_count(counts, &key, &one, 1, 0, false);
}
#endif

#ifdef ROVER_UNWIND
#include "unwind.h"

static __always_inline void unwind_finish(void *ctx, struct unwind_state *st)
{
	struct rover_oncpu_key *key = &st->record.oncpu;
	__u64 one = 1;

	key->user_stack_hash = unwind_store(st);
	key->user_stack_status = st->status;
	if (st->buffer)
		rover_count(&oncpu_counts1, key, &one, 1, 0, false);
	else
		rover_count(&oncpu_counts0, key, &one, 1, 0, false);
	rover_leave(rover_seq());
}

/* The unwinder's step program, run by tail calls. */
SEC("perf_event")
int rover_oncpu_unwind(void *ctx)
{
	return unwind_continue(ctx);
}

/* The kernel stack is taken here, the user stack is unwound from tables by
 * the step program, which counts the sample when it is done. */
SEC("perf_event")
int rover_oncpu(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = (__u32)id;
	struct unwind_pt_regs regs = *(struct unwind_pt_regs *)ctx;
	struct unwind_state *st;
	__u32 buffer;
	__s32 kernel;

	if (!rover_targeted(tgid, tid))
		return 0;
	rover_enter();
	buffer = rover_active_buffer();
	/* Separate call sites keep each map pointer a verifier constant. */
	if (buffer)
		kernel = rover_stack_id(ctx, &oncpu_stacks1, 0);
	else
		kernel = rover_stack_id(ctx, &oncpu_stacks0, 0);
	/* Sampled in the kernel: the user registers are those saved when the
	 * task entered it. */
	if ((regs.cs & 3) != 3 && !unwind_task_regs(&regs))
		st = unwind_begin_empty(tgid, tid, buffer, ROVER_USTACK_NO_REGS);
	else
		st = unwind_begin(&regs, tgid, tid, buffer);
	if (!st) {
		rover_leave(rover_seq());
		return 0;
	}
	__builtin_memset(&st->record.oncpu, 0, sizeof(st->record.oncpu));
	st->record.oncpu.tgid = tgid;
	st->record.oncpu.tid = tid;
	st->record.oncpu.kernel_stack_id = kernel;
	bpf_get_current_comm(st->record.oncpu.comm, sizeof(st->record.oncpu.comm));
	if (st->depth)
		bpf_tail_call(ctx, &unwind_progs, 0);
	unwind_finish(ctx, st);
	return 0;
}
#else
SEC("perf_event")
int rover_oncpu(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = (__u32)id;

	__u64 *seq;

	if (!rover_targeted(tgid, tid))
		return 0;
	seq = rover_enter();
	/* Separate call sites keep each map pointer a verifier constant. */
	if (rover_active_buffer())
		record(ctx, &oncpu_counts1, &oncpu_stacks1, tgid, tid);
	else
		record(ctx, &oncpu_counts0, &oncpu_stacks0, tgid, tid);
	rover_leave(seq);
	return 0;
}
#endif
