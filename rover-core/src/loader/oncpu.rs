//! The on-CPU program: a software cpu-clock perf event on every online CPU
//! counting samples per thread and stack.

use std::collections::HashSet;

use aya::maps::{HashMap, MapData, StackTraceMap};
use aya::programs::PerfEvent;
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::{Ebpf, EbpfLoader};
use rover_ebpf::abi::{self, OnCpuKey};

use super::buffer::{StackResolver, clear_except, take_entries};
use super::object::{SharedMaps, kernel_btf, missing_in_object, take_map};
use super::targets::ResolvedTargets;
use super::unwind::{self, KernelTables};
use super::validate::{Limits, excluded_tgid};
use super::window::{RawEntry, RawWindow, UserWalk, comm_string};
use super::{
    Environment, Error, KernelFeature, KernelFeatures, MapSizes, Program, StackMode, Targets,
};
use crate::profile::{ProfileKind, SampleValue};

const PROGRAM: &str = "rover_oncpu";
const STEP_PROGRAM: &str = "rover_oncpu_unwind";
const COUNTS: [&str; 2] = ["oncpu_counts0", "oncpu_counts1"];
const STACKS: [&str; 2] = ["oncpu_stacks0", "oncpu_stacks1"];

/// How to run the on-CPU program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCpuConfig {
    /// Which tasks to sample.
    pub targets: Targets,
    /// Samples per second on each CPU (default 99, off the beat of timers).
    pub frequency_hz: u64,
    /// Whether to count samples of the idle task (pid 0).
    pub include_idle: bool,
    /// Whether every-process and cgroup targets include this process
    /// (default: no, an agent does not profile itself).
    pub include_self: bool,
    /// How user stacks are walked (default [`StackMode::Auto`]).
    pub stack_mode: StackMode,
    /// Map capacities.
    pub map_sizes: MapSizes,
}

impl Default for OnCpuConfig {
    fn default() -> Self {
        OnCpuConfig {
            targets: Targets::All,
            frequency_hz: 99,
            include_idle: false,
            include_self: false,
            stack_mode: StackMode::Auto,
            map_sizes: MapSizes::default(),
        }
    }
}

/// The attached on-CPU program. Dropping it detaches the perf events and
/// closes every program, map and event fd.
///
/// ```no_run
/// use rover_core::loader::{OnCpuConfig, OnCpuProgram, Targets};
///
/// let mut program = OnCpuProgram::attach(&OnCpuConfig {
///     targets: Targets::Pids(vec![1234]),
///     ..OnCpuConfig::default()
/// })?;
/// std::thread::sleep(std::time::Duration::from_secs(1));
/// let window = program.drain()?;
/// for entry in &window.entries {
///     println!("{} {}: {:?}", entry.tgid, entry.comm, entry.value);
/// }
/// # Ok::<(), rover_core::Error>(())
/// ```
pub struct OnCpuProgram {
    counts: [HashMap<MapData, OnCpuKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    shared: SharedMaps,
    tables: Option<KernelTables>,
    fallback: Option<String>,
    // Holds the program and its perf event links; dropped last.
    _ebpf: Ebpf,
}

impl OnCpuProgram {
    /// Validates the configuration ([`OnCpuConfig::validate`]), then checks
    /// privileges and the kernel's features, loads the program and attaches
    /// one cpu-clock perf event per online CPU. Kernel BTF is not needed.
    pub fn attach(config: &OnCpuConfig) -> Result<Self, Error> {
        let targets = config.checked(&Limits::read()?)?;
        Self::load(config, &targets, &Environment::check()?.features)
    }

    /// Attaches a configuration the caller validated (`targets` is what its
    /// check resolved), for a process whose environment was checked already
    /// (a [`Profiler`](crate::Profiler)'s).
    pub(crate) fn attach_checked(
        config: &OnCpuConfig,
        targets: &ResolvedTargets,
        environment: &Environment,
    ) -> Result<Self, Error> {
        Self::load(config, targets, &environment.features)
    }

