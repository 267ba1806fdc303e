//! The off-CPU program: on `sched_switch`, time each targeted task spends off
//! CPU, per thread, stacks and task state.

use std::collections::HashSet;
use std::time::Duration;

use aya::maps::{HashMap, MapData, StackTraceMap};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use rover_ebpf::abi::{self, KernelStack, OffCpuCounts, OffCpuKey, OffCpuStart};

use super::buffer::{StackResolver, clear_except, take_entries};
use super::object::{SharedMaps, kernel_btf, missing_in_object, take_map};
use super::states::state_from_bit;
use super::targets::ResolvedTargets;
use super::unwind::{self, KernelTables, Preload};
use super::validate::excluded_tgid;
use super::window::{RawEntry, RawWindow, UserWalk, comm_string};
use super::{
    Environment, Error, KernelFeature, KernelFeatures, MapSizes, Program, StackMode, Targets,
    TaskStates,
};
use crate::profile::{ProfileKind, SampleValue};

const BTF_PROGRAM: &str = "rover_offcpu_btf";
const TP_PROGRAM: &str = "rover_offcpu_tp";
const BTF_STEP: &str = "rover_offcpu_btf_unwind";
const TP_STEP: &str = "rover_offcpu_tp_unwind";
const COUNTS: [&str; 2] = ["offcpu_counts0", "offcpu_counts1"];
const STACKS: [&str; 2] = ["offcpu_stacks0", "offcpu_stacks1"];
const KSTACKS: [&str; 2] = ["offcpu_kstacks0", "offcpu_kstacks1"];
const START: &str = "offcpu_start";

/// Where the off-CPU program hooks `sched_switch`.
///
/// Left unset, rover picks the BTF tracepoint where the kernel has
/// [`KernelFeature::BtfTracepoints`] and [`KernelFeature::GetTaskStack`]
/// (or their probes were inconclusive; a failed attach then falls back),
/// and the classic tracepoint otherwise. Asked for by name, a hook the
/// kernel cannot run is an error naming the missing feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffCpuHook {
    /// `tp_btf/sched_switch` (Linux 5.5+ with BTF; its kernel stacks need
    /// `bpf_get_task_stack`, 5.9+): typed arguments, and the kernel stack
    /// taken only for the blocks that are counted.
    BtfTracepoint,
    /// The classic `sched/sched_switch` tracepoint (needs tracefs); the
    /// kernel stack is taken at every switch-out of a targeted task.
    Tracepoint,
}

/// How to run the off-CPU program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Which tasks to follow.
    pub targets: Targets,
    /// Blocks shorter than this are not counted (default 1 µs).
    pub min_block: Duration,
    /// Blocks longer than this are not counted (default: no limit).
    pub max_block: Option<Duration>,
    /// Which task states to count (default: all).
    pub states: TaskStates,
    /// Whether to follow the idle task (pid 0).
    pub include_idle: bool,
    /// Whether every-process and cgroup targets include this process
    /// (default: no, an agent does not profile itself).
    pub include_self: bool,
    /// The hook to use; `None` picks the BTF tracepoint where the kernel
    /// has what it needs, the classic one otherwise (see [`OffCpuHook`]).
    pub hook: Option<OffCpuHook>,
    /// How user stacks are walked (default [`StackMode::Auto`]).
    pub stack_mode: StackMode,
    /// Map capacities.
    pub map_sizes: MapSizes,
}

impl Default for OffCpuConfig {
    fn default() -> Self {
        OffCpuConfig {
            targets: Targets::All,
            min_block: Duration::from_micros(1),
            max_block: None,
            states: TaskStates::ALL,
            include_idle: false,
            include_self: false,
            hook: None,
            stack_mode: StackMode::Auto,
            map_sizes: MapSizes::default(),
        }
    }
}

