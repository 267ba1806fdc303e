/* kernel.h: the few kernel types and constants rover's programs use, instead
 * of a generated vmlinux.h. Structs carry preserve_access_index so CO-RE
 * relocates every field offset against the running kernel's BTF. */
#ifndef ROVER_KERNEL_H
#define ROVER_KERNEL_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* uapi/linux/bpf.h values: stable kernel ABI. */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_PROG_ARRAY 3
#define BPF_MAP_TYPE_STACK_TRACE 7
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_MMAPABLE (1U << 10)
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_USER_STACK (1ULL << 8)

#define EFAULT 14
#define ENOMEM 12
#define EEXIST 17

/* include/linux/sched.h task state bits. */
#define TASK_RUNNING 0x0000
#define TASK_INTERRUPTIBLE 0x0001
#define TASK_UNINTERRUPTIBLE 0x0002
#define TASK_DEAD 0x0080
#define TASK_NOLOAD 0x0400

/* States as the classic sched_switch tracepoint reports them
 * (TASK_REPORT bits; TASK_REPORT_MAX and above means preempted). */
#define REPORT_INTERRUPTIBLE 0x01
#define REPORT_UNINTERRUPTIBLE 0x02
#define REPORT_DEAD 0x10
#define REPORT_ZOMBIE 0x20
#define REPORT_MAX 0x100

struct sched_entity {
	unsigned long long sum_exec_runtime;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int __state;
	void *stack;
	struct sched_entity se;
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

/* Kernels before 5.14 named the state field `state`. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

struct trace_event_raw_sched_switch {
	char prev_comm[16];
	int prev_pid;
	long prev_state;
	char next_comm[16];
	int next_pid;
} __attribute__((preserve_access_index));

#endif
