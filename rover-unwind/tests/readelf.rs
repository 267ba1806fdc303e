//! Tables held against binutils: every row `readelf --debug-dump=frames-interp`
//! prints for a binary must be what the table says at that address. The
//! binaries are fixtures built here without frame pointers, with them, with
//! only `.debug_frame`, and Debian's own libc; then damaged and stripped
//! copies, which must give a clear error or a partial table, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rover_unwind::{Cfa, Error, Rbp, UnwindSource, UnwindTable};

const FIXTURE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) long leaf(long x) { volatile char buf[200]; memset((char *)buf, (int)x, sizeof buf); return buf[x % 200] + x; }
__attribute__((noinline)) long big_frame(long x) { volatile char buf[100000]; buf[x % 100000] = 1; return leaf(x) + buf[7]; }
__attribute__((noinline)) long mid(long x) { return big_frame(x) * 3 + leaf(x + 1); }
__attribute__((noinline)) long top(long x) { return mid(x) + mid(x * 2); }
int main(int argc, char **argv) { printf("%ld\n", top(argc)); return (int)strlen(argv[0]) == 0; }
"#;

/// Compiles the fixture with `flags` into `dir`.
fn build(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let source = dir.join(format!("{name}.c"));
    std::fs::write(&source, FIXTURE).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc is needed to build the fixtures");
    assert!(status.success(), "gcc {flags:?} failed");
    out
}

/// What readelf says holds at one address.
#[derive(Debug, Clone)]
struct Expected {
    cfa: String,
    rbp: Option<String>,
    rsp: Option<String>,
    ra: String,
    /// The FDE's CIE has the `S` augmentation: a signal trampoline.
    signal: bool,
}

