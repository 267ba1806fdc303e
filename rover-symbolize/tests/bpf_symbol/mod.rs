//! A text symbol of a "module" that every kernel with a BPF JIT has: a
//! loaded BPF program is listed in /proc/kallsyms as
//! `bpf_prog_<tag>_<name>` in module `[bpf]` (with `bpf_jit_kallsyms`, 1
//! for root). The module-symbol tests load one, so they do not depend on
//! loadable kernel modules, which a kernel built without module support
//! (this CI machine's) never has.
#![allow(dead_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `BPF_PROG_LOAD`, and `BPF_PROG_TYPE_SOCKET_FILTER` (the simplest type
/// to load: it needs no attach target).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// Loads a two-instruction socket filter (`r0 = 0; exit`) named `name`
/// (at most 15 bytes); it stays loaded, and in kallsyms, while the returned
/// descriptor is open. Needs root (or CAP_BPF).
pub fn load(name: &str) -> io::Result<OwnedFd> {
    // mov64 r0, 0; exit.
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    // union bpf_attr, the BPF_PROG_LOAD part: prog_type, insn_cnt, insns,
    // license, log_level, log_size, log_buf, kern_version, prog_flags,
    // prog_name[16]; the rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let name = name.as_bytes();
    let len = name.len().min(15);
    attr[48..48 + len].copy_from_slice(&name[..len]);
    // SAFETY: bpf(2) with an attribute buffer of the size passed, whose
    // pointers (instructions, license) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor bpf(2) just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
