//! Behaviour of the `Symbolizer` through its public API: levels of detail,
//! demangling, symbol sizes, debug-file discovery (build id, debug link,
//! `.debug/`, configured directories, CRC check), cache bounds and eviction,
//! sharing across threads, and kernel symbols.

mod bpf_symbol;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use rover_symbolize::{Level, Origin, Reason, Source, Symbolized, Symbolizer};

fn nm_sizes(bin: &Path) -> Vec<(u64, u64, String)> {
    run(Command::new("nm").args(["-S", "--defined-only"]).arg(bin))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && matches!(f[2], "t" | "T")).then(|| {
                (
                    u64::from_str_radix(f[0], 16).unwrap(),
                    u64::from_str_radix(f[1], 16).unwrap(),
                    f[3].to_string(),
                )
            })
        })
        .collect()
}

fn addr_of(bin: &Path, name: &str) -> u64 {
    nm_sizes(bin)
        .into_iter()
        .find(|s| s.2 == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .0
}

fn sym(result: &Symbolized) -> &rover_symbolize::Sym {
    match result {
        Symbolized::Sym(sym) => sym,
        Symbolized::Unknown(u) => panic!("unresolved: {u:?}"),
    }
}

#[test]
fn symbolizer_is_send_sync_and_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Symbolizer>();
    let dir = tempdir();
    let bin = build(
        dir.path(),
        "gcc",
        "c",
        &c_source_with(60),
        "shared",
        &["-O2", "-g"],
    );
    let addrs = function_addrs(&bin);
    let source = Source::elf(bin.clone());
    let expected: std::collections::HashMap<u64, Symbolized> = addrs
        .iter()
        .copied()
        .zip(Symbolizer::default().symbolize(&source, &addrs).unwrap())
        .collect();
    let shared = Arc::new(Symbolizer::default());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let (source, mut addrs) = (source.clone(), addrs.clone());
            std::thread::spawn(move || {
                addrs.rotate_left(i * 7);
                let results = shared.symbolize(&source, &addrs).unwrap();
                (addrs, results)
            })
        })
        .collect();
    for t in threads {
        let (addrs, results) = t.join().unwrap();
        for (a, r) in addrs.iter().zip(results) {
            assert_eq!(r, expected[a]);
        }
    }
}

#[test]
fn levels_of_detail() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "levels", &["-O2", "-g"]);
    // Inside `nearest`'s loop, gcc inlines dist2() and sq().
    let inlined_addr = function_addrs(&bin)
        .into_iter()
        .find(|&a| {
            let r = &Symbolizer::default()
                .symbolize(&Source::elf(bin.clone()), &[a])
                .unwrap()[0];
            matches!(r, Symbolized::Sym(s) if !s.inlined.is_empty() && &*s.name == "nearest")
        })
        .expect("an address of nearest() in inlined code");
    let source = Source::elf(bin.clone());
    let at = |level| {
        Symbolizer::builder()
            .level(level)
            .build()
            .symbolize(&source, &[inlined_addr])
            .unwrap()
    };

    let table = at(Level::SymbolTable);
    assert_eq!(&*sym(&table[0]).name, "nearest");
    assert!(sym(&table[0]).location.is_none() && sym(&table[0]).inlined.is_empty());

    let names = at(Level::Names);
    assert_eq!(&*sym(&names[0]).name, "nearest");
    assert!(sym(&names[0]).location.is_none() && sym(&names[0]).inlined.is_empty());

    let lines = at(Level::Lines);
    let loc = sym(&lines[0])
        .location
        .clone()
        .expect("a line at Level::Lines");
    assert!(loc.file.ends_with("levels.c") && loc.line.is_some());
    assert!(sym(&lines[0]).inlined.is_empty());

    let inlined = at(Level::Inlined);
    let s = sym(&inlined[0]);
    let names: Vec<&str> = s.inlined.iter().map(|f| &*f.name).collect();
    assert!(names.contains(&"dist2"), "{names:?}");
    // Lines shows the innermost line-table row, which is the innermost
    // inlined frame's location at Level::Inlined.
    assert_eq!(s.inlined[0].location.as_ref(), Some(&loc));
}

