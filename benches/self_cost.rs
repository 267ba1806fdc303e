//! What a bench process costs itself, shared by `unwind_session.rs` and
//! `stack_copy.rs`: its CPU (every thread) and its BPF programs' run time.

use std::collections::BTreeMap;

/// This process's user + system CPU, every thread, in seconds.
pub fn process_cpu() -> f64 {
    // SAFETY: getrusage writes only the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a zeroed rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The text of every /proc/self/fdinfo entry this process has.
pub fn fdinfo() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .collect()
}

/// A numeric field (`name` with its colon) of an fdinfo text.
pub fn fdinfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// `(run_time_ns, run_cnt)` of every BPF program this process holds an fd
/// of, by program id, from /proc/self/fdinfo.
pub fn prog_stats() -> BTreeMap<u32, (u64, u64)> {
    fdinfo()
        .iter()
        .filter_map(|text| {
            let field = |name| fdinfo_field(text, name);
            Some((
                field("prog_id:")? as u32,
                (field("run_time_ns:")?, field("run_cnt:")?),
            ))
        })
        .collect()
}
