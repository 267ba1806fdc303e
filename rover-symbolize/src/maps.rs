//! A process's memory mappings, as `/proc/PID/maps` lists them, and the
//! `/proc` paths through which their files and the vDSO are read.
//!
//! ```no_run
//! use rover_symbolize::maps::ProcessMaps;
//!
//! let maps = ProcessMaps::read(std::process::id())?;
//! let addr = ProcessMaps::read as usize as u64;
//! if let Some(entry) = maps.find(addr) {
//!     println!("{:?} at file offset {:#x}", entry.path, entry.file_offset(addr));
//! }
//! # Ok::<(), rover_symbolize::Error>(())
//! ```

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// Linux's `ESRCH`: reading `/proc/PID/...` of a process that exited while
/// the file was open fails with it (the value is the same on every
/// architecture Linux supports).
const ESRCH: i32 = 3;

/// The access permissions of a mapping (the `rwxp` / `rwxs` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// Shared (`s`) rather than private copy-on-write (`p`).
    pub shared: bool,
}

/// What backs a mapping (the last column of `/proc/PID/maps`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapPath {
    /// A file, by its path in the process's mount namespace.
    File(PathBuf),
    /// A file that was deleted (or replaced) after it was mapped; the path is
    /// without the ` (deleted)` suffix. Its bytes are still reachable through
    /// [`MapEntry::map_files_path`].
    ///
    /// A live file whose name really ends in ` (deleted)` is indistinguishable
    /// in `/proc/PID/maps`; it is reported here too.
    Deleted(PathBuf),
    /// The kernel-provided virtual dynamic shared object, `[vdso]`.
    Vdso,
    /// Anonymous memory (no path column): heap-like memory, JIT code.
    Anonymous,
    /// Any other pseudo path, verbatim: `[heap]`, `[stack]`, `[vvar]`,
    /// `[vsyscall]`, `[anon:NAME]`, `anon_inode:...`.
    Special(String),
}

/// One line of `/proc/PID/maps`: a contiguous range of virtual memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapEntry {
    /// First address of the range.
    pub start: u64,
    /// One past the last address of the range.
    pub end: u64,
    /// Offset in the backing file of `start`.
    pub offset: u64,
    /// Access permissions.
    pub perms: Perms,
    /// Major number of the backing file's device.
    pub dev_major: u32,
    /// Minor number of the backing file's device.
    pub dev_minor: u32,
    /// Inode of the backing file (0 for anonymous memory).
    pub inode: u64,
    /// What backs the range.
    pub path: MapPath,
}

impl MapEntry {
    /// Whether `addr` lies in `[start, end)`.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether the range is mapped executable.
    pub fn is_executable(&self) -> bool {
        self.perms.exec
    }

    /// The offset in the backing file of `addr`: `addr - start + offset`.
    /// Meaningful only for an `addr` the entry [contains](Self::contains).
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr.wrapping_sub(self.start).wrapping_add(self.offset)
    }

    /// `/proc/PID/map_files/START-END`: the mapped file itself, opened
    /// through the kernel's reference to it, so it works for deleted files
    /// and for processes in other mount namespaces. Opening it needs
    /// `CAP_SYS_ADMIN`.
    pub fn map_files_path(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.start, self.end
        ))
    }

    /// `/proc/PID/root/PATH`: the file as the process sees it, through its
    /// root directory (the fallback when `map_files` is not permitted).
    /// `None` for mappings that are not files.
    pub fn root_path(&self, pid: u32) -> Option<PathBuf> {
        match &self.path {
            MapPath::File(path) | MapPath::Deleted(path) => {
                let relative = path.strip_prefix("/").unwrap_or(path);
                Some(PathBuf::from(format!("/proc/{pid}/root")).join(relative))
            }
            MapPath::Vdso | MapPath::Anonymous | MapPath::Special(_) => None,
        }
    }
}

/// The memory mappings of one process, sorted by start address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessMaps {
    pid: u32,
    entries: Vec<MapEntry>,
}

impl ProcessMaps {
    /// Reads and parses `/proc/PID/maps`.
    ///
    /// Fails with [`Error::NoSuchProcess`] when the process does not exist,
    /// and [`Error::Proc`] when the file cannot be read (permissions).
    pub fn read(pid: u32) -> Result<Self, Error> {
        let text = read_proc_string(pid, "maps")?;
        Ok(Self::parse(pid, &text))
    }

    /// Parses the text of a `/proc/PID/maps` file. Malformed lines are
    /// skipped; it never fails.
    pub fn parse(pid: u32, text: &str) -> Self {
        let mut entries: Vec<MapEntry> = text.lines().filter_map(parse_line).collect();
        if !entries.is_sorted_by_key(|e| e.start) {
            entries.sort_by_key(|e| e.start);
        }
        ProcessMaps { pid, entries }
    }

