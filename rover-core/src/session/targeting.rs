//! The target part shared by both session builders: which processes a
//! session records, chosen explicitly.

use std::path::PathBuf;

use crate::Error;
use crate::loader::Targets;

/// Targets as a builder collects them; none chosen is an error at start,
/// so a forgotten call never silently profiles the whole machine.
#[derive(Debug, Clone, Default)]
pub(crate) struct TargetChoice(Option<Targets>);

impl TargetChoice {
    pub fn add_pids(&mut self, pids: impl IntoIterator<Item = u32>) {
        match &mut self.0 {
            Some(Targets::Pids(list)) => list.extend(pids),
            other => *other = Some(Targets::Pids(pids.into_iter().collect())),
        }
    }

    pub fn set(&mut self, targets: Targets) {
        self.0 = Some(targets);
    }

    pub fn cgroup(&mut self, path: PathBuf) {
        self.0 = Some(Targets::Cgroup(path));
    }

    pub fn resolve(&self) -> Result<Targets, Error> {
        self.0.clone().ok_or(Error::NoTargets)
    }
}
