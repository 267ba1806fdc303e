/* stack_copy.bpf.c: the other way to get user stacks without frame
 * pointers, measured by benches/stack_copy.rs against rover's in-kernel
 * unwinder: at each on-CPU sample, copy the user registers and the top
 * STACK_BYTES of the user stack into a ring buffer and unwind in user space
 * (as `perf record --call-graph dwarf` does, and as a framehop-based
 * profiler would). The kernel stack is taken as rover's on-CPU program
 * takes it (bpf_get_stackid into a stack map), so the two programs differ
 * only in how the user stack is got.
 *
 * Built by the bench at run time: clang-19 -target bpf -O2 -I rover-ebpf/bpf.
 * Needs bpf_find_vma (Linux 5.17) and bpf_task_pt_regs (5.15). */
#include "kernel.h"

/* Where the stack's mapping ends: what can be copied (CO-RE relocated). */
struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
} __attribute__((preserve_access_index));

#include <bpf/bpf_helpers.h>

#define STACK_BYTES 16384
#define USER_CS 0x33
#define BPF_RB_NO_WAKEUP 1

struct regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	__u64 ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

/* One sample: `len` bytes of stack from `sp` (0 when none could be read:
 * no user registers, or not even the smallest size readable). */
struct sample {
	__u32 tgid;
	__u32 tid;
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__s32 kernel_stack_id;
	__u32 len;
	__u8 stack[STACK_BYTES];
};

/* The process sampled (set by the bench before loading). */
const volatile __u32 target_tgid = 0;
/* For taking the cost apart: 1 stops before the copy (the mapping is
 * still looked up), 2 before the lookup too; 0 does everything. */
const volatile __u32 stop_before = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 << 20);
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} kstacks SEC(".maps");

/* Where each thread's stack ends, when user space knows it (the main
 * thread's [stack] mapping): bpf_find_vma costs more than the rest of the
 * program together, so it is only the fallback. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} stack_ends SEC(".maps");

/* Samples the ring buffer had no room for. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

static long stack_end(struct task_struct *task, struct vm_area_struct *vma, void *out)
{
	*(__u64 *)out = vma->vm_end;
	return 0;
}

SEC("perf_event")
int stack_copy(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct regs regs = *(struct regs *)ctx;
	struct sample *s;
	__u32 zero = 0;

	if ((__u32)(id >> 32) != target_tgid)
		return 0;
	s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s) {
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	s->tgid = id >> 32;
	s->tid = (__u32)id;
	s->kernel_stack_id = bpf_get_stackid(ctx, &kstacks, 0);
	s->len = 0;
	/* Sampled in the kernel: the user registers are those saved on entry. */
	if ((regs.cs & 3) != 3) {
		void *at = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());

		if (!at || bpf_probe_read_kernel(&regs, sizeof(regs), at) || regs.cs != USER_CS)
			goto done;
	}
	s->ip = regs.ip;
	s->sp = regs.sp;
	s->bp = regs.bp;
	/* As perf does: the requested size, or up to the end of the stack's
	 * mapping when that is nearer (a read that crosses it fails whole). */
	{
		__u32 tid = (__u32)id;
		__u64 end = 0, len, *known;

		if (stop_before == 2)
			goto done;
		known = bpf_map_lookup_elem(&stack_ends, &tid);
		if (known && *known > regs.sp)
			end = *known;
		else if (bpf_find_vma(bpf_get_current_task_btf(), regs.sp, stack_end, &end, 0))
			goto done;
		if (end <= regs.sp)
			goto done;
		len = end - regs.sp;
		if (len > STACK_BYTES)
			len = STACK_BYTES;
		if (stop_before == 1)
			goto done;
		/* A page above the frames may never have been touched (the
		 * random gap below the arguments at the top of the main stack):
		 * the read fails whole, so copy up to the page boundary below,
		 * and below that, as perf's copy stops at the first fault. */
		for (int i = 0; i < 5; i++) {
			if (len == 0 || len > STACK_BYTES)
				goto done;
			if (!bpf_probe_read_user(s->stack, len, (const void *)regs.sp)) {
				s->len = len;
				goto done;
			}
			len = ((regs.sp + len - 1) & ~4095ULL) - regs.sp;
		}
	}
done:
	/* No wakeup: the reader drains on its own schedule (every 10 ms), as a
	 * profiler would, rather than being woken for every sample. */
	bpf_ringbuf_submit(s, BPF_RB_NO_WAKEUP);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