#[test]
fn demangling_is_optional() {
    let dir = tempdir();
    let bin = build(dir.path(), "g++", "cpp", CPP_SOURCE, "dem", &["-O2", "-g"]);
    let addr = addr_of(&bin, "_Z7computei");
    let source = Source::elf(bin.clone());
    for level in [Level::SymbolTable, Level::Inlined] {
        let on = Symbolizer::builder()
            .level(level)
            .demangle(true)
            .build()
            .symbolize(&source, &[addr])
            .unwrap();
        let off = Symbolizer::builder()
            .level(level)
            .demangle(false)
            .build()
            .symbolize(&source, &[addr])
            .unwrap();
        assert_eq!(&*sym(&on[0]).name, "compute(int)");
        assert_eq!(&*sym(&off[0]).name, "_Z7computei");
    }
}

#[test]
fn symbol_sizes_are_honoured_and_zero_sizes_handled() {
    let dir = tempdir();
    let bin = build(
        dir.path(),
        "gcc",
        "c",
        &c_source_with(20),
        "sizes",
        &["-O2", "-g"],
    );
    let mut syms = nm_sizes(&bin);
    syms.sort();
    // A function followed by alignment padding: the byte after its end
    // belongs to no function.
    let (start, size, name) = syms
        .windows(2)
        .find(|w| w[0].1 > 0 && w[0].0 + w[0].1 < w[1].0)
        .map(|w| w[0].clone())
        .expect("a function followed by padding");
    let symbolizer = Symbolizer::builder().level(Level::SymbolTable).build();
    let results = symbolizer
        .symbolize(&Source::elf(bin.clone()), &[start + size - 1, start + size])
        .unwrap();
    assert_eq!(*sym(&results[0]).name, *name);
    match &results[1] {
        Symbolized::Unknown(u) => assert_eq!(u.reason, Reason::NoSymbols),
        Symbolized::Sym(s) => assert_ne!(*s.name, *name, "past the end of {name}"),
    }
    // `_init` has no size: it reaches to the end of its section (`.init`).
    let init = run(Command::new("nm").arg(&bin))
        .lines()
        .find(|l| l.ends_with(" _init"))
        .map(|l| u64::from_str_radix(l.split_whitespace().next().unwrap(), 16).unwrap())
        .expect("_init");
    let results = symbolizer
        .symbolize(&Source::elf(bin.clone()), &[init + 4])
        .unwrap();
    assert_eq!(&*sym(&results[0]).name, "_init");
}

/// A C file with a local (static) function and a global one.
const LOCAL_SOURCE: &str = r#"
__attribute__((noinline)) static int twice(volatile int x) { return 2 * x; }
__attribute__((noinline)) int thrice(volatile int x) { return 3 * x; }
int main(int argc, char **argv) { (void)argv; return twice(argc) + thrice(argc); }
"#;

#[test]
fn local_symbols_carry_their_source_file_without_dwarf() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", LOCAL_SOURCE, "local", &["-O2"]);
    let twice = nm_sizes(&bin)
        .into_iter()
        .find(|s| s.2.starts_with("twice"))
        .expect("static twice() in .symtab")
        .0;
    let thrice = addr_of(&bin, "thrice");
    let results = Symbolizer::builder()
        .level(Level::SymbolTable)
        .build()
        .symbolize(&Source::elf(bin.clone()), &[twice, thrice, twice + 1])
        .unwrap();
    // The `STT_FILE` symbol before a local one names its source file; a
    // global symbol has none.
    for r in [&results[0], &results[2]] {
        let loc = sym(r).location.as_ref().expect("a file for a local symbol");
        assert!(loc.file.ends_with("local.c"), "{loc:?}");
        assert!(loc.line.is_none());
    }
    assert_eq!(&*sym(&results[1]).name, "thrice");
    assert!(sym(&results[1]).location.is_none());
}

/// Builds a binary and its separate debug file; returns (full, stripped
/// without debug link, debug file).
fn split_debug(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let bin = build(
        dir,
        "gcc",
        "c",
        C_SOURCE,
        name,
        &["-O2", "-g", "-Wl,--build-id"],
    );
    let debug = dir.join(format!("{name}.dbg"));
    let stripped = dir.join(format!("{name}.stripped"));
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&debug));
    run(Command::new("objcopy")
        .arg("--strip-all")
        .arg(&bin)
        .arg(&stripped));
    (bin, stripped, debug)
}

