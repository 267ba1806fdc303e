//! Fixtures shared by the mapping and service tests: a program built with
//! gcc that prints the addresses of `main` and of libc's `getpid` as it
//! sees them, then `dlopen`s the libraries it is sent on stdin, or maps
//! anonymous executable pages as a JIT would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
  printf("%p %p\n", (void *)main, (void *)&getpid);
  fflush(stdout);
  char line[4096];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    if (strncmp(line, "pages ", 6) == 0) {
      /* "pages N gap": N executable pages, each its own mapping with
         inaccessible pages between; "pages N adjacent": N neighbouring
         executable mappings (r-x and rwx alternating, so they stay apart). */
      long n = atol(line + 6), page = sysconf(_SC_PAGESIZE);
      int gap = strstr(line, "gap") != NULL;
      char *base = mmap(NULL, 2 * n * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      for (long i = 0; base != MAP_FAILED && i < n; i++) {
        int prot = PROT_READ | PROT_EXEC | (!gap && i % 2 ? PROT_WRITE : 0);
        mprotect(base + (gap ? 2 * i : i) * page, page, prot);
      }
      printf("%p\n", base == MAP_FAILED ? NULL : (void *)base);
      fflush(stdout);
      continue;
    }
    void *lib = dlopen(line, RTLD_NOW);
    printf("%p\n", lib ? dlsym(lib, "fixture_lib_fn") : NULL);
    fflush(stdout);
  }
  return 0;
}
"#;

const LIBRARY: &str = r#"
__attribute__((noinline)) int fixture_lib_fn(int x) { return x * 3 + 1; }
"#;

/// The fixture program and library, built in a temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// Position-independent, as Debian builds programs.
    pub program: PathBuf,
    /// The same, linked at a fixed address (`-no-pie`): its segments'
    /// addresses are not their file offsets. It prints its own PLT stub
    /// for `getpid`.
    pub fixed: PathBuf,
    pub library: PathBuf,
}

fn gcc(args: &[&str], out: &Path, source: &Path) {
    let status = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .expect("gcc is needed to build the fixture");
    assert!(status.success(), "gcc failed on {}", source.display());
}

impl Fixture {
    pub fn build() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("program.c");
        std::fs::write(&source, PROGRAM).unwrap();
        let program = dir.path().join("program");
        gcc(&["-O2", "-fomit-frame-pointer"], &program, &source);
        let fixed = dir.path().join("fixed");
        gcc(&["-O2", "-fomit-frame-pointer", "-no-pie"], &fixed, &source);
        let source = dir.path().join("library.c");
        std::fs::write(&source, LIBRARY).unwrap();
        let library = dir.path().join("libfixture.so");
        gcc(&["-O2", "-shared", "-fPIC"], &library, &source);
        Fixture {
            dir,
            program,
            fixed,
            library,
        }
    }
}

/// A running fixture, killed when dropped.
pub struct Running {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// `main` as the process sees it.
    pub main: u64,
    /// libc's `getpid` as the process sees it.
    pub getpid: u64,
}

fn hex(word: &str) -> u64 {
    u64::from_str_radix(word.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not an address: {word:?}"))
}

impl Running {
    pub fn start(program: &Path) -> Running {
        // A binary written by this (multi-threaded) test process can be
        // "busy" for a moment: another test's fork inherited its write fd
        // until that child's exec. The kernel's answer is to retry.
        let mut tries = 0;
        let mut child = loop {
            match Command::new(program)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.unwrap(),
            }
        };
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let mut words = line.split_whitespace();
        let main = hex(words.next().unwrap());
        let getpid = hex(words.next().unwrap());
        Running {
            child,
            stdin,
            stdout,
            main,
            getpid,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has the process `dlopen` the library and returns where its
    /// `fixture_lib_fn` is.
    pub fn dlopen(&mut self, library: &Path) -> u64 {
        writeln!(self.stdin, "{}", library.display()).unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let address = hex(&line);
        assert_ne!(address, 0, "dlopen failed");
        address
    }

    /// Has the process map `n` anonymous executable pages, apart or
    /// adjacent, and returns the first one's address.
    pub fn exec_pages(&mut self, n: usize, apart: bool) -> u64 {
        let how = if apart { "gap" } else { "adjacent" };
        writeln!(self.stdin, "pages {n} {how}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let address = hex(&line);
        assert_ne!(address, 0, "mmap failed");
        address
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of symbol `name` in the ELF file at `path` (its symbol table
/// or its dynamic one).
pub fn symbol(path: &Path, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name) && s.address() != 0)
        .map(|s| s.address())
        .unwrap_or_else(|| panic!("no {name} in {}", path.display()))
}
