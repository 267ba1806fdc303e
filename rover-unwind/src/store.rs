//! The table store: the kernel's row array as ranges, one table per file
//! identity shared by every process that maps it, evicted least recently
//! used first when a new one does not fit; and each process's entry, its
//! mappings pointing at those ranges.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::process::{ProcessMappings, TableKey};
use crate::row::Row;

/// `table_start` of a mapping with no table: the kernel walks it with
/// frame pointers (`ROVER_UNWIND_NO_TABLE`).
pub const NO_TABLE: u32 = 0xffff_ffff;

/// `table_start` of a mapping whose table is not loaded yet
/// (`ROVER_UNWIND_TABLE_PENDING`).
pub const TABLE_PENDING: u32 = 0xffff_fffe;

/// The largest capacity in rows: every row index stays below the two
/// markers above.
pub const MAX_CAPACITY: u32 = TABLE_PENDING;

/// How many build failures are kept for diagnosis; past that the oldest is
/// forgotten (and its file built again if a process still maps it).
const FAILURES_KEPT: usize = 1024;

/// Where the kernel finds a mapping's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableRef {
    /// Rows `start..start + len` of the row array.
    Rows {
        /// First row.
        start: u32,
        /// Number of rows.
        len: u32,
    },
    /// The table is being built or was evicted; the kernel counts the
    /// stack as truncated there.
    Pending,
    /// No table: JIT or anonymous code, a file without call-frame
    /// information or whose table could not be built. Frame pointers.
    NoTable,
}

impl TableRef {
    /// The kernel's `table_start`: the first row, [`TABLE_PENDING`] or
    /// [`NO_TABLE`].
    pub fn table_start(self) -> u32 {
        match self {
            TableRef::Rows { start, .. } => start,
            TableRef::Pending => TABLE_PENDING,
            TableRef::NoTable => NO_TABLE,
        }
    }

    /// The kernel's `table_len`: the number of rows, 0 without rows.
    pub fn table_len(self) -> u32 {
        match self {
            TableRef::Rows { len, .. } => len,
            TableRef::Pending | TableRef::NoTable => 0,
        }
    }
}

/// One mapping of a process entry, as the kernel reads it (`struct
/// rover_unwind_mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MappingEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Table address = address − bias, wrapping.
    pub bias: u64,
    /// Its table.
    pub table: TableRef,
}

/// A table that could not be built or stored, kept for diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What the table was for: the file's path as a process maps it, or
    /// `[vdso]`.
    pub what: String,
    /// Why.
    pub reason: String,
    seq: u64,
}

/// The store's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Tables held (loaded or being written).
    pub tables: usize,
    /// Rows they take.
    pub rows_used: u64,
    /// Bytes they take, [`Row::SIZE`] per row.
    pub bytes: u64,
    /// The capacity in rows.
    pub capacity_rows: u32,
    /// Processes with an entry.
    pub processes: usize,
    /// Tables built and stored.
    pub builds: u64,
    /// Tables that could not be built or stored.
    pub build_failures: u64,
    /// Tables evicted to make room.
    pub evictions: u64,
    /// Time spent building tables, failed builds included.
    pub build_time: Duration,
}

/// Room made for a table by [`TableStore::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// First row of the range.
    pub start: u32,
    /// Rows in the range.
    pub len: u32,
    /// Tables evicted to make the room.
    pub evicted: Vec<TableKey>,
    /// Processes that mapped an evicted table, sorted: their entries now
    /// say pending there and must be written before the new rows
    /// overwrite the old ones.
    pub affected: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    start: u32,
    len: u32,
    last_used: u64,
    ready: bool,
}

#[derive(Debug, Clone, Copy)]
struct ViewMapping {
    start: u64,
    end: u64,
    bias: u64,
    key: Option<TableKey>,
}

