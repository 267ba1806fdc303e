//! The poll source: /proc scanned every interval, each scan held against
//! the last by (pid, start time), so a pid the kernel gave again is told
//! from the process that had it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{ProcessEvent, ProcessEventKind};
use crate::Error;
use crate::loader::{BootClock, boot_ns, clock_ticks_per_second};

/// What one scan knows of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub start_ticks: u64,
    pub ppid: u32,
    pub comm: String,
    /// `/proc/PID/exe`'s target; `None` for kernel threads and processes
    /// this one may not look into.
    pub exe: Option<PathBuf>,
}

pub(crate) struct Poller {
    proc: PathBuf,
    seen: HashMap<u32, Seen>,
    clock: BootClock,
    ns_per_tick: u64,
}

impl Poller {
    /// Takes the first scan, which reports nothing: what runs already.
    pub(crate) fn new(proc: &Path) -> Result<Self, Error> {
        Ok(Poller {
            seen: scan(proc)?,
            proc: proc.to_owned(),
            clock: BootClock::now(),
            ns_per_tick: 1_000_000_000 / clock_ticks_per_second(),
        })
    }

    /// Scans again and returns what changed: exits first (a pid given
    /// again exits before its new process forks), then new processes by
    /// start time, each followed by its exec when it runs another program
    /// than its parent, then execs of processes seen before.
    pub(crate) fn poll(&mut self) -> Result<Vec<ProcessEvent>, Error> {
        let now = scan(&self.proc)?;
        let now_ns = boot_ns();
        let events = diff(&self.seen, &now, now_ns, self.ns_per_tick, &self.clock);
        self.seen = now;
        Ok(events)
    }
}

fn event(
    kind: ProcessEventKind,
    pid: u32,
    seen: &Seen,
    boot_ns: u64,
    clock: &BootClock,
) -> ProcessEvent {
    ProcessEvent {
        kind,
        pid,
        tid: pid,
        comm: seen.comm.clone(),
        boot_ns,
        time: clock.system_time(boot_ns),
        start_ticks: Some(seen.start_ticks),
        info: None,
    }
}

fn exec_of(seen: &Seen) -> ProcessEventKind {
    ProcessEventKind::Exec {
        filename: seen.exe.clone().unwrap_or_default(),
    }
}

pub(crate) fn diff(
    before: &HashMap<u32, Seen>,
    now: &HashMap<u32, Seen>,
    now_ns: u64,
    ns_per_tick: u64,
    clock: &BootClock,
) -> Vec<ProcessEvent> {
    let mut events = Vec::new();
    let mut exits: Vec<(&u32, &Seen)> = before
        .iter()
        .filter(|(pid, old)| {
            now.get(pid)
                .is_none_or(|new| new.start_ticks != old.start_ticks)
        })
        .collect();
    exits.sort_by_key(|(pid, old)| (old.start_ticks, **pid));
    for (&pid, old) in exits {
        let kind = ProcessEventKind::Exit { status: None };
        events.push(event(kind, pid, old, now_ns, clock));
    }
    let mut born: Vec<(&u32, &Seen)> = now
        .iter()
        .filter(|(pid, new)| {
            before
                .get(pid)
                .is_none_or(|old| old.start_ticks != new.start_ticks)
        })
        .collect();
    born.sort_by_key(|(pid, new)| (new.start_ticks, **pid));
    for (&pid, new) in born {
        // Dated by its start time, which /proc gives in clock ticks.
        let started = new.start_ticks.saturating_mul(ns_per_tick).min(now_ns);
        let kind = ProcessEventKind::Fork { parent: new.ppid };
        events.push(event(kind, pid, new, started, clock));
        let parent_exe = now
            .get(&new.ppid)
            .or_else(|| before.get(&new.ppid))
            .and_then(|parent| parent.exe.as_ref());
        if new.exe.is_some() && new.exe.as_ref() != parent_exe {
            events.push(event(exec_of(new), pid, new, now_ns, clock));
        }
    }
    let mut execs: Vec<(&u32, &Seen)> = now
        .iter()
        .filter(|(pid, new)| {
            before.get(pid).is_some_and(|old| {
                old.start_ticks == new.start_ticks
                    && match (&old.exe, &new.exe) {
                        (Some(old_exe), Some(new_exe)) => old_exe != new_exe,
                        // Without the link, a new name is all there is.
                        (None, None) => old.comm != new.comm,
                        _ => false,
                    }
            })
        })
        .collect();
    execs.sort_by_key(|(pid, new)| (new.start_ticks, **pid));
    for (&pid, new) in execs {
        events.push(event(exec_of(new), pid, new, now_ns, clock));
    }
    events
}