/// The attached off-CPU program. Dropping it detaches and closes every fd.
///
/// ```no_run
/// use rover_core::loader::{OffCpuConfig, OffCpuProgram, Targets};
/// use rover_core::profile::SampleValue;
/// use std::time::Duration;
///
/// let mut program = OffCpuProgram::attach(&OffCpuConfig {
///     targets: Targets::Pids(vec![1234]),
///     min_block: Duration::from_millis(1),
///     ..OffCpuConfig::default()
/// })?;
/// std::thread::sleep(Duration::from_secs(1));
/// for entry in program.drain()?.entries {
///     if let SampleValue::OffCpu { state, switches, nanos } = entry.value {
///         println!("{} {state}: {nanos} ns in {switches} blocks", entry.tid);
///     }
/// }
/// # Ok::<(), rover_core::Error>(())
/// ```
pub struct OffCpuProgram {
    counts: [HashMap<MapData, OffCpuKey, OffCpuCounts>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    kstacks: [HashMap<MapData, u64, KernelStack>; 2],
    start: HashMap<MapData, u32, OffCpuStart>,
    start_capacity: u32,
    shared: SharedMaps,
    hook: OffCpuHook,
    tables: Option<KernelTables>,
    fallback: Option<String>,
    // Holds the program and its link; dropped last.
    _ebpf: Ebpf,
}

impl OffCpuProgram {
    /// Validates the configuration ([`OffCpuConfig::validate`]), then checks
    /// privileges and the kernel's features (BTF; those of the hook), loads
    /// the program and attaches it to `sched_switch`.
    pub fn attach(config: &OffCpuConfig) -> Result<Self, Error> {
        let targets = config.checked()?;
        Self::load(config, &targets, &Environment::check()?)
    }

    /// Attaches a configuration the caller validated (`targets` is what its
    /// check resolved), for a process whose environment was checked already
    /// (a [`Profiler`](crate::Profiler)'s).
    pub(crate) fn attach_checked(
        config: &OffCpuConfig,
        targets: &ResolvedTargets,
        environment: &Environment,
    ) -> Result<Self, Error> {
        Self::load(config, targets, environment)
    }

    fn load(
        config: &OffCpuConfig,
        targets: &ResolvedTargets,
        environment: &Environment,
    ) -> Result<Self, Error> {
        // Everything the kernel lacks is found before anything is loaded.
        let plan = plan_hooks(config, &environment.features)?;
        let stacks_mode = unwind::resolve(
            config.stack_mode,
            &environment.features,
            "the off-CPU unwinder",
        )?;
        if stacks_mode.dwarf {
            match Self::load_with(config, targets, environment, plan, true) {
                Ok(program) => return Ok(program),
                Err(error) if config.stack_mode == StackMode::Dwarf => return Err(error),
                Err(error) => {
                    let mut program = Self::load_with(config, targets, environment, plan, false)?;
                    program.fallback = Some(format!("the unwinder did not load: {error}"));
                    return Ok(program);
                }
            }
        }
        let mut program = Self::load_with(config, targets, environment, plan, false)?;
        program.fallback = stacks_mode.fallback;
        Ok(program)
    }

