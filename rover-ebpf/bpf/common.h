/* common.h: what every rover program shares: the target filter, the active
 * half of the double buffer and its in-flight marks, the per-CPU error
 * counters and the count update. */
#ifndef ROVER_COMMON_H
#define ROVER_COMMON_H

#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "rover.h"

/* Set by the loader before load (aya global override). */
const volatile __u32 target_mode = ROVER_TARGET_ALL;
const volatile __u64 target_cgroup = 0;
const volatile bool include_idle = false;
/* A process left out whatever the targets (the profiler itself), 0 for none. */
const volatile __u32 exclude_tgid = 0;

/* Process ids (tgid) to record when target_mode is ROVER_TARGET_PIDS; the
 * loader edits it while the program runs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} target_pids SEC(".maps");

/* Entry 0: which half (0 or 1) of the count and stack maps to write. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} active_buffer SEC(".maps");

/* Per CPU, a sequence count that is odd while a program runs: after flipping
 * `active_buffer` the loader waits for every CPU it saw odd to move on, so no
 * program still writes the half it is about to read. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} in_flight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ROVER_ERR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} errors SEC(".maps");

#define ROVER_STACK_MAP(name, size)                                      \
	struct {                                                         \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                  \
		__uint(max_entries, size);                               \
		__uint(key_size, sizeof(__u32));                         \
		__uint(value_size, ROVER_MAX_STACK_DEPTH * sizeof(__u64)); \
	} name SEC(".maps")

static __always_inline void rover_error(__u32 reason)
{
	__u64 *count = bpf_map_lookup_elem(&errors, &reason);

	/* Per-CPU slot and programs do not nest on one CPU: no atomic needed. */
	if (count)
		*count += 1;
}

/* Takes a stack id, counting why when the stack could not be stored.
 * -EFAULT only means there is no such stack (a kernel thread's user stack).
 * The low 8 bits of `flags` are frames to skip from the leaf. */
static __always_inline __s32 rover_stack_id(void *ctx, void *stacks, __u64 flags)
{
	long id = bpf_get_stackid(ctx, stacks, flags);

	if (id == -ENOMEM)
		rover_error(ROVER_ERR_STACK_MAP_FULL);
	else if (id == -EEXIST)
		rover_error(ROVER_ERR_STACK_COLLISION);
	else if (id < 0 && id != -EFAULT)
		rover_error(ROVER_ERR_STACK_OTHER);
	return id;
}

/* Marks the program running on this CPU. The atomic add is a full barrier,
 * so the loader cannot miss the mark and still see the old active half. */
static __always_inline __u64 *rover_enter(void)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&in_flight, &zero);

	if (seq)
		__sync_fetch_and_add(seq, 1);
	return seq;
}

/* This CPU's in-flight mark, for a program that did not enter itself (the
 * last of a tail call chain). */
static __always_inline __u64 *rover_seq(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&in_flight, &zero);
}

static __always_inline void rover_leave(__u64 *seq)
{
	if (seq)
		__sync_fetch_and_add(seq, 1);
}

static __always_inline __u32 rover_active_buffer(void)
{
	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&active_buffer, &zero);

	return active && *active ? 1 : 0;
}

/* Whether the current task is one the session asked for. */
static __always_inline bool rover_targeted(__u32 tgid, __u32 tid)
{
	if (tid == 0)
		return include_idle;
	if (tgid == exclude_tgid)
		return false;
	if (target_mode == ROVER_TARGET_PIDS)
		return bpf_map_lookup_elem(&target_pids, &tgid) != 0;
	if (target_mode == ROVER_TARGET_CGROUP)
		return bpf_get_current_cgroup_id() == target_cgroup;
	return true;
}

/* Adds add0 (and add1 to the next __u64 when `two`) to the value of `key`,
 * creating the entry from `initial` when absent. */
static __always_inline void rover_count(void *counts, void *key, void *initial,
					__u64 add0, __u64 add1, bool two)
{
	__u64 *value = bpf_map_lookup_elem(counts, key);

	if (!value) {
		long err = bpf_map_update_elem(counts, key, initial, BPF_NOEXIST);

		if (!err)
			return;
		if (err != -EEXIST) {
			rover_error(ROVER_ERR_COUNT_MAP_FULL);
			return;
		}
		/* Another CPU created it between our lookup and update. */
		value = bpf_map_lookup_elem(counts, key);
		if (!value)
			return;
	}
	__sync_fetch_and_add(&value[0], add0);
	if (two)
		__sync_fetch_and_add(&value[1], add1);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#endif