/// Tables in a row array of fixed capacity, and the process entries that
/// point into it.
///
/// A table is placed in one contiguous range of rows, the first free range
/// that fits (freed ranges merge with their neighbours). When none fits,
/// tables are evicted until one does: first those no process maps, then
/// those in use, each group least recently used first (a table is used
/// when a process that maps it is set and when it is stored). A process
/// that mapped an evicted table sees it pending until the process is set
/// again, which asks for it once more. A table larger than the whole
/// capacity is refused, as a [`Failure`].
///
/// Storing a table is three steps, so that the kernel never reads a range
/// through an entry it was not written for: [`reserve`](Self::reserve)
/// (write the affected processes' entries, now pending, then the rows),
/// then [`commit`](Self::commit) (write the entries of the processes that
/// map it), or [`fail`](Self::fail) if the rows could not be written.
///
/// ```
/// use rover_unwind::{ProcessMappings, TableStore};
///
/// let mut store = TableStore::new(1 << 20);
/// let mappings = ProcessMappings::read(std::process::id())?;
/// let entry = store.set_process(&mappings);
/// // Every table is pending until it is built and committed.
/// assert_eq!(entry.len(), mappings.mappings().len());
/// # Ok::<(), rover_unwind::ProcessError>(())
/// ```
#[derive(Debug)]
pub struct TableStore {
    capacity: u32,
    /// Free ranges `(start, len)`, sorted by start, never adjacent.
    free: Vec<(u32, u32)>,
    tables: HashMap<TableKey, Slot>,
    failures: HashMap<TableKey, Failure>,
    processes: HashMap<u32, Vec<ViewMapping>>,
    /// How many process mappings use each table (absent: none).
    users: HashMap<TableKey, usize>,
    clock: u64,
    stats: StoreStats,
}

impl TableStore {
    /// An empty store of `capacity_rows` rows (at most [`MAX_CAPACITY`]).
    pub fn new(capacity_rows: u32) -> Self {
        let capacity = capacity_rows.min(MAX_CAPACITY);
        TableStore {
            capacity,
            free: if capacity > 0 {
                vec![(0, capacity)]
            } else {
                Vec::new()
            },
            tables: HashMap::new(),
            failures: HashMap::new(),
            processes: HashMap::new(),
            users: HashMap::new(),
            clock: 0,
            stats: StoreStats {
                capacity_rows: capacity,
                ..StoreStats::default()
            },
        }
    }

    /// Records a process's mappings (replacing what it had) and returns
    /// its entry. Its tables count as used now.
    pub fn set_process(&mut self, mappings: &ProcessMappings) -> Vec<MappingEntry> {
        let view: Vec<ViewMapping> = mappings
            .mappings()
            .iter()
            .map(|m| ViewMapping {
                start: m.start,
                end: m.end,
                bias: m.bias,
                key: m.key(),
            })
            .collect();
        self.clock += 1;
        for key in view.iter().filter_map(|m| m.key) {
            if let Some(slot) = self.tables.get_mut(&key) {
                slot.last_used = self.clock;
            }
        }
        for key in view.iter().filter_map(|m| m.key) {
            *self.users.entry(key).or_default() += 1;
        }
        if let Some(old) = self.processes.insert(mappings.pid(), view) {
            self.release_users(&old);
        }
        self.entry(mappings.pid()).unwrap_or_default()
    }

    /// Forgets a process; its tables stay until evicted. Whether it had an
    /// entry.
    pub fn remove_process(&mut self, pid: u32) -> bool {
        let Some(old) = self.processes.remove(&pid) else {
            return false;
        };
        self.release_users(&old);
        true
    }

    fn release_users(&mut self, view: &[ViewMapping]) {
        for key in view.iter().filter_map(|m| m.key) {
            if let Some(users) = self.users.get_mut(&key) {
                *users -= 1;
                if *users == 0 {
                    self.users.remove(&key);
                }
            }
        }
    }

    /// A process's entry as it stands, sorted by address.
    pub fn entry(&self, pid: u32) -> Option<Vec<MappingEntry>> {
        let view = self.processes.get(&pid)?;
        Some(
            view.iter()
                .map(|m| MappingEntry {
                    start: m.start,
                    end: m.end,
                    bias: m.bias,
                    table: m.key.map_or(TableRef::NoTable, |key| self.table_ref(&key)),
                })
                .collect(),
        )
    }

    fn table_ref(&self, key: &TableKey) -> TableRef {
        match self.tables.get(key) {
            Some(slot) if slot.ready => TableRef::Rows {
                start: slot.start,
                len: slot.len,
            },
            Some(_) => TableRef::Pending,
            None if self.failures.contains_key(key) => TableRef::NoTable,
            None => TableRef::Pending,
        }
    }

    /// Whether the table of `key` should be built: a process maps it, the
    /// store does not have it, and it has not failed.
    pub fn needs(&self, key: &TableKey) -> bool {
        !self.tables.contains_key(key)
            && !self.failures.contains_key(key)
            && self
                .processes
                .values()
                .flatten()
                .any(|m| m.key == Some(*key))
    }

    /// The processes that map the table of `key`, sorted.
    pub fn processes_mapping(&self, key: &TableKey) -> Vec<u32> {
        self.processes_mapping_any(&HashSet::from([*key]))
    }