    fn load_with(
        config: &OffCpuConfig,
        targets: &ResolvedTargets,
        environment: &Environment,
        plan: HookPlan,
        dwarf: bool,
    ) -> Result<Self, Error> {
        let max_block = config.max_block.unwrap_or(Duration::MAX);
        let btf = kernel_btf()?;
        let sizes = &config.map_sizes;
        let include_idle = u8::from(config.include_idle);
        let exclude_tgid = excluded_tgid(&config.targets, config.include_self);
        let min_ns = duration_ns(config.min_block);
        let max_ns = duration_ns(max_block);
        let state_mask = config.states.bits();
        let task_pt_regs = unwind::task_pt_regs_flag(&environment.features);
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(btf))
            .override_global("target_mode", &targets.mode, true)
            .override_global("target_cgroup", &targets.cgroup_id, true)
            .override_global("include_idle", &include_idle, true)
            .override_global("exclude_tgid", &exclude_tgid, true)
            .override_global("min_block_ns", &min_ns, true)
            .override_global("max_block_ns", &max_ns, true)
            .override_global("state_mask", &state_mask, true)
            .map_max_entries("target_pids", sizes.pids)
            .map_max_entries(COUNTS[0], sizes.counts)
            .map_max_entries(COUNTS[1], sizes.counts)
            // Unwinding, user stacks go to the unwinder's own stack maps:
            // these frame-pointer ones stay empty.
            .map_max_entries(STACKS[0], if dwarf { 1 } else { sizes.stacks })
            .map_max_entries(STACKS[1], if dwarf { 1 } else { sizes.stacks })
            .map_max_entries(KSTACKS[0], sizes.stacks)
            .map_max_entries(KSTACKS[1], sizes.stacks)
            .map_max_entries(START, sizes.start);
        if dwarf {
            unwind::configure(&mut loader, sizes, &task_pt_regs);
        }
        let (object, name) = if dwarf {
            (rover_ebpf::OFFCPU_UNWIND_OBJECT, "offcpu_unwind")
        } else {
            (rover_ebpf::OFFCPU_OBJECT, "offcpu")
        };
        let mut ebpf = loader.load(object).map_err(|source| Error::Load {
            object: name,
            source: Box::new(source),
        })?;
        let shared = SharedMaps::take(&mut ebpf, &config.targets, sizes.pids, targets)?;
        let counts = [
            take_map(&mut ebpf, COUNTS[0], HashMap::try_from)?,
            take_map(&mut ebpf, COUNTS[1], HashMap::try_from)?,
        ];
        let stacks = [
            take_map(&mut ebpf, STACKS[0], StackTraceMap::try_from)?,
            take_map(&mut ebpf, STACKS[1], StackTraceMap::try_from)?,
        ];
        let kstacks = [
            take_map(&mut ebpf, KSTACKS[0], HashMap::try_from)?,
            take_map(&mut ebpf, KSTACKS[1], HashMap::try_from)?,
        ];
        let start = take_map(&mut ebpf, START, HashMap::try_from)?;
        let preload = unwind::preload(&config.targets, &targets.pids, config.include_self);
        let (hook, tables) = attach_hook(
            &mut ebpf,
            plan,
            &environment.features,
            dwarf,
            sizes,
            preload,
        )?;
        Ok(OffCpuProgram {
            counts,
            stacks,
            kstacks,
            start,
            start_capacity: sizes.start,
            shared,
            hook,
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

    /// The hook the program is attached to.
    pub fn hook(&self) -> OffCpuHook {
        self.hook
    }

    /// Replaces the target processes while the program runs. Only for a
    /// program attached with [`Targets::Pids`]. Tasks already off CPU keep
    /// the record they left.
    pub fn set_targets(&mut self, pids: &[u32]) -> Result<(), Error> {
        self.shared.set_targets(pids)?;
        if let Some(tables) = &self.tables {
            tables.add_processes(pids);
        }
        Ok(())
    }

    /// Swaps the halves of the double buffer and returns the blocks counted
    /// in the half the program left.
    ///
    /// A user stack is taken at switch-out, in the task's own context, into
    /// the stack map of the half active then; a long block may be counted
    /// after one or more flips. So an idle stack map is not emptied outright:
    /// the stacks still referenced by a task that is off CPU, or by a count
    /// in the active half, are kept until a later drain has read them. Kernel
    /// stacks are taken at switch-in into the active half (except with the
    /// classic tracepoint, which takes them at switch-out) and kept the same way.
    pub fn drain(&mut self) -> Result<RawWindow, Error> {
        let idle = self.shared.buffer.flip()?;
        let active = self.shared.buffer.active() as usize;
        let taken = take_entries(&mut self.counts[idle as usize], COUNTS[idle as usize])?;
        let mut resolver = StackResolver::default();
        let mut entries = Vec::with_capacity(taken.len());
        for (key, value) in taken {
            let user = (key.user_stack_buffer & 1) as usize;
            let kernel = (key.kernel_stack_buffer & 1) as usize;
            let (user_stack, user_walk) = match &self.tables {
                Some(tables) if key.user_stack_status != abi::USTACK_FP => tables.user_stack(
                    &mut resolver,
                    key.user_stack_buffer,
                    key.user_stack_hash,
                    key.user_stack_status,
                )?,
                _ => (
                    resolver.stack_id(&self.stacks[user], STACKS[user], key.user_stack_id)?,
                    UserWalk::FramePointers,
                ),
            };
            entries.push(RawEntry {
                tgid: key.tgid,
                tid: key.tid,
                comm: comm_string(&key.comm),
                user_stack,
                user_walk,
                kernel_stack: resolver.kernel_stack(
                    &self.kstacks[kernel],
                    KSTACKS[kernel],
                    key.kernel_stack_hash,
                    key.kernel_stack_err,
                )?,
                value: SampleValue::OffCpu {
                    state: state_from_bit(key.state),
                    switches: value.switches,
                    nanos: value.total_ns,
                },
            });
        }
        // The program counts a block before deleting its start record, so a
        // block is always in one of the two maps scanned here, in this order.
        if let Some((user, kernel, unwound)) = self.stacks_in_use(idle, active)? {
            let idle = idle as usize;
            clear_except(&mut self.stacks[idle], &user, STACKS[idle])?;
            clear_except(&mut self.kstacks[idle], &kernel, KSTACKS[idle])?;
            if let Some(tables) = &mut self.tables {
                tables.clear_idle(idle, &unwound)?;
            }
        }
        Ok(RawWindow {
            entries,
            stacks: resolver.stacks,
            errors: self.shared.errors.take()?,
            unwinder: self.tables.as_ref().map(|t| t.unwinder().stats()),
        })
    }

    /// User stack ids, kernel stack hashes and unwound user stack hashes
    /// of half `idle` that tasks still off CPU, or counts of the active half,
    /// refer to. `None` when the start map changed so fast that its walk did
    /// not end: then nothing is freed.
    #[allow(clippy::type_complexity)]
    fn stacks_in_use(
        &self,
        idle: u32,
        active: usize,
    ) -> Result<Option<(HashSet<u32>, HashSet<u64>, HashSet<u64>)>, Error> {
        let mut user = HashSet::new();
        let mut kernel = HashSet::new();
        let mut unwound = HashSet::new();
        let mut add = |user_buffer: u32,
                       user_id: i32,
                       user_status: u32,
                       user_hash: u64,
                       kernel_buffer: u32,
                       hash: u64| {
            if user_buffer == idle && user_status != abi::USTACK_FP {
                if user_hash != 0 {
                    unwound.insert(user_hash);
                }
            } else if user_buffer == idle
                && let Ok(id) = u32::try_from(user_id)
            {
                user.insert(id);
            }
            if kernel_buffer == idle && hash != 0 {
                kernel.insert(hash);
            }
        };
        // A walk restarts when its cursor is deleted under it; bound it.
        let limit = 4 * self.start_capacity as usize;
        for (walked, record) in self.start.iter().enumerate() {
            let (_, start) = record.map_err(Error::map(START))?;
            add(
                start.user_stack_buffer,
                start.user_stack_id,
                start.user_stack_status,
                start.user_stack_hash,
                start.kernel_stack_buffer,
                start.kernel_stack_hash,
            );
            if walked > limit {
                return Ok(None);
            }
        }
        for key in self.counts[active].keys() {
            let key = key.map_err(Error::map(COUNTS[active]))?;
            add(
                key.user_stack_buffer,
                key.user_stack_id,
                key.user_stack_status,
                key.user_stack_hash,
                key.kernel_stack_buffer,
                key.kernel_stack_hash,
            );
        }
        Ok(Some((user, kernel, unwound)))
    }
}

impl Program for OffCpuProgram {
    fn kind(&self) -> ProfileKind {
        ProfileKind::OffCpu
    }

    fn set_targets(&mut self, pids: &[u32]) -> Result<(), Error> {
        OffCpuProgram::set_targets(self, pids)
    }

    fn drain(&mut self) -> Result<RawWindow, Error> {
        OffCpuProgram::drain(self)
    }

    fn stack_walk(&self) -> (StackMode, Option<String>) {
        match self.tables {
            Some(_) => (StackMode::Dwarf, None),
            None => (StackMode::FramePointers, self.fallback.clone()),
        }
    }
}

/// The hooks to attach: one, or the BTF tracepoint with the classic one as
/// the fallback if its attach fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookPlan {
    Only(OffCpuHook),
    BtfThenClassic,
}

const PROGRAM: &str = "the off-CPU program";
const BTF_HOOK: &str = "the off-CPU hook OffCpuHook::BtfTracepoint";
const CLASSIC_HOOK: &str = "the off-CPU hook OffCpuHook::Tracepoint";
const LEAVE_UNSET: &str =
    "leave the hook unset, and rover uses the classic tracepoint (OffCpuHook::Tracepoint)";

/// Which hooks `config` may use on a kernel with `features`, or the error
/// naming what the kernel lacks.
fn plan_hooks(config: &OffCpuConfig, features: &KernelFeatures) -> Result<HookPlan, Error> {
    // Both programs read kernel structures through CO-RE relocations.
    features.require(KernelFeature::Btf, PROGRAM, None)?;
    for feature in [KernelFeature::ProbeReadKernel, KernelFeature::GetStackid] {
        features.require(feature, PROGRAM, None)?;
    }
    config.targets.require_features(features)?;
    let btf_hook = [KernelFeature::BtfTracepoints, KernelFeature::GetTaskStack];
    match config.hook {
        Some(OffCpuHook::BtfTracepoint) => {
            for feature in btf_hook {
                features.require(feature, BTF_HOOK, Some(LEAVE_UNSET))?;
            }
            Ok(HookPlan::Only(OffCpuHook::BtfTracepoint))
        }
        None if btf_hook.iter().all(|f| !features.support(*f).is_no()) => {
            Ok(HookPlan::BtfThenClassic)
        }
        Some(OffCpuHook::Tracepoint) | None => {
            require_classic(features)?;
            Ok(HookPlan::Only(OffCpuHook::Tracepoint))
        }
    }
}

fn require_classic(features: &KernelFeatures) -> Result<(), Error> {
    for feature in [
        KernelFeature::TracepointPrograms,
        KernelFeature::GetStack,
        KernelFeature::Tracefs,
    ] {
        features.require(feature, CLASSIC_HOOK, None)?;
    }
    Ok(())
}

fn attach_hook(
    ebpf: &mut Ebpf,
    plan: HookPlan,
    features: &KernelFeatures,
    dwarf: bool,
    sizes: &MapSizes,
    preload: Preload<'_>,
) -> Result<(OffCpuHook, Option<KernelTables>), Error> {
    if plan != HookPlan::Only(OffCpuHook::Tracepoint) {
        match attach_btf_tracepoint(ebpf, dwarf, sizes, preload.clone()) {
            Ok(tables) => return Ok((OffCpuHook::BtfTracepoint, tables)),
            Err(error) if plan == HookPlan::Only(OffCpuHook::BtfTracepoint) => return Err(error),
            Err(_) => require_classic(features)?,
        }
    }
    let tables = if dwarf {
        let step: &mut TracePoint = ebpf
            .program_mut(TP_STEP)
            .ok_or_else(|| missing_in_object(TP_STEP))?
            .try_into()
            .map_err(Error::program(TP_STEP))?;
        step.load().map_err(Error::program(TP_STEP))?;
        let fd = step_fd(step.fd().map_err(Error::program(TP_STEP))?)?;
        Some(KernelTables::take(ebpf, &fd, sizes, preload)?)
    } else {
        None
    };
    let program: &mut TracePoint = ebpf
        .program_mut(TP_PROGRAM)
        .ok_or_else(|| missing_in_object(TP_PROGRAM))?
        .try_into()
        .map_err(Error::program(TP_PROGRAM))?;
    program.load().map_err(Error::program(TP_PROGRAM))?;
    program
        .attach("sched", "sched_switch")
        .map_err(Error::program(TP_PROGRAM))?;
    Ok((OffCpuHook::Tracepoint, tables))
}

/// A step program's fd, owned: the program array holds its own reference.
fn step_fd(fd: &aya::programs::ProgramFd) -> Result<aya::programs::ProgramFd, Error> {
    fd.try_clone().map_err(|source| Error::Io {
        what: "duplicating the unwinder's step program fd".into(),
        source,
    })
}

/// Loads the BTF hook (with its step program, which fills the program
/// array before the hook is attached) and attaches it.
fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    dwarf: bool,
    sizes: &MapSizes,
    preload: Preload<'_>,
) -> Result<Option<KernelTables>, Error> {
    let btf = kernel_btf()?;
    let tables = if dwarf {
        let step: &mut BtfTracePoint = ebpf
            .program_mut(BTF_STEP)
            .ok_or_else(|| missing_in_object(BTF_STEP))?
            .try_into()
            .map_err(Error::program(BTF_STEP))?;
        step.load("sched_switch", btf)
            .map_err(Error::program(BTF_STEP))?;
        let fd = step_fd(step.fd().map_err(Error::program(BTF_STEP))?)?;
        Some(KernelTables::take(ebpf, &fd, sizes, preload)?)
    } else {
        None
    };
    let program: &mut BtfTracePoint = ebpf
        .program_mut(BTF_PROGRAM)
        .ok_or_else(|| missing_in_object(BTF_PROGRAM))?
        .try_into()
        .map_err(Error::program(BTF_PROGRAM))?;
    program
        .load("sched_switch", btf)
        .map_err(Error::program(BTF_PROGRAM))?;
    program.attach().map_err(Error::program(BTF_PROGRAM))?;
    Ok(tables)
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Support;

    /// The plan for `hook` on a kernel that has every feature but `missing`.
    fn plan(
        hook: Option<OffCpuHook>,
        targets: Targets,
        missing: &[(KernelFeature, Support)],
    ) -> Result<HookPlan, Error> {
        let mut features = KernelFeatures::all_for_tests();
        for (feature, support) in missing {
            features.set_for_tests(*feature, support.clone());
        }
        plan_hooks(
            &OffCpuConfig {
                targets,
                hook,
                ..OffCpuConfig::default()
            },
            &features,
        )
    }

    fn no(feature: KernelFeature) -> (KernelFeature, Support) {
        (feature, Support::No)
    }

    #[test]
    fn left_unset_the_hook_follows_the_features() {
        let auto =
            |missing: &[(KernelFeature, Support)]| plan(None, Targets::All, missing).unwrap();
        assert_eq!(auto(&[]), HookPlan::BtfThenClassic);
        // The BTF hook takes its kernel stacks with bpf_get_task_stack.
        for missing in [KernelFeature::BtfTracepoints, KernelFeature::GetTaskStack] {
            assert_eq!(auto(&[no(missing)]), HookPlan::Only(OffCpuHook::Tracepoint));
        }
        // Unknown: the attach decides, with the classic hook to fall back on.
        let unknown = (
            KernelFeature::GetTaskStack,
            Support::Unknown("EPERM".into()),
        );
        assert_eq!(auto(&[unknown]), HookPlan::BtfThenClassic);
        assert!(matches!(
            plan(
                None,
                Targets::All,
                &[no(KernelFeature::GetTaskStack), no(KernelFeature::Tracefs)]
            ),
            Err(Error::NoTracefs)
        ));
    }

    #[test]
    fn a_hook_asked_for_is_refused_by_what_the_kernel_lacks() {
        let btf_hook = Some(OffCpuHook::BtfTracepoint);
        let error = plan(btf_hook, Targets::All, &[no(KernelFeature::GetTaskStack)]).unwrap_err();
        assert!(
            matches!(
                error,
                Error::Unsupported {
                    feature: KernelFeature::GetTaskStack,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the off-CPU hook OffCpuHook::BtfTracepoint needs bpf_get_task_stack (Linux 5.9 and \
             later), which this kernel (6.12.0-test) does not have: leave the hook unset, and \
             rover uses the classic tracepoint (OffCpuHook::Tracepoint)"
        );
        let error = plan(btf_hook, Targets::All, &[no(KernelFeature::BtfTracepoints)]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("needs tp_btf (Linux 5.5 and later)"),
            "{error}"
        );
        let classic = Some(OffCpuHook::Tracepoint);
        assert!(matches!(
            plan(classic, Targets::All, &[no(KernelFeature::Tracefs)]),
            Err(Error::NoTracefs)
        ));
        assert_eq!(
            plan(classic, Targets::All, &[no(KernelFeature::BtfTracepoints)]).unwrap(),
            HookPlan::Only(OffCpuHook::Tracepoint)
        );
    }

    #[test]
    fn every_hook_needs_btf_and_cgroups_their_helper() {
        for hook in [
            None,
            Some(OffCpuHook::BtfTracepoint),
            Some(OffCpuHook::Tracepoint),
        ] {
            assert!(matches!(
                plan(hook, Targets::All, &[no(KernelFeature::Btf)]),
                Err(Error::NoBtf)
            ));
        }
        let cgroup = Targets::Cgroup("/sys/fs/cgroup".into());
        let error = plan(None, cgroup, &[no(KernelFeature::GetCurrentCgroupId)]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("a cgroup target (.cgroup(..)) needs bpf_get_current_cgroup_id"),
            "{error}"
        );
        assert!(plan(None, Targets::All, &[no(KernelFeature::GetCurrentCgroupId)]).is_ok());
    }
}
