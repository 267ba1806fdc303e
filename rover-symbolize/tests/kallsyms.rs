//! Behaviour of `rover_symbolize::kallsyms` against the live
//! `/proc/kallsyms` and fixed samples.

mod bpf_symbol;

use std::time::Instant;

use proptest::prelude::*;
use rover_symbolize::Reason;
use rover_symbolize::kallsyms::{KernelSymbol, KernelSymbols};

fn real_text() -> String {
    std::fs::read_to_string("/proc/kallsyms").unwrap()
}

/// The address of the first line with this type and name, from the text.
fn address_of(text: &str, kind: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (addr, k, n) = (f.next()?, f.next()?, f.next()?);
        (k == kind && n == name).then(|| u64::from_str_radix(addr, 16).unwrap())
    })
}

/// Loads the live table, or says why the kernel hides its addresses.
fn live() -> Option<(String, KernelSymbols)> {
    let start = Instant::now();
    let kernel = KernelSymbols::load().unwrap();
    let load = start.elapsed();
    let start = Instant::now();
    let text = real_text();
    let read = start.elapsed();
    let start = Instant::now();
    // Lookups use the table of the very text they are checked against:
    // BPF programs come and go between two reads.
    let parsed = KernelSymbols::parse(&text);
    let parse = start.elapsed();
    // Timings are printed, not asserted: tests share the machine.
    eprintln!(
        "kallsyms: {} lines, {} text symbols, ~{} KiB; load {load:?} = kernel read ~{read:?} + parse ~{parse:?}",
        text.lines().count(),
        parsed.len(),
        (size_of::<KernelSymbols>() + kernel.heap_bytes()) / 1024
    );
    if kernel.addresses_hidden() {
        testkit::skip(
            &testkit::current_test(),
            "kptr_restrict hides kernel addresses from this user",
        );
        return None;
    }
    Some((text, parsed))
}

#[test]
fn live_kallsyms_resolves_schedule_mid_function() {
    let Some((text, kernel)) = live() else {
        return;
    };
    assert!(kernel.len() > 10_000, "{}", kernel.len());
    let schedule = address_of(&text, "T", "schedule").expect("schedule in kallsyms");
    for addr in [schedule, schedule + 1, schedule + 0x10] {
        assert_eq!(
            kernel.find(addr),
            Ok(KernelSymbol {
                name: "schedule",
                module: None,
                start: schedule
            }),
            "{addr:#x}"
        );
    }
    // Just before `schedule` is another function (or its __pfx_ padding).
    let before = kernel.find(schedule - 1).unwrap();
    assert_ne!(before.name, "schedule");
    assert!(before.start < schedule);
}

#[test]
fn live_kallsyms_ends_at_etext_and_outside_text() {
    let Some((text, kernel)) = live() else {
        return;
    };
    let etext = address_of(&text, "T", "_etext").expect("_etext in kallsyms");
    assert_eq!(kernel.find(etext + 1), Err(Reason::NoSymbols));
    assert_eq!(kernel.find(0), Err(Reason::NoSymbols));
    assert_eq!(kernel.find(0x7fff_0000_1000), Err(Reason::NoSymbols));
    let stext = address_of(&text, "T", "_stext").unwrap();
    let at_stext = kernel.find(stext).unwrap();
    assert_eq!(at_stext.start, stext);
    assert!(kernel.find(stext - 1).is_err());
}

#[test]
fn live_kallsyms_module_symbol() {
    // A BPF program is a `[bpf]` module symbol on every kernel with a JIT,
    // loaded modules or not; without root it cannot be loaded, and a
    // loaded module then stands in (or the test skips, below).
    let _program = bpf_symbol::load("rover_ksym").map_err(|error| {
        eprintln!("no BPF program of our own ({error}); a loaded module's symbols are needed");
    });
    let Some((text, kernel)) = live() else {
        return;
    };
    let module_line = text.lines().find_map(|line| {
        let (head, module) = line.split_once('\t')?;
        let mut f = head.split(' ');
        let (addr, kind, name) = (f.next()?, f.next()?, f.next()?);
        matches!(kind, "t" | "T").then(|| {
            (
                u64::from_str_radix(addr, 16).unwrap(),
                name.to_owned(),
                module.trim_matches(['[', ']']).to_owned(),
            )
        })
    });
    let Some((addr, name, module)) = module_line else {
        testkit::skip(
            "live_kallsyms_module_symbol",
            "no module text symbols in /proc/kallsyms (no loadable kernel module is loaded, \
             and the test's own BPF program could not be loaded or is not listed: \
             see net.core.bpf_jit_kallsyms)",
        );
        return;
    };
    let found = kernel.find(addr).unwrap();
    assert_eq!(found.module, Some(module.as_str()));
    assert_eq!(found.start, addr);
    // Another symbol may share the address; then the chosen one is also
    // listed there.
    let names_here: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{addr:016x} ")))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(names_here.contains(&found.name), "{name} / {found:?}");
    eprintln!("module symbol {addr:#x} -> {} [{}]", found.name, module);
}

