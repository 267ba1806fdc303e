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
