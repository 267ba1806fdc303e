/* procevents.bpf.c: a stream of process events into one ring buffer: a new
 * process (fork, not a new thread), an exec, the exit of a whole thread
 * group, and executable code mapped into a process (mmap or mprotect with
 * PROT_EXEC: a library loaded, dlopen, JIT code), so that user space can
 * read /proc/PID/maps again while a short-lived process still lives.
 *
 * Every record is reserved in the ring buffer in the order the kernel ran
 * the hooks. A fork is recorded by its parent before the child is first
 * woken, an exec and an exit by the process itself, so per process the
 * records are in the order fork, exec(s), exit. A record that finds the
 * ring buffer full is counted in `procevents_drops`, by kind. */
#include "common.h"

/* Capacity in bytes; the loader sets it (a power of two, at least a page). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} procevents_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ROVER_PROC_DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} procevents_drops SEC(".maps");

/* An mmap or mprotect with PROT_EXEC under way, by thread, until its
 * return value says whether it mapped anything. LRU: an entry left by a
 * thread killed in the syscall goes away by itself. */
struct proc_pending_map {
	__u64 addr;
	__u64 len;
	__u32 flags;
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct proc_pending_map);
} procevents_pending SEC(".maps");

/* Thread groups whose exit was recorded, keyed by process and start time:
 * threads of one group that exit together (exit_group) may all see the
 * group's live count at 0, and only the first records the exit. */
struct proc_exit_key {
	__u32 pid;
	__u32 reserved;
	__u64 start_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct proc_exit_key);
	__type(value, __u8);
} procevents_exited SEC(".maps");

/* The kernel types read here, relocated by CO-RE; the ___rover flavours
 * keep kernel.h, which the other programs share, as it is. */
struct list_head___rover {
	struct list_head___rover *next;
	struct list_head___rover *prev;
};

struct signal_struct___rover {
	struct {
		int counter;
	} live;
} __attribute__((preserve_access_index));

struct task_struct___rover {
	int pid;
	int tgid;
	int exit_code;
	char comm[16];
	unsigned long long start_boottime;
	struct task_struct___rover *group_leader;
	struct signal_struct___rover *signal;
	struct list_head___rover children;
	struct list_head___rover sibling;
} __attribute__((preserve_access_index));

/* Before 5.5 the boot-based start time was `real_start_time`. */
struct task_struct___rover_pre55 {
	unsigned long long real_start_time;
} __attribute__((preserve_access_index));

struct linux_binprm___rover {
	const char *filename;
} __attribute__((preserve_access_index));

struct trace_event_raw_sched_process_exec___rover {
	unsigned int __data_loc_filename;
	int pid;
	int old_pid;
} __attribute__((preserve_access_index));

struct trace_event_raw_task_newtask___rover {
	int pid;
	char comm[16];
	unsigned long long clone_flags;
} __attribute__((preserve_access_index));

/* The syscall tracepoints' records: a trace_entry, the syscall number,
 * then the arguments (enter) or the return value (exit), 8 bytes each.
 * Fixed by struct syscall_trace_enter/exit and not in the kernel's BTF. */
