//! Building a profile by hand: for tests, and for feeding rover's
//! operations and exports with stacks that came from somewhere else.

use super::model::{Profile, Sample};
use super::value::ProfileKind;

/// Builds a [`Profile`] from [`Sample`]s.
///
/// Sessions build their profiles themselves; this is for everyone else: a
/// test that needs a profile with known numbers, or a tool that turns
/// stacks from another source into rover's model to merge, diff or export
/// them. A built profile is read-only, like a session's.
///
/// ```
/// use rover_core::profile::{Metric, ProfileBuilder, Sample, SampleValue};
/// use rover_symbolize::{Module, Origin, Symbolized, Sym};
/// use std::sync::Arc;
///
/// let app = Module::new("/usr/bin/app", None);
/// let sym = |name: &str| Symbolized::Sym(Sym {
///     name: Arc::from(name), module: app.clone(), origin: Origin::File,
///     address: 0x5555_5555_5000, file_offset: Some(0x1000), vaddr: Some(0x1000),
///     sym_addr: 0x5555_5555_5000, location: None, inlined: vec![],
/// });
/// let user = [sym("spin"), sym("main")];
/// let mut builder = ProfileBuilder::new();
/// builder
///     .sampling_frequency(99)
///     .time_range(1_700_000_000_000_000_000, 1_700_000_001_000_000_000)
///     .add_sample(&Sample {
///         pid: 42, tid: 42, process_name: "app", comm: "app",
///         kernel: &[], user: &user,
///         value: SampleValue::OnCpu { samples: 3 },
///     });
/// let profile = builder.build();
/// assert_eq!(profile.total(Metric::OnCpuSamples), 3);
/// assert_eq!(profile.sampling_frequency(), Some(99));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProfileBuilder {
    profile: Profile,
}

impl ProfileBuilder {
    /// A builder of an empty profile.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one observation: its thread, its frames (kernel frames first,
    /// then user frames, both leaf first) and its value. Samples with the
    /// same thread and the same frames add up into one row.
    ///
    /// Every frame but the leaf is a return address: symbolize it at
    /// *address − 1* (as perf does) before handing it in, or its line and
    /// inlined frames belong to the next instruction.
    pub fn add_sample(&mut self, sample: &Sample<'_>) -> &mut Self {
        self.profile.add_sample(sample);
        self
    }

    /// Marks the profile as holding `kind` even without a sample of it, as
    /// an on-CPU session that saw nothing still exports `samples/count`.
    pub fn kind(&mut self, kind: ProfileKind) -> &mut Self {
        self.profile.declare_kind(kind);
        self
    }

    /// The wall-clock span the profile covers, in nanoseconds since the
    /// Unix epoch (an `end` before `start` reads as `start`).
    pub fn time_range(&mut self, start_unix_nanos: u64, end_unix_nanos: u64) -> &mut Self {
        self.profile
            .set_time_range(start_unix_nanos, end_unix_nanos);
        self
    }

    /// The on-CPU sampling frequency in Hz, from which exports state the
    /// period and [`Profile::process_summaries`] the CPU time; 0 means
    /// unknown.
    pub fn sampling_frequency(&mut self, hz: u64) -> &mut Self {
        self.profile.set_sampling_frequency(hz);
        self
    }

    /// The build id (hex) of `module`, which the pprof export writes into
    /// the module's mapping.
    pub fn build_id(&mut self, module: &str, build_id: &str) -> &mut Self {
        self.profile.set_build_id(module, build_id);
        self
    }

    /// The profile built so far.
    pub fn build(self) -> Profile {
        self.profile
    }
}
