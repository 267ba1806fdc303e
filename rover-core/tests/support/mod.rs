//! Shared pieces of the kernel tests: the lock that keeps BPF-loading tests
//! apart, fixtures compiled with gcc at test time, and symbol ranges.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use object::{Object, ObjectSegment, ObjectSymbol};
use rover_core::Error;
use rover_core::loader::Environment;

static KERNEL: Mutex<()> = Mutex::new(());

/// Serialises the tests that load programs (they count fds and programs),
/// or returns `None` where eBPF cannot run at all, having said why (a
/// failure instead when `CI` is set: see `testkit`).
pub fn kernel(test: &str) -> Option<MutexGuard<'static, ()>> {
    match Environment::check() {
        Ok(_) => Some(KERNEL.lock().unwrap_or_else(|poison| poison.into_inner())),
        Err(error @ Error::Privileges { .. }) => {
            testkit::skip(test, error);
            None
        }
        Err(error) => panic!("environment check failed: {error}"),
    }
}

/// The output of a child test binary run with `--exact NAME --ignored
/// --nocapture`, printed, once it passed its one test (or fails with what it
/// printed).
#[allow(dead_code, reason = "only the tests that run a child use it")]
pub fn child_passed(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    stdout
}

/// A program compiled at test time into a fresh folder: with frame
/// pointers ([`Fixture::build`]) or, as most production binaries are,
/// without ([`Fixture::build_without_frame_pointers`]).
pub struct Fixture {
    pub path: PathBuf,
    /// The shared library the program links with, if it has one.
    pub library: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// The language of a fixture's sources, hence its compiler.
#[allow(dead_code, reason = "only the unwinder tests build C++")]
#[derive(Clone, Copy, Debug)]
pub enum Language {
    /// Compiled with gcc.
    C,
    /// Compiled with g++.
    Cxx,
}

impl Language {
    fn compiler(self) -> &'static str {
        match self {
            Language::C => "gcc",
            Language::Cxx => "g++",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cxx => "cpp",
        }
    }
}

/// The flags of a fixture built like a distribution's binaries: optimised,
/// no frame pointers. Sibling calls and inlining are off so that every
/// level of the fixture's call chain really has a frame on the stack (the
/// fixtures also mark their levels `noipa` and work after each call).
#[allow(dead_code, reason = "only the unwinder tests use it")]
pub const NO_FRAME_POINTERS: &[&str] = &[
    "-O2",
    "-g",
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-fno-inline",
];

/// The flags of the same build with frame pointers, the control: a
/// frame-pointer walk follows every level of such a program.
#[allow(dead_code, reason = "only the unwinder tests use it")]
pub const WITH_FRAME_POINTERS: &[&str] = &[
    "-O2",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-fno-inline",
];

fn compile(compiler: &str, flags: &[&str], out: &Path, inputs: &[&Path], after: &[&str]) {
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(out)
        .args(inputs)
        .args(after)
        .status()
        .unwrap_or_else(|e| panic!("{compiler} is needed to build the test fixtures: {e}"));
    assert!(
        status.success(),
        "{compiler} failed to build {}",
        out.display()
    );
}

