//! rover-ebpf: the kernel side of rover — eBPF programs for on-CPU and
//! off-CPU profiling, embedded as built objects, and the Rust mirror of their ABI.
#![warn(missing_docs)]
