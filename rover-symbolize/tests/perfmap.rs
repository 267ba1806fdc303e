//! Behaviour of `rover_symbolize::perfmap`: fixture files, the reloading
//! cache, and a real JIT (Node.js) writing its perf map.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rover_symbolize::Error;
use rover_symbolize::perfmap::{PerfMap, PerfMapCache, PerfMapSymbol, perf_map_path};

const FIXTURE: &str = "\
1000 100 LazyCompile:~main /app/index.js:1
0x2000 0x40 Builtin: ArgumentsAdaptorTrampoline
3000 10 name with  two  spaces and a tab\there
this line is garbage
4000 zz bad size
zz00 10 bad start
5000 10

6000 0 zero sized
7000 100 first version
7000 100 second version
8000 100 outer
8040 10 inner re-emitted
ffffffffffffff00 200 overflows the address space
-100 10 negative
";

fn sym(name: &str, start: u64, size: u64) -> Option<PerfMapSymbol<'_>> {
    Some(PerfMapSymbol { name, start, size })
}

#[test]
fn fixture_lines_good_garbage_and_overlaps() {
    let map = PerfMap::parse(FIXTURE);
    assert_eq!(
        map.skipped_lines(),
        6,
        "garbage, bad size/start, no name, overflow, negative"
    );
    assert_eq!(
        map.find(0x1000),
        sym("LazyCompile:~main /app/index.js:1", 0x1000, 0x100)
    );
    assert_eq!(
        map.find(0x10ff),
        sym("LazyCompile:~main /app/index.js:1", 0x1000, 0x100)
    );
    assert_eq!(map.find(0x1100), None);
    assert_eq!(map.find(0xfff), None);
    assert_eq!(
        map.find(0x2020),
        sym("Builtin: ArgumentsAdaptorTrampoline", 0x2000, 0x40)
    );
    assert_eq!(
        map.find(0x3000),
        sym("name with  two  spaces and a tab\there", 0x3000, 0x10)
    );
    assert_eq!(map.find(0x6000), None);
    // Re-emitted: the later line wins.
    assert_eq!(map.find(0x7080), sym("second version", 0x7000, 0x100));
    // Partly overwritten: the later line wins where it lies, the earlier
    // one keeps the rest.
    assert_eq!(map.find(0x803f), sym("outer", 0x8000, 0x100));
    assert_eq!(map.find(0x8040), sym("inner re-emitted", 0x8040, 0x10));
    assert_eq!(map.find(0x804f), sym("inner re-emitted", 0x8040, 0x10));
    assert_eq!(map.find(0x8050), sym("outer", 0x8000, 0x100));
    assert_eq!(map.find(0x80ff), sym("outer", 0x8000, 0x100));
    assert_eq!(map.find(0x8100), None);
    assert_eq!(map.find(u64::MAX), None);
    // "first version" is fully overridden.
    assert_eq!(map.len(), 6);
    assert!(!map.is_empty());
}

#[test]
fn earlier_line_inside_later_one_is_hidden() {
    let map = PerfMap::parse("8040 10 inner\n8000 100 outer re-emitted\n");
    assert_eq!(map.find(0x8045), sym("outer re-emitted", 0x8000, 0x100));
    assert_eq!(map.len(), 1);
    assert!(PerfMap::parse("").is_empty());
    assert!(PerfMap::parse("\n\n").is_empty());
}

