//! What the checks read from `/proc`: a process's `stat` line, its command
//! line, the machine's load average, and the CPU-time readings the
//! current-rate check takes the difference of.

use std::io;
use std::time::Instant;

use crate::Error;

/// The CPUs online now (at least 1).
pub(crate) fn online_cpus() -> u32 {
    // SAFETY: sysconf reads a system setting; no memory is involved.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(cpus).ok().filter(|&n| n > 0).unwrap_or(1)
}

/// Clock ticks per second of `/proc/PID/stat`'s times (USER_HZ, 100 on
/// every Linux architecture but a few).
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: as above.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&n| n > 0).unwrap_or(100)
}

/// The fields of `/proc/PID/stat` the checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) comm: String,
    /// `utime + stime` (fields 14 and 15), in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// `num_threads` (field 20).
    pub(crate) threads: u64,
    /// `starttime` (field 22): clock ticks after boot. With the pid, it
    /// tells a process from a later one that reuses its pid.
    pub(crate) start_time: u64,
}

impl Stat {
    pub(crate) fn read(pid: u32) -> io::Result<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Stat::parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat: unexpected format"),
            )
        })
    }

    /// The fields the checks use, from the process listing's parser.
    fn parse(text: &str) -> Option<Stat> {
        let stat = crate::process::info::Stat::parse(text)?;
        Some(Stat {
            cpu_ticks: stat.cpu_ticks?,
            threads: u64::from(stat.threads?),
            start_time: stat.start_ticks,
            comm: stat.comm,
        })
    }
}

/// The command line, arguments joined by spaces; empty when there is none
/// or it cannot be read (a kernel thread, a zombie, a process that exited).
pub(crate) fn cmdline(pid: u32) -> String {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    bytes
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-minute load average, the first field of `/proc/loadavg`.
pub(crate) fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The ids of the processes alive now (the numeric entries of `/proc`).
pub(crate) fn pids() -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Whether `pid` is still the process that started at `start_time`.
pub(crate) fn alive(pid: u32, start_time: u64) -> bool {
    Stat::read(pid).is_ok_and(|stat| stat.start_time == start_time)
}

/// The CPU time a process has used, read at an instant: two readings of
/// the same process give its current CPU rate
/// ([`CpuReading::percent_since`]), which is what
/// [`Check::CpuPercent`](super::Check::CpuPercent) compares.
///
/// ```no_run
/// use rover_core::continuous::CpuReading;
/// let before = CpuReading::read(1234)?;
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// let after = CpuReading::read(1234)?;
/// if let Some(percent) = after.percent_since(&before) {
///     println!("{percent:.0} % of one CPU over the last second");
/// }
/// # Ok::<(), rover_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuReading {
    pid: u32,
    start_time: u64,
    ticks: u64,
    at: Instant,
}

impl CpuReading {
    /// Reads `utime + stime` of process `pid` now.
    pub fn read(pid: u32) -> Result<CpuReading, Error> {
        let stat = Stat::read(pid).map_err(|source| Error::Io {
            what: format!("reading /proc/{pid}/stat"),
            source,
        })?;
        Ok(CpuReading::of(pid, &stat, Instant::now()))
    }

    pub(crate) fn of(pid: u32, stat: &Stat, at: Instant) -> CpuReading {
        CpuReading {
            pid,
            start_time: stat.start_time,
            ticks: stat.cpu_ticks,
            at,
        }
    }

    /// The process read.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU time used since the process started, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.ticks as f64 / clock_ticks() as f64
    }

    /// The CPU used between `earlier` and this reading, in percent of one
    /// CPU: the CPU time it gained over the wall time between the reads.
    /// `None` when `earlier` is of another process (another pid, or the
    /// same pid reused by a later process) or not earlier.
    ///
    /// The kernel accounts CPU time in clock ticks (10 ms at the usual
    /// 100 Hz), so over an interval of `T` seconds the rate is known to
    /// about `1 / (100 T)` of a CPU.
    pub fn percent_since(&self, earlier: &CpuReading) -> Option<f64> {
        if earlier.pid != self.pid || earlier.start_time != self.start_time {
            return None;
        }
        let wall = self.at.checked_duration_since(earlier.at)?.as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let ticks = self.ticks.saturating_sub(earlier.ticks) as f64;
        Some(100.0 * ticks / clock_ticks() as f64 / wall)
    }

    /// The lifetime average: CPU time since the process started over its
    /// age, in percent of one CPU, as Apache SkyWalking Rover's
    /// `PROCESS_CPU` check reports it; for comparison with
    /// [`percent_since`](Self::percent_since). `None` when the uptime
    /// cannot be read.
    pub fn lifetime_percent(&self) -> Option<f64> {
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let age = uptime - self.start_time as f64 / clock_ticks() as f64;
        (age > 0.0).then(|| 100.0 * self.cpu_seconds() / age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_may_hold_spaces_and_parentheses() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 50 0 0 20 0 7 0 123456 1000000 100 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                comm: "my (odd) name".into(),
                cpu_ticks: 300,
                threads: 7,
                start_time: 123456,
            })
        );
        assert_eq!(Stat::parse("4242 (short) S 1 2"), None);
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn this_process_reads_and_a_rate_needs_the_same_process() {
        let me = std::process::id();
        let stat = Stat::read(me);
        assert!(stat.as_ref().is_ok_and(|s| s.threads >= 1), "{stat:?}");
        assert!(!cmdline(me).is_empty(), "a test binary has a command line");
        assert_eq!(cmdline(u32::MAX), "", "no such process");
        assert!(pids().is_ok_and(|p| p.contains(&me)));
        let Ok(stat) = stat else { return };
        assert!(alive(me, stat.start_time));
        assert!(!alive(me, stat.start_time + 1));
        let now = Instant::now();
        let earlier = CpuReading::of(me, &stat, now);
        let later = CpuReading::of(
            me,
            &Stat {
                cpu_ticks: stat.cpu_ticks + clock_ticks() / 2,
                ..stat.clone()
            },
            now + std::time::Duration::from_secs(1),
        );
        let rate = later.percent_since(&earlier);
        assert!(rate.is_some_and(|r| (r - 50.0).abs() < 1e-9), "{rate:?}");
        assert_eq!(earlier.percent_since(&later), None, "not earlier");
        let reused = CpuReading::of(
            me,
            &Stat {
                start_time: stat.start_time + 1,
                ..stat
            },
            now + std::time::Duration::from_secs(2),
        );
        assert_eq!(reused.percent_since(&earlier), None, "a reused pid");
        assert!(load_average().is_some_and(|l| l >= 0.0));
        assert!(online_cpus() >= 1);
    }
}