#[test]
fn zeroed_addresses_are_reported_as_hidden() {
    let hidden: String = real_text()
        .lines()
        .map(|l| format!("0000000000000000{}\n", &l[16..]))
        .collect();
    let kernel = KernelSymbols::parse(&hidden);
    assert!(kernel.addresses_hidden());
    assert_eq!(
        kernel.find(0xffff_ffff_8100_0000),
        Err(Reason::KernelAddressesHidden)
    );
    assert_eq!(kernel.find(0), Err(Reason::KernelAddressesHidden));

    let real = KernelSymbols::parse(&real_text());
    assert!(!real.addresses_hidden());
}

const SAMPLE: &str = "\
ffffffff81000000 T _text
ffffffff81000000 t __pfx_startup
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff81000100 t helper
ffffffff81000180 D some_data
ffffffff81000200 W weak_fn
ffffffff81000200 t local_alias
ffffffff81000300 T _etext
ffffffff81000300 r rodata_start
ffffffff82000000 D data_after_text
garbage line
ffffffff8100zz00 T bad_address
ffffffff81000400 TT bad_type
ffffffff81000400 T
ffffffffc0001000 t mod_a_first\t[mod_a]
ffffffffc0001040 t mod_a_second\t[mod_a]
ffffffffc0001050 d mod_a_data\t[mod_a]
ffffffffc0002000 t bad_module\t[mod_b
ffffffffc0010000 T mod_c_only\t[mod_c]
ffffffffc0100000 t bpf_prog_1_fn\t[bpf]
";

#[test]
fn sample_symbols_and_boundaries() {
    let k = KernelSymbols::parse(SAMPLE);
    assert!(!k.addresses_hidden());
    let name = |addr: u64| k.find(addr).map(|s| (s.name, s.module, s.start));
    // Same address: global over local, fewer leading underscores.
    assert_eq!(
        name(0xffffffff81000000),
        Ok(("startup_64", None, 0xffffffff81000000))
    );
    assert_eq!(
        name(0xffffffff810000ff),
        Ok(("startup_64", None, 0xffffffff81000000))
    );
    assert_eq!(
        name(0xffffffff81000100),
        Ok(("helper", None, 0xffffffff81000100))
    );
    // Data symbols do not end the function before them.
    assert_eq!(
        name(0xffffffff810001f0),
        Ok(("helper", None, 0xffffffff81000100))
    );
    // Weak global over local.
    assert_eq!(
        name(0xffffffff81000250),
        Ok(("weak_fn", None, 0xffffffff81000200))
    );
    // _etext ends the kernel's text.
    assert_eq!(name(0xffffffff81000300), Err(Reason::NoSymbols));
    assert_eq!(name(0xffffffff81800000), Err(Reason::NoSymbols));
    assert_eq!(name(0xffffffff80ffffff), Err(Reason::NoSymbols));
    // Module symbols, up to the next symbol of the module.
    assert_eq!(
        name(0xffffffffc000103f),
        Ok(("mod_a_first", Some("mod_a"), 0xffffffffc0001000))
    );
    assert_eq!(
        name(0xffffffffc0001050),
        Ok(("mod_a_second", Some("mod_a"), 0xffffffffc0001040))
    );
    // Past the last symbol of a module: a plausible size only.
    assert_eq!(
        name(0xffffffffc0001fff),
        Ok(("mod_a_second", Some("mod_a"), 0xffffffffc0001040))
    );
    assert_eq!(
        name(0xffffffffc000503f),
        Ok(("mod_a_second", Some("mod_a"), 0xffffffffc0001040))
    );
    assert_eq!(name(0xffffffffc0005040), Err(Reason::NoSymbols));
    assert_eq!(
        name(0xffffffffc0010010),
        Ok(("mod_c_only", Some("mod_c"), 0xffffffffc0010000))
    );
    assert_eq!(
        name(0xffffffffc0100000),
        Ok(("bpf_prog_1_fn", Some("bpf"), 0xffffffffc0100000))
    );
    assert_eq!(name(u64::MAX), Err(Reason::NoSymbols));
    // Distinct text addresses; malformed, data and duplicate lines are not counted.
    assert_eq!(k.len(), 8);
    assert!(!k.is_empty());
}

#[test]
fn empty_and_garbage_input() {
    for text in [
        "",
        "\n\n",
        "nothing here\n",
        "zz T x\n",
        "ffffffff81000000 T a b\n",
    ] {
        let k = KernelSymbols::parse(text);
        assert!(k.is_empty(), "{text:?}");
        assert!(!k.addresses_hidden());
        assert_eq!(k.find(0xffffffff81000000), Err(Reason::NoSymbols));
    }
}

proptest! {
    // Failures print their minimal case; nothing is written into the tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let k = KernelSymbols::parse(&text);
        let _ = k.find(0);
        let _ = k.find(u64::MAX);
    }

    #[test]
    fn arbitrary_fields_never_panic(lines in proptest::collection::vec(
        "[0-9a-f]{0,17} [tTwWdDrRbBa-z]{0,2} [a-z_\\[\\]\t ]{0,12}", 0..40), probe in any::<u64>()) {
        let k = KernelSymbols::parse(&lines.join("\n"));
        if let Ok(sym) = k.find(probe) {
            prop_assert!(sym.start <= probe);
        }
    }

    #[test]
    fn generated_symbols_are_found(
        syms in proptest::collection::btree_map(1u64..u64::MAX / 2, ("[a-z][a-z0-9_]{0,20}", proptest::option::of("[a-z0-9_]{1,8}"), any::<bool>()), 1..50),
        delta in 0u64..16,
    ) {
        let text: String = syms
            .iter()
            .map(|(addr, (name, module, global))| {
                let kind = if *global { 'T' } else { 't' };
                match module {
                    Some(m) => format!("{addr:016x} {kind} {name}\t[{m}]\n"),
                    None => format!("{addr:016x} {kind} {name}\n"),
                }
            })
            .collect();
        let k = KernelSymbols::parse(&text);
        prop_assert_eq!(k.len(), syms.len());
        let entries: Vec<_> = syms.iter().collect();
        for (i, (addr, (name, module, _))) in entries.iter().enumerate() {
            let probe = **addr + delta;
            // Stay inside the symbol: before the next one.
            if entries.get(i + 1).is_some_and(|(next, _)| probe >= **next) {
                continue;
            }
            let found = k.find(probe).unwrap();
            prop_assert_eq!(found.name, name.as_str());
            prop_assert_eq!(found.module, module.as_deref());
            prop_assert_eq!(found.start, **addr);
        }
    }
}

