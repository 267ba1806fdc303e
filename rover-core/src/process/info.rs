//! One process as `/proc` describes it, and the listing of all of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::container::{self, CgroupLine, ContainerId};
use super::error::Error;
use super::support::{ProfileSupport, SupportCache};

/// What rover knows of a process from `/proc`: identity, command, owner,
/// cgroup and container, namespaces. Read by [`ProcessInfo::read`] or
/// listed by [`processes`]; whether rover can profile it well is the
/// separate, costlier [`ProcessInfo::support`].
///
/// Fields the process does not let rover read (another user's, without
/// privileges) or that it lost while being read (it exited) are `None` or
/// empty.
///
/// ```no_run
/// use rover_core::process::ProcessInfo;
///
/// let me = ProcessInfo::read(std::process::id())?;
/// println!("{} ({:?}) started at {:?}", me.comm, me.exe, me.start_time);
/// if let Some(id) = &me.container_id {
///     println!("in {} container {}", id.runtime(), id.short());
/// }
/// # Ok::<(), rover_core::process::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// Its pid as this process sees it (the host's, when rover runs there).
    pub pid: u32,
    /// Its parent's pid, in the same view (0 for the roots of the view).
    pub ppid: u32,
    /// The command name the kernel keeps (`/proc/PID/stat`, at most 15
    /// bytes, the executable's base name unless the process renamed itself).
    pub comm: String,
    /// The executable's path as the process sees it, from its own root and
    /// in its own mount namespace: the target of `/proc/PID/exe`, less the
    /// process's root (`/proc/PID/root`) when that is a directory this
    /// process sees (a chroot; the kernel names both from the reader's
    /// root). `None` for kernel threads or without permission. The file is
    /// reachable from here through `/proc/PID/exe` whatever the namespace,
    /// and even when deleted.
    pub exe: Option<PathBuf>,
    /// Whether the executable was deleted (or replaced) since the process
    /// started it: the kernel's ` (deleted)` suffix, taken off [`exe`](Self::exe).
    pub exe_deleted: bool,
    /// Its arguments (`/proc/PID/cmdline`), empty for kernel threads and
    /// zombies.
    pub cmdline: Vec<String>,
    /// When it started, in clock ticks after boot (`/proc/PID/stat` field
    /// 22). With the pid it names one process: a pid reused later comes with
    /// a later start.
    pub start_ticks: u64,
    /// When it started: boot time (`btime` of `/proc/stat`, whole seconds)
    /// plus [`start_ticks`](Self::start_ticks) at `sysconf(_SC_CLK_TCK)`,
    /// as `ps -o lstart` computes it.
    pub start_time: SystemTime,
    /// Its effective user id (`Uid:` of `/proc/PID/status`, as `ps` shows
    /// it), in this process's user namespace.
    pub uid: Option<u32>,
    /// That user's name in this host's `/etc/passwd`.
    pub user: Option<String>,
    /// Its cgroup: the unified hierarchy's path on cgroup v2, on v1 the
    /// path of the first of its `memory`, `pids`, `cpu`, `name=systemd`
    /// hierarchies (all of which container runtimes set).
    pub cgroup: Option<String>,
    /// Every line of `/proc/PID/cgroup`: one per v1 hierarchy, the v2 one.
    pub cgroups: Vec<CgroupLine>,
    /// The container it runs in, from its cgroup paths.
    pub container_id: Option<ContainerId>,
    /// The systemd unit (`.service` or `.scope`) its cgroup is, container
    /// or not.
    pub systemd_unit: Option<String>,
    /// Its pid and mount namespaces, against this process's.
    pub namespaces: Namespaces,
    /// Its pid in each pid namespace it is in, outermost (this view) first:
    /// the `NSpid:` line of `/proc/PID/status`. Empty if unreadable.
    pub ns_pids: Vec<u32>,
    /// Its number of threads.
    pub threads: Option<u32>,
}