fn build_id_hex(bin: &Path) -> String {
    let notes = run(Command::new("readelf").arg("-n").arg(bin));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build id")
        .to_string()
}

fn resolves_main_with_lines(symbolizer: &Symbolizer, stripped: &Path, full: &Path) -> bool {
    let r = symbolizer
        .symbolize(
            &Source::elf(stripped.to_path_buf()),
            &[addr_of(full, "main")],
        )
        .unwrap();
    matches!(&r[0], Symbolized::Sym(s) if &*s.name == "main" && s.location.as_ref().is_some_and(|l| l.line.is_some()))
}

#[test]
fn debug_file_by_build_id_in_a_configured_directory() {
    let dir = tempdir();
    let (full, stripped, debug) = split_debug(dir.path(), "bid");
    assert!(
        !resolves_main_with_lines(&Symbolizer::default(), &stripped, &full),
        "no debug info before"
    );
    let root = dir.path().join("debugroot");
    let id = build_id_hex(&full);
    let target = root
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&debug, &target).unwrap();
    let symbolizer = Symbolizer::builder().debug_dirs(vec![root]).build();
    assert!(resolves_main_with_lines(&symbolizer, &stripped, &full));
    let module = symbolizer.module_info(&stripped).unwrap();
    assert_eq!(module.debug_file, Some(target));
    assert_eq!(module.build_id.unwrap().to_string(), id);
}

#[test]
fn debug_link_in_dot_debug_and_under_debug_dir_with_crc_checked() {
    let dir = tempdir();
    let (full, stripped, debug) = split_debug(dir.path(), "link");
    run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&stripped));
    // Move the debug file away from the binary into `.debug/`.
    let dot_debug = dir.path().join(".debug");
    std::fs::create_dir_all(&dot_debug).unwrap();
    let moved = dot_debug.join("link.dbg");
    std::fs::rename(&debug, &moved).unwrap();
    assert!(resolves_main_with_lines(
        &Symbolizer::default(),
        &stripped,
        &full
    ));

    // Under a configured directory, at the binary's own path.
    let root = dir.path().join("root");
    let relative = dir.path().strip_prefix("/").unwrap();
    std::fs::create_dir_all(root.join(relative)).unwrap();
    std::fs::rename(&moved, root.join(relative).join("link.dbg")).unwrap();
    assert!(!resolves_main_with_lines(
        &Symbolizer::default(),
        &stripped,
        &full
    ));
    assert!(resolves_main_with_lines(
        &Symbolizer::builder().debug_dirs(vec![root.clone()]).build(),
        &stripped,
        &full
    ));

    // A file by that name whose CRC differs is not used.
    let other = build(
        dir.path(),
        "gcc",
        "c",
        &c_source_with(3),
        "other",
        &["-O2", "-g"],
    );
    let wrong = dir.path().join("link.dbg");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&other)
        .arg(&wrong));
    std::fs::remove_file(root.join(relative).join("link.dbg")).unwrap();
    assert!(!resolves_main_with_lines(
        &Symbolizer::default(),
        &stripped,
        &full
    ));
    assert_eq!(
        Symbolizer::default()
            .module_info(&stripped)
            .unwrap()
            .debug_file,
        None
    );
}