    fn processes_mapping_any(&self, keys: &HashSet<TableKey>) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, view)| {
                view.iter()
                    .any(|m| m.key.is_some_and(|key| keys.contains(&key)))
            })
            .map(|(pid, _)| *pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The rows of a loaded table, `(start, len)`.
    pub fn range(&self, key: &TableKey) -> Option<(u32, u32)> {
        let slot = self.tables.get(key).filter(|slot| slot.ready)?;
        Some((slot.start, slot.len))
    }

    /// Makes room for a table of `rows` rows, evicting as the type's
    /// documentation says; the table counts as pending until
    /// [`commit`](Self::commit). Refused (with the reason) for a table
    /// with no rows, more rows than the capacity, or already stored.
    pub fn reserve(&mut self, key: TableKey, rows: usize) -> Result<Reservation, String> {
        if self.tables.contains_key(&key) {
            return Err("the table is already stored".into());
        }
        let len = match u32::try_from(rows) {
            Ok(0) => return Err("the table has no rows".into()),
            Ok(len) if len <= self.capacity => len,
            _ => {
                return Err(format!(
                    "the table has {rows} rows, more than the store's capacity of {} rows",
                    self.capacity
                ));
            }
        };
        let mut evicted = Vec::new();
        let start = match self.alloc(len) {
            Some(start) => start,
            None => {
                let mut victims: Vec<(bool, u64, TableKey)> = self
                    .tables
                    .iter()
                    .filter(|(_, slot)| slot.ready)
                    .map(|(key, slot)| (self.users.contains_key(key), slot.last_used, *key))
                    .collect();
                victims.sort_unstable();
                let mut found = None;
                for (_, _, victim) in victims {
                    if let Some(slot) = self.tables.remove(&victim) {
                        self.release(slot.start, slot.len);
                        self.stats.evictions += 1;
                        evicted.push(victim);
                    }
                    found = self.alloc(len);
                    if found.is_some() {
                        break;
                    }
                }
                // Only tables being written (none but this one, with one
                // builder) could still be in the way.
                found.ok_or_else(|| {
                    format!("no room for {len} rows even after evicting every loaded table")
                })?
            }
        };
        self.clock += 1;
        self.tables.insert(
            key,
            Slot {
                start,
                len,
                last_used: self.clock,
                ready: false,
            },
        );
        let affected = self.processes_mapping_any(&evicted.iter().copied().collect());
        Ok(Reservation {
            start,
            len,
            evicted,
            affected,
        })
    }

    /// Marks a reserved table loaded (its rows are written) and returns
    /// the processes that map it, whose entries now point at it.
    pub fn commit(&mut self, key: &TableKey, build_time: Duration) -> Vec<u32> {
        let Some(slot) = self.tables.get_mut(key) else {
            return Vec::new();
        };
        slot.ready = true;
        self.failures.remove(key);
        self.stats.builds += 1;
        self.stats.build_time += build_time;
        self.processes_mapping(key)
    }

    /// Records that the table of `key` (for `what`) could not be built or
    /// written, freeing its reservation if it had one, and returns the
    /// processes that map it: their entries now say there is no table.
    pub fn fail(
        &mut self,
        key: TableKey,
        what: &str,
        reason: String,
        build_time: Duration,
    ) -> Vec<u32> {
        if let Some(slot) = self.tables.remove(&key) {
            self.release(slot.start, slot.len);
        }
        if self.failures.len() >= FAILURES_KEPT && !self.failures.contains_key(&key) {
            let oldest = self.failures.iter().min_by_key(|(_, f)| f.seq);
            if let Some(oldest) = oldest.map(|(key, _)| *key) {
                self.failures.remove(&oldest);
            }
        }
        self.clock += 1;
        self.failures.insert(
            key,
            Failure {
                what: what.to_owned(),
                reason,
                seq: self.clock,
            },
        );
        self.stats.build_failures += 1;
        self.stats.build_time += build_time;
        self.processes_mapping(&key)
    }

    /// Why the table of `key` failed, if it did (the most recent
    /// failures are kept).
    pub fn failure(&self, key: &TableKey) -> Option<&Failure> {
        self.failures.get(key)
    }

    /// The failures kept, by key.
    pub fn failures(&self) -> impl Iterator<Item = (&TableKey, &Failure)> {
        self.failures.iter()
    }

    /// The counters.
    pub fn stats(&self) -> StoreStats {
        let rows_used: u64 = self.tables.values().map(|slot| u64::from(slot.len)).sum();
        StoreStats {
            tables: self.tables.len(),
            rows_used,
            bytes: rows_used * Row::SIZE as u64,
            processes: self.processes.len(),
            ..self.stats.clone()
        }
    }

    /// First fit.
    fn alloc(&mut self, len: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, free)| free >= len)?;
        let (start, free) = self.free[i];
        if free == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, free - len);
        }
        Some(start)
    }

    /// Returns a range to the free list, merged with its neighbours.
    fn release(&mut self, start: u32, len: u32) {
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, len));
        if i + 1 < self.free.len() && start + len == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == start {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> TableKey {
        TableKey::Vdso { hash: n, size: n }
    }

    fn put(store: &mut TableStore, n: u64, rows: usize) -> Reservation {
        let reservation = store.reserve(key(n), rows).unwrap();
        store.commit(&key(n), Duration::ZERO);
        reservation
    }

    #[test]
    fn first_fit_and_merging_free_ranges() {
        let mut store = TableStore::new(100);
        assert_eq!(put(&mut store, 1, 30).start, 0);
        assert_eq!(put(&mut store, 2, 30).start, 30);
        assert_eq!(put(&mut store, 3, 30).start, 60);
        assert_eq!(store.stats().rows_used, 90);
        store.fail(key(2), "two", "gone".into(), Duration::ZERO);
        store.fail(key(1), "one", "gone".into(), Duration::ZERO);
        assert_eq!(store.free, vec![(0, 60), (90, 10)]);
        // 50 rows fit in the merged hole, first.
        assert_eq!(put(&mut store, 4, 50).start, 0);
        store.fail(key(3), "three", "gone".into(), Duration::ZERO);
        assert_eq!(store.free, vec![(50, 50)]);
        store.fail(key(4), "four", "gone".into(), Duration::ZERO);
        assert_eq!(store.free, vec![(0, 100)]);
        assert_eq!(store.stats().build_failures, 4);
    }

    #[test]
    fn evicts_least_recently_used_and_refuses_what_cannot_fit() {
        let mut store = TableStore::new(100);
        put(&mut store, 1, 40);
        put(&mut store, 2, 40);
        let reservation = put(&mut store, 3, 30);
        assert_eq!((reservation.start, reservation.evicted), (0, vec![key(1)]));
        // 2 (older) goes before 3, and is enough once its range merges.
        let reservation = put(&mut store, 4, 45);
        assert_eq!((reservation.start, reservation.evicted), (30, vec![key(2)]));
        assert_eq!(store.stats().evictions, 2);
        assert!(store.reserve(key(5), 101).unwrap_err().contains("capacity"));
        assert!(store.reserve(key(5), 0).is_err());
        assert!(store.reserve(key(3), 1).unwrap_err().contains("already"));
        assert_eq!(store.range(&key(3)), Some((0, 30)));
        assert_eq!(store.range(&key(4)), Some((30, 45)));
    }

    #[test]
    fn tables_in_use_are_evicted_last() {
        let mut store = TableStore::new(100);
        put(&mut store, 1, 50);
        // A process maps 1, the older table: 2 goes first, and the
        // process's entry is untouched.
        let mapping = crate::process::tests::mapping(0x1000, 0x2000, Some(key(1)));
        let entry = store.set_process(&ProcessMappings::new(7, vec![mapping]));
        assert_eq!(entry[0].table, TableRef::Rows { start: 0, len: 50 });
        put(&mut store, 2, 50);
        let reservation = put(&mut store, 3, 50);
        assert_eq!(reservation.evicted, vec![key(2)]);
        assert!(reservation.affected.is_empty());
        let reservation = store.reserve(key(4), 60).unwrap();
        assert_eq!(reservation.evicted, vec![key(3), key(1)]);
        assert_eq!(reservation.affected, vec![7]);
        assert_eq!(store.entry(7).unwrap()[0].table, TableRef::Pending);
        assert!(store.needs(&key(1)));
        // Two mappings of it, then none: no longer needed.
        let twice = vec![
            crate::process::tests::mapping(0x1000, 0x2000, Some(key(1))),
            crate::process::tests::mapping(0x3000, 0x4000, Some(key(1))),
        ];
        store.set_process(&ProcessMappings::new(7, twice));
        assert!(store.needs(&key(1)));
        assert!(store.remove_process(7));
        assert!(!store.needs(&key(1)));
        assert!(!store.remove_process(7));
        assert!(store.users.is_empty());
    }

    #[test]
    fn an_empty_store_refuses_everything() {
        let mut store = TableStore::new(0);
        assert!(store.reserve(key(1), 1).is_err());
        assert_eq!(
            TableStore::new(u32::MAX).stats().capacity_rows,
            MAX_CAPACITY
        );
    }
}