/// A process's pid and mount namespaces (the inode numbers of
/// `/proc/PID/ns/pid` and `/proc/PID/ns/mnt`), and this process's own
/// (`/proc/self/ns/*`) to compare. `None` where the link could not be read
/// (it needs ptrace access to the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Namespaces {
    /// The process's pid namespace.
    pub pid: Option<u64>,
    /// The process's mount namespace.
    pub mnt: Option<u64>,
    /// This process's pid namespace.
    pub own_pid: Option<u64>,
    /// This process's mount namespace.
    pub own_mnt: Option<u64>,
}

impl Namespaces {
    /// Whether the process is in another pid namespace than this one
    /// (`None` if either is unknown).
    pub fn pid_differs(&self) -> Option<bool> {
        Some(self.pid? != self.own_pid?)
    }

    /// Whether the process is in another mount namespace than this one: its
    /// files are then reached through `/proc/PID/root`.
    pub fn mnt_differs(&self) -> Option<bool> {
        Some(self.mnt? != self.own_mnt?)
    }
}

impl ProcessInfo {
    /// Reads process `pid` (a thread-group leader's, or any thread's id,
    /// which reads as its own task) from `/proc`.
    ///
    /// Errors: [`Error::NoSuchProcess`] if it does not exist; [`Error::Read`]
    /// or [`Error::Parse`] if `/proc/PID/stat` or `/proc/stat` cannot be
    /// read or parsed. Everything else unreadable is left `None` or empty.
    pub fn read(pid: u32) -> Result<ProcessInfo, Error> {
        ProcessInfo::read_in(pid, &Host::read()?)
    }

    /// The pid inside its innermost pid namespace when that differs from
    /// [`pid`](Self::pid): a container's view of it.
    pub fn container_pid(&self) -> Option<u32> {
        self.ns_pids
            .last()
            .copied()
            .filter(|&inner| inner != self.pid)
    }

    /// The pid the process knows itself by: [`container_pid`](Self::container_pid)
    /// or [`pid`](Self::pid).
    pub fn own_pid(&self) -> u32 {
        self.container_pid().unwrap_or(self.pid)
    }

    /// A path of the process's file system seen from here:
    /// `/proc/PID/root` joined with `path` (absolute, in its namespace).
    pub fn root_path(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(relative)
    }

    /// Whether rover can profile it well (its executable's symbols, unwind
    /// tables, frame pointers; its perf map). Parses the executable's ELF
    /// headers and symbol table: use a [`SupportCache`] for many processes.
    pub fn support(&self) -> Result<ProfileSupport, Error> {
        SupportCache::new().support(self)
    }

