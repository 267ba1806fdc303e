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

/// Programs that do nothing, for feature probes (`bpf/probe.bpf.c`):
/// `rover_probe_tp_btf` (`tp_btf/sched_switch`), which rover-core loads and
/// attaches to find whether the kernel runs BTF tracepoints.
pub static PROBE_OBJECT: &[u8] = &PROBE.bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_aligned_bpf_elf() {
        for object in [ONCPU_OBJECT, OFFCPU_OBJECT, PROBE_OBJECT] {
            assert_eq!(object.as_ptr() as usize % 8, 0);
            assert_eq!(&object[..4], b"\x7fELF");
            // e_machine 247 is EM_BPF.
            assert_eq!(u16::from_le_bytes([object[18], object[19]]), 247);
        }
    }
}
