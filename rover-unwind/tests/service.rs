//! The unwinder service against in-memory sinks standing in for the BPF
//! maps, with real processes: entries are written at once with tables
//! pending, rows land where the entries point and agree with
//! `UnwindTable`, tables are shared between processes, eviction rewrites
//! the entries that pointed at an evicted table before its rows are
//! overwritten, `refresh` picks up a `dlopen`ed library, dead processes
//! are removed.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Fixture, Running, symbol};
use rover_unwind::{
    Cfa, MappedCode, MappingEntry, Priority, ProcessError, ProcessMappings, ProcessSink, Rbp, Row,
    RowSink, TableKey, TableRef, Unwinder, UnwinderConfig, UnwinderError,
};

const WAIT: Duration = Duration::from_secs(30);

/// Entries as written, in order: `(tgid, mappings)`.
type History = Vec<(u32, Vec<MappingEntry>)>;

/// The kernel's two maps, in memory.
#[derive(Clone, Default)]
struct Kernel {
    rows: Arc<Mutex<Vec<Row>>>,
    entries: Arc<Mutex<HashMap<u32, Vec<MappingEntry>>>>,
    /// Every entry written, in order.
    history: Arc<Mutex<History>>,
    /// Row writes over a range that an entry pointed at when written.
    overwritten_in_use: Arc<Mutex<Vec<String>>>,
    refuse_rows: Arc<AtomicBool>,
    /// While true, row writes wait: the worker holds its build there.
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Kernel {
    fn new(capacity: u32) -> Kernel {
        let kernel = Kernel::default();
        *kernel.rows.lock().unwrap() =
            vec![Row::new(0, Cfa::None, Rbp::Unchanged); capacity as usize];
        kernel
    }

    fn unwinder(&self, capacity: u32) -> Unwinder {
        let config = UnwinderConfig::default().capacity_rows(capacity);
        Unwinder::new(config, self.clone(), Procs(self.clone())).unwrap()
    }

    fn set_gate(&self, closed: bool) {
        let (gate, opened) = &*self.gate;
        *gate.lock().unwrap() = closed;
        opened.notify_all();
    }

    /// Where in the history `pid`'s entry first had rows for `address`.
    fn landed(&self, pid: u32, address: u64) -> Option<usize> {
        self.history.lock().unwrap().iter().position(|(p, entry)| {
            *p == pid
                && entry.iter().any(|m| {
                    m.start <= address
                        && address < m.end
                        && matches!(m.table, TableRef::Rows { .. })
                })
        })
    }

    fn entry(&self, pid: u32) -> Option<Vec<MappingEntry>> {
        self.entries.lock().unwrap().get(&pid).cloned()
    }

    fn history_of(&self, pid: u32) -> Vec<Vec<MappingEntry>> {
        let history = self.history.lock().unwrap();
        history
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Every entry's rows are the table of the file it maps there, and
    /// the entries agree with the service's.
    fn check(&self, unwinder: &Unwinder) {
        assert!(
            self.overwritten_in_use.lock().unwrap().is_empty(),
            "rows written under live entries: {:?}",
            self.overwritten_in_use.lock().unwrap()
        );
        let entries = self.entries.lock().unwrap().clone();
        let rows = self.rows.lock().unwrap().clone();
        for (pid, entry) in entries {
            assert_eq!(unwinder.entry(pid).as_ref(), Some(&entry), "pid {pid}");
            assert!(entry.is_sorted_by_key(|m| m.start));
            let Ok(mappings) = ProcessMappings::read(pid) else {
                continue;
            };
            for mapping in &entry {
                let TableRef::Rows { start, len } = mapping.table else {
                    continue;
                };
                let live = mappings.find(mapping.start).unwrap();
                assert_eq!(live.bias, mapping.bias);
                let MappedCode::Table { image, .. } = &live.code else {
                    panic!("rows for a mapping without a table: {mapping:?}");
                };
                let table = image.build().unwrap();
                let stored = &rows[start as usize..(start + len) as usize];
                assert_eq!(stored, table.rows(), "pid {pid} {:?}", live.path);
            }
        }
    }
}

impl RowSink for Kernel {
    fn write(&mut self, start: u32, rows: &[Row]) -> Result<(), String> {
        if self.refuse_rows.load(Ordering::SeqCst) {
            return Err("refused by the test".into());
        }
        {
            let (closed, opened) = &*self.gate;
            let mut closed = closed.lock().unwrap();
            while *closed {
                closed = opened.wait(closed).unwrap();
            }
        }
        let end = start as usize + rows.len();
        for (pid, entry) in self.entries.lock().unwrap().iter() {
            for mapping in entry {
                if let TableRef::Rows { start: s, len } = mapping.table
                    && (s as usize) < end
                    && start < s + len
                {
                    self.overwritten_in_use
                        .lock()
                        .unwrap()
                        .push(format!("{start}..{end} under pid {pid}'s {mapping:?}"));
                }
            }
        }
        let mut array = self.rows.lock().unwrap();
        let slot = array
            .get_mut(start as usize..end)
            .ok_or_else(|| format!("{start}..{end} is past the array"))?;
        slot.copy_from_slice(rows);
        Ok(())
    }
}

struct Procs(Kernel);

impl ProcessSink for Procs {
    fn set(&mut self, tgid: u32, mappings: &[MappingEntry]) -> Result<(), String> {
        assert!(mappings.len() <= rover_unwind::MAX_MAPPINGS);
        self.0
            .entries
            .lock()
            .unwrap()
            .insert(tgid, mappings.to_vec());
        self.0
            .history
            .lock()
            .unwrap()
            .push((tgid, mappings.to_vec()));
        Ok(())
    }

    fn remove(&mut self, tgid: u32) -> Result<(), String> {
        self.0.entries.lock().unwrap().remove(&tgid);
        Ok(())
    }
}

fn table_of(entry: &[MappingEntry], address: u64) -> TableRef {
    entry
        .iter()
        .find(|m| m.start <= address && address < m.end)
        .unwrap_or_else(|| panic!("no mapping holds {address:#x}"))
        .table
}

/// The rows of every table a process maps, by key, built here.
fn table_rows(pid: u32) -> HashMap<TableKey, usize> {
    let mappings = ProcessMappings::read(pid).unwrap();
    let mut rows = HashMap::new();
    for mapping in mappings.mappings() {
        if let MappedCode::Table { key, image } = &mapping.code {
            rows.insert(*key, image.build().unwrap().rows().len());
        }
    }
    rows
}

struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Sleeper {
    sleeper_of(Path::new("sleep"))
}

/// `program 30` (a sleep), once it sleeps.
fn sleeper_of(program: &Path) -> Sleeper {
    // A copy this test process just wrote can be busy for a moment (see
    // common::Running::start).
    let mut tries = 0;
    let child = loop {
        match Command::new(program).arg("30").spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    let sleeper = Sleeper(child);
    // Until it sleeps: during the exec, its new address space holds only
    // what is mapped so far (and /proc/PID/exe names sleep already).
    let deadline = Instant::now() + WAIT;
    let pid = sleeper.0.id();
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let sleeping = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'));
        if sleeping && maps.contains("libc.so") {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sleeper
}

#[test]
fn entries_and_rows_agree_with_the_tables_shared_between_processes() {
    if !testkit::require_tool("entries_and_rows_agree", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let first = Running::start(&fixture.program);
    let second = Running::start(&fixture.program);
    let kernel = Kernel::new(1 << 20);
    let unwinder = kernel.unwinder(1 << 20);

    let report = unwinder.add_process(first.pid()).unwrap();
    let expected = table_rows(first.pid());
    assert!(
        expected.len() >= 4,
        "program, libc, ld.so, vDSO: {expected:?}"
    );
    assert_eq!(report.queued, expected.len());
    assert_eq!(report.ready, 0);
    // Written at once, every table pending.
    let written = &kernel.history_of(first.pid())[0];
    assert_eq!(written.len(), report.mappings);
    assert_eq!(table_of(written, first.main), TableRef::Pending);
    assert_eq!(table_of(written, first.getpid), TableRef::Pending);
    assert!(unwinder.wait_idle(WAIT));

    let entry = kernel.entry(first.pid()).unwrap();
    assert!(matches!(
        table_of(&entry, first.main),
        TableRef::Rows { .. }
    ));
    assert!(matches!(
        table_of(&entry, first.getpid),
        TableRef::Rows { .. }
    ));

    // The second process maps the same files: nothing to build, the same
    // rows.
    let report = unwinder.add_process(second.pid()).unwrap();
    assert_eq!((report.queued, report.pending), (0, 0));
    assert_eq!(report.ready, expected.len());
    let other = kernel.entry(second.pid()).unwrap();
    assert_eq!(
        table_of(&other, second.getpid),
        table_of(&entry, first.getpid)
    );
    assert_eq!(table_of(&other, second.main), table_of(&entry, first.main));

    let stats = unwinder.stats();
    let rows: usize = expected.values().sum();
    assert_eq!(stats.store.tables, expected.len());
    assert_eq!(stats.store.builds, expected.len() as u64);
    assert_eq!(stats.store.rows_used, rows as u64);
    assert_eq!(stats.store.bytes, rows as u64 * 16);
    assert_eq!(stats.store.processes, 2);
    assert_eq!(stats.store.build_failures, 0);
    assert_eq!(stats.queued, 0);
    assert!(stats.store.build_time > Duration::ZERO);
    kernel.check(&unwinder);
}

#[test]
fn eviction_rewrites_the_entries_that_pointed_at_the_table() {
    let test = "eviction_rewrites_the_entries";
    if !testkit::require_tool(test, "gcc") || !testkit::require_tool(test, "sleep") {
        return;
    }
    let fixture = Fixture::build();
    let mut first = Running::start(&fixture.program);
    // Room for exactly the first process's tables.
    let capacity: usize = table_rows(first.pid()).values().sum();
    let capacity = u32::try_from(capacity).unwrap();
    let kernel = Kernel::new(capacity);
    let unwinder = kernel.unwinder(capacity);
    unwinder.add_process(first.pid()).unwrap();
    assert!(unwinder.wait_idle(WAIT));
    let entry = kernel.entry(first.pid()).unwrap();
    assert!(matches!(
        table_of(&entry, first.main),
        TableRef::Rows { .. }
    ));
    assert_eq!(unwinder.stats().store.rows_used, u64::from(capacity));

    // sleep shares libc, ld.so and the vDSO, touched again; its own table
    // needs room, and the fixture's is the least recently used.
    let sleep = sleeper();
    let report = unwinder.add_process(sleep.0.id()).unwrap();
    assert_eq!(report.queued, 1, "only the sleep binary's table is new");
    assert!(unwinder.wait_idle(WAIT));
    let stats = unwinder.stats();
    assert!(stats.store.evictions >= 1, "{stats:?}");
    let entry = kernel.entry(first.pid()).unwrap();
    assert_eq!(table_of(&entry, first.main), TableRef::Pending);
    kernel.check(&unwinder);

    // Refreshing the first process asks for its table again.
    let report = unwinder.refresh(first.pid()).unwrap();
    assert!(report.queued >= 1);
    assert!(unwinder.wait_idle(WAIT));
    let entry = kernel.entry(first.pid()).unwrap();
    assert!(matches!(
        table_of(&entry, first.main),
        TableRef::Rows { .. }
    ));
    kernel.check(&unwinder);
    first.kill();
}

#[test]
fn a_table_larger_than_the_store_is_refused_and_walked_with_frame_pointers() {
    if !testkit::require_tool("a_table_larger_than_the_store", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let running = Running::start(&fixture.program);
    let kernel = Kernel::new(1000);
    let unwinder = kernel.unwinder(1000);
    unwinder.add_process(running.pid()).unwrap();
    assert!(unwinder.wait_idle(WAIT));
    let entry = kernel.entry(running.pid()).unwrap();
    // libc's table is tens of thousands of rows; the program's fits.
    assert_eq!(table_of(&entry, running.getpid), TableRef::NoTable);
    assert!(matches!(
        table_of(&entry, running.main),
        TableRef::Rows { .. }
    ));
    let failures = unwinder.failures();
    let libc = failures
        .iter()
        .find(|f| f.what.contains("libc.so"))
        .unwrap_or_else(|| panic!("no failure for libc: {failures:?}"));
    assert!(libc.reason.contains("capacity"), "{}", libc.reason);
    assert!(unwinder.stats().store.build_failures >= 1);
    kernel.check(&unwinder);

    // Not built again on a refresh: the failure is kept.
    let report = unwinder.refresh(running.pid()).unwrap();
    assert_eq!(report.queued, 0);
    assert!(report.no_table >= 1);
}

#[test]
fn a_row_sink_that_fails_leaves_no_table() {
    if !testkit::require_tool("a_row_sink_that_fails", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let running = Running::start(&fixture.program);
    let kernel = Kernel::new(1 << 20);
    kernel.refuse_rows.store(true, Ordering::SeqCst);
    let unwinder = kernel.unwinder(1 << 20);
    unwinder.add_process(running.pid()).unwrap();
    assert!(unwinder.wait_idle(WAIT));
    let entry = kernel.entry(running.pid()).unwrap();
    assert_eq!(table_of(&entry, running.main), TableRef::NoTable);
    let stats = unwinder.stats();
    assert_eq!(stats.store.tables, 0);
    assert!(stats.sink_errors >= 1);
    assert_eq!(
        stats.last_sink_error.as_deref(),
        Some("refused by the test")
    );
    assert!(
        unwinder
            .failures()
            .iter()
            .all(|f| f.reason.contains("row sink"))
    );
}

#[test]
fn refresh_after_dlopen_adds_the_library() {
    if !testkit::require_tool("refresh_after_dlopen", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let mut running = Running::start(&fixture.program);
    let kernel = Kernel::new(1 << 20);
    let unwinder = kernel.unwinder(1 << 20);
    let before = unwinder.add_process(running.pid()).unwrap();
    assert!(unwinder.wait_idle(WAIT));

    let function = running.dlopen(&fixture.library);
    let entry = kernel.entry(running.pid()).unwrap();
    assert!(
        !entry
            .iter()
            .any(|m| m.start <= function && function < m.end)
    );
    let report = unwinder.refresh(running.pid()).unwrap();
    assert!(report.mappings > before.mappings);
    assert_eq!(report.queued, 1, "only the library's table is new");
    assert!(unwinder.wait_idle(WAIT));

    let entry = kernel.entry(running.pid()).unwrap();
    let mapping = entry
        .iter()
        .find(|m| m.start <= function && function < m.end)
        .expect("the library's mapping");
    let vaddr = function.wrapping_sub(mapping.bias);
    assert_eq!(vaddr, symbol(&fixture.library, "fixture_lib_fn"));
    let TableRef::Rows { start, len } = mapping.table else {
        panic!("the library has no rows: {mapping:?}");
    };
    let rows = kernel.rows.lock().unwrap()[start as usize..(start + len) as usize].to_vec();
    let after = rows.partition_point(|r| r.pc() <= vaddr);
    assert!(after > 0 && rows[after - 1].cfa() != Cfa::None);
    kernel.check(&unwinder);
}

#[test]
fn removed_and_dead_processes() {
    if !testkit::require_tool("removed_and_dead_processes", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let first = Running::start(&fixture.program);
    let mut second = Running::start(&fixture.program);
    let kernel = Kernel::new(1 << 20);
    let unwinder = kernel.unwinder(1 << 20);
    unwinder.add_process(first.pid()).unwrap();
    unwinder.add_process(second.pid()).unwrap();
    assert!(unwinder.remove(first.pid()).unwrap());
    assert!(kernel.entry(first.pid()).is_none());
    assert!(!unwinder.remove(first.pid()).unwrap());

    // A process that died: refresh removes its entry and says why.
    let pid = second.pid();
    second.kill();
    match unwinder.refresh(pid) {
        Err(UnwinderError::Process(ProcessError::NoSuchProcess { pid: gone })) => {
            assert_eq!(gone, pid)
        }
        other => panic!("expected no such process, got {other:?}"),
    }
    assert!(kernel.entry(pid).is_none());
    assert!(unwinder.entry(pid).is_none());
    let written = kernel.history.lock().unwrap().len();
    assert!(unwinder.add_process(pid).is_err());
    assert_eq!(kernel.history.lock().unwrap().len(), written);

    // Builds of tables nobody maps any more are skipped, and dropping the
    // service with work queued stops its thread promptly.
    assert!(unwinder.wait_idle(WAIT));
    assert_eq!(unwinder.stats().store.processes, 0);
    let third = Running::start(&fixture.program);
    let fresh = Kernel::new(1 << 20);
    let busy = fresh.unwinder(1 << 20);
    busy.add_process(third.pid()).unwrap();
    let began = Instant::now();
    drop(busy);
    assert!(began.elapsed() < Duration::from_secs(5));
}

/// A second service given the same cache takes the tables the first built:
/// the rows it writes are the same, and nothing is parsed again.
#[test]
fn services_sharing_a_cache_build_each_table_once() {
    if !testkit::require_tool("services_sharing_a_cache", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let running = Running::start(&fixture.program);
    let cache = rover_unwind::TableCache::new(64 << 20);
    let expected = table_rows(running.pid());
    let mut written = Vec::new();
    for round in 0..2 {
        let kernel = Kernel::new(1 << 20);
        let config = UnwinderConfig::default()
            .capacity_rows(1 << 20)
            .cache(cache.clone());
        let unwinder = Unwinder::new(config, kernel.clone(), Procs(kernel.clone())).unwrap();
        unwinder.add_process(running.pid()).unwrap();
        assert!(unwinder.wait_idle(WAIT));
        kernel.check(&unwinder);
        let stats = cache.stats();
        assert_eq!(stats.tables, expected.len(), "round {round}: {stats:?}");
        assert_eq!(
            stats.misses,
            expected.len() as u64,
            "round {round}: {stats:?}"
        );
        assert_eq!(
            stats.hits,
            round * expected.len() as u64,
            "round {round}: {stats:?}"
        );
        let entry = kernel.entry(running.pid()).unwrap();
        let rows = kernel.rows.lock().unwrap().clone();
        written.push(
            entry
                .iter()
                .filter_map(|m| match m.table {
                    TableRef::Rows { start, len } => {
                        Some(rows[start as usize..(start + len) as usize].to_vec())
                    }
                    _ => None,
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(written[0], written[1]);
}

/// The start of the executable mapping of `path` in `pid`.
fn code_of(pid: u32, path: &Path) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|line| line.contains(" r-xp ") && line.ends_with(&*path.to_string_lossy()))
        .unwrap_or_else(|| panic!("{} is not mapped in {pid}:\n{maps}", path.display()));
    let start = line.split('-').next().unwrap();
    u64::from_str_radix(start, 16).unwrap()
}

/// An urgent process's builds go before those queued so far, its tables
/// queued for others included: the worker is held at the row sink while
/// four copies of `sleep` (a table each) queue in the background, then a
/// fixture is added urgently; its program's table lands before the
/// copies' (but the first, which may be the build held at the gate).
#[test]
fn urgent_builds_go_before_those_queued() {
    let kernel = Kernel::new(1 << 20);
    kernel.set_gate(true);
    let unwinder = kernel.unwinder(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let sleep = which("sleep");
    let copies: Vec<_> = (0..4)
        .map(|i| {
            let path = dir.path().join(format!("sleep{i}"));
            std::fs::copy(&sleep, &path).unwrap();
            path
        })
        .collect();
    let sleepers: Vec<Sleeper> = copies.iter().map(|path| sleeper_of(path)).collect();
    for sleeper in &sleepers {
        unwinder.add_process(sleeper.0.id()).unwrap();
    }
    let fixture = Fixture::build();
    let urgent = Running::start(&fixture.program);
    let report = unwinder
        .add_process_with(urgent.pid(), Priority::Urgent)
        .unwrap();
    assert!(report.queued >= 1, "{report:?}");
    kernel.set_gate(false);
    assert!(unwinder.wait_idle(WAIT));
    let urgent_landed = kernel
        .landed(urgent.pid(), urgent.main)
        .expect("the urgent program's table never landed");
    for (sleeper, path) in sleepers.iter().zip(&copies).skip(1) {
        let pid = sleeper.0.id();
        let landed = kernel
            .landed(pid, code_of(pid, path))
            .unwrap_or_else(|| panic!("{}'s table never landed", path.display()));
        assert!(
            urgent_landed < landed,
            "the urgent program's table landed at {urgent_landed}, after {}'s at {landed}",
            path.display()
        );
    }
    kernel.check(&unwinder);
}

/// The path of `program` on PATH.
fn which(program: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}
