//! Which processes to profile: selectors over [`ProcessInfo`], composed
//! with `and`, `or`, `not`, [`Selector::all`] and [`Selector::any`].

use std::path::PathBuf;

use regex::Regex;

use super::container::MIN_ID_PREFIX;
use super::error::Error;
use super::info::{ProcessInfo, processes};

/// A test on a [`ProcessInfo`]: by pid, command name, command line,
/// executable, cgroup or container, and their combinations.
///
/// ```no_run
/// use rover_core::process::Selector;
///
/// // The `postgres` processes of one container, but not the checkpointer.
/// let selector = Selector::comm("postgres")
///     .and(Selector::container("4f1c0e9a8b7d")?)
///     .and(Selector::cmdline(r"checkpointer")?.not());
/// let pids: Vec<u32> = selector.select()?.iter().map(|p| p.pid).collect();
/// println!("profiling {pids:?}");
/// # Ok::<(), rover_core::process::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Selector(Test);

#[derive(Debug, Clone)]
enum Test {
    Pid(u32),
    Comm(String),
    Cmdline(Regex),
    Exe(PathBuf),
    Cgroup(String),
    Container(String),
    All(Vec<Test>),
    Any(Vec<Test>),
    Not(Box<Test>),
}

impl Selector {
    /// The process with this pid (in this process's view).
    pub fn pid(pid: u32) -> Selector {
        Selector(Test::Pid(pid))
    }

    /// Processes whose command name ([`ProcessInfo::comm`]) is exactly
    /// `name`. The kernel keeps at most 15 bytes of it.
    pub fn comm(name: impl Into<String>) -> Selector {
        Selector(Test::Comm(name.into()))
    }

    /// Processes whose command line, its arguments joined by spaces,
    /// matches the regular expression `pattern` anywhere (anchor it with `^`
    /// and `$` for a whole match). [`Error::Pattern`] if it is not valid
    /// `regex` syntax.
    pub fn cmdline(pattern: &str) -> Result<Selector, Error> {
        Regex::new(pattern)
            .map(|regex| Selector(Test::Cmdline(regex)))
            .map_err(|source| Error::Pattern {
                pattern: pattern.to_string(),
                source: Box::new(source),
            })
    }

    /// Processes running the executable at `path` as they see it
    /// ([`ProcessInfo::exe`], deleted or not).
    pub fn exe(path: impl Into<PathBuf>) -> Selector {
        Selector(Test::Exe(path.into()))
    }

    /// Processes in the cgroup at `path` or below it, by whole path
    /// components (`/system.slice` holds `/system.slice/x.service`, not
    /// `/system.slice2`): their [`ProcessInfo::cgroup`] or, on cgroup v1,
    /// the path of any of their hierarchies.
    pub fn cgroup(path: impl Into<String>) -> Selector {
        let path = path.into();
        let trimmed = path.trim_end_matches('/');
        Selector(Test::Cgroup(if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        }))
    }

    /// Processes in the container whose id is, or starts with, `id` (at
    /// least 12 hex digits, any case). [`Error::ContainerId`] otherwise.
    pub fn container(id: &str) -> Result<Selector, Error> {
        if id.len() < MIN_ID_PREFIX || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::ContainerId {
                given: id.to_string(),
            });
        }
        Ok(Selector(Test::Container(id.to_ascii_lowercase())))
    }

    /// Processes every one of `selectors` matches (all processes, for
    /// none).
    pub fn all(selectors: impl IntoIterator<Item = Selector>) -> Selector {
        Selector(Test::All(selectors.into_iter().map(|s| s.0).collect()))
    }

    /// Processes at least one of `selectors` matches (none, for none).
    pub fn any(selectors: impl IntoIterator<Item = Selector>) -> Selector {
        Selector(Test::Any(selectors.into_iter().map(|s| s.0).collect()))
    }

    /// Processes both this and `other` match.
    pub fn and(self, other: Selector) -> Selector {
        Selector::all([self, other])
    }

    /// Processes this or `other` matches.
    pub fn or(self, other: Selector) -> Selector {
        Selector::any([self, other])
    }

    /// Processes this does not match.
    #[allow(clippy::should_implement_trait, reason = "also offered as `!`")]
    pub fn not(self) -> Selector {
        Selector(Test::Not(Box::new(self.0)))
    }

    /// Whether `process` is selected.
    pub fn matches(&self, process: &ProcessInfo) -> bool {
        self.0.matches(process)
    }

    /// The running processes selected, in pid order (see
    /// [`processes`](super::processes)).
    pub fn select(&self) -> Result<Vec<ProcessInfo>, Error> {
        let mut listed = processes()?;
        listed.retain(|process| self.matches(process));
        Ok(listed)
    }
}

impl std::ops::Not for Selector {
    type Output = Selector;

    fn not(self) -> Selector {
        Selector::not(self)
    }
}

impl Test {
    fn matches(&self, process: &ProcessInfo) -> bool {
        match self {
            Test::Pid(pid) => process.pid == *pid,
            Test::Comm(name) => process.comm == *name,
            Test::Cmdline(regex) => regex.is_match(&process.cmdline.join(" ")),
            Test::Exe(path) => process.exe.as_ref() == Some(path),
            Test::Cgroup(prefix) => process
                .cgroup
                .iter()
                .chain(process.cgroups.iter().map(|line| &line.path))
                .any(|path| under(path, prefix)),
            Test::Container(prefix) => process
                .container_id
                .as_ref()
                .is_some_and(|id| id.starts_with(prefix)),
            Test::All(tests) => tests.iter().all(|t| t.matches(process)),
            Test::Any(tests) => tests.iter().any(|t| t.matches(process)),
            Test::Not(test) => !test.matches(process),
        }
    }
}

/// Whether cgroup `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_prefixes_by_component() {
        assert!(under("/system.slice/x.service", "/system.slice"));
        assert!(under("/system.slice", "/system.slice"));
        assert!(!under("/system.slice2", "/system.slice"));
        assert!(under("/anything", "/"));
        assert_eq!(
            format!("{:?}", Selector::cgroup("/a/b/").0),
            format!("{:?}", Test::Cgroup("/a/b".into()))
        );
    }

    #[test]
    fn bad_patterns_and_ids_are_errors() {
        let error = Selector::cmdline("sleep (").unwrap_err();
        assert!(matches!(&error, Error::Pattern { pattern, .. } if pattern == "sleep ("));
        assert!(error.to_string().contains("sleep ("), "{error}");
        for bad in ["", "4f1c0e9a8b7", "4f1c0e9a8b7g", "docker://4f1c0e9a8b7d"] {
            assert!(
                matches!(Selector::container(bad), Err(Error::ContainerId { .. })),
                "{bad}"
            );
        }
        assert!(Selector::container("4F1C0E9A8B7D").is_ok());
    }
}