impl Fixture {
    pub fn build(name: &str, source: &str) -> Fixture {
        // A folder of its own: tests running at once build fixtures of the
        // same name.
        let dir = tempfile::Builder::new()
            .prefix(&format!("rover-{name}-"))
            .tempdir()
            .unwrap();
        let c = dir.path().join(format!("{name}.c"));
        std::fs::write(&c, source).unwrap();
        let path = dir.path().join(name);
        let status = Command::new("gcc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-o"])
            .arg(&path)
            .arg(&c)
            .status()
            .expect("gcc is needed to build the test fixtures");
        assert!(status.success(), "gcc failed on {name}.c");
        Fixture {
            path,
            library: None,
            _dir: dir,
        }
    }

    /// A program built with [`NO_FRAME_POINTERS`] from `source`, linked
    /// (with an rpath to it) against `lib{name}.so` built the same way from
    /// `library` when given.
    #[allow(dead_code, reason = "only the unwinder tests use it")]
    pub fn build_without_frame_pointers(
        name: &str,
        language: Language,
        source: &str,
        library: Option<&str>,
    ) -> Fixture {
        Fixture::build_with(name, language, NO_FRAME_POINTERS, source, library)
    }

    /// A program built with `flags` from `source`, linked (with an rpath to
    /// it) against `lib{name}.so` built with the same flags from `library`
    /// when given.
    #[allow(dead_code, reason = "only the unwinder tests use it")]
    pub fn build_with(
        name: &str,
        language: Language,
        flags: &[&str],
        source: &str,
        library: Option<&str>,
    ) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rover-{name}-"))
            .tempdir()
            .unwrap();
        let compiler = language.compiler();
        let write = |file: String, text: &str| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        let main = write(format!("{name}.{}", language.extension()), source);
        let path = dir.path().join(name);
        let library = library.map(|text| {
            let source = write(format!("lib{name}.{}", language.extension()), text);
            let library = dir.path().join(format!("lib{name}.so"));
            let flags = [flags, &["-fPIC", "-shared"]].concat();
            compile(compiler, &flags, &library, &[&source], &[]);
            library
        });
        let link = match &library {
            Some(_) => vec![
                format!("-L{}", dir.path().display()),
                format!("-l{name}"),
                format!("-Wl,-rpath,{}", dir.path().display()),
            ],
            None => Vec::new(),
        };
        let link: Vec<&str> = link.iter().map(String::as_str).collect();
        compile(compiler, flags, &path, &[&main], &link);
        Fixture {
            path,
            library,
            _dir: dir,
        }
    }

    /// The functions of the program and its library that set up a frame
    /// pointer (`push %rbp` then `mov %rsp,%rbp`), from `objdump -d`: none
    /// in a fixture built without frame pointers, whose `%rbp` is then an
    /// ordinary register a frame-pointer walk cannot follow.
    #[allow(dead_code, reason = "only the unwinder tests use it")]
    pub fn frame_pointer_functions(&self) -> Vec<String> {
        let mut found = Vec::new();
        for file in std::iter::once(&self.path).chain(&self.library) {
            let output = Command::new("objdump")
                .args(["-d", "--no-show-raw-insn"])
                .arg(file)
                .output()
                .unwrap_or_else(|e| panic!("objdump is needed to check the fixtures: {e}"));
            assert!(output.status.success(), "objdump -d {}", file.display());
            let text = String::from_utf8_lossy(&output.stdout);
            let mut function = "";
            let mut previous = String::new();
            for line in text.lines() {
                if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")) {
                    function = name.1;
                    previous.clear();
                    continue;
                }
                // "  1130:\tpush   %rbp": the instruction after the tab,
                // its spacing collapsed.
                let Some((_, instruction)) = line.split_once(":\t") else {
                    continue;
                };
                let instruction = instruction.split_whitespace().collect::<Vec<_>>().join(" ");
                if previous == "push %rbp" && instruction == "mov %rsp,%rbp" {
                    found.push(format!("{}: {function}", file.display()));
                }
                previous = instruction;
            }
        }
        found
    }

    /// Starts the fixture and waits for its `ready` line: `spawn` returns
    /// while exec may still be mapping the binary. The fixture then waits
    /// for [`go`] before working.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut child = Command::new(&self.path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.as_mut().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8];
        while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        assert_eq!(line, b"ready", "fixture did not start");
        child
    }

    /// The run-time address range of function `name` in process `pid`.
    pub fn function_range(&self, pid: u32, name: &str) -> std::ops::Range<u64> {
        let data = std::fs::read(&self.path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let symbol = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("{name} not in the fixture's symtab"));
        let first_vaddr = file
            .segments()
            .find(|s| s.file_range().0 == 0)
            .map(|s| s.address())
            .unwrap();
        let bias = load_start(pid, &self.path) - first_vaddr;
        symbol.address() + bias..symbol.address() + symbol.size() + bias
    }
}

/// Start of the mapping of `path` at file offset 0 in `pid`.
fn load_start(pid: u32, path: &Path) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let path = path.to_str().unwrap();
    maps.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 6 && fields[5] == path && u64::from_str_radix(fields[2], 16) == Ok(0))
                .then(|| u64::from_str_radix(fields[0].split('-').next().unwrap(), 16).unwrap())
        })
        .unwrap_or_else(|| panic!("{path} not mapped in {pid}"))
}

/// Lets a fixture started with [`Fixture::spawn`] begin.
pub fn go(child: &mut Child) {
    child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
}

/// Names of the kernel functions holding `ips`, from /proc/kallsyms.
pub fn kernel_names(ips: &[u64]) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let mut symbols: Vec<(u64, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let kind = fields.next()?;
            let name = fields.next()?;
            (address != 0 && matches!(kind, "t" | "T")).then_some((address, name))
        })
        .collect();
    symbols.sort_unstable();
    ips.iter()
        .map(
            |ip| match symbols.partition_point(|(address, _)| address <= ip) {
                0 => "?".to_string(),
                i => symbols[i - 1].1.to_string(),
            },
        )
        .collect()
}
