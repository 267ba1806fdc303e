/* unwind.h: the in-kernel user stack unwinder, shared by the on-CPU and the
 * off-CPU programs (their `unwind` variants, built with -DROVER_UNWIND).
 *
 * User space builds a compact table per executable file from its
 * .eh_frame (rover-unwind: 16-byte rows, sorted by address), writes the rows
 * into `unwind_rows` and each process's executable mappings into
 * `unwind_procs`. A walk starts from the task's user registers, finds the
 * mapping of the program counter (binary search), the row of its table
 * (binary search), applies the row's CFA and RBP rules, reads the return
 * address at CFA - 8, and goes on with the caller. Where a mapping has no
 * table (JIT code, anonymous memory) it steps with frame pointers and marks
 * the frame. UNWIND_FRAMES frames are unwound per program run; the step
 * program tail calls itself for the next ones, so the verifier sees a
 * bounded program, and the last run hands the frames to the program's
 * `unwind_finish`, which hashes them into `ustacks{0,1}` and counts. The
 * algorithm is rover_unwind::walk's, which the user-space tests check. */
#ifndef ROVER_UNWIND_H
#define ROVER_UNWIND_H

#include "common.h"

/* Frames per run of the step program; 127 frames take 16 tail calls, the
 * kernel allows 33. */
#define UNWIND_FRAMES 8
/* Steps of the binary search over a table: enough for 2^22 rows, the
 * largest `unwind_rows` the loader makes. */
#define UNWIND_ROW_STEPS 23
#define UNWIND_MAPPING_STEPS 8
/* x86-64: THREAD_SIZE without KASAN, `__USER_CS`. */
#define UNWIND_THREAD_SIZE 16384
#define UNWIND_USER_CS 0x33

/* Bytes of user stack read at once (below). */
#define UNWIND_WINDOW 1024

/* Set by the loader: the kernel has bpf_task_pt_regs (5.15+). */
const volatile bool have_task_pt_regs = false;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct rover_unwind_row);
} unwind_rows SEC(".maps");

/* Preallocated: perf_event programs may use no other hash map before Linux
 * 5.13 or so. An update replaces a process's entry while a walk may read
 * it; at worst that walk reads a mix of the two (bounded, so a wrong frame
 * or a stopped walk, never a fault). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct rover_unwind_proc);
} unwind_procs SEC(".maps");

/* Processes the unwinder met without knowing them, or at an address in none
 * of their known mappings (exec, dlopen): user space reads their mappings
 * again. The value is the ROVER_USTACK_* reason. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} unwind_requests SEC(".maps");

/* The user stacks the unwinder produced, keyed by a hash of their ips, one
 * map per half of the double buffer. */
struct ustacks {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct rover_kernel_stack);
};

struct ustacks ustacks0 SEC(".maps");
struct ustacks ustacks1 SEC(".maps");

/* x86-64 `struct pt_regs`: its layout is the kernel's ABI with ptrace. */
struct unwind_pt_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	__u64 ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

/* Bumped by user space after every change to `unwind_procs` or
 * `unwind_rows` (a process set or removed, rows written): what the frame
 * cache below holds is valid for one generation only. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
} unwind_generation SEC(".maps");

/* What a frame's search found: the row's rules, or a frame-pointer step
 * for a mapping without a table. */
#define UNWIND_RULE_FP 0xff

struct unwind_rule {
	__s32 cfa_offset;
	__s16 rbp_offset;
	__u8 cfa_kind;
	__u8 rbp_kind;
};

/* One remembered search: (process, address looked up) -> its rule, made
 * in generation `gen`. The searches are most of a frame's cost and the
 * same return addresses come back walk after walk, so each CPU keeps the
 * last UNWIND_CACHE_SLOTS, direct mapped. A hit is exactly what the
 * search would find: the key is compared whole, and an entry of another
 * generation (the tables or the mappings changed since) is a miss. */
#define UNWIND_CACHE_SLOTS 512

