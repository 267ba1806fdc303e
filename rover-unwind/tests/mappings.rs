//! A live process's executable mappings: each file's bias takes a live
//! address back to its symbol's value in the file, where its table has a
//! row; the vDSO's table is built from its bytes in memory; a deleted
//! binary is still read through `map_files`; a dead process is an error.

mod common;

use std::path::Path;

use common::{Fixture, Running, symbol};
use rover_symbolize::FileIdentity;
use rover_symbolize::maps::MapPath;
use rover_unwind::{
    ExecMapping, MappedCode, NoTable, ProcessError, ProcessMappings, TableKey, UnwindTable,
};

fn file_of(mapping: &ExecMapping) -> &Path {
    match &mapping.path {
        MapPath::File(path) | MapPath::Deleted(path) => path,
        other => panic!("not a file mapping: {other:?}"),
    }
}

/// The mapping holding `address`: a file mapping with a table whose bias
/// takes `address` to `name`'s value in the file, where the table has a
/// row. Returns the table.
fn check_address(
    mappings: &ProcessMappings,
    address: u64,
    name: &str,
    file: Option<&Path>,
) -> UnwindTable {
    let mapping = mappings
        .find(address)
        .unwrap_or_else(|| panic!("no executable mapping holds {name} at {address:#x}"));
    let MappedCode::Table { key, image } = &mapping.code else {
        panic!("{name}'s mapping has no table: {:?}", mapping.code);
    };
    let path = file.unwrap_or_else(|| file_of(mapping));
    let vaddr = address.wrapping_sub(mapping.bias);
    assert_eq!(
        vaddr,
        symbol(path, name),
        "{name} at {address:#x} in {}, bias {:#x}",
        path.display(),
        mapping.bias
    );
    if file.is_none() {
        let identity = FileIdentity::from_metadata(&std::fs::metadata(path).unwrap());
        assert_eq!(*key, TableKey::File(identity), "{}", path.display());
    }
    let table = image.build().unwrap();
    let row = table
        .lookup(vaddr)
        .unwrap_or_else(|| panic!("no row for {name} at {vaddr:#x}"));
    assert!(row.pc() <= vaddr);
    table
}