#[test]
fn every_live_text_symbol_is_found_at_its_address() {
    let Some((text, kernel)) = live() else {
        return;
    };
    let mut names_at: std::collections::HashMap<u64, Vec<&str>> = Default::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if matches!(kind, "t" | "T" | "w" | "W") {
            names_at
                .entry(u64::from_str_radix(addr, 16).unwrap())
                .or_default()
                .push(name);
        }
    }
    assert_eq!(names_at.len(), kernel.len());
    for (&addr, names) in &names_at {
        match kernel.find(addr) {
            Ok(sym) => {
                assert_eq!(sym.start, addr);
                assert!(
                    names.contains(&sym.name),
                    "{addr:#x}: {} not in {names:?}",
                    sym.name
                );
            }
            Err(Reason::NoSymbols) => {
                assert!(
                    names.contains(&"_etext") || names.contains(&"_einittext"),
                    "{names:?}"
                );
            }
            Err(e) => panic!("{addr:#x}: {e}"),
        }
    }
}

/// Kills and reaps a child when the test ends, however it ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn live_bpf_program_symbol() {
    // A loaded BPF program appears in kallsyms as `bpf_prog_TAG_NAME [bpf]`.
    if !testkit::require(
        "live_bpf_program_symbol",
        testkit::is_root(),
        "loading a BPF program needs root",
    ) {
        return;
    }
    let bpftrace = std::process::Command::new("bpftrace")
        .args(["-e", "profile:hz:99 { @samples = count(); }"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(bpftrace) = bpftrace else {
        testkit::skip(
            "live_bpf_program_symbol",
            testkit::not_installed("bpftrace"),
        );
        return;
    };
    let mut bpftrace = Reaped(bpftrace);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    // Other BPF programs come and go on a shared machine: check against the
    // table of the same snapshot of kallsyms.
    let (text, addr) = loop {
        let text = real_text();
        let found = text.lines().find_map(|line| {
            let head = line.strip_suffix("\t[bpf]")?;
            let (addr, rest) = head.split_once(' ')?;
            rest.contains(" bpf_prog_")
                .then(|| u64::from_str_radix(addr, 16).ok())
                .flatten()
        });
        if let Some(addr) = found {
            break (text, addr);
        }
        if let Some(status) = bpftrace.0.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut bpftrace.0.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            panic!("bpftrace exited with {status}: {stderr}");
        }
        assert!(Instant::now() < deadline, "no [bpf] symbol appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let kernel = KernelSymbols::parse(&text);
    let sym = kernel.find(addr + 1).unwrap();
    assert_eq!(sym.module, Some("bpf"));
    assert_eq!(sym.start, addr);
    let (head, tail) = (format!("{addr:016x} "), format!(" {}\t[bpf]", sym.name));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&head) && l.ends_with(&tail)),
        "{}",
        sym.name
    );
    eprintln!("bpf symbol {:#x} -> {} [bpf]", addr + 1, sym.name);
}