struct unwind_cache_entry {
	__u64 pc;
	__u32 tgid;
	__u32 gen;
	struct unwind_rule rule;
};

struct unwind_cache {
	struct unwind_cache_entry slots[UNWIND_CACHE_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_cache);
} unwind_cache SEC(".maps");

/* A walk in progress, per CPU, across the tail calls. */
struct unwind_state {
	__u64 pc;
	__u64 sp;
	__u64 bp;
	__u32 depth;
	__u32 status;
	__u32 tgid;
	__u32 tid;
	__u32 buffer;
	/* The cache generation the walk started in, plus one (0 is never a
	 * valid entry's). */
	__u32 gen;
	__u32 pad0;
	/* The user stack from `window_base`, read at once when a walk first
	 * reads there (`window_ok`): the words a walk reads are mostly a few
	 * dozen bytes apart, so one read serves many frames. */
	__u64 window_base;
	__u32 window_ok;
	__u32 pad1;
	/* The caller's RBP is known (an RBP rule may make it unknown). */
	__u8 bp_known;
	/* `pc` is where the code was interrupted, not a return address: look
	 * it up as is (the leaf, the frame a signal interrupted). */
	__u8 exact;
	__u8 pad[2];
	/* What the program records once the walk is done. */
	union {
		struct rover_oncpu_key oncpu;
		struct {
			struct rover_offcpu_start start;
		} offcpu;
	} record;
	struct rover_kernel_stack stack;
	__u64 window[UNWIND_WINDOW / 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_state);
} unwind_state SEC(".maps");

/* Index 0: the step program of the hook in use. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} unwind_progs SEC(".maps");

/* Defined by each program: stores and counts the finished walk. */
static __always_inline void unwind_finish(void *ctx, struct unwind_state *st);

static __always_inline struct unwind_state *unwind_state_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&unwind_state, &zero);
}

static __always_inline void unwind_request(__u32 tgid, __u32 reason)
{
	bpf_map_update_elem(&unwind_requests, &tgid, &reason, BPF_NOEXIST);
}

static __always_inline bool unwind_regs_ok(const struct unwind_pt_regs *regs)
{
	return regs->cs == UNWIND_USER_CS;
}

/* The current task's user registers, saved at the top of its kernel stack
 * when it entered the kernel. Returns false for a task without them (a
 * kernel thread). */
static __always_inline bool unwind_task_regs(struct unwind_pt_regs *regs)
{
	if (have_task_pt_regs) {
		struct task_struct *task = bpf_get_current_task_btf();
		void *at = (void *)bpf_task_pt_regs(task);

		if (!at || bpf_probe_read_kernel(regs, sizeof(*regs), at))
			return false;
		return unwind_regs_ok(regs);
	}
	{
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		char *stack = BPF_CORE_READ(task, stack);
		char *top;

		if (!stack)
			return false;
		top = stack + UNWIND_THREAD_SIZE - sizeof(*regs);
		/* Kernels with FRED (6.9+, where enabled) keep 16 bytes above
		 * pt_regs: the saved CS tells which layout this is. */
		if (!bpf_probe_read_kernel(regs, sizeof(*regs), top) && unwind_regs_ok(regs))
			return true;
		if (!bpf_probe_read_kernel(regs, sizeof(*regs), top - 16) && unwind_regs_ok(regs))
			return true;
		return false;
	}
}

static __always_inline __u32 unwind_generation_now(void)
{
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&unwind_generation, &zero);

	return gen ? *gen + 1 : 0;
}

/* Starts a walk from `regs` in the per-CPU state; the caller fills
 * `record` and tail calls the step program. */
