//! The built eBPF objects, embedded with the alignment an ELF parser expects.

/// Wraps bytes so that the `static` holding them starts on an 8-byte
/// boundary: `include_bytes!` alone only guarantees alignment 1, and ELF
/// headers and sections are read as 8-byte aligned structures.
#[repr(C, align(8))]
struct Aligned<Bytes: ?Sized> {
    bytes: Bytes,
}

static ONCPU: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!("../obj/oncpu.bpf.o"),
};

static OFFCPU: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!("../obj/offcpu.bpf.o"),
};

static ONCPU_UNWIND: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!("../obj/oncpu_unwind.bpf.o"),
};

static OFFCPU_UNWIND: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!("../obj/offcpu_unwind.bpf.o"),
};

static PROCEVENTS: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!("../obj/procevents.bpf.o"),
};

static PROBE: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!("../obj/probe.bpf.o"),
};

/// The on-CPU program (`bpf/oncpu.bpf.c`): program `rover_oncpu`
/// (`perf_event`), maps `oncpu_counts{0,1}`, `oncpu_stacks{0,1}` and the
/// shared `target_pids`, `active_buffer`, `errors`.
pub static ONCPU_OBJECT: &[u8] = &ONCPU.bytes;

/// The off-CPU program (`bpf/offcpu.bpf.c`): programs `rover_offcpu_btf`
/// (`tp_btf/sched_switch`) and `rover_offcpu_tp` (the classic tracepoint
/// fallback), maps `offcpu_counts{0,1}`, `offcpu_stacks{0,1}` (user stacks),
/// `offcpu_kstacks{0,1}` (kernel stacks), `offcpu_scratch`, `offcpu_start`
/// and the shared `target_pids`, `active_buffer`, `errors`.
pub static OFFCPU_OBJECT: &[u8] = &OFFCPU.bytes;

/// The on-CPU program with the in-kernel unwinder (`bpf/oncpu.bpf.c` built
/// with `-DROVER_UNWIND`, `bpf/unwind.h`): `rover_oncpu` and its step
/// program `rover_oncpu_unwind` (both `perf_event`), the maps of
/// [`ONCPU_OBJECT`] and `unwind_rows`, `unwind_procs`, `unwind_requests`,
/// `unwind_state`, `unwind_progs`, `ustacks{0,1}`.
pub static ONCPU_UNWIND_OBJECT: &[u8] = &ONCPU_UNWIND.bytes;

/// The off-CPU program with the in-kernel unwinder: the programs of
/// [`OFFCPU_OBJECT`] plus the step programs `rover_offcpu_btf_unwind` and
/// `rover_offcpu_tp_unwind`, the unwinder's maps as in
/// [`ONCPU_UNWIND_OBJECT`].
pub static OFFCPU_UNWIND_OBJECT: &[u8] = &OFFCPU_UNWIND.bytes;

/// The process events program (`bpf/procevents.bpf.c`): programs
/// `rover_proc_{fork,exec,exit}_btf` (`tp_btf/sched_process_*`) and their
/// classic fallbacks `rover_proc_fork_tp` (`task/task_newtask`),
/// `rover_proc_{exec,exit}_tp` (`sched/sched_process_*`), the syscall
/// tracepoint programs `rover_proc_{mmap,mprotect}_{enter,exit}`; maps
/// `procevents_ring` (ring buffer), `procevents_drops`,
/// `procevents_pending`, `procevents_exited` and those of `common.h`.
pub static PROCEVENTS_OBJECT: &[u8] = &PROCEVENTS.bytes;

/// Programs that do nothing, for feature probes (`bpf/probe.bpf.c`):
/// `rover_probe_tp_btf` (`tp_btf/sched_switch`), which rover-core loads and
/// attaches to find whether the kernel runs BTF tracepoints.
pub static PROBE_OBJECT: &[u8] = &PROBE.bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_aligned_bpf_elf() {
        for object in [
            ONCPU_OBJECT,
            OFFCPU_OBJECT,
            PROBE_OBJECT,
            PROCEVENTS_OBJECT,
            ONCPU_UNWIND_OBJECT,
            OFFCPU_UNWIND_OBJECT,
        ] {
            assert_eq!(object.as_ptr() as usize % 8, 0);
            assert_eq!(&object[..4], b"\x7fELF");
            // e_machine 247 is EM_BPF.
            assert_eq!(u16::from_le_bytes([object[18], object[19]]), 247);
        }
    }
}
