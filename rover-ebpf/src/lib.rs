//! rover-ebpf: the kernel side of rover — eBPF programs for on-CPU and
//! off-CPU profiling, embedded as built objects, and the Rust mirror of their ABI.
//!
//! The programs are C (CO-RE) under `bpf/`, built by `build-bpf.sh` with
//! clang into `obj/`; the objects are committed so that building rover needs
//! no clang. This crate knows nothing of sessions or symbols: `rover-core`
//! loads the objects and reads their maps through the types in [`abi`].
#![warn(missing_docs)]

pub mod abi;
mod objects;

pub use objects::{
    OFFCPU_OBJECT, OFFCPU_UNWIND_OBJECT, ONCPU_OBJECT, ONCPU_UNWIND_OBJECT, PROBE_OBJECT,
    PROCEVENTS_OBJECT,
};