static __always_inline struct unwind_state *unwind_begin(const struct unwind_pt_regs *regs,
							 __u32 tgid, __u32 tid, __u32 buffer)
{
	struct unwind_state *st = unwind_state_get();

	if (!st)
		return 0;
	st->pc = regs->ip;
	st->sp = regs->sp;
	st->bp = regs->bp;
	st->depth = 1;
	st->status = ROVER_USTACK_TRUNCATED;
	st->tgid = tgid;
	st->tid = tid;
	st->buffer = buffer;
	st->bp_known = 1;
	st->exact = 1;
	st->stack.ips[0] = regs->ip;
	st->gen = unwind_generation_now();
	st->window_ok = 0;
	return st;
}

/* A walk that could not start: no user registers. */
static __always_inline struct unwind_state *unwind_begin_empty(__u32 tgid, __u32 tid,
							       __u32 buffer, __u32 status)
{
	struct unwind_state *st = unwind_state_get();

	if (!st)
		return 0;
	st->depth = 0;
	st->status = status;
	st->tgid = tgid;
	st->tid = tid;
	st->buffer = buffer;
	return st;
}

static __always_inline int unwind_read_word(__u64 *out, __u64 addr)
{
	return bpf_probe_read_user(out, sizeof(*out), (const void *)addr);
}

/* A word of the walked task's user stack at `addr`: from the window when
 * it holds it, else the window is read again from `addr` (failing that,
 * near the top of the stack's mapping, the word alone). Returns 0 or the
 * read's error. */
static __always_inline int unwind_read(struct unwind_state *st, __u64 *out, __u64 addr)
{
	__u64 off = addr - st->window_base;

	if (st->window_ok && addr >= st->window_base && off <= UNWIND_WINDOW - 8 && !(off & 7)) {
		*out = st->window[(off / 8) & (UNWIND_WINDOW / 8 - 1)];
		return 0;
	}
	if (!(addr & 7) && !bpf_probe_read_user(st->window, sizeof(st->window), (const void *)addr)) {
		st->window_base = addr;
		st->window_ok = 1;
		*out = st->window[0];
		return 0;
	}
	st->window_ok = 0;
	return unwind_read_word(out, addr);
}

/* The search over a table's rows, and one frame (below), are global
 * functions: the verifier checks each once, on its own, rather than every
 * path through them at every frame of every run, which would be far past
 * its limit. Global functions take scalars only (kernels before 5.12), so
 * they look the maps up themselves. Mixing them with tail calls needs
 * Linux 5.10. */

/* The index in `proc->mappings` of the mapping holding `pc`, -1 for none.
 * Inlined into the (global) frame function, which has `proc` at hand: a
 * second lookup of the process per frame would cost more than the search. */
