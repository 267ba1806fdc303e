//! The perf maps of live processes, found through their root directory and
//! reloaded as their JIT appends to them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::PerfMap;
use crate::Error;
use crate::elf::FileIdentity;
use crate::maps::namespace_pid;

/// Where the perf map of a process is, seen from this process:
/// `/proc/PID/root/tmp/perf-NSPID.map`, NSPID being the pid inside the
/// process's own pid namespace (a containerised runtime names the file
/// after the pid it sees).
pub fn perf_map_path(pid: u32) -> Result<PathBuf, Error> {
    let ns_pid = namespace_pid(pid)?;
    Ok(PathBuf::from(format!(
        "/proc/{pid}/root/tmp/perf-{ns_pid}.map"
    )))
}

/// How many bytes before the end of what was parsed are kept to recognise
/// an append (they are unchanged) from a rewrite.
const TAIL_CHECK: usize = 64;

#[derive(Debug, Clone)]
struct Cached {
    identity: FileIdentity,
    map: Arc<PerfMap>,
    /// Bytes of the file parsed: complete lines only.
    parsed: u64,
    /// The last bytes (up to [`TAIL_CHECK`]) of those.
    tail: Vec<u8>,
}

impl Cached {
    /// Reads and parses the whole file.
    fn read(file: &mut File, identity: FileIdentity) -> Option<Cached> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let complete = &bytes[..complete_lines(&bytes)];
        Some(Cached {
            identity,
            map: Arc::new(PerfMap::parse(&String::from_utf8_lossy(complete))),
            parsed: complete.len() as u64,
            tail: complete[complete.len().saturating_sub(TAIL_CHECK)..].to_vec(),
        })
    }

    /// Parses only what was appended since, if the file grew without its
    /// parsed part changing (a JIT appends as it compiles); `None` when it
    /// was rewritten.
    fn appended(&self, file: &mut File, identity: FileIdentity) -> Option<Cached> {
        let same_file = identity.dev == self.identity.dev && identity.ino == self.identity.ino;
        if !same_file || identity.size < self.parsed {
            return None;
        }
        file.seek(SeekFrom::Start(self.parsed - self.tail.len() as u64))
            .ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let new = bytes.strip_prefix(self.tail.as_slice())?;
        let new = &new[..complete_lines(new)];
        if new.is_empty() {
            return Some(Cached {
                identity,
                ..self.clone()
            });
        }
        let parsed_end = &bytes[..self.tail.len() + new.len()];
        Some(Cached {
            identity,
            map: {
                let lines = new.iter().filter(|&&b| b == b'\n').count();
                let mut map = self.map.clone_with_room(lines, new.len());
                map.extend(&String::from_utf8_lossy(new));
                Arc::new(map)
            },
            parsed: self.parsed + new.len() as u64,
            tail: parsed_end[parsed_end.len().saturating_sub(TAIL_CHECK)..].to_vec(),
        })
    }
}

/// The length of the complete lines at the start of `bytes`: a JIT may be
/// in the middle of writing the last one.
fn complete_lines(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The parsed perf maps of many processes, each reloaded when its file
/// changes (device, inode, size or modification time). `Send + Sync`.
///
/// Only complete lines are read, since a JIT may be writing the last one.
/// When a file only grew, just the appended lines are parsed and merged in.
#[derive(Debug, Default)]
pub struct PerfMapCache {
    maps: Mutex<HashMap<u32, Cached>>,
}

impl PerfMapCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The perf map of `pid`, parsed anew if its file changed since the last
    /// call. `None` when the process or its perf map does not exist (or
    /// cannot be read); the cached copy, if any, is then dropped.
    ///
    /// Each call checks the file (reads `/proc/PID/status`, opens and
    /// stats the map: tens of microseconds), so call it once per batch of
    /// addresses, not per address.
    pub fn get(&self, pid: u32) -> Option<Arc<PerfMap>> {
        let loaded = perf_map_path(pid)
            .ok()
            .and_then(|path| self.load(pid, &path));
        if loaded.is_none() {
            self.forget(pid);
        }
        loaded
    }

    /// Drops the cached perf map of `pid` (when the process exited).
    pub fn forget(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    /// Drops the perf maps of processes that no longer exist, so a
    /// long-running profiler's cache stays bounded by the live processes.
    /// Returns how many were dropped.
    pub fn forget_exited(&self) -> usize {
        let mut maps = self.lock();
        let before = maps.len();
        maps.retain(|pid, _| Path::new(&format!("/proc/{pid}")).exists());
        before - maps.len()
    }

    /// Number of processes whose perf map is cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no perf map is cached.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn load(&self, pid: u32, path: &Path) -> Option<Arc<PerfMap>> {
        let mut file = File::open(path).ok()?;
        let identity = FileIdentity::from_metadata(&file.metadata().ok()?);
        let previous = match self.lock().get(&pid) {
            Some(cached) if cached.identity == identity => return Some(Arc::clone(&cached.map)),
            other => other.cloned(),
        };
        // Parse without holding the lock: other processes' lookups go on.
        let updated = previous
            .and_then(|p| p.appended(&mut file, identity))
            .or_else(|| {
                file.seek(SeekFrom::Start(0)).ok()?;
                Cached::read(&mut file, identity)
            })?;
        let map = Arc::clone(&updated.map);
        self.lock().insert(pid, updated);
        Some(map)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Cached>> {
        // A panic elsewhere cannot leave the map half-updated: every
        // mutation is one insert or remove.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