/// Runs `perf record -g` (software cpu-clock) on a command and returns
/// `perf script -F ip,sym` lines, or `None` when perf is not installed.
fn perf_samples(dir: &std::path::Path, command: &[&str]) -> Option<String> {
    let data = dir.join("perf.data");
    let data = data.to_str().unwrap();
    let record = std::process::Command::new("perf")
        .args([
            "record",
            "-q",
            "-g",
            "-e",
            "cpu-clock",
            "-F",
            "4999",
            "-o",
            data,
            "--",
        ])
        .args(command)
        .output();
    let record = match record {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("perf record: {e}"),
    };
    assert!(
        record.status.success(),
        "perf record: {}",
        String::from_utf8_lossy(&record.stderr)
    );
    let script = std::process::Command::new("perf")
        .args(["script", "-i", data, "-F", "ip,sym"])
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "perf script: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    Some(String::from_utf8(script.stdout).unwrap())
}

#[test]
fn agrees_with_perf_on_sampled_kernel_addresses() {
    let dir = std::env::temp_dir().join(format!("rover-kallsyms-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Kernel-heavy work: many read/write system calls and page faults.
    let dd = [
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=4k",
        "count=300000",
    ];
    let Some(samples) = perf_samples(&dir, &dd) else {
        testkit::skip(
            "agrees_with_perf_on_sampled_kernel_addresses",
            testkit::not_installed("perf"),
        );
        return;
    };
    std::fs::remove_dir_all(&dir).unwrap();
    let Some((text, kernel)) = live() else {
        return;
    };
    let mut aliases: std::collections::HashMap<u64, Vec<&str>> = Default::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some(addr), Some(_), Some(name)) = (f.next(), f.next(), f.next()) {
            aliases
                .entry(u64::from_str_radix(addr, 16).unwrap())
                .or_default()
                .push(name);
        }
    }

    let (mut compared, mut agreed, mut perf_unknown) = (0, 0, 0);
    for line in samples.lines() {
        let Some((ip, sym)) = line.trim().split_once(' ') else {
            continue;
        };
        let Ok(ip) = u64::from_str_radix(ip, 16) else {
            continue;
        };
        if ip < 0xffff_8000_0000_0000 {
            continue;
        }
        if sym == "[unknown]" {
            perf_unknown += 1;
            continue;
        }
        compared += 1;
        match kernel.find(ip) {
            Ok(found) if aliases[&found.start].contains(&sym) => agreed += 1,
            other => {
                if compared - agreed <= 10 {
                    eprintln!("{ip:#x}: perf says {sym}, rover says {other:?}");
                }
            }
        }
    }
    let rate = agreed as f64 / compared.max(1) as f64;
    eprintln!(
        "kernel addresses agreeing with perf: {agreed}/{compared} ({:.2}%), perf unknown: {perf_unknown}",
        rate * 100.0
    );
    assert!(compared >= 100, "too few kernel samples: {compared}");
    assert!(rate >= 0.99, "{rate}");
}