/// Every process in `proc` now. A process that ends while it is read is
/// left out; only a `proc` that cannot be listed is an error.
fn scan(proc: &Path) -> Result<HashMap<u32, Seen>, Error> {
    let entries = fs::read_dir(proc).map_err(|source| Error::Io {
        what: format!("listing {}", proc.display()),
        source,
    })?;
    let mut seen = HashMap::new();
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(process) = read_process(&entry.path()) {
            seen.insert(pid, process);
        }
    }
    Ok(seen)
}

/// One process's name, parent, start time and executable, read so that
/// the name is no older than the executable: the link is read before and
/// after the stat file, and again while an exec ran between the two (a
/// child scanned while it execs would otherwise pair its parent's name
/// with its new program). `None` when the process is gone.
fn read_process(dir: &Path) -> Option<Seen> {
    let mut exe = fs::read_link(dir.join("exe")).ok();
    for _ in 0..3 {
        let mut process = read_stat(&dir.join("stat")).ok()??;
        let after = fs::read_link(dir.join("exe")).ok();
        if after == exe {
            process.exe = after;
            return Some(process);
        }
        exe = after;
    }
    // Exec after exec: this scan takes the last name and link it read.
    let mut process = read_stat(&dir.join("stat")).ok()??;
    process.exe = exe;
    Some(process)
}

fn read_stat(path: &Path) -> io::Result<Option<Seen>> {
    Ok(parse_stat(&fs::read_to_string(path)?))
}

/// `/proc/PID/stat` through the process listing's parser: name, parent
/// and start time.
pub(crate) fn parse_stat(stat: &str) -> Option<Seen> {
    let stat = crate::process::info::Stat::parse(stat)?;
    Some(Seen {
        ppid: stat.ppid,
        start_ticks: stat.start_ticks,
        comm: stat.comm,
        exe: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(start_ticks: u64, ppid: u32, comm: &str, exe: Option<&str>) -> Seen {
        Seen {
            start_ticks,
            ppid,
            comm: comm.into(),
            exe: exe.map(PathBuf::from),
        }
    }

    #[test]
    fn stat_lines_are_read_past_odd_names() {
        let stat = "4242 (a (b) c) S 17 4242 4242 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000000 200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(parse_stat(stat), Some(seen(987654, 17, "a (b) c", None)));
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    fn kinds(events: &[ProcessEvent]) -> Vec<(u32, ProcessEventKind)> {
        events.iter().map(|e| (e.pid, e.kind.clone())).collect()
    }

    #[test]
    fn scans_differ_by_pid_and_start() {
        let clock = BootClock::now();
        let before = HashMap::from([
            (1, seen(1, 0, "init", Some("/sbin/init"))),
            (10, seen(50, 1, "sh", Some("/bin/sh"))),
            (11, seen(60, 1, "old", Some("/bin/old"))),
            (12, seen(70, 1, "kworker", None)),
        ]);
        let now = HashMap::from([
            (1, seen(1, 0, "init", Some("/sbin/init"))),
            // exec'd another program
            (10, seen(50, 1, "python3", Some("/usr/bin/python3"))),
            // pid 11 given again to a new process, forked by 10, same exe
            (11, seen(90, 10, "python3", Some("/usr/bin/python3"))),
            // a new process running another program than its parent
            (13, seen(80, 1, "sleep", Some("/bin/sleep"))),
            // renamed, no exe link
            (12, seen(70, 1, "kworker/1", None)),
        ]);
        let events = diff(&before, &now, 1_000_000_000, 10_000_000, &clock);
        let exec = |path: &str| ProcessEventKind::Exec {
            filename: path.into(),
        };
        assert_eq!(
            kinds(&events),
            vec![
                (11, ProcessEventKind::Exit { status: None }),
                (13, ProcessEventKind::Fork { parent: 1 }),
                (13, exec("/bin/sleep")),
                (11, ProcessEventKind::Fork { parent: 10 }),
                (10, exec("/usr/bin/python3")),
                (12, exec("")),
            ]
        );
        // A fork is dated by its start: 80 ticks of 10 ms.
        assert_eq!(events[1].boot_ns, 800_000_000);
        assert!(diff(&now, &now, 0, 1, &clock).is_empty());
    }
}