    fn load(
        config: &OnCpuConfig,
        targets: &ResolvedTargets,
        features: &KernelFeatures,
    ) -> Result<Self, Error> {
        for feature in [KernelFeature::PerfEventPrograms, KernelFeature::GetStackid] {
            features.require(feature, "the on-CPU program", None)?;
        }
        config.targets.require_features(features)?;
        let stacks_mode = unwind::resolve(config.stack_mode, features, "the on-CPU unwinder")?;
        if stacks_mode.dwarf {
            match Self::load_with(config, targets, features, true) {
                Ok(program) => return Ok(program),
                Err(error) if config.stack_mode == StackMode::Dwarf => return Err(error),
                Err(error) => {
                    let mut program = Self::load_with(config, targets, features, false)?;
                    program.fallback = Some(format!("the unwinder did not load: {error}"));
                    return Ok(program);
                }
            }
        }
        let mut program = Self::load_with(config, targets, features, false)?;
        program.fallback = stacks_mode.fallback;
        Ok(program)
    }

    fn load_with(
        config: &OnCpuConfig,
        targets: &ResolvedTargets,
        features: &KernelFeatures,
        dwarf: bool,
    ) -> Result<Self, Error> {
        let sizes = &config.map_sizes;
        let include_idle = u8::from(config.include_idle);
        let exclude_tgid = excluded_tgid(&config.targets, config.include_self);
        let task_pt_regs = unwind::task_pt_regs_flag(features);
        let mut loader = EbpfLoader::new();
        // The frame-pointer program reads no kernel structure: it has no
        // CO-RE relocation (a test below says so), so it runs where the
        // kernel has no BTF. The unwinder reads the task's saved registers.
        loader
            .btf(if dwarf { Some(kernel_btf()?) } else { None })
            .override_global("target_mode", &targets.mode, true)
            .override_global("target_cgroup", &targets.cgroup_id, true)
            .override_global("include_idle", &include_idle, true)
            .override_global("exclude_tgid", &exclude_tgid, true)
            .map_max_entries("target_pids", sizes.pids)
            .map_max_entries(COUNTS[0], sizes.counts)
            .map_max_entries(COUNTS[1], sizes.counts)
            .map_max_entries(STACKS[0], sizes.stacks)
            .map_max_entries(STACKS[1], sizes.stacks);
        if dwarf {
            unwind::configure(&mut loader, sizes, &task_pt_regs);
        }
        let (object, name) = if dwarf {
            (rover_ebpf::ONCPU_UNWIND_OBJECT, "oncpu_unwind")
        } else {
            (rover_ebpf::ONCPU_OBJECT, "oncpu")
        };
        let mut ebpf = loader.load(object).map_err(|source| Error::Load {
            object: name,
            source: Box::new(source),
        })?;
        let shared = SharedMaps::take(&mut ebpf, &config.targets, config.map_sizes.pids, targets)?;
        let counts = [
            take_map(&mut ebpf, COUNTS[0], HashMap::try_from)?,
            take_map(&mut ebpf, COUNTS[1], HashMap::try_from)?,
        ];
        let stacks = [
            take_map(&mut ebpf, STACKS[0], StackTraceMap::try_from)?,
            take_map(&mut ebpf, STACKS[1], StackTraceMap::try_from)?,
        ];
        let tables = if dwarf {
            let step: &mut PerfEvent = ebpf
                .program_mut(STEP_PROGRAM)
                .ok_or_else(|| missing_in_object(STEP_PROGRAM))?
                .try_into()
                .map_err(Error::program(STEP_PROGRAM))?;
            step.load().map_err(Error::program(STEP_PROGRAM))?;
            let fd = step
                .fd()
                .map_err(Error::program(STEP_PROGRAM))?
                .try_clone()
                .map_err(|source| Error::Io {
                    what: "duplicating the unwinder's step program fd".into(),
                    source,
                })?;
            Some(KernelTables::take(
                &mut ebpf,
                &fd,
                sizes,
                unwind::preload(&config.targets, &targets.pids, config.include_self),
            )?)
        } else {
            None
        };
        attach_perf_events(&mut ebpf, config.frequency_hz)?;
        Ok(OnCpuProgram {
            counts,
            stacks,
            shared,
            tables,
            fallback: None,
            _ebpf: ebpf,
        })
    }

    /// A handle telling the table service (when the program unwinds from
    /// tables) that processes exec'd or mapped code.
    pub(crate) fn table_notifier(&self) -> Option<super::unwind::TableNotifier> {
        self.tables.as_ref().and_then(KernelTables::notifier)
    }