/// Every `(address, expected)` readelf prints inside its FDE's range; an
/// FDE without rows of its own gets its CIE's initial row at its start.
fn readelf_rows(path: &Path) -> Vec<(u64, Expected)> {
    let output = Command::new("readelf")
        .arg("--debug-dump=frames-interp")
        .arg(path)
        .output()
        .expect("readelf (binutils) is needed");
    let text = String::from_utf8_lossy(&output.stdout);
    // readelf exits 1 on Debian's libc without saying why on stderr; what
    // matters is that it printed the section.
    assert!(
        text.contains("Contents of the .eh_frame section")
            || text.contains("Contents of the .debug_frame section"),
        "readelf printed no frames for {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut cies: HashMap<String, Expected> = HashMap::new();
    // Each CIE's augmentation string, as readelf quotes it.
    let mut augmentations: HashMap<String, String> = HashMap::new();
    let mut rows = Vec::new();
    // The entry being read: its CIE id (for a CIE) or its range and CIE.
    let mut cie: Option<String> = None;
    let mut fde: Option<(u64, u64, String, usize)> = None;
    let mut signal = false;
    let mut columns: Vec<String> = Vec::new();
    let finish = |fde: &mut Option<(u64, u64, String, usize)>,
                  rows: &mut Vec<(u64, Expected)>,
                  cies: &HashMap<String, Expected>| {
        if let Some((start, _, cie, 0)) = fde.take()
            && let Some(initial) = cies.get(&cie)
        {
            rows.push((start, initial.clone()));
        }
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 4 && (fields[3] == "CIE" || fields[3] == "FDE") {
            finish(&mut fde, &mut rows, &cies);
            cie = None;
            columns.clear();
            if fields[3] == "CIE" {
                cie = Some(fields[0].to_owned());
                signal = false;
                if let Some(augmentation) = fields.get(4) {
                    augmentations.insert(fields[0].to_owned(), augmentation.to_string());
                }
            } else {
                let cie_id = fields
                    .iter()
                    .find_map(|f| f.strip_prefix("cie="))
                    .unwrap()
                    .to_owned();
                let range = fields.iter().find_map(|f| f.strip_prefix("pc=")).unwrap();
                let (start, end) = range.split_once("..").unwrap();
                let start = u64::from_str_radix(start, 16).unwrap();
                let end = u64::from_str_radix(end, 16).unwrap();
                signal = augmentations
                    .get(&cie_id)
                    .is_some_and(|augmentation| augmentation.contains('S'));
                fde = Some((start, end, cie_id, 0));
            }
        } else if fields.first() == Some(&"LOC") {
            columns = fields.iter().map(|f| f.to_string()).collect();
        } else if fields.len() == columns.len() && !columns.is_empty() && fields[0].len() == 16 {
            let Ok(loc) = u64::from_str_radix(fields[0], 16) else {
                continue;
            };
            let get = |name: &str| {
                columns
                    .iter()
                    .position(|c| c == name)
                    .map(|i| fields[i].to_owned())
            };
            let expected = Expected {
                cfa: get("CFA").unwrap(),
                rbp: get("rbp"),
                rsp: get("rsp"),
                ra: get("ra").unwrap(),
                signal,
            };
            if let Some(id) = &cie {
                cies.entry(id.clone()).or_insert(expected);
            } else if let Some((start, end, _, seen)) = &mut fde {
                *seen += 1;
                if loc >= *start && loc < *end {
                    rows.push((loc, expected));
                }
            }
        }
    }
    finish(&mut fde, &mut rows, &cies);
    rows
}

/// Whether the table's row matches readelf's columns.
fn agrees(cfa: Cfa, rbp: Rbp, expected: &Expected) -> bool {
    // A signal trampoline: RIP, RSP and RBP are expressions (where they
    // are, in the ucontext, is checked against readelf's raw dump in
    // `signal_trampolines_are_the_kernels_layout`). Nothing else is a
    // signal row.
    if expected.signal {
        let exp = Some("exp");
        return cfa == Cfa::Signal
            && rbp == Rbp::Unchanged
            && (
                Some(expected.ra.as_str()),
                expected.rsp.as_deref(),
                expected.rbp.as_deref(),
            ) == (exp, exp, exp);
    }
    let cfa_ok = match (expected.ra.as_str(), expected.cfa.as_str()) {
        ("u", _) => cfa == Cfa::EndOfStack,
        ("c-8", "exp") => matches!(cfa, Cfa::Plt { .. } | Cfa::Unsupported),
        ("c-8", rule) => match rule.split_once('+') {
            Some(("rsp", n)) => cfa == Cfa::Rsp(n.parse().unwrap()),
            Some(("rbp", n)) => cfa == Cfa::Rbp(n.parse().unwrap()),
            _ => cfa == Cfa::Unsupported,
        },
        _ => cfa == Cfa::Unsupported,
    };
    let rbp_ok = match expected.rbp.as_deref() {
        None | Some("u") | Some("s") => rbp == Rbp::Unchanged,
        Some(rule) => match rule.strip_prefix('c') {
            Some(n) => rbp == Rbp::AtCfa(n.parse().unwrap()),
            None => rbp == Rbp::Unsupported,
        },
    };
    // A PLT row keeps no RBP rule (the stubs leave RBP alone).
    cfa_ok && (rbp_ok || matches!(cfa, Cfa::Plt { .. }))
}

/// Checks every row readelf prints; returns how many there were and the
/// kinds of CFA rule seen.
fn check_against_readelf(path: &Path) -> (usize, Vec<&'static str>) {
    let table = UnwindTable::from_path(path).unwrap();
    assert!(table.skipped().is_empty(), "{:?}", table.skipped());
    let expected = readelf_rows(path);
    assert!(
        !expected.is_empty(),
        "readelf printed no rows for {}",
        path.display()
    );
    let mut wrong = Vec::new();
    let mut kinds = Vec::new();
    for (address, expected) in &expected {
        let Some(row) = table.lookup(*address) else {
            wrong.push(format!("{address:#x}: no row, readelf {expected:?}"));
            continue;
        };
        let kind = match row.cfa() {
            Cfa::Rsp(_) => "rsp",
            Cfa::Rbp(_) => "rbp",
            Cfa::Plt { .. } => "plt",
            Cfa::EndOfStack => "end",
            Cfa::Unsupported => "unsupported",
            Cfa::Signal => "signal",
            Cfa::None => "none",
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
        if !agrees(row.cfa(), row.rbp(), expected) {
            wrong.push(format!("{address:#x}: {row:?}, readelf {expected:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: {} of {} rows disagree with readelf, e.g.\n{}",
        path.display(),
        wrong.len(),
        expected.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
    eprintln!(
        "{}: {} readelf rows agree; table {} rows, {} bytes; CFA kinds {kinds:?}",
        path.display(),
        expected.len(),
        table.rows().len(),
        table.size_bytes()
    );
    (expected.len(), kinds)
}

fn tools(test: &str) -> bool {
    testkit::require_tool(test, "gcc") && testkit::require_tool(test, "readelf")
}

#[test]
fn fixtures_agree_with_readelf() {
    if !tools("fixtures_agree_with_readelf") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let omitted = build(dir.path(), "omit", &["-O2", "-fomit-frame-pointer"]);
    let (_, kinds) = check_against_readelf(&omitted);
    assert!(
        kinds.contains(&"rsp") && kinds.contains(&"end"),
        "{kinds:?}"
    );
    // Its PLT is described by the linker's expression.
    assert!(kinds.contains(&"plt"), "{kinds:?}");
    let kept = build(dir.path(), "keep", &["-O0", "-fno-omit-frame-pointer"]);
    let (_, kinds) = check_against_readelf(&kept);
    assert!(kinds.contains(&"rbp"), "{kinds:?}");
    // The 100 000-byte frame needs more than an i16 offset.
    let table = UnwindTable::from_path(&omitted).unwrap();
    assert!(
        table
            .rows()
            .iter()
            .any(|row| matches!(row.cfa(), Cfa::Rsp(n) if n > 100_000)),
        "no row for big_frame's frame"
    );
    assert_eq!(table.source(), UnwindSource::EhFrame);
}

#[test]
fn debian_libc_agrees_with_readelf() {
    if !tools("debian_libc_agrees_with_readelf") {
        return;
    }
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    if !testkit::require(
        "debian_libc_agrees_with_readelf",
        libc.exists(),
        "no /lib/x86_64-linux-gnu/libc.so.6",
    ) {
        return;
    }
    let (rows, kinds) = check_against_readelf(libc);
    assert!(rows > 10_000, "only {rows} readelf rows in libc");
    // __restore_rt.
    assert!(kinds.contains(&"signal"), "{kinds:?}");
}

/// Every FDE of a CIE with the `S` augmentation in readelf's raw dump
/// (`--debug-dump=frames`): its range, and the `DW_OP_breg7 (rsp): N` of
/// each register's `DW_CFA_expression`.
fn signal_fdes(path: &Path) -> Vec<(u64, u64, HashMap<String, i64>)> {
    let output = Command::new("readelf")
        .arg("--debug-dump=frames")
        .arg(path)
        .output()
        .expect("readelf (binutils) is needed");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut signal_cies = Vec::new();
    let mut cie: Option<String> = None;
    let mut fdes = Vec::new();
    let mut current: Option<(u64, u64, HashMap<String, i64>)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 4 && (fields[3] == "CIE" || fields[3] == "FDE") {
            fdes.extend(current.take());
            cie = (fields[3] == "CIE").then(|| fields[0].to_owned());
            let of_signal_cie = fields
                .iter()
                .find_map(|f| f.strip_prefix("cie="))
                .is_some_and(|id| signal_cies.iter().any(|c| c == id));
            if of_signal_cie {
                let range = fields.iter().find_map(|f| f.strip_prefix("pc=")).unwrap();
                let (start, end) = range.split_once("..").unwrap();
                current = Some((
                    u64::from_str_radix(start, 16).unwrap(),
                    u64::from_str_radix(end, 16).unwrap(),
                    HashMap::new(),
                ));
            }
        } else if let (Some(id), Some(augmentation)) =
            (&cie, line.trim().strip_prefix("Augmentation:"))
        {
            if augmentation.contains('S') {
                signal_cies.push(id.clone());
            }
        } else if let (Some((_, _, registers)), Some(rule)) = (
            &mut current,
            line.trim().strip_prefix("DW_CFA_expression: "),
        ) {
            // "r16 (rip) (DW_OP_breg7 (rsp): 168)"
            let name = rule.split(['(', ')']).nth(1).unwrap().to_owned();
            if let Some(offset) = rule
                .strip_suffix(')')
                .and_then(|r| r.split_once("(DW_OP_breg7 (rsp): "))
                .and_then(|(_, n)| n.parse().ok())
            {
                registers.insert(name, offset);
            }
        }
    }
    fdes.extend(current);
    fdes
}

/// glibc's `__restore_rt` says where the interrupted registers are; they
/// must be where the walk reads them (`uc_mcontext` at RSP + 40: RBP in
/// slot 10, RSP in 15, RIP in 16), and its table rows must be signal rows.
#[test]
fn signal_trampolines_are_the_kernels_layout() {
    let test = "signal_trampolines_are_the_kernels_layout";
    if !tools(test) {
        return;
    }
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    if !testkit::require(test, libc.exists(), "no /lib/x86_64-linux-gnu/libc.so.6") {
        return;
    }
    let fdes = signal_fdes(libc);
    assert!(
        !fdes.is_empty(),
        "readelf shows no signal trampoline in libc"
    );
    let table = UnwindTable::from_path(libc).unwrap();
    for (start, end, registers) in &fdes {
        for (register, slot) in [("rbp", 10), ("rsp", 15), ("rip", 16)] {
            assert_eq!(
                registers.get(register),
                Some(&(40 + 8 * slot)),
                "{start:#x}: {registers:?}"
            );
        }
        for address in *start..*end {
            let row = table.lookup(address).map(|row| row.cfa());
            assert_eq!(row, Some(Cfa::Signal), "{address:#x}");
        }
    }
    let signal_rows = table
        .rows()
        .iter()
        .filter(|row| row.cfa() == Cfa::Signal)
        .count();
    assert_eq!(signal_rows, fdes.len(), "one signal row per trampoline");
}

#[test]
fn only_debug_frame() {
    if !tools("only_debug_frame") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = build(
        dir.path(),
        "debug_frame",
        &[
            "-O2",
            "-g",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
    );
    let table = UnwindTable::from_path(&path).unwrap();
    // The C runtime's start files still bring a few .eh_frame entries.
    assert_eq!(table.source(), UnwindSource::Both);
    let main = symbol(&path, "mid");
    let row = table.lookup(main).expect("a row for mid");
    assert_eq!(row.cfa(), Cfa::Rsp(8), "at mid's entry CFA = RSP + 8");
}

/// The address of `name` in the binary, from nm.
fn symbol(path: &Path, name: &str) -> u64 {
    let output = Command::new("nm")
        .arg(path)
        .output()
        .expect("nm (binutils)");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 3 && fields[2] == name)
                .then(|| u64::from_str_radix(fields[0], 16).unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in nm's output"))
}

#[test]
fn bad_input_is_an_error_or_a_partial_table() {
    if !tools("bad_input_is_an_error_or_a_partial_table") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), "bad", &["-O2", "-fomit-frame-pointer"]);
    let data = std::fs::read(&path).unwrap();
    let whole = UnwindTable::from_elf(&data).unwrap();

    // Not ELF.
    assert!(matches!(
        UnwindTable::from_elf(b"not an elf file"),
        Err(Error::Object(_))
    ));
    // A missing file names itself.
    let missing = UnwindTable::from_path(dir.path().join("missing")).unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");

    // Without .eh_frame (and no .debug_frame): a clear error.
    let stripped = dir.path().join("stripped");
    let status = Command::new("objcopy")
        .args([
            "--remove-section",
            ".eh_frame",
            "--remove-section",
            ".eh_frame_hdr",
        ])
        .arg(&path)
        .arg(&stripped)
        .status()
        .unwrap();
    assert!(status.success());
    let error = UnwindTable::from_path(&stripped).unwrap_err();
    assert!(matches!(error, Error::NoUnwindInfo), "{error}");
    assert!(error.to_string().contains(".eh_frame"), "{error}");

    // .eh_frame corrupted from its middle on, in every way a byte can be:
    // an error or a smaller table, never a panic.
    let (offset, size) = section_range(&path, ".eh_frame");
    for fill in [0x00u8, 0xff, 0x7f, 0x10] {
        let mut bad = data.clone();
        for byte in &mut bad[offset + size / 2..offset + size] {
            *byte = fill;
        }
        // The damage is never passed off as the whole table: it is an
        // error, listed as skipped, or the rows after it are gone.
        match UnwindTable::from_elf(&bad) {
            Ok(table) => assert!(
                !table.skipped().is_empty() || table.rows().len() < whole.rows().len(),
                "fill {fill:#x}: {} rows of {}, nothing skipped",
                table.rows().len(),
                whole.rows().len()
            ),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
    // And cut short: the section's bytes end early inside the file.
    let truncated = &data[..offset + size / 2];
    let _ = UnwindTable::from_elf(truncated).map(|t| t.rows().len());
}

/// The file offset and size of a section.
fn section_range(path: &Path, name: &str) -> (usize, usize) {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    use object::{Object, ObjectSection};
    let section = file.section_by_name(name).unwrap();
    let (offset, size) = section.file_range().unwrap();
    (offset as usize, size as usize)
}
