//! The double buffer both programs share: flip the `active` index, wait for
//! programs still writing the old half, read and clear that half.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::hash::Hash;
use std::thread;
use std::time::{Duration, Instant};

use aya::Pod;
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, StackTraceMap};
use rover_ebpf::abi::{self, KernelStack};

use super::Error;
use super::window::{ErrorCounts, StackLoss, StackSlot};

/// How long a flip waits at most for a program that was running on some
/// CPU when the index changed. Programs run for microseconds with
/// preemption disabled; only a stalled virtual CPU takes longer.
const MAX_WAIT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_micros(100);

/// The `active_buffer` map, the `in_flight` sequence counts, and the
/// loader's copy of the active index.
pub(crate) struct DoubleBuffer {
    map: Array<MapData, u32>,
    in_flight: PerCpuArray<MapData, u64>,
    active: u32,
}

impl DoubleBuffer {
    pub(crate) fn new(map: Array<MapData, u32>, in_flight: PerCpuArray<MapData, u64>) -> Self {
        // Array maps start zeroed: the programs begin on half 0.
        DoubleBuffer {
            map,
            in_flight,
            active: 0,
        }
    }

    /// The half the programs write now.
    pub(crate) fn active(&self) -> u32 {
        self.active
    }

    /// Points the programs at the other half and returns the one they left,
    /// once no program can still be writing it: every CPU whose sequence
    /// count was odd (a program running) after the switch has moved on.
    /// Programs that start later read the new index.
    pub(crate) fn flip(&mut self) -> Result<u32, Error> {
        let idle = self.active;
        let next = idle ^ 1;
        self.map
            .set(0, next, 0)
            .map_err(Error::map("active_buffer"))?;
        self.active = next;
        let seen = self.sequences()?;
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let now = self.sequences()?;
            let running = seen
                .iter()
                .zip(&now)
                .any(|(before, now)| before % 2 == 1 && before == now);
            if !running || Instant::now() > deadline {
                return Ok(idle);
            }
            thread::sleep(POLL);
        }
    }

    fn sequences(&self) -> Result<Vec<u64>, Error> {
        let values = self.in_flight.get(&0, 0).map_err(Error::map("in_flight"))?;
        Ok(values.iter().copied().collect())
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

    pub(crate) fn take(&mut self) -> Result<Vec<ErrorCounts>, Error> {
        let mut per_cpu: Vec<[u64; abi::ERR_MAX as usize]> = Vec::new();
        for index in 0..abi::ERR_MAX {
            let values = self.map.get(&index, 0).map_err(Error::map("errors"))?;
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

/// Turns stack references into deduplicated instruction-pointer lists,
/// reading each stack once per window.
#[derive(Default)]
pub(crate) struct StackResolver {
    seen: StdHashMap<(&'static str, u64), StackSlot>,
    pub(crate) stacks: Vec<Vec<u64>>,
}

impl StackResolver {
    /// The slot of stack `id` of map `map`; `fetch` reads it on first use
    /// and returns `None` when the map no longer has it.
    fn resolve(
        &mut self,
        map: &'static str,
        id: u64,
        fetch: impl FnOnce() -> Result<Option<Vec<u64>>, Error>,
    ) -> Result<StackSlot, Error> {
        if let Some(slot) = self.seen.get(&(map, id)) {
            return Ok(*slot);
        }
        let slot = match fetch()? {
            None => StackSlot::Lost(StackLoss::Vanished),
            Some(ips) if ips.is_empty() => StackSlot::Empty,
            Some(ips) => {
                self.stacks.push(ips);
                StackSlot::Stack(self.stacks.len() - 1)
            }
        };
        self.seen.insert((map, id), slot);
        Ok(slot)
    }

    /// The slot of an id returned by `bpf_get_stackid` into stack map `map`.
    pub(crate) fn stack_id(
        &mut self,
        map: &StackTraceMap<MapData>,
        name: &'static str,
        id: i32,
    ) -> Result<StackSlot, Error> {
        let Ok(id) = u32::try_from(id) else {
            return Ok(errno_slot(id.saturating_neg()));
        };
        self.resolve(name, id.into(), || match map.get(&id, 0) {
            Ok(trace) => Ok(Some(trace.frames().iter().map(|frame| frame.ip).collect())),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(Error::map(name)(error)),
        })
    }

    /// The slot of a kernel stack the off-CPU program stored under `hash`.
    pub(crate) fn kernel_stack(
        &mut self,
        map: &HashMap<MapData, u64, KernelStack>,
        name: &'static str,
        hash: u64,
        err: i32,
    ) -> Result<StackSlot, Error> {
        if hash == 0 {
            return Ok(errno_slot(err.saturating_neg()));
        }
        self.resolve(name, hash, || match map.get(&hash, 0) {
            Ok(stack) => Ok(Some(
                stack
                    .ips
                    .iter()
                    .copied()
                    .take_while(|ip| *ip != 0)
                    .collect(),
            )),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(Error::map(name)(error)),
        })
    }
}

/// -EFAULT (and 0) only mean there is no such stack, e.g. the user stack of
/// a kernel thread; other errnos mean a stack was lost.
fn errno_slot(errno: i32) -> StackSlot {
    if errno == 0 || errno == libc::EFAULT {
        StackSlot::Empty
    } else {
        StackSlot::Lost(StackLoss::from_errno(errno))
    }
}

/// The maps a drain empties: stack maps and hash maps, by key.
pub(crate) trait Keyed {
    type Key: Eq + Hash;
    fn all_keys(&self) -> Result<Vec<Self::Key>, MapError>;
    fn remove_key(&mut self, key: &Self::Key) -> Result<(), MapError>;
}

impl Keyed for StackTraceMap<MapData> {
    type Key = u32;

    fn all_keys(&self) -> Result<Vec<u32>, MapError> {
        self.stack_ids().collect()
    }

    fn remove_key(&mut self, key: &u32) -> Result<(), MapError> {
        self.remove(key)
    }
}

impl<K: Pod + Eq + Hash, V: Pod> Keyed for HashMap<MapData, K, V> {
    type Key = K;

    fn all_keys(&self) -> Result<Vec<K>, MapError> {
        self.keys().collect()
    }

    fn remove_key(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
}

/// Removes every entry of `map` but those whose key is in `keep`; an entry
/// the program deleted meanwhile is not an error.
pub(crate) fn clear_except<M: Keyed>(
    map: &mut M,
    keep: &HashSet<M::Key>,
    name: &'static str,
) -> Result<(), Error> {
    let keys = map.all_keys().map_err(Error::map(name))?;
    for key in keys.into_iter().filter(|key| !keep.contains(key)) {
        match map.remove_key(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(error) => return Err(Error::map(name)(error)),
        }
    }
    Ok(())
}

/// Reads every entry of an idle count map and empties it.
pub(crate) fn take_entries<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, Error> {
    let entries: Vec<(K, V)> = map
        .iter()
        .collect::<Result<_, _>>()
        .map_err(Error::map(name))?;
    for (key, _) in &entries {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(error) => return Err(Error::map(name)(error)),
        }
    }
    Ok(entries)
}