    /// The table service, when the program unwinds from tables
    /// ([`StackMode::Dwarf`], or `Auto` on a kernel that runs it).
    pub fn unwinder(&self) -> Option<&rover_unwind::Unwinder> {
        self.tables.as_ref().map(KernelTables::unwinder)
    }

    /// Why a [`StackMode::Auto`] program walks frame pointers, when it does.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Replaces the target processes while the program runs. Only for a
    /// program attached with [`Targets::Pids`].
    pub fn set_targets(&mut self, pids: &[u32]) -> Result<(), Error> {
        self.shared.set_targets(pids)?;
        if let Some(tables) = &self.tables {
            tables.add_processes(pids);
        }
        Ok(())
    }

    /// Swaps the halves of the double buffer and returns what was counted in
    /// the half the program left, which is then emptied for its next turn.
    pub fn drain(&mut self) -> Result<RawWindow, Error> {
        let idle = self.shared.buffer.flip()? as usize;
        let entries = take_entries(&mut self.counts[idle], COUNTS[idle])?;
        let (entries, stacks) = {
            let mut resolver = StackResolver::default();
            let stacks = &self.stacks[idle];
            let mut resolved = Vec::with_capacity(entries.len());
            for (key, samples) in entries {
                let (user_stack, user_walk) = match &self.tables {
                    Some(tables) if key.user_stack_status != abi::USTACK_FP => tables.user_stack(
                        &mut resolver,
                        idle as u32,
                        key.user_stack_hash,
                        key.user_stack_status,
                    )?,
                    _ => (
                        resolver.stack_id(stacks, STACKS[idle], key.user_stack_id)?,
                        UserWalk::FramePointers,
                    ),
                };
                resolved.push(RawEntry {
                    tgid: key.tgid,
                    tid: key.tid,
                    comm: comm_string(&key.comm),
                    user_stack,
                    user_walk,
                    kernel_stack: resolver.stack_id(stacks, STACKS[idle], key.kernel_stack_id)?,
                    value: SampleValue::OnCpu { samples },
                });
            }
            (resolved, resolver.stacks)
        };
        // Every id of this half was just read and no later key can refer to
        // it: the half is written again only after the next flip.
        clear_except(&mut self.stacks[idle], &HashSet::new(), STACKS[idle])?;
        if let Some(tables) = &mut self.tables {
            tables.clear_idle(idle, &HashSet::new())?;
        }
        Ok(RawWindow {
            entries,
            stacks,
            errors: self.shared.errors.take()?,
            unwinder: self.tables.as_ref().map(|t| t.unwinder().stats()),
        })
    }
}

impl Program for OnCpuProgram {
    fn kind(&self) -> ProfileKind {
        ProfileKind::OnCpu
    }

    fn set_targets(&mut self, pids: &[u32]) -> Result<(), Error> {
        OnCpuProgram::set_targets(self, pids)
    }

    fn drain(&mut self) -> Result<RawWindow, Error> {
        OnCpuProgram::drain(self)
    }

    fn stack_walk(&self) -> (StackMode, Option<String>) {
        match self.tables {
            Some(_) => (StackMode::Dwarf, None),
            None => (StackMode::FramePointers, self.fallback.clone()),
        }
    }
}

fn attach_perf_events(ebpf: &mut Ebpf, frequency_hz: u64) -> Result<(), Error> {
    let program: &mut PerfEvent = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| missing_in_object(PROGRAM))?
        .try_into()
        .map_err(Error::program(PROGRAM))?;
    program.load().map_err(Error::program(PROGRAM))?;
    let cpus = aya::util::online_cpus().map_err(|(what, source)| Error::Io {
        what: format!("reading {what}"),
        source,
    })?;
    for cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(frequency_hz),
                false,
            )
            .map_err(Error::program(PROGRAM))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Without kernel BTF aya would load a CO-RE relocation unrelocated, so
    /// the on-CPU program, which loads without it, must have none. The
    /// off-CPU program has some: the check can tell.
    #[test]
    fn the_program_has_no_co_re_relocations_so_runs_without_kernel_btf() {
        let relocated = |bytes| {
            aya_obj::Object::parse(bytes)
                .expect("an embedded object parses")
                .has_btf_relocations()
        };
        assert!(!relocated(rover_ebpf::ONCPU_OBJECT));
        assert!(relocated(rover_ebpf::OFFCPU_OBJECT));
    }
}