struct proc_sys_enter {
	__u64 entry;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct proc_sys_exit {
	__u64 entry;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20
#define CLONE_THREAD 0x00010000
#define MAX_ERRNO 4095

static __always_inline void drop(__u32 kind)
{
	__u64 *count = bpf_map_lookup_elem(&procevents_drops, &kind);

	if (count)
		*count += 1;
}

static __always_inline __u64 start_of(struct task_struct___rover *task)
{
	if (bpf_core_field_exists(task->start_boottime))
		return BPF_CORE_READ(task, start_boottime);
	return BPF_CORE_READ((struct task_struct___rover_pre55 *)task, real_start_time);
}

/* Fills what every record has, for a thread `task` of its process. */
static __always_inline void fill(struct rover_proc_event *event, __u32 kind,
				 struct task_struct___rover *task)
{
	struct task_struct___rover *leader = BPF_CORE_READ(task, group_leader);

	__builtin_memset(event, 0, sizeof(*event));
	event->kind = kind;
	event->pid = BPF_CORE_READ(task, tgid);
	event->tid = BPF_CORE_READ(task, pid);
	event->time_ns = bpf_ktime_get_boot_ns();
	event->start_ns = start_of(leader);
	bpf_probe_read_kernel_str(event->comm, sizeof(event->comm), &leader->comm);
}

static __always_inline void emit_fork(struct task_struct___rover *parent,
				      struct task_struct___rover *child)
{
	struct rover_proc_event *event;

	event = bpf_ringbuf_reserve(&procevents_ring, sizeof(*event), 0);
	if (!event) {
		drop(ROVER_PROC_DROP_FORK);
		return;
	}
	fill(event, ROVER_PROC_FORK, child);
	/* The child is its own leader: its own start time. */
	event->start_ns = start_of(child);
	bpf_probe_read_kernel_str(event->comm, sizeof(event->comm), &child->comm);
	event->ppid = BPF_CORE_READ(parent, tgid);
	bpf_ringbuf_submit(event, 0);
}

SEC("tp_btf/sched_process_fork")
int rover_proc_fork_btf(__u64 *ctx)
{
	struct task_struct___rover *parent = (void *)ctx[0];
	struct task_struct___rover *child = (void *)ctx[1];

	/* A new thread shares its creator's tgid. */
	if (BPF_CORE_READ(child, pid) == BPF_CORE_READ(child, tgid))
		emit_fork(parent, child);
	return 0;
}

/* Fallback: task_newtask runs in copy_process, in the parent, before the
 * child first runs; it names the child by pid only. A new process (no
 * CLONE_THREAD) is the last child on its parent's list, unless CLONE_PARENT
 * made it a sibling, or another thread forked at once: the pid check finds
 * those, and the start time is then left unknown. */
SEC("tracepoint/task/task_newtask")
int rover_proc_fork_tp(struct trace_event_raw_task_newtask___rover *ctx)
{
	struct task_struct___rover *parent = (void *)bpf_get_current_task();
	struct task_struct___rover *child;
	struct rover_proc_event *event;
	struct list_head___rover *last;
	int pid = ctx->pid;

	if (ctx->clone_flags & CLONE_THREAD)
		return 0;
	event = bpf_ringbuf_reserve(&procevents_ring, sizeof(*event), 0);
	if (!event) {
		drop(ROVER_PROC_DROP_FORK);
		return 0;
	}
	fill(event, ROVER_PROC_FORK, parent);
	event->ppid = event->pid;
	event->pid = pid;
	event->tid = pid;
	event->start_ns = 0;
	bpf_probe_read_kernel_str(event->comm, sizeof(event->comm), ctx->comm);
	last = BPF_CORE_READ(parent, children.prev);
	child = (void *)last - bpf_core_field_offset(struct task_struct___rover, sibling);
	if (last && BPF_CORE_READ(child, pid) == pid)
		event->start_ns = start_of(child);
	bpf_ringbuf_submit(event, 0);
	return 0;
}

/* `filename` is a kernel string: bprm->filename, or the classic record's. */
static __always_inline void emit_exec(struct task_struct___rover *task, __u32 old_pid,
				      const char *filename)
{
	struct rover_proc_exec *exec;

	exec = bpf_ringbuf_reserve(&procevents_ring, sizeof(*exec), 0);
	if (!exec) {
		drop(ROVER_PROC_DROP_EXEC);
		return;
	}
	fill(&exec->event, ROVER_PROC_EXEC, task);
	exec->event.tid = old_pid;
	if (bpf_probe_read_kernel_str(exec->filename, sizeof(exec->filename), filename) < 0)
		exec->filename[0] = 0;
	bpf_ringbuf_submit(exec, 0);
}

SEC("tp_btf/sched_process_exec")
int rover_proc_exec_btf(__u64 *ctx)
{
	struct task_struct___rover *task = (void *)ctx[0];
	struct linux_binprm___rover *bprm = (void *)ctx[2];

	emit_exec(task, (__u32)ctx[1], BPF_CORE_READ(bprm, filename));
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int rover_proc_exec_tp(struct trace_event_raw_sched_process_exec___rover *ctx)
{
	/* __data_loc: the low 16 bits are the string's offset in the record. */
	__u32 loc = ctx->__data_loc_filename;

	emit_exec((void *)bpf_get_current_task(), ctx->old_pid, (void *)ctx + (loc & 0xffff));
	return 0;
}

/* do_exit decrements signal->live before this tracepoint: at 0 the whole
 * thread group is gone (the last thread, or threads of an exit_group that
 * all got there after the last decrement; the first of those records it). */
static __always_inline void emit_exit(struct task_struct___rover *task)
{
	struct rover_proc_event *event;
	struct proc_exit_key key;
	__u8 one = 1;

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return;
	key.pid = BPF_CORE_READ(task, tgid);
	key.reserved = 0;
	key.start_ns = start_of(BPF_CORE_READ(task, group_leader));
	if (bpf_map_update_elem(&procevents_exited, &key, &one, BPF_NOEXIST))
		return;
	event = bpf_ringbuf_reserve(&procevents_ring, sizeof(*event), 0);
	if (!event) {
		drop(ROVER_PROC_DROP_EXIT);
		return;
	}
	fill(event, ROVER_PROC_EXIT, task);
	event->exit_code = BPF_CORE_READ(task, exit_code);
	bpf_ringbuf_submit(event, 0);
}

SEC("tp_btf/sched_process_exit")
int rover_proc_exit_btf(__u64 *ctx)
{
	emit_exit((void *)ctx[0]);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int rover_proc_exit_tp(void *ctx)
{
	emit_exit((void *)bpf_get_current_task());
	return 0;
}

static __always_inline void remember_map(__u64 addr, __u64 len, __u32 flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct proc_pending_map pending = {
		.addr = addr,
		.len = len,
		.flags = flags,
		.reserved = 0,
	};

	bpf_map_update_elem(&procevents_pending, &tid, &pending, BPF_ANY);
}

/* `addr` is the mapping's address, 0 to take the remembered one. */
static __always_inline void emit_map(bool failed, __u64 addr)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct proc_pending_map *pending = bpf_map_lookup_elem(&procevents_pending, &tid);
	struct rover_proc_event *event;

	if (!pending)
		return;
	if (failed)
		goto done;
	event = bpf_ringbuf_reserve(&procevents_ring, sizeof(*event), 0);
	if (!event) {
		drop(ROVER_PROC_DROP_MAP_EXEC);
		goto done;
	}
	fill(event, ROVER_PROC_MAP_EXEC, (void *)bpf_get_current_task());
	event->addr = addr ? addr : pending->addr;
	event->len = pending->len;
	event->flags = pending->flags;
	bpf_ringbuf_submit(event, 0);
done:
	bpf_map_delete_elem(&procevents_pending, &tid);
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int rover_proc_mmap_enter(struct proc_sys_enter *ctx)
{
	/* mmap(addr, len, prot, flags, fd, off) */
	__u32 flags = 0;

	if (!(ctx->args[2] & PROT_EXEC))
		return 0;
	if ((ctx->args[3] & MAP_ANONYMOUS) || (__s32)ctx->args[4] < 0)
		flags |= ROVER_PROC_MAP_ANONYMOUS;
	remember_map(0, ctx->args[1], flags);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int rover_proc_mmap_exit(struct proc_sys_exit *ctx)
{
	__s64 ret = ctx->ret;

	emit_map(ret < 0 && ret >= -MAX_ERRNO, (__u64)ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mprotect")
int rover_proc_mprotect_enter(struct proc_sys_enter *ctx)
{
	/* mprotect(start, len, prot) */
	if (ctx->args[2] & PROT_EXEC)
		remember_map(ctx->args[0], ctx->args[1], ROVER_PROC_MAP_MPROTECT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mprotect")
int rover_proc_mprotect_exit(struct proc_sys_exit *ctx)
{
	emit_map(ctx->ret != 0, 0);
	return 0;
}
