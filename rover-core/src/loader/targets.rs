//! Which tasks a program records: some processes, one cgroup, or all.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use rover_ebpf::abi;

use super::{Error, KernelFeature, KernelFeatures};
use crate::error::ConfigError;

/// The tasks a program records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Targets {
    /// Every process on the machine.
    #[default]
    All,
    /// These processes (tgids) with all their threads; updatable while the
    /// program runs with `set_targets`.
    Pids(Vec<u32>),
    /// The tasks of one cgroup v2 directory (e.g. `/sys/fs/cgroup/system.slice/x.service`).
    Cgroup(PathBuf),
}

impl Targets {
    /// `None` for a pid list, which can change while a program runs; else
    /// what the targets are, in words.
    pub(crate) fn kind_name(&self) -> Option<&'static str> {
        match self {
            Targets::Pids(_) => None,
            Targets::All => Some("every process (.all())"),
            Targets::Cgroup(_) => Some("a cgroup (.cgroup(..))"),
        }
    }

    /// Refuses targets the kernel cannot filter on: a cgroup where
    /// `bpf_get_current_cgroup_id` is missing.
    pub(crate) fn require_features(&self, features: &KernelFeatures) -> Result<(), Error> {
        match self {
            Targets::Cgroup(_) => features.require(
                KernelFeature::GetCurrentCgroupId,
                "a cgroup target (.cgroup(..))",
                None,
            ),
            Targets::All | Targets::Pids(_) => Ok(()),
        }
    }
}

/// Targets turned into the values the programs read.
pub(crate) struct ResolvedTargets {
    pub mode: u32,
    pub cgroup_id: u64,
    pub pids: Vec<u32>,
}

impl Targets {
    /// Checks the targets (pids live, cgroup a v2 directory) and turns them
    /// into the programs' values; reads `/proc` and the cgroup file system
    /// only, so it needs no privileges.
    pub(crate) fn resolve(&self, pid_capacity: u32) -> Result<ResolvedTargets, ConfigError> {
        match self {
            Targets::All => Ok(ResolvedTargets {
                mode: abi::TARGET_ALL,
                cgroup_id: 0,
                pids: Vec::new(),
            }),
            Targets::Pids(pids) => {
                check_pids(pids, pid_capacity)?;
                Ok(ResolvedTargets {
                    mode: abi::TARGET_PIDS,
                    cgroup_id: 0,
                    pids: pids.clone(),
                })
            }
            Targets::Cgroup(path) => Ok(ResolvedTargets {
                mode: abi::TARGET_CGROUP,
                cgroup_id: cgroup_id(path)?,
                pids: Vec::new(),
            }),
        }
    }
}

/// Every pid must name a live process: a typo would otherwise profile nothing.
pub(crate) fn check_pids(pids: &[u32], capacity: u32) -> Result<(), ConfigError> {
    check_pid_count(pids, capacity)?;
    for &pid in pids {
        // /proc/TID exists for threads too, but the programs filter on the
        // process id: a thread id would match nothing.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|_| ConfigError::NoSuchProcess(pid))?;
        let tgid = status
            .lines()
            .find_map(|line| line.strip_prefix("Tgid:"))
            .and_then(|tgid| tgid.trim().parse::<u32>().ok());
        match tgid {
            Some(tgid) if tgid == pid => {}
            Some(tgid) => {
                return Err(ConfigError::ThreadId { tid: pid, tgid });
            }
            None => return Err(ConfigError::NoSuchProcess(pid)),
        }
    }
    Ok(())
}

/// The part of [`check_pids`] that reads nothing.
pub(crate) fn check_pid_count(pids: &[u32], capacity: u32) -> Result<(), ConfigError> {
    if pids.is_empty() {
        return Err(ConfigError::EmptyPids);
    }
    if pids.len() > capacity as usize {
        return Err(ConfigError::TooManyPids {
            count: pids.len(),
            capacity,
        });
    }
    Ok(())
}

/// Makes the pid map hold exactly `pids`: new ones added before stale ones
/// are removed, so a pid kept in both sets is never briefly missing.
pub(crate) fn replace_pids(map: &mut HashMap<MapData, u32, u8>, pids: &[u32]) -> Result<(), Error> {
    for pid in pids {
        map.insert(pid, 1, 0).map_err(Error::map("target_pids"))?;
    }
    let stale: Vec<u32> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|pid| !pids.contains(pid))
        .collect();
    for pid in stale {
        map.remove(&pid).map_err(Error::map("target_pids"))?;
    }
    Ok(())
}

/// A cgroup v2 id is the inode number of its directory, which is what
/// `bpf_get_current_cgroup_id()` returns.
fn cgroup_id(path: &Path) -> Result<u64, ConfigError> {
    const CGROUP2_SUPER_MAGIC: u32 = 0x6367_7270;
    let error = |reason: String| ConfigError::Cgroup {
        path: path.to_owned(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
    if !metadata.is_dir() {
        return Err(error("not a directory".into()));
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| error("path contains a NUL byte".into()))?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(error(std::io::Error::last_os_error().to_string()));
    }
    if stat.f_type as u32 != CGROUP2_SUPER_MAGIC {
        return Err(error(
            "not on a cgroup v2 file system (cgroup v1 is not supported)".into(),
        ));
    }
    Ok(metadata.ino())
}
