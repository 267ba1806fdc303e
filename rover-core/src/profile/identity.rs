//! Who a process of a profile was: what an agent labels it with, and what
//! tells a reused pid apart.

use std::sync::Arc;
use std::time::SystemTime;

use super::model::Profile;

/// A process's identity as a profile records it, read while the process
/// lived (at exec, for processes a session saw start).
///
/// Two identities with the same pid and different start times are two
/// processes: the pid was reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ProcessIdentity {
    /// Process id, as the host sees it.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22):
    /// with the pid, unique for the life of the machine.
    pub start_ticks: u64,
    /// Start time as wall-clock time.
    pub start_time: SystemTime,
    /// The executable, as the process sees it (inside its mount namespace).
    pub exe: Option<String>,
    /// The command line.
    pub cmdline: Vec<String>,
    /// The cgroup (v2 path, or the v1 path of a well-known controller).
    pub cgroup: Option<String>,
    /// The container id its cgroup names, if any.
    pub container_id: Option<String>,
    /// The pid as the process's own pid namespace sees it, where it
    /// differs (a container).
    pub container_pid: Option<u32>,
}

impl ProcessIdentity {
    /// The identity of `info`.
    pub fn of(info: &crate::process::ProcessInfo) -> ProcessIdentity {
        ProcessIdentity {
            pid: info.pid,
            start_ticks: info.start_ticks,
            start_time: info.start_time,
            exe: info.exe.as_ref().map(|p| p.to_string_lossy().into_owned()),
            cmdline: info.cmdline.clone(),
            cgroup: info.cgroup.clone(),
            container_id: info.container_id.as_ref().map(|c| c.id().to_string()),
            container_pid: info.container_pid(),
        }
    }
}

impl Profile {
    /// The identity of every process of the profile whose identity was
    /// read, by pid then start time.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// for p in profile.process_identities() {
    ///     println!("{} {:?} {}", p.pid, p.exe, p.cmdline.join(" "));
    /// }
    /// # }
    /// ```
    pub fn process_identities(&self) -> &[Arc<ProcessIdentity>] {
        &self.identities
    }

    /// The identity of `pid`: the one that started last if the pid was
    /// reused during the profile.
    pub fn process_identity(&self, pid: u32) -> Option<&ProcessIdentity> {
        let at = self.identities.partition_point(|p| p.pid <= pid);
        at.checked_sub(1)
            .map(|i| &*self.identities[i])
            .filter(|p| p.pid == pid)
    }

    /// Records `identity`, once per (pid, start): a later one of the same
    /// process replaces the earlier (an exec keeps the pid and start time
    /// and changes the program; profiles merge in time order).
    pub(crate) fn add_identity(&mut self, identity: Arc<ProcessIdentity>) {
        let key = (identity.pid, identity.start_ticks);
        match self
            .identities
            .binary_search_by_key(&key, |p| (p.pid, p.start_ticks))
        {
            Ok(at) => self.identities[at] = identity,
            Err(at) => self.identities.insert(at, identity),
        }
    }
}
