//! The double buffer both programs share: flip the `active` index, wait for
//! programs still writing the old half, read and clear that half.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::thread;
use std::time::Duration;

use aya::Pod;
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, StackTraceMap};
use rover_ebpf::abi;

use super::LoaderError;
use super::window::{ErrorCounts, StackLoss, StackSlot};

/// How long a flip waits before the old half is read. The programs run with
/// preemption disabled (in the perf interrupt, or in `__schedule`) and take
/// a few microseconds; one that read the old index just before the flip is
/// done long before this. A sleep costs the drain thread nothing, where an
/// in-flight counter would cost every program run two more atomic updates.
const GRACE: Duration = Duration::from_millis(5);

/// The `active_buffer` map and the loader's copy of its value.
pub(crate) struct DoubleBuffer {
    map: Array<MapData, u32>,
    active: u32,
}

impl DoubleBuffer {
    pub(crate) fn new(map: Array<MapData, u32>) -> Self {
        // Array maps start zeroed: the programs begin on half 0.
        DoubleBuffer { map, active: 0 }
    }

    /// The half the programs write now.
    pub(crate) fn active(&self) -> u32 {
        self.active
    }

    /// Points the programs at the other half and returns the one they left,
    /// once no program can still be writing it.
    pub(crate) fn flip(&mut self) -> Result<u32, LoaderError> {
        let idle = self.active;
        let next = idle ^ 1;
        self.map
            .set(0, next, 0)
            .map_err(LoaderError::map("active_buffer"))?;
        self.active = next;
        thread::sleep(GRACE);
        Ok(idle)
    }
}

/// Reads the per-CPU `errors` map as differences since the last read.
pub(crate) struct ErrorTracker {
    map: PerCpuArray<MapData, u64>,
    previous: Vec<ErrorCounts>,
}

impl ErrorTracker {
    pub(crate) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        ErrorTracker {
            map,
            previous: Vec::new(),
        }
    }

    pub(crate) fn take(&mut self) -> Result<Vec<ErrorCounts>, LoaderError> {
        let mut per_cpu: Vec<[u64; abi::ERR_MAX as usize]> = Vec::new();
        for index in 0..abi::ERR_MAX {
            let values = self
                .map
                .get(&index, 0)
                .map_err(LoaderError::map("errors"))?;
            per_cpu.resize(values.len().max(per_cpu.len()), [0; abi::ERR_MAX as usize]);
            for (cpu, value) in values.iter().enumerate() {
                per_cpu[cpu][index as usize] = *value;
            }
        }
        let current: Vec<ErrorCounts> = per_cpu.iter().map(ErrorCounts::from_slots).collect();
        let deltas = current
            .iter()
            .enumerate()
            .map(|(cpu, now)| match self.previous.get(cpu) {
                Some(before) => now.saturating_sub(before),
                None => *now,
            })
            .collect();
        self.previous = current;
        Ok(deltas)
    }
}

/// Turns stack ids of either half into deduplicated instruction-pointer lists.
pub(crate) struct StackResolver<'a> {
    maps: [&'a StackTraceMap<MapData>; 2],
    map_name: &'static str,
    seen: StdHashMap<(u32, u32), StackSlot>,
    pub(crate) stacks: Vec<Vec<u64>>,
}

impl<'a> StackResolver<'a> {
    pub(crate) fn new(maps: [&'a StackTraceMap<MapData>; 2], map_name: &'static str) -> Self {
        StackResolver {
            maps,
            map_name,
            seen: StdHashMap::new(),
            stacks: Vec::new(),
        }
    }

    /// Where the stack `id` of stack map `buffer` is, reading it on first use.
    pub(crate) fn slot(&mut self, buffer: u32, id: i32) -> Result<StackSlot, LoaderError> {
        let Ok(id) = u32::try_from(id) else {
            let errno = id.saturating_neg();
            return Ok(if errno == libc::EFAULT {
                StackSlot::Empty
            } else {
                StackSlot::Lost(StackLoss::from_errno(errno))
            });
        };
        let buffer = buffer & 1;
        if let Some(slot) = self.seen.get(&(buffer, id)) {
            return Ok(*slot);
        }
        let slot = match self.maps[buffer as usize].get(&id, 0) {
            Ok(trace) if trace.frames().is_empty() => StackSlot::Empty,
            Ok(trace) => {
                self.stacks
                    .push(trace.frames().iter().map(|frame| frame.ip).collect());
                StackSlot::Stack(self.stacks.len() - 1)
            }
            Err(MapError::KeyNotFound) => StackSlot::Lost(StackLoss::Vanished),
            Err(error) => return Err(LoaderError::map(self.map_name)(error)),
        };
        self.seen.insert((buffer, id), slot);
        Ok(slot)
    }
}

/// Removes every stack of `map` but those in `keep`.
pub(crate) fn clear_stacks(
    map: &mut StackTraceMap<MapData>,
    keep: &HashSet<u32>,
    name: &'static str,
) -> Result<(), LoaderError> {
    let ids: Vec<u32> = map
        .stack_ids()
        .collect::<Result<_, _>>()
        .map_err(LoaderError::map(name))?;
    for id in ids.into_iter().filter(|id| !keep.contains(id)) {
        match map.remove(&id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(error) => return Err(LoaderError::map(name)(error)),
        }
    }
    Ok(())
}

/// Reads every entry of an idle count map and empties it.
pub(crate) fn take_entries<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, LoaderError> {
    let entries: Vec<(K, V)> = map
        .iter()
        .collect::<Result<_, _>>()
        .map_err(LoaderError::map(name))?;
    for (key, _) in &entries {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(error) => return Err(LoaderError::map(name)(error)),
        }
    }
    Ok(entries)
}