#[test]
fn a_live_processs_biases_and_tables() {
    if !testkit::require_tool("a_live_processs_biases_and_tables", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let running = Running::start(&fixture.program);
    let mappings = ProcessMappings::read(running.pid()).unwrap();
    assert_eq!(mappings.pid(), running.pid());
    assert_eq!(mappings.dropped(), 0);
    assert!(mappings.mappings().is_sorted_by_key(|m| m.start));
    assert!(mappings.mappings().iter().all(|m| m.start < m.end));

    check_address(&mappings, running.main, "main", None);
    let program = mappings.find(running.main).unwrap();
    assert_eq!(file_of(program), fixture.program);
    check_address(&mappings, running.getpid, "getpid", None);
    let libc = file_of(mappings.find(running.getpid).unwrap());
    assert!(
        libc.to_string_lossy().contains("libc.so"),
        "{}",
        libc.display()
    );

    // Linked at a fixed address: no bias, though the text's file offset
    // is not its address.
    let fixed = Running::start(&fixture.fixed);
    let fixed_mappings = ProcessMappings::read(fixed.pid()).unwrap();
    check_address(&fixed_mappings, fixed.main, "main", None);
    assert_eq!(fixed_mappings.find(fixed.main).unwrap().bias, 0);

    // The vDSO: a table from its bytes, keyed by their hash, and its
    // functions' addresses map into it through the bias.
    let vdso = mappings
        .mappings()
        .iter()
        .find(|m| m.path == MapPath::Vdso)
        .expect("a [vdso] mapping");
    let MappedCode::Table { key, image } = &vdso.code else {
        panic!("the vDSO has no table: {:?}", vdso.code);
    };
    assert!(matches!(key, TableKey::Vdso { size, .. } if *size == vdso.end - vdso.start));
    let table = image.build().unwrap();
    let clock_gettime = {
        use object::{Object, ObjectSymbol};
        let file = object::File::parse(image.bytes()).unwrap();
        file.dynamic_symbols()
            .find(|s| s.name() == Ok("__vdso_clock_gettime"))
            .map(|s| s.address())
            .expect("the vDSO exports __vdso_clock_gettime")
    };
    let live = clock_gettime.wrapping_add(vdso.bias);
    assert!(vdso.start <= live && live < vdso.end);
    assert!(table.lookup(clock_gettime).is_some());
    // The same boot's vDSO, read in another process, has the same key.
    let again = ProcessMappings::read(std::process::id()).unwrap();
    let ours = again.mappings().iter().find(|m| m.path == MapPath::Vdso);
    assert_eq!(ours.and_then(ExecMapping::key), Some(*key));

    // [vsyscall], where the kernel has it executable, has no table.
    for mapping in mappings.mappings() {
        if let MapPath::Special(name) = &mapping.path {
            assert_eq!(mapping.code_kind(), Some(NoTable::Special(name.clone())));
        }
    }
}

trait CodeKind {
    fn code_kind(&self) -> Option<NoTable>;
}

impl CodeKind for ExecMapping {
    fn code_kind(&self) -> Option<NoTable> {
        match &self.code {
            MappedCode::NoTable(why) => Some(why.clone()),
            MappedCode::Table { .. } => None,
        }
    }
}

#[test]
fn a_deleted_binary_is_read_through_map_files() {
    let test = "a_deleted_binary_is_read_through_map_files";
    // /proc/PID/map_files needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE).
    if !testkit::require_tool(test, "gcc") || !testkit::require_root(test) {
        return;
    }
    let fixture = Fixture::build();
    let copy = fixture.dir.path().join("doomed");
    std::fs::copy(&fixture.program, &copy).unwrap();
    let running = Running::start(&copy);
    std::fs::remove_file(&copy).unwrap();
    let mappings = ProcessMappings::read(running.pid()).unwrap();
    let program = mappings.find(running.main).unwrap();
    assert_eq!(program.path, MapPath::Deleted(copy.clone()));
    // Its symbols are the original's: same bytes.
    check_address(&mappings, running.main, "main", Some(&fixture.program));
}

#[test]
fn a_dead_process_is_an_error() {
    if !testkit::require_tool("a_dead_process_is_an_error", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    let mut running = Running::start(&fixture.program);
    let pid = running.pid();
    running.kill();
    match ProcessMappings::read(pid) {
        Err(ProcessError::NoSuchProcess { pid: gone }) => assert_eq!(gone, pid),
        other => panic!("expected no such process, got {other:?}"),
    }
}

#[test]
fn a_process_that_exits_while_read_gives_an_error_or_its_mappings() {
    // Read while the process is exiting: either outcome is fine, a panic
    // or a half-read entry claiming tables it cannot have is not.
    if !testkit::require_tool("a_process_that_exits", "gcc") {
        return;
    }
    let fixture = Fixture::build();
    for _ in 0..20 {
        let mut running = Running::start(&fixture.program);
        let pid = running.pid();
        let reader = std::thread::spawn(move || ProcessMappings::read(pid));
        running.kill();
        match reader.join().unwrap() {
            Ok(mappings) => assert!(mappings.mappings().len() <= rover_unwind::MAX_MAPPINGS),
            Err(ProcessError::NoSuchProcess { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
}

/// The executable mappings `/proc/PID/maps` lists, and how many of them
/// are files or the vDSO.
fn executable_in_maps(pid: u32) -> (usize, usize) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let executable: Vec<Vec<&str>> = maps
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.get(1).is_some_and(|p| p.contains('x')))
        .collect();
    let images = executable
        .iter()
        .filter(|f| {
            f.get(5)
                .is_some_and(|p| p.starts_with('/') || *p == "[vdso]")
        })
        .count();
    (executable.len(), images)
}

#[test]
fn past_128_mappings_jit_pages_go_first_and_neighbours_merge() {
    if !testkit::require_tool("past_128_mappings", "gcc") {
        return;
    }
    let fixture = Fixture::build();

    // 200 JIT pages apart: the smallest mappings without a table are
    // dropped; every file keeps its table.
    let mut running = Running::start(&fixture.program);
    running.exec_pages(200, true);
    let (total, images) = executable_in_maps(running.pid());
    assert!(total > 200 && images >= 4, "{total} {images}");
    let mappings = ProcessMappings::read(running.pid()).unwrap();
    assert_eq!(mappings.mappings().len(), rover_unwind::MAX_MAPPINGS);
    assert_eq!(mappings.dropped(), total - rover_unwind::MAX_MAPPINGS);
    let with_table = mappings.mappings().iter().filter(|m| m.key().is_some());
    assert_eq!(with_table.count(), images);
    check_address(&mappings, running.main, "main", None);
    check_address(&mappings, running.getpid, "getpid", None);
    drop(running);

    // 200 neighbouring JIT mappings: merged into one, nothing dropped.
    let mut running = Running::start(&fixture.program);
    let first_adjacent = running.exec_pages(200, false);
    let (total, _) = executable_in_maps(running.pid());
    let mappings = ProcessMappings::read(running.pid()).unwrap();
    assert_eq!(mappings.dropped(), 0);
    assert_eq!(mappings.mappings().len(), total - 199);
    let merged = mappings.find(first_adjacent).unwrap();
    assert_eq!(merged.code_kind(), Some(NoTable::Anonymous));
    assert_eq!(merged.start, first_adjacent);
    assert_eq!(merged.end - merged.start, 200 * 4096);
}
