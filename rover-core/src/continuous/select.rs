//! Which processes a policy watches: what is known of a process when it is
//! matched, and the matchers.

use std::sync::OnceLock;

use regex::Regex;

use super::policy::PolicyError;
use crate::process::{ProcessInfo, Selector};

/// What a policy's selection sees of a process, read from `/proc` at each
/// check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessMeta {
    /// The process id.
    pub pid: u32,
    /// The command name (`/proc/PID/stat`'s second field, at most 15 bytes).
    pub comm: String,
    /// The command line, arguments joined by single spaces (empty for
    /// kernel threads and zombies).
    pub cmdline: String,
    /// Everything else of the process, read on first use (once per
    /// process: the check thread keeps its `ProcessMeta` while the process
    /// runs the same program).
    info: OnceLock<Option<ProcessInfo>>,
}

impl ProcessMeta {
    /// A process's description as a matcher would see it, e.g. to test a
    /// matcher.
    pub fn new(pid: u32, comm: impl Into<String>, cmdline: impl Into<String>) -> Self {
        ProcessMeta {
            pid,
            comm: comm.into(),
            cmdline: cmdline.into(),
            info: OnceLock::new(),
        }
    }

    /// The process as [`process::processes`](crate::process::processes)
    /// lists it (executable, cgroup, container, namespaces...), read from
    /// `/proc` on first use; `None` if it cannot be read (gone).
    pub fn info(&self) -> Option<&ProcessInfo> {
        self.info
            .get_or_init(|| ProcessInfo::read(self.pid).ok())
            .as_ref()
    }
}

/// A [`Selector`] is a matcher: a policy can watch processes by pid,
/// command name or line, executable, cgroup or container, and any
/// composition of those.
impl Matches for Selector {
    fn matches(&self, process: &ProcessMeta) -> bool {
        process
            .info()
            .is_some_and(|info| Selector::matches(self, info))
    }
}

/// Decides which processes a policy watches
/// ([`PolicyBuilder::select`](super::PolicyBuilder::select)). Closures of
/// `&ProcessMeta` are matchers.
pub trait Matches: Send + Sync {
    /// Whether the policy watches `process`.
    fn matches(&self, process: &ProcessMeta) -> bool;
}

impl<F: Fn(&ProcessMeta) -> bool + Send + Sync> Matches for F {
    fn matches(&self, process: &ProcessMeta) -> bool {
        self(process)
    }
}

/// A regular expression on the command name or the command line.
pub(crate) struct RegexMatch(Regex);

impl RegexMatch {
    pub(crate) fn new(pattern: &str) -> Result<Self, PolicyError> {
        Regex::new(pattern)
            .map(RegexMatch)
            .map_err(|error| PolicyError::Pattern {
                pattern: pattern.to_owned(),
                reason: first_line(&error.to_string()),
            })
    }
}

impl Matches for RegexMatch {
    fn matches(&self, process: &ProcessMeta) -> bool {
        self.0.is_match(&process.comm) || self.0.is_match(&process.cmdline)
    }
}

/// The regex crate's messages draw the pattern over several lines; the
/// last one says what is wrong.
fn first_line(message: &str) -> String {
    message
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_matches_the_name_or_the_command_line() {
        let Ok(java) = RegexMatch::new("^java$") else {
            panic!("a valid pattern");
        };
        assert!(java.matches(&ProcessMeta::new(1, "java", "/usr/bin/java -jar app.jar")));
        assert!(!java.matches(&ProcessMeta::new(2, "javac", "javac Main.java")));
        let Ok(app) = RegexMatch::new(r"app\.jar") else {
            panic!("a valid pattern");
        };
        assert!(app.matches(&ProcessMeta::new(1, "java", "/usr/bin/java -jar app.jar")));
    }

    #[test]
    fn a_bad_pattern_says_what_is_wrong_in_one_line() {
        let Err(PolicyError::Pattern { reason, .. }) = RegexMatch::new("a(b") else {
            panic!("an unclosed group is an error");
        };
        assert!(!reason.contains('\n'), "{reason}");
        assert!(reason.contains("unclosed"), "{reason}");
    }

    #[test]
    fn selectors_are_matchers() {
        let me = std::process::id();
        let this = ProcessMeta::new(me, "ignored", "");
        assert!(Matches::matches(&Selector::pid(me), &this));
        assert!(!Matches::matches(&Selector::pid(me).not(), &this));
        let comm = this.info().map(|i| i.comm.clone()).unwrap_or_default();
        assert!(Matches::matches(
            &Selector::comm(comm).and(Selector::pid(me)),
            &this
        ));
        // A pid above pid_max: nothing to read, nothing matches.
        let gone = ProcessMeta::new(4_194_304 + 9, "x", "");
        assert!(!Matches::matches(&Selector::pid(4_194_304 + 9), &gone));
    }

    #[test]
    fn closures_are_matchers() {
        let odd = |p: &ProcessMeta| p.pid % 2 == 1;
        assert!(odd.matches(&ProcessMeta::new(3, "a", "")));
        assert!(!odd.matches(&ProcessMeta::new(4, "a", "")));
    }
}