#[test]
fn load_reads_a_file_and_reports_a_missing_one() {
    let dir = std::env::temp_dir().join(format!("rover-perfmap-load-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("perf-1.map");
    let mut bytes = FIXTURE.as_bytes().to_vec();
    bytes.extend_from_slice(b"9000 10 not utf8 \xff\xfe\n");
    fs::write(&path, &bytes).unwrap();
    let map = PerfMap::load(&path).unwrap();
    assert_eq!(map.skipped_lines(), 6);
    assert_eq!(map.find(0x9000).unwrap().name, "not utf8 \u{fffd}\u{fffd}");

    let missing = dir.join("perf-2.map");
    match PerfMap::load(&missing) {
        Err(Error::PerfMap { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Removes this process's perf map however the test ends.
struct OwnPerfMap(PathBuf);

impl Drop for OwnPerfMap {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn cache_reloads_when_the_file_changes() {
    let pid = std::process::id();
    let path = perf_map_path(pid).unwrap();
    assert_eq!(
        path,
        PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{pid}.map"))
    );
    let own = OwnPerfMap(PathBuf::from(format!("/tmp/perf-{pid}.map")));
    let cache = PerfMapCache::new();
    assert!(cache.get(pid).is_none(), "no perf map yet");

    fs::write(&own.0, "1000 10 one\n").unwrap();
    let first = cache.get(pid).unwrap();
    assert_eq!(first.find(0x1000).unwrap().name, "one");
    assert!(
        Arc::ptr_eq(&first, &cache.get(pid).unwrap()),
        "unchanged: cached"
    );
    assert_eq!(cache.len(), 1);

    // Appended: the size changes.
    fs::write(&own.0, "1000 10 one\n2000 10 two\n").unwrap();
    let second = cache.get(pid).unwrap();
    assert_eq!(second.find(0x2000).unwrap().name, "two");

    // Replaced by a file of the same size (as a JIT's rename would): the
    // inode changes even if the modification time does not.
    let tmp = own.0.with_extension("new");
    fs::write(&tmp, "1000 10 uno\n2000 10 dos\n").unwrap();
    fs::rename(&tmp, &own.0).unwrap();
    let third = cache.get(pid).unwrap();
    assert_eq!(third.find(0x1000).unwrap().name, "uno");
    assert!(Arc::ptr_eq(&third, &cache.get(pid).unwrap()));

    // Rewritten in place, longer: not an append, read again whole.
    fs::write(&own.0, "1000 10 eins\n2000 10 zwei\n").unwrap();
    let fourth = cache.get(pid).unwrap();
    assert_eq!(fourth.find(0x1000).unwrap().name, "eins");
    assert_eq!(fourth.find(0x2000).unwrap().name, "zwei");

    // Appended by a JIT mid-line: the partial line waits for its newline.
    let append = |text: &str| {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(&own.0).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append("3000 10 thr");
    let partial = cache.get(pid).unwrap();
    assert_eq!(partial.find(0x3000), None);
    assert!(
        Arc::ptr_eq(&partial, &fourth),
        "taken as an append with nothing complete to add, not re-read"
    );
    assert_eq!(partial.find(0x2000).unwrap().name, "zwei");
    append("ee\n4000 10 four\n1000 8 re-emitted\n");
    let grown = cache.get(pid).unwrap();
    assert_eq!(grown.find(0x3000), sym("three", 0x3000, 0x10));
    assert_eq!(grown.find(0x4000).unwrap().name, "four");
    assert_eq!(grown.find(0x1007), sym("re-emitted", 0x1000, 8));
    assert_eq!(grown.find(0x1008), sym("eins", 0x1000, 0x10));
    // The same answers as reading the whole file.
    let whole = PerfMap::load(&own.0).unwrap();
    for addr in 0xf00..0x4100 {
        assert_eq!(grown.find(addr), whole.find(addr), "{addr:#x}");
    }
    assert_eq!(grown.len(), whole.len());

    assert_eq!(cache.forget_exited(), 0, "this process is alive");
    cache.forget(pid);
    assert!(cache.is_empty());
    assert_eq!(cache.get(pid).unwrap().find(0x2000).unwrap().name, "zwei");

    fs::remove_file(&own.0).unwrap();
    assert!(cache.get(pid).is_none(), "file gone");
    assert!(cache.is_empty(), "and forgotten");
}

#[test]
fn missing_process_has_no_perf_map() {
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(matches!(
        perf_map_path(pid_max + 1),
        Err(Error::NoSuchProcess { .. })
    ));
    assert!(PerfMapCache::new().get(pid_max + 1).is_none());
}

#[test]
fn cache_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PerfMapCache>();
    check::<PerfMap>();
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
fn containerised_process_perf_map_is_found_through_its_root() {
    // A shell as pid 1 of its own pid namespace, with a private /tmp, writes
    // /tmp/perf-1.map as a containerised JIT would.
    let script = "mount -t tmpfs rover-test /tmp && \
                  echo '1000 20 JS:containerised' > /tmp/perf-$$.map && \
                  echo ready && exec sleep 30";
    let test = "containerised_process_perf_map_is_found_through_its_root";
    if !testkit::require(
        test,
        testkit::is_root(),
        "creating pid and mount namespaces needs root",
    ) {
        return;
    }
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(child) = child else {
        testkit::skip(test, testkit::not_installed("unshare"));
        return;
    };
    let mut child = Reaped(child);
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    if ready.trim() != "ready" {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        panic!("the namespaced shell failed: {stderr}");
    }
    let children = format!("/proc/{0}/task/{0}/children", child.0.id());
    let inner: u32 = fs::read_to_string(children)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let path = perf_map_path(inner).unwrap();
    assert_eq!(
        path,
        PathBuf::from(format!("/proc/{inner}/root/tmp/perf-1.map"))
    );
    let map = PerfMapCache::new()
        .get(inner)
        .expect("perf map inside the namespace");
    assert_eq!(map.find(0x1010), sym("JS:containerised", 0x1000, 0x20));
    // The host's /tmp never had it under either pid.
    assert!(!PathBuf::from(format!("/tmp/perf-{inner}.map")).exists());
    let host = fs::read_to_string("/tmp/perf-1.map").unwrap_or_default();
    assert!(!host.contains("JS:containerised"));
    let _ = Command::new("kill").arg(inner.to_string()).status();
}

#[test]
fn node_jit_perf_map_names_a_hot_function() {
    let script = "function roverBusyLoop(n) { let s = 0; for (let i = 0; i < n; i++) { s += i % 7; } return s; }\n\
                  const end = Date.now() + 1500; let t = 0;\n\
                  while (Date.now() < end) { t += roverBusyLoop(100000); }\n\
                  console.log(t > 0 ? 'done' : 'never');";
    // Node writes isolate-*.log files into its working directory.
    let cwd = std::env::temp_dir().join(format!("rover-perfmap-node-{}", std::process::id()));
    fs::create_dir_all(&cwd).unwrap();
    let child = Command::new("node")
        .args(["--perf-basic-prof", "-e", script])
        .current_dir(&cwd)
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        testkit::skip(
            "node_jit_perf_map_names_a_hot_function",
            testkit::not_installed("node"),
        );
        return;
    };
    let pid = child.id();
    let file = OwnPerfMap(PathBuf::from(format!("/tmp/perf-{pid}.map")));

    // Look while it runs, through /proc/PID/root, as a profiler would.
    let cache = PerfMapCache::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let live = loop {
        let found = cache.get(pid).and_then(|map| {
            let (start, name) = fs::read_to_string(&file.0)
                .ok()?
                .lines()
                .filter_map(|l| {
                    let mut f = l.splitn(3, ' ');
                    let start = u64::from_str_radix(f.next()?, 16).ok()?;
                    let _size = f.next()?;
                    Some((start, f.next()?.to_owned()))
                })
                .find(|(_, name)| name.contains("roverBusyLoop"))?;
            let sym = map.find(start)?;
            Some((sym.start, sym.name.to_owned(), name, map.len()))
        });
        if let Some(found) = found {
            break Some(found);
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "{status:?}");
    // Reaped: its map leaves the cache with it.
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.forget_exited(), 1);
    assert!(cache.is_empty());
    let (start, name, line_name, len) = live.expect("roverBusyLoop in node's perf map");
    eprintln!("node perf map: {len} symbols; {start:#x} -> {name}");
    assert!(name.contains("roverBusyLoop"), "{name} ({line_name})");

    let map = PerfMap::load(&file.0).unwrap();
    assert_eq!(map.skipped_lines(), 0);
    assert!(map.len() >= len);
    fs::remove_dir_all(&cwd).unwrap();
}

proptest! {
    // Failures print their minimal case; nothing is written into the tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*", probe in any::<u64>()) {
        let map = PerfMap::parse(&text);
        if let Some(sym) = map.find(probe) {
            prop_assert!(sym.start <= probe && probe - sym.start < sym.size);
        }
    }

    #[test]
    fn arbitrary_fields_never_panic(lines in proptest::collection::vec(
        "(0x)?[0-9a-fA-F]{0,17} (0x)?[0-9a-f]{0,4} .{0,10}", 0..50), probe in 0u64..0x10000) {
        let map = PerfMap::parse(&lines.join("\n"));
        if let Some(sym) = map.find(probe) {
            prop_assert!(sym.start <= probe && probe - sym.start < sym.size);
        }
    }

    /// Appending lines to a map gives what parsing all the text gives.
    #[test]
    fn extending_equals_parsing_everything(
        first in proptest::collection::vec((0u64..0x400, 0u64..0x80), 0..30),
        second in proptest::collection::vec((0u64..0x400, 0u64..0x80), 0..30),
        garbage in "[ -~]{0,8}",
    ) {
        let text = |lines: &[(u64, u64)], tag: &str| -> String {
            lines.iter().enumerate().map(|(i, (start, size))| format!("{start:x} {size:x} {tag}{i}\n")).collect()
        };
        let (a, b) = (text(&first, "a"), format!("{}{garbage}\n", text(&second, "b")));
        let whole = PerfMap::parse(&format!("{a}{b}"));
        let mut extended = PerfMap::parse(&a);
        extended.extend(&b);
        prop_assert_eq!(whole.len(), extended.len());
        prop_assert_eq!(whole.skipped_lines(), extended.skipped_lines());
        for addr in 0..0x500u64 {
            prop_assert_eq!(whole.find(addr), extended.find(addr), "addr {:#x}", addr);
        }
    }

    /// Appending lines that overlap nothing (the quick path) also gives what
    /// parsing all the text gives.
    #[test]
    fn extending_with_disjoint_lines_equals_parsing_everything(
        ranges in proptest::collection::btree_map(0u64..64, (1u64..0x100, any::<bool>()), 0..40),
    ) {
        let (mut a, mut b) = (String::new(), String::new());
        for (slot, (size, second)) in &ranges {
            let line = format!("{:x} {size:x} fn{slot}\n", slot * 0x100);
            if *second { b.push_str(&line) } else { a.push_str(&line) }
        }
        let whole = PerfMap::parse(&format!("{a}{b}"));
        let mut extended = PerfMap::parse(&a);
        extended.extend(&b);
        prop_assert_eq!(whole.len(), extended.len());
        for addr in 0..0x4100u64 {
            prop_assert_eq!(whole.find(addr), extended.find(addr), "addr {:#x}", addr);
        }
    }

    /// Against a model: the last line covering an address names it.
    #[test]
    fn later_lines_win_like_a_painter(
        lines in proptest::collection::vec((0u64..0x400, 1u64..0x80, any::<bool>()), 1..40),
    ) {
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, (start, size, prefixed))| {
                if *prefixed {
                    format!("0x{start:x} 0x{size:x} sym {i}\n")
                } else {
                    format!("{start:x} {size:x} sym {i}\n")
                }
            })
            .collect();
        let map = PerfMap::parse(&text);
        prop_assert_eq!(map.skipped_lines(), 0);
        for addr in 0..0x500u64 {
            let want = lines
                .iter()
                .enumerate()
                .rev()
                .find(|(_, (start, size, _))| *start <= addr && addr < start + size)
                .map(|(i, (start, size, _))| (format!("sym {i}"), *start, *size));
            let got = map.find(addr).map(|s| (s.name.to_owned(), s.start, s.size));
            prop_assert_eq!(got, want, "addr {:#x}", addr);
        }
    }
}

#[test]
fn agrees_with_perf_on_sampled_jit_addresses() {
    let test = "agrees_with_perf_on_sampled_jit_addresses";
    if !testkit::require_tool(test, "node") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rover-perfmap-perf-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let data = dir.join("perf.data");
    let data = data.to_str().unwrap();
    let script = "function roverBusyLoop(n) { let s = 0; for (let i = 0; i < n; i++) { s += i % 7; } return s; }\n\
                  const end = Date.now() + 1500; let t = 0;\n\
                  while (Date.now() < end) { t += roverBusyLoop(100000); }";
    let record = Command::new("perf")
        .args([
            "record",
            "-q",
            "-g",
            "-e",
            "cpu-clock",
            "-F",
            "1999",
            "-o",
            data,
            "--",
        ])
        .args(["node", "--perf-basic-prof", "-e", script])
        .current_dir(&dir)
        .output();
    let record = match record {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            testkit::skip(test, testkit::not_installed("perf"));
            return;
        }
        Err(e) => panic!("perf record: {e}"),
    };
    let stderr = String::from_utf8_lossy(&record.stderr);
    assert!(record.status.success(), "perf record: {stderr}");
    let samples = Command::new("perf")
        .args(["script", "-i", data, "-F", "pid,ip,sym,dso"])
        .output()
        .unwrap();
    assert!(samples.status.success());
    let samples = String::from_utf8(samples.stdout).unwrap();

    // Sample header lines carry the pid; callchain lines follow.
    let pid: u32 = samples
        .lines()
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
        .expect("a sample");
    let file = OwnPerfMap(PathBuf::from(format!("/tmp/perf-{pid}.map")));
    let map = PerfMap::load(&file.0).unwrap();

    // perf names from the perf map only addresses outside file mappings
    // (V8's builtins inside the node binary get its ELF symbols): compare
    // the samples it attributed to the map.
    let map_dso = format!(" ({})", file.0.display());
    let (mut compared, mut agreed, mut named_busy) = (0, 0, 0);
    for line in samples.lines() {
        let Some(line) = line.trim().strip_suffix(&map_dso) else {
            continue;
        };
        let (ip, sym) = line.split_once(' ').unwrap();
        let ip = u64::from_str_radix(ip, 16).unwrap();
        compared += 1;
        let found = map.find(ip);
        if found.is_some_and(|f| f.name == sym) {
            agreed += 1;
            named_busy += usize::from(sym.contains("roverBusyLoop"));
        } else if compared - agreed <= 10 {
            eprintln!("{ip:#x}: perf says {sym:?}, rover says {found:?}");
        }
    }
    let rate = agreed as f64 / compared.max(1) as f64;
    eprintln!(
        "JIT addresses agreeing with perf: {agreed}/{compared} ({:.2}%), {named_busy} in roverBusyLoop",
        rate * 100.0
    );
    assert!(named_busy > 0);
    assert!(compared >= 100, "too few JIT samples: {compared}");
    assert!(rate >= 0.99, "{rate}");
    fs::remove_dir_all(&dir).unwrap();
}