#[test]
fn cache_is_bounded_and_evictable() {
    let dir = tempdir();
    let bins: Vec<PathBuf> = (0..4)
        .map(|i| {
            build(
                dir.path(),
                "gcc",
                "c",
                &c_source_with(i + 1),
                &format!("m{i}"),
                &["-O2", "-g"],
            )
        })
        .collect();
    let symbolizer = Symbolizer::builder().max_open_files(2).build();
    for bin in &bins {
        symbolizer
            .symbolize(&Source::elf(bin.clone()), &[addr_of(bin, "main")])
            .unwrap();
        assert!(symbolizer.cached_modules() <= 2);
    }
    assert_eq!(symbolizer.cached_modules(), 2);
    assert!(symbolizer.evict_file(&bins[3]));
    assert_eq!(symbolizer.cached_modules(), 1);
    symbolizer.evict_all();
    assert_eq!(symbolizer.cached_modules(), 0);
    // Evicted modules load again on demand.
    let r = symbolizer
        .symbolize(&Source::elf(bins[0].clone()), &[addr_of(&bins[0], "main")])
        .unwrap();
    assert_eq!(&*sym(&r[0]).name, "main");

    let tiny = Symbolizer::builder().max_cache_bytes(1).build();
    for bin in &bins {
        tiny.symbolize(&Source::elf(bin.clone()), &[addr_of(bin, "main")])
            .unwrap();
        assert_eq!(
            tiny.cached_modules(),
            1,
            "only the module in use stays past the byte bound"
        );
    }
}

#[test]
fn same_file_through_two_paths_is_loaded_once() {
    let dir = tempdir();
    let bin = build(dir.path(), "gcc", "c", C_SOURCE, "once", &["-O2", "-g"]);
    let link = dir.path().join("hardlink");
    std::fs::hard_link(&bin, &link).unwrap();
    let copy = dir.path().join("copy");
    std::fs::copy(&bin, &copy).unwrap();
    let symbolizer = Symbolizer::default();
    for path in [&bin, &link, &copy] {
        symbolizer
            .symbolize(&Source::elf(path.clone()), &[addr_of(&bin, "main")])
            .unwrap();
    }
    assert_eq!(
        symbolizer.cached_modules(),
        1,
        "hard link by inode, copy by build id"
    );
}

#[test]
fn kernel_symbols() {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let schedule = kallsyms
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == "schedule" && matches!(f[1], "T" | "t"))
                .then(|| u64::from_str_radix(f[0], 16).unwrap())
        })
        .expect("schedule in kallsyms");
    let results = Symbolizer::default()
        .symbolize(&Source::kernel(), &[schedule + 1, 0x10])
        .unwrap();
    if schedule == 0 {
        println!("kallsyms addresses are hidden (kptr_restrict): checking the reason");
        assert!(
            matches!(&results[0], Symbolized::Unknown(u) if u.reason == Reason::KernelAddressesHidden)
        );
        testkit::skip(
            "kernel_symbols",
            "kptr_restrict hides kernel addresses from this user: only the reason was checked",
        );
        return;
    }
    let s = sym(&results[0]);
    assert_eq!(&*s.name, "schedule");
    assert_eq!(s.module.name(), rover_symbolize::KERNEL_MODULE);
    assert_eq!(s.origin, Origin::Kernel);
    assert_eq!(
        (s.address, s.vaddr, s.file_offset),
        (schedule + 1, None, None)
    );
    assert_eq!(s.sym_addr, schedule);
    assert!(
        matches!(&results[1], Symbolized::Unknown(u) if u.reason == Reason::NoSymbols && u.origin == Some(Origin::Kernel))
    );
}

#[test]
fn kernel_module_symbols_have_the_module_origin() {
    // Our own BPF program, a `[bpf]` symbol whether or not the kernel has
    // loadable modules (needs root; a loaded module stands in otherwise).
    let _program = bpf_symbol::load("rover_ksym").map_err(|error| {
        eprintln!("no BPF program of our own ({error}); a loaded module's symbols are needed");
    });
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    // A text symbol of a loaded module (BPF programs count, as `[bpf]`),
    // alone at its address so no other symbol can stand for it.
    let mut at_address: std::collections::HashMap<&str, usize> = Default::default();
    for l in kallsyms.lines() {
        *at_address
            .entry(l.split(' ').next().unwrap_or(""))
            .or_default() += 1;
    }
    let Some((addr, module)) = kallsyms.lines().find_map(|l| {
        let (symbol, module) = l.split_once('\t')?;
        let f: Vec<&str> = symbol.split_whitespace().collect();
        let addr = u64::from_str_radix(f.first()?, 16).ok()?;
        let alone = at_address.get(f[0]) == Some(&1);
        (f.len() == 3 && matches!(f[1], "T" | "t") && addr != 0 && alone)
            .then(|| (addr, module.trim()))
    }) else {
        testkit::skip(
            "kernel_module_symbols_have_the_module_origin",
            "no kernel module text symbols visible in /proc/kallsyms (no module loaded, and \
             the test's own BPF program could not be loaded or is not listed)",
        );
        return;
    };
    let results = Symbolizer::default()
        .symbolize(&Source::kernel(), &[addr])
        .unwrap();
    let s = sym(&results[0]);
    assert_eq!(s.origin, Origin::KernelModule, "{s:?}");
    assert_eq!(s.module.name(), module);
    assert_eq!(s.sym_addr, addr);
}