static __always_inline int unwind_find_mapping(struct rover_unwind_proc *proc, __u64 pc)
{
	__u32 lo = 0, hi = proc->count;

	if (hi > ROVER_UNWIND_MAX_MAPPINGS)
		hi = ROVER_UNWIND_MAX_MAPPINGS;
	for (int i = 0; i < UNWIND_MAPPING_STEPS; i++) {
		__u32 mid;

		if (lo >= hi)
			break;
		mid = (lo + hi) / 2;
		if (proc->mappings[mid & (ROVER_UNWIND_MAX_MAPPINGS - 1)].start <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	lo = (lo - 1) & (ROVER_UNWIND_MAX_MAPPINGS - 1);
	return pc < proc->mappings[lo].end ? (int)lo : -1;
}

/* The index in `unwind_rows` of the last row of [start, start + len) whose
 * pc is at most `addr`, -1 for none. */
__attribute__((noinline)) int unwind_find_row(__u32 start, __u32 len, __u64 addr)
{
	__u32 lo = 0, hi = len, index;

	for (int i = 0; i < UNWIND_ROW_STEPS; i++) {
		struct rover_unwind_row *row;
		__u32 mid;

		if (lo >= hi)
			break;
		mid = lo + (hi - lo) / 2;
		index = start + mid;
		row = bpf_map_lookup_elem(&unwind_rows, &index);
		if (!row)
			return -1;
		if (row->pc <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	return (int)(start + lo - 1);
}

static __always_inline void unwind_push(struct unwind_state *st, __u64 ip)
{
	__u32 depth = st->depth;

	/* Keeps clang from folding the bound into what it knows of `depth`:
	 * the verifier must see this very check on the index. */
	asm volatile("" : "+r"(depth));
	if (depth < ROVER_MAX_STACK_DEPTH)
		st->stack.ips[depth] = ip;
	st->depth = depth + 1;
}

/* What the tables say of the frame at st->pc, looked up at `lookup` (the
 * pc, or pc - 1 for a return address): false when the walk stops there
 * (st->status says why). */
static __always_inline bool unwind_search(struct unwind_state *st, struct rover_unwind_proc *proc,
					  __u64 lookup, struct unwind_rule *rule)
{
	int found = unwind_find_mapping(proc, st->pc);
	struct rover_unwind_mapping *m;
	struct rover_unwind_row *row;
	__u32 index;

	if (found < 0) {
		st->status = ROVER_USTACK_UNMAPPED;
		unwind_request(st->tgid, st->status);
		return false;
	}
	/* clang knows the search returns a masked index and drops a mask
	 * here; the verifier does not know it: hide the value from clang. */
	asm volatile("" : "+r"(found));
	m = &proc->mappings[found & (ROVER_UNWIND_MAX_MAPPINGS - 1)];
	if (m->table_start == ROVER_UNWIND_TABLE_PENDING) {
		st->status = ROVER_USTACK_TABLE_PENDING;
		return false;
	}
	if (m->table_start == ROVER_UNWIND_NO_TABLE) {
		rule->cfa_kind = UNWIND_RULE_FP;
		rule->cfa_offset = 0;
		rule->rbp_kind = 0;
		rule->rbp_offset = 0;
		return true;
	}
	found = unwind_find_row(m->table_start, m->table_len, lookup - m->bias);
	if (found < 0) {
		st->status = ROVER_USTACK_NO_ROW;
		return false;
	}
	index = found;
	row = bpf_map_lookup_elem(&unwind_rows, &index);
	if (!row) {
		st->status = ROVER_USTACK_NO_ROW;
		return false;
	}
	rule->cfa_offset = row->cfa_offset;
	rule->rbp_offset = row->rbp_offset;
	rule->cfa_kind = row->cfa_kind;
	rule->rbp_kind = row->rbp_kind;
	return true;
}

/* A frame-pointer step, for code without a table: the caller's RBP at
 * RBP, its return address above. An RBP of 0 ends the chain. */
static __always_inline bool unwind_fp_step(struct unwind_state *st)
{
	__u64 ra, bp;

	if (!st->bp_known) {
		st->status = ROVER_USTACK_BAD_FRAME;
		return false;
	}
	if (st->bp == 0) {
		st->status = ROVER_USTACK_COMPLETE;
		return false;
	}
	/* The lower word first: a window read from it holds both. */
	if (unwind_read(st, &bp, st->bp) || unwind_read(st, &ra, st->bp + 8)) {
		st->status = ROVER_USTACK_READ_FAILED;
		return false;
	}
	if (st->bp + 16 <= st->sp) {
		st->status = ROVER_USTACK_BAD_FRAME;
		return false;
	}
	st->sp = st->bp + 16;
	st->bp = bp;
	st->exact = 0;
	if (ra == 0) {
		st->status = ROVER_USTACK_COMPLETE;
		return false;
	}
	st->pc = ra;
	unwind_push(st, ra | ROVER_UNWIND_FP_FRAME);
	return true;
}

/* A signal frame: the ucontext is at RSP; its uc_mcontext, 40 bytes in,
 * holds the interrupted registers as struct sigcontext: rbp in slot 10,
 * rsp in 15, rip in 16. */
static __always_inline bool unwind_signal_step(struct unwind_state *st)
{
	__u64 sp, ip, bp;

	if (unwind_read(st, &bp, st->sp + 40 + 10 * 8) || unwind_read(st, &sp, st->sp + 40 + 15 * 8) ||
	    unwind_read(st, &ip, st->sp + 40 + 16 * 8)) {
		st->status = ROVER_USTACK_READ_FAILED;
		return false;
	}
	/* The handler returned to the trampoline's first byte: one past it,
	 * so that "address - 1" names the trampoline. */
	if (!st->exact && st->depth > 1) {
		/* That return address is st->pc, the last frame pushed. */
		st->depth -= 1;
		unwind_push(st, st->pc + 1);
	}
	st->bp = bp;
	st->bp_known = 1;
	st->sp = sp;
	st->pc = ip;
	st->exact = 1;
	/* Recorded one past it: symbolizers take every frame but the leaf at
	 * its address - 1. */
	unwind_push(st, ip + 1);
	return true;
}

/* One frame by `rule`: from st's registers to the caller's. Returns false
 * when the walk is over (st->status says why). */
static __always_inline bool unwind_apply(struct unwind_state *st, const struct unwind_rule *rule)
{
	__u64 cfa, ra, bp;

	switch (rule->cfa_kind) {
	case UNWIND_RULE_FP:
		return unwind_fp_step(st);
	case ROVER_CFA_RSP:
		cfa = st->sp + (__s64)rule->cfa_offset;
		break;
	case ROVER_CFA_RBP:
		if (!st->bp_known) {
			st->status = ROVER_USTACK_BAD_FRAME;
			return false;
		}
		cfa = st->bp + (__s64)rule->cfa_offset;
		break;
	case ROVER_CFA_PLT:
		cfa = st->sp + (__s64)rule->cfa_offset +
		      (((st->pc & 15) >= (__u64)rule->rbp_offset) ? 8 : 0);
		break;
	case ROVER_CFA_SIGNAL:
		return unwind_signal_step(st);
	case ROVER_CFA_END:
		st->status = ROVER_USTACK_COMPLETE;
		return false;
	case ROVER_CFA_NONE:
		st->status = ROVER_USTACK_NO_ROW;
		return false;
	default:
		st->status = ROVER_USTACK_UNSUPPORTED;
		return false;
	}
	/* The saved RBP, when there is one, is read first: it is usually
	 * below the return address, and a window read from it holds both. */
	if (rule->rbp_kind == ROVER_RBP_AT_CFA &&
	    unwind_read(st, &bp, cfa + (__s64)rule->rbp_offset)) {
		st->status = ROVER_USTACK_READ_FAILED;
		return false;
	}
	if (unwind_read(st, &ra, cfa - 8)) {
		st->status = ROVER_USTACK_READ_FAILED;
		return false;
	}
	if (rule->rbp_kind == ROVER_RBP_AT_CFA) {
		st->bp = bp;
		st->bp_known = 1;
	} else if (rule->rbp_kind == ROVER_RBP_UNSUPPORTED) {
		st->bp_known = 0;
	}
	if (cfa <= st->sp) {
		/* The stack grows down: a caller's frame is above. */
		st->status = ROVER_USTACK_BAD_FRAME;
		return false;
	}
	st->sp = cfa;
	st->exact = 0;
	if (ra == 0) {
		st->status = ROVER_USTACK_COMPLETE;
		return false;
	}
	st->pc = ra;
	unwind_push(st, ra);
	return true;
}

/* FNV-1a over the first `depth` ips; 0 is kept for "no stack". */
static __always_inline __u64 unwind_hash(struct unwind_state *st)
{
	__u64 hash = 0xcbf29ce484222325ULL;

	for (int i = 0; i < ROVER_MAX_STACK_DEPTH; i++) {
		if (i >= st->depth)
			break;
		hash ^= st->stack.ips[i];
		hash *= 0x100000001b3ULL;
	}
	hash ^= st->status;
	hash *= 0x100000001b3ULL;
	return hash ? hash : 1;
}

/* Stores the finished walk's frames in `ustacks` of its buffer; returns
 * the key, 0 for an empty stack (the status then may say why). */
static __always_inline __u64 unwind_store(struct unwind_state *st)
{
	void *stacks = st->buffer ? (void *)&ustacks1 : (void *)&ustacks0;
	__u64 hash;
	long err;

	if (st->depth == 0)
		return 0;
	if (st->depth > ROVER_MAX_STACK_DEPTH)
		st->depth = ROVER_MAX_STACK_DEPTH;
	hash = unwind_hash(st);
	/* Most walks give a stack the map already holds: look it up before
	 * clearing the unused slots, which only a new entry needs. */
	if (bpf_map_lookup_elem(stacks, &hash))
		return hash;
	for (int i = 1; i < ROVER_MAX_STACK_DEPTH; i++)
		if (i >= st->depth)
			st->stack.ips[i] = 0;
	err = bpf_map_update_elem(stacks, &hash, &st->stack, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		rover_error(ROVER_ERR_STACK_MAP_FULL);
		st->status = ROVER_USTACK_STORE_FULL;
		return 0;
	}
	return hash;
}

/* The cache slot of (tgid, lookup): multiplicative hashing of both. */
static __always_inline __u32 unwind_cache_slot(__u32 tgid, __u64 lookup)
{
	__u64 h = (lookup ^ ((__u64)tgid << 40)) * 0x9e3779b97f4a7c15ULL;

	return (__u32)(h >> 55) & (UNWIND_CACHE_SLOTS - 1);
}

/* One frame of the walk in this CPU's state: 1 to go on, 0 when it is
 * over (the status says why). A global function, so that the verifier
 * checks the frame once rather than once per frame of the step program. */
__attribute__((noinline)) int unwind_frame(void)
{
	struct unwind_state *st = unwind_state_get();
	struct unwind_cache_entry *slot = 0;
	struct rover_unwind_proc *proc;
	struct unwind_rule rule;
	__u32 zero = 0;
	__u64 lookup;

	if (!st)
		return 0;
	if (st->depth >= ROVER_MAX_STACK_DEPTH) {
		st->status = ROVER_USTACK_TRUNCATED;
		return 0;
	}
	lookup = st->exact ? st->pc : st->pc - 1;
	if (st->gen) {
		struct unwind_cache *cache = bpf_map_lookup_elem(&unwind_cache, &zero);

		if (cache) {
			slot = &cache->slots[unwind_cache_slot(st->tgid, lookup)];
			if (slot->gen == st->gen && slot->pc == lookup && slot->tgid == st->tgid) {
				rule = slot->rule;
				return unwind_apply(st, &rule) ? 1 : 0;
			}
		}
	}
	proc = bpf_map_lookup_elem(&unwind_procs, &st->tgid);
	if (!proc) {
		st->status = ROVER_USTACK_NO_PROCESS;
		unwind_request(st->tgid, ROVER_USTACK_NO_PROCESS);
		return 0;
	}
	if (!unwind_search(st, proc, lookup, &rule))
		return 0;
	if (slot) {
		slot->pc = lookup;
		slot->tgid = st->tgid;
		slot->gen = st->gen;
		slot->rule = rule;
	}
	return unwind_apply(st, &rule) ? 1 : 0;
}

/* The body of the step program: UNWIND_FRAMES frames, then the next run or
 * the end. */
static __always_inline int unwind_continue(void *ctx)
{
	struct unwind_state *st = unwind_state_get();
	bool more = true;

	if (!st)
		return 0;
	for (int i = 0; i < UNWIND_FRAMES; i++) {
		if (!unwind_frame()) {
			more = false;
			break;
		}
	}
	if (more && st->depth < ROVER_MAX_STACK_DEPTH)
		bpf_tail_call(ctx, &unwind_progs, 0);
	/* Done, or out of tail calls (the stack is then cut, TRUNCATED). */
	unwind_finish(ctx, st);
	return 0;
}

#endif