    /// The process id the maps belong to.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// All mappings, sorted by start address.
    pub fn entries(&self) -> &[MapEntry] {
        &self.entries
    }

    /// The mapping containing `addr`, by binary search.
    pub fn find(&self, addr: u64) -> Option<&MapEntry> {
        let after = self.entries.partition_point(|e| e.start <= addr);
        let entry = self.entries.get(after.checked_sub(1)?)?;
        entry.contains(addr).then_some(entry)
    }
}

/// Parses one maps line:
/// `START-END PERMS OFFSET MAJOR:MINOR INODE [PATH]`, the path padded with
/// spaces and possibly containing spaces itself.
fn parse_line(line: &str) -> Option<MapEntry> {
    let (range, rest) = next_field(line)?;
    let (perms, rest) = next_field(rest)?;
    let (offset, rest) = next_field(rest)?;
    let (dev, rest) = next_field(rest)?;
    let (inode, rest) = next_field(rest)?;

    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;

    Some(MapEntry {
        start,
        end,
        offset: u64::from_str_radix(offset, 16).ok()?,
        perms: parse_perms(perms)?,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode: inode.parse().ok()?,
        path: parse_path(rest.trim_start_matches(' ')),
    })
}

/// Splits off the next space-separated field; `None` when there is none.
fn next_field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    let end = s.find(' ').unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

fn parse_perms(s: &str) -> Option<Perms> {
    let &[r, w, x, p] = s.as_bytes() else {
        return None;
    };
    let flag = |c: u8, set: u8| match c {
        b'-' => Some(false),
        c if c == set => Some(true),
        _ => None,
    };
    Some(Perms {
        read: flag(r, b'r')?,
        write: flag(w, b'w')?,
        exec: flag(x, b'x')?,
        shared: match p {
            b's' => true,
            b'p' => false,
            _ => return None,
        },
    })
}

fn parse_path(s: &str) -> MapPath {
    const DELETED: &str = " (deleted)";
    match s {
        "" => MapPath::Anonymous,
        "[vdso]" => MapPath::Vdso,
        _ if s.starts_with('/') => match s.strip_suffix(DELETED) {
            Some(path) => MapPath::Deleted(unescape_path(path)),
            None => MapPath::File(unescape_path(s)),
        },
        _ => MapPath::Special(s.to_owned()),
    }
}

/// The kernel prints a newline in a path as `\012` so that each mapping
/// stays on one line; undo that.
fn unescape_path(s: &str) -> PathBuf {
    if s.contains("\\012") {
        PathBuf::from(s.replace("\\012", "\n"))
    } else {
        PathBuf::from(s)
    }
}

/// Reads the vDSO image of a process from `/proc/PID/mem`. `entry` must be
/// the process's [`MapPath::Vdso`] mapping. Works for the current process
/// too; other processes need ptrace access (root or `CAP_SYS_PTRACE`).
pub fn read_vdso(pid: u32, entry: &MapEntry) -> Result<Vec<u8>, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/mem"));
    if entry.path != MapPath::Vdso {
        return Err(Error::Proc {
            path,
            source: io::Error::new(io::ErrorKind::InvalidInput, "the mapping is not [vdso]"),
        });
    }
    let len = usize::try_from(entry.end - entry.start).map_err(|_| Error::Proc {
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "vdso mapping too large"),
    })?;
    let file = File::open(&path).map_err(|e| proc_error(pid, &path, e))?;
    let mut image = vec![0; len];
    file.read_exact_at(&mut image, entry.start)
        .map_err(|e| proc_error(pid, &path, e))?;
    Ok(image)
}

/// The process's pid in its own (innermost) pid namespace: the last value of
/// the `NSpid:` line of `/proc/PID/status`, or `pid` itself on kernels that
/// do not print that line. A process in a container writes its perf map
/// under this pid.
pub fn namespace_pid(pid: u32) -> Result<u32, Error> {
    let status = read_proc_string(pid, "status")?;
    let innermost = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|ids| ids.split_ascii_whitespace().last())
        .and_then(|id| id.parse().ok());
    Ok(innermost.unwrap_or(pid))
}

/// Reads `/proc/PID/NAME` whole, mapping a vanished process to
/// [`Error::NoSuchProcess`].
pub(crate) fn read_proc_string(pid: u32, name: &str) -> Result<String, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/{name}"));
    let bytes = std::fs::read(&path).map_err(|e| proc_error(pid, &path, e))?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

fn proc_error(pid: u32, path: &Path, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(ESRCH) {
        Error::NoSuchProcess { pid }
    } else {
        Error::Proc {
            path: path.to_path_buf(),
            source,
        }
    }
}