    pub(crate) fn read_in(pid: u32, host: &Host) -> Result<ProcessInfo, Error> {
        let stat_path = proc_path(pid, "stat");
        let stat = read_string(pid, &stat_path)?;
        let stat = Stat::parse(&stat).ok_or(Error::Parse {
            path: stat_path,
            reason: "no command in parentheses followed by 20 fields",
        })?;
        let (exe, exe_deleted) = match std::fs::read_link(proc_path(pid, "exe")) {
            Ok(link) => split_deleted(link),
            Err(_) => (None, false),
        };
        // The kernel names the file from the reader's root: under a chroot
        // whose root this process can reach, that is the root's path joined
        // with the process's own.
        let root = std::fs::read_link(proc_path(pid, "root")).ok();
        let exe = match (exe, root) {
            (Some(exe), Some(root)) => Some(in_root(exe, &root)),
            (exe, _) => exe,
        };
        let cmdline = std::fs::read(proc_path(pid, "cmdline"))
            .map(|bytes| {
                bytes
                    .split(|&b| b == 0)
                    .map(|arg| String::from_utf8_lossy(arg).into_owned())
                    .collect::<Vec<_>>()
            })
            .map(|mut args| {
                // The buffer ends with a NUL, which leaves an empty last
                // piece (and an empty buffer, one empty piece).
                if args.last().is_some_and(String::is_empty) {
                    args.pop();
                }
                args
            })
            .unwrap_or_default();
        let status = std::fs::read_to_string(proc_path(pid, "status")).unwrap_or_default();
        let uid = status_field(&status, "Uid:")
            .and_then(|ids| ids.split_ascii_whitespace().nth(1))
            .and_then(|id| id.parse().ok());
        let ns_pids = status_field(&status, "NSpid:")
            .map(|ids| {
                ids.split_ascii_whitespace()
                    .filter_map(|id| id.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let cgroups = std::fs::read_to_string(proc_path(pid, "cgroup"))
            .map(|text| container::parse_cgroups(&text))
            .unwrap_or_default();
        let cgroup = container::primary_path(&cgroups).map(str::to_string);
        let container_id = cgroup
            .as_deref()
            .and_then(ContainerId::from_cgroup_path)
            .or_else(|| {
                cgroups
                    .iter()
                    .find_map(|line| ContainerId::from_cgroup_path(&line.path))
            });
        let systemd_unit = cgroup.as_deref().and_then(container::systemd_unit);
        Ok(ProcessInfo {
            pid,
            ppid: stat.ppid,
            comm: stat.comm,
            exe,
            exe_deleted,
            cmdline,
            start_ticks: stat.start_ticks,
            start_time: host.start_time(stat.start_ticks),
            user: uid.and_then(|uid| host.users.get(&uid).cloned()),
            uid,
            cgroup,
            cgroups,
            container_id,
            systemd_unit,
            namespaces: Namespaces {
                pid: namespace(&proc_path(pid, "ns/pid")),
                mnt: namespace(&proc_path(pid, "ns/mnt")),
                own_pid: host.own_pid_ns,
                own_mnt: host.own_mnt_ns,
            },
            ns_pids,
            threads: stat.threads,
        })
    }
}

/// Every process (thread-group leader: the numeric entries of `/proc`),
/// in pid order. Processes that exit while being listed are left out.
///
/// ```no_run
/// for process in rover_core::process::processes()? {
///     println!("{:>7} {:<16} {:?}", process.pid, process.comm, process.cgroup);
/// }
/// # Ok::<(), rover_core::process::Error>(())
/// ```
pub fn processes() -> Result<Vec<ProcessInfo>, Error> {
    let host = Host::read()?;
    let proc = Path::new("/proc");
    let entries = std::fs::read_dir(proc).map_err(|source| Error::Read {
        path: proc.to_path_buf(),
        source,
    })?;
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut listed = Vec::with_capacity(pids.len());
    for pid in pids {
        match ProcessInfo::read_in(pid, &host) {
            Ok(info) => listed.push(info),
            Err(Error::NoSuchProcess { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(listed)
}

/// What reading processes needs once: the boot time and clock tick, user
/// names, this process's namespaces.
pub(crate) struct Host {
    boot_time: SystemTime,
    ticks_per_second: u64,
    users: HashMap<u32, String>,
    own_pid_ns: Option<u64>,
    own_mnt_ns: Option<u64>,
}

impl Host {
    pub(crate) fn read() -> Result<Host, Error> {
        let path = PathBuf::from("/proc/stat");
        let stat = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let btime: u64 = stat
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|secs| secs.trim().parse().ok())
            .ok_or(Error::Parse {
                path,
                reason: "no btime line",
            })?;
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(Host {
            boot_time: SystemTime::UNIX_EPOCH + Duration::from_secs(btime),
            ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
            users: std::fs::read_to_string("/etc/passwd")
                .map(|text| parse_passwd(&text))
                .unwrap_or_default(),
            own_pid_ns: namespace(Path::new("/proc/self/ns/pid")),
            own_mnt_ns: namespace(Path::new("/proc/self/ns/mnt")),
        })
    }

    fn start_time(&self, ticks: u64) -> SystemTime {
        let secs = ticks / self.ticks_per_second;
        let nanos = (ticks % self.ticks_per_second) * 1_000_000_000 / self.ticks_per_second;
        self.boot_time + Duration::new(secs, nanos as u32)
    }
}

/// The fields of `/proc/PID/stat` rover uses: one parser for the listing,
/// the poll source of process events, continuous profiling's checks and
/// the tracker.
pub(crate) struct Stat {
    pub(crate) comm: String,
    /// Field 3: `R`, `S`, `Z`...
    pub(crate) state: char,
    pub(crate) ppid: u32,
    /// Fields 14 + 15: user and system time, in clock ticks.
    pub(crate) cpu_ticks: Option<u64>,
    pub(crate) threads: Option<u32>,
    pub(crate) start_ticks: u64,
}

impl Stat {
    /// `pid (comm) state ppid ...`: the command may hold spaces and
    /// parentheses, so it runs to the last `)`.
    pub(crate) fn parse(text: &str) -> Option<Stat> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        // Field 3 (state) is the first after the command.
        let fields: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).copied();
        let ticks = |n: usize| field(n).and_then(|t| t.parse::<u64>().ok());
        Some(Stat {
            comm,
            state: field(3)?.chars().next()?,
            ppid: field(4)?.parse().ok()?,
            cpu_ticks: ticks(14).zip(ticks(15)).and_then(|(u, s)| u.checked_add(s)),
            threads: field(20).and_then(|n| n.parse().ok()),
            start_ticks: field(22)?.parse().ok()?,
        })
    }
}

fn proc_path(pid: u32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

fn read_string(pid: u32, path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::proc(pid, path.to_path_buf(), e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|line| line.strip_prefix(name))
}

/// The inode number of a namespace link, `pid:[4026531836]`.
fn namespace(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let target = target.to_str()?;
    let (_, inode) = target.split_once(":[")?;
    inode.strip_suffix(']')?.parse().ok()
}

/// `/proc/PID/exe`'s target without the ` (deleted)` the kernel appends
/// when the file is gone, and whether it was there.
fn split_deleted(link: PathBuf) -> (Option<PathBuf>, bool) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = link.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(path) => (Some(PathBuf::from(std::ffi::OsStr::from_bytes(path))), true),
        None => (Some(link), false),
    }
}

/// `path` (named from this process's root) as a process whose root is
/// `root` (also named from here) sees it.
fn in_root(path: PathBuf, root: &Path) -> PathBuf {
    if root == Path::new("/") {
        return path;
    }
    match path.strip_prefix(root) {
        Ok(inside) => Path::new("/").join(inside),
        Err(_) => path,
    }
}

/// `name:password:uid:...` lines; the first name of a uid wins, as for
/// `getpwuid`.
fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        if let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next())
            && let Ok(uid) = uid.parse()
        {
            users.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let line = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 \
                    7 0 98765 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.comm, "a (weird) name");
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.threads, Some(7));
        assert_eq!(stat.start_ticks, 98765);
        assert!(Stat::parse("1234 (cut) S 1 2").is_none());
        assert!(Stat::parse("garbage").is_none());
    }

    #[test]
    fn deleted_executables_and_namespaces() {
        assert_eq!(
            split_deleted(PathBuf::from("/tmp/x (deleted)")),
            (Some(PathBuf::from("/tmp/x")), true)
        );
        assert_eq!(
            split_deleted(PathBuf::from("/usr/bin/sleep")),
            (Some(PathBuf::from("/usr/bin/sleep")), false)
        );
        assert_eq!(
            in_root(PathBuf::from("/tmp/root/bin/x"), Path::new("/tmp/root")),
            PathBuf::from("/bin/x")
        );
        assert_eq!(
            in_root(PathBuf::from("/usr/bin/x"), Path::new("/")),
            PathBuf::from("/usr/bin/x")
        );
        // A root the file is not under (another mount): as named.
        assert_eq!(
            in_root(PathBuf::from("/usr/bin/x"), Path::new("/tmp/root")),
            PathBuf::from("/usr/bin/x")
        );
        let ns = Namespaces {
            pid: Some(1),
            mnt: Some(2),
            own_pid: Some(1),
            own_mnt: Some(3),
        };
        assert_eq!(ns.pid_differs(), Some(false));
        assert_eq!(ns.mnt_differs(), Some(true));
        assert_eq!(Namespaces::default().pid_differs(), None);
    }

    #[test]
    fn passwd_lines() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nbad line\ntoor:x:0:0::/:/bin/sh\nme:x:1000:1000::/home/me:/bin/sh\n",
        );
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
        assert_eq!(users.get(&1000).map(String::as_str), Some("me"));
        assert_eq!(users.len(), 2);
    }
}