#[test]
fn symbol_version_suffixes_are_dropped() {
    let dir = tempdir();
    let script = dir.path().join("versions.map");
    std::fs::write(
        &script,
        "VER_1 { global: foo; local: *; };\nVER_2 { global: foo; } VER_1;\n",
    )
    .unwrap();
    let source = r#"
        __attribute__((noinline)) int foo_v1(int x) { return x * 3 + 1; }
        __attribute__((noinline)) int foo_v2(int x) { return x * 5 + 2; }
        __asm__(".symver foo_v1, foo@VER_1");
        __asm__(".symver foo_v2, foo@@VER_2");
    "#;
    let lib = build(
        dir.path(),
        "gcc",
        "c",
        source,
        "libver.so",
        &[
            "-O2",
            "-shared",
            "-fPIC",
            &format!("-Wl,--version-script={}", script.display()),
        ],
    );
    let symtab = run(Command::new("nm").arg(&lib));
    assert!(
        symtab.contains("foo@@VER_2") && symtab.contains("foo@VER_1"),
        "{symtab}"
    );
    let addr = |suffix: &str| {
        symtab
            .lines()
            .find(|l| l.ends_with(suffix))
            .map(|l| u64::from_str_radix(l.split_whitespace().next().unwrap(), 16).unwrap())
            .unwrap()
    };
    let symbolizer = Symbolizer::builder().level(Level::SymbolTable).build();
    let results = symbolizer
        .symbolize(
            &Source::elf(lib.clone()),
            &[addr(" foo@VER_1"), addr(" foo@@VER_2")],
        )
        .unwrap();
    for (result, plain) in results.iter().zip(["foo_v1", "foo_v2"]) {
        let name = &*sym(result).name;
        assert!(name == "foo" || name == plain, "{name}");
    }
    assert!(
        results.iter().any(|r| &*sym(r).name == "foo"),
        "the versioned name, without its version, names one"
    );
}

#[test]
fn names_level_agrees_with_the_outer_function_of_full_lookups() {
    let dir = tempdir();
    let fixtures = [
        build(
            dir.path(),
            "g++",
            "cpp",
            CPP_SOURCE,
            "names_cpp",
            &["-O2", "-g"],
        ),
        build(
            dir.path(),
            "rustc",
            "rs",
            RUST_SOURCE,
            "names_rs",
            &["-g", "-O", "--edition=2021"],
        ),
        build(
            dir.path(),
            "gcc",
            "c",
            &c_source_with(40),
            "names_c",
            &["-O2", "-g"],
        ),
    ];
    for bin in &fixtures {
        let addrs = function_addrs(bin);
        let source = Source::elf(bin.clone());
        let names = Symbolizer::builder()
            .level(Level::Names)
            .build()
            .symbolize(&source, &addrs)
            .unwrap();
        let full = Symbolizer::builder()
            .level(Level::Inlined)
            .build()
            .symbolize(&source, &addrs)
            .unwrap();
        let (mut compared, mut same) = (0, 0);
        for (n, f) in names.iter().zip(&full) {
            let (n, f) = (sym(n), sym(f));
            assert!(
                n.location.as_ref().is_none_or(|l| l.line.is_none()),
                "Names carries no lines"
            );
            assert!(n.inlined.is_empty());
            if f.inlined.is_empty() {
                compared += 1;
                same += usize::from(n.name == f.name);
            }
        }
        println!(
            "{}: Names agrees with Inlined on {same}/{compared} addresses outside inlined code",
            bin.display()
        );
        assert!(
            compared > 0 && same * 1000 >= compared * 995,
            "{same}/{compared}"
        );
    }
}
