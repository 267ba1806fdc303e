//! Shared helpers for the comparison tests: building fixtures with the real
//! compilers, listing function addresses with `nm`, running binutils
//! `addr2line` as the reference, and printing our results in its format.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rover_symbolize::{Location, Source, Symbolized, Symbolizer};

/// C fixture: static and global functions, inlining, loops, recursion and a
/// cold path, so that gcc -O2 emits inlined frames, clones and `.cold` parts.
pub const C_SOURCE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/mman.h>

struct point { long x, y; };

static inline long sq(long v) { return v * v; }
static inline long dist2(struct point a, struct point b) { return sq(a.x - b.x) + sq(a.y - b.y); }

__attribute__((noinline)) long nearest(const struct point *pts, int n, struct point q) {
    long best = -1;
    for (int i = 0; i < n; i++) {
        long d = dist2(pts[i], q);
        if (best < 0 || d < best) best = d;
    }
    return best;
}

__attribute__((cold, noinline)) static void fail(const char *why) {
    fprintf(stderr, "failure: %s\n", why);
    exit(3);
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

__attribute__((noinline)) long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static long checksum(const char *s) {
    long h = 1469598103934665603L;
    while (*s) { h ^= (unsigned char)*s++; h *= 1099511628211L; }
    return h;
}

__attribute__((noinline)) long work(int n) {
    struct point *pts = malloc(sizeof *pts * (size_t)n);
    if (!pts) fail("malloc");
    for (int i = 0; i < n; i++) { pts[i].x = i * 7 % 13; pts[i].y = i * 5 % 11; }
    struct point q = { 3, 4 };
    long r = nearest(pts, n, q);
    long *vals = malloc(sizeof *vals * (size_t)n);
    if (!vals) fail("malloc");
    for (int i = 0; i < n; i++) vals[i] = dist2(pts[i], q);
    qsort(vals, (size_t)n, sizeof *vals, cmp_long);
    r += vals[n / 2] + checksum("rover") % 17 + fib(n % 20);
    free(vals);
    free(pts);
    return r;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    if (n <= 0) fail("n");
    printf("%ld\n", work(n));
    if (argc > 2 && strcmp(argv[2], "stop") == 0) {
        void *jit = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        printf("jit %p\nready\n", jit);
        fflush(stdout);
        for (;;) pause();
    }
    return 0;
}
"#;

/// The C fixture grown with `n` generated functions, each inlining two
/// helpers, all reached through a table so none is dropped.
pub fn c_source_with(n: usize) -> String {
    let mut src = C_SOURCE.replace("int main(", "static int original_main(");
    for k in 0..n {
        src.push_str(&format!(
            "static inline long helper{k}(long x) {{ return x * {m} + (x >> {s}); }}\n\
             static inline long twist{k}(long x) {{ return helper{k}(x) ^ (x << {s}); }}\n\
             __attribute__((noinline)) long gen{k}(const long *a, int n) {{\n\
                 long acc = {k};\n\
                 for (int i = 0; i < n; i++) acc += (i & 1) ? twist{k}(a[i]) : helper{k}(a[i] + acc);\n\
                 return acc;\n\
             }}\n",
            m = k * 7 + 3,
            s = k % 5 + 1
        ));
    }
    src.push_str("typedef long (*gen_fn)(const long *, int);\nstatic gen_fn table[] = {");
    for k in 0..n {
        src.push_str(&format!("gen{k}, "));
    }
    src.push_str(
        "0 };\nint main(int argc, char **argv) {\n\
             long a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, t = 0;\n\
             for (int i = 0; table[i]; i++) t += table[i](a, argc + 6);\n\
             printf(\"%ld\\n\", t);\n\
             return original_main(argc, argv);\n\
         }\n",
    );
    src
}

/// C++ fixture: templates, namespaces, lambdas, std algorithms and
/// containers, so that g++ -O2 inlines deeply through libstdc++ headers.
pub const CPP_SOURCE: &str = r#"
#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace geo {
template <typename T> struct Vec2 { T x, y; T dot(const Vec2 &o) const { return x * o.x + y * o.y; } };

template <typename T> T total_norm(const std::vector<Vec2<T>> &v) {
    return std::accumulate(v.begin(), v.end(), T{}, [](T acc, const Vec2<T> &p) { return acc + p.dot(p); });
}

class Registry {
  public:
    void add(const std::string &k, int v) { items_[k] += v; }
    int sum() const { int s = 0; for (auto &kv : items_) s += kv.second; return s; }
  private:
    std::map<std::string, int> items_;
};
} // namespace geo

namespace {
template <int N> int unrolled(int x) { return unrolled<N - 1>(x) * 3 + N; }
template <> int unrolled<0>(int x) { return x; }
}

__attribute__((noinline)) double compute(int n) {
    std::vector<geo::Vec2<double>> pts;
    for (int i = 0; i < n; i++) pts.push_back({i * 0.5, i * 0.25});
    std::sort(pts.begin(), pts.end(), [](auto &a, auto &b) { return a.y > b.y; });
    geo::Registry r;
    for (int i = 0; i < n; i++) r.add(std::to_string(i % 7), i);
    return geo::total_norm(pts) + r.sum() + unrolled<6>(n);
}

__attribute__((noinline)) long compute_int(int n) {
    std::vector<geo::Vec2<long>> v(n, geo::Vec2<long>{2, 3});
    return geo::total_norm(v);
}

template <typename T, int K> struct Scaled {
    static T sum(const std::vector<T> &v) { T s{}; for (const auto &x : v) s += x * static_cast<T>(K); return s; }
};

template <typename T, int K> __attribute__((noinline)) double generated(int n) {
    std::vector<T> v;
    for (int i = 0; i < n; i++) v.push_back(static_cast<T>((i * (K + 3)) % 17));
    std::sort(v.begin(), v.end(), [](const T &a, const T &b) { return a > b; });
    auto it = std::unique(v.begin(), v.end());
    v.erase(it, v.end());
    return static_cast<double>(Scaled<T, K>::sum(v) + std::accumulate(v.begin(), v.end(), T{}));
}

template <int... K> double run_all(int n, std::integer_sequence<int, K...>) {
    return (generated<int, K>(n) + ...) + (generated<double, K>(n) + ...) + (generated<long, K>(n) + ...);
}

int main(int argc, char **) {
    std::printf("%f %ld\n", compute(argc * 100), compute_int(argc * 10));
    std::printf("%f\n", run_all(argc * 50, std::make_integer_sequence<int, 12>{}));
    return 0;
}
"#;

/// Rust fixture: generics, closures, iterators and trait objects.
pub const RUST_SOURCE: &str = r#"
use std::collections::HashMap;

trait Shape { fn area(&self) -> f64; }
struct Square(f64);
struct Circle(f64);
impl Shape for Square { fn area(&self) -> f64 { self.0 * self.0 } }
impl Shape for Circle { fn area(&self) -> f64 { 3.14159 * self.0 * self.0 } }

#[inline(never)]
fn total<T: Into<f64> + Copy>(xs: &[T]) -> f64 { xs.iter().map(|&x| x.into()).sum() }

#[inline(never)]
fn word_counts(text: &str) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for w in text.split_whitespace() { *m.entry(w).or_insert(0) += 1; }
    m
}

fn main() {
    let n = std::env::args().count();
    let shapes: Vec<Box<dyn Shape>> = (0..n * 10)
        .map(|i| if i % 2 == 0 { Box::new(Square(i as f64)) as Box<dyn Shape> } else { Box::new(Circle(i as f64)) })
        .collect();
    let area: f64 = shapes.iter().map(|s| s.area()).sum();
    let counts = word_counts("a b a c b a rover profiles rover");
    let mut keys: Vec<_> = counts.into_iter().collect();
    keys.sort();
    println!("{area} {} {:?}", total(&[1u32, 2, 3]), keys);
}
"#;

/// A temporary directory that lives as long as the value.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rover-sym-")
        .tempdir()
        .unwrap()
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compiles `source` with `compiler` (gcc, g++ or rustc) into `dir/name`.
pub fn build(
    dir: &Path,
    compiler: &str,
    ext: &str,
    source: &str,
    name: &str,
    flags: &[&str],
) -> PathBuf {
    let src = dir.join(format!("{name}.{ext}"));
    std::fs::write(&src, source).unwrap();
    let bin = dir.join(name);
    let mut cmd = Command::new(compiler);
    cmd.args(flags).arg("-o").arg(&bin).arg(&src);
    run(&mut cmd);
    bin
}

/// Every function's first, middle and last byte, from `nm -S`.
pub fn function_addrs(bin: &Path) -> Vec<u64> {
    let out = run(Command::new("nm").arg("-S").arg("--defined-only").arg(bin));
    let mut addrs = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 4 || !matches!(fields[2], "t" | "T" | "W" | "w" | "i") {
            continue;
        }
        let (Ok(start), Ok(size)) = (
            u64::from_str_radix(fields[0], 16),
            u64::from_str_radix(fields[1], 16),
        ) else {
            continue;
        };
        if size == 0 {
            continue;
        }
        addrs.extend([start, start + size / 2, start + size - 1]);
    }
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// binutils' answer per address: `addr2line -a -f -i -C` run once over all
/// addresses, split per address. Discriminator suffixes are dropped: the
/// DWARF reader used here does not report them.
pub fn reference(bin: &Path, addrs: &[u64], demangle: bool) -> Vec<String> {
    let mut cmd = Command::new("addr2line");
    cmd.args(["-a", "-f", "-i"]);
    if demangle {
        cmd.arg("-C");
    }
    let mut child = cmd
        .arg("-e")
        .arg(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("addr2line (binutils) must be installed");
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut blocks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("0x") && line.len() == 18 {
            blocks.push(String::new());
            continue;
        }
        let line = match line.find(" (discriminator ") {
            Some(at) => &line[..at],
            None => line,
        };
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    assert_eq!(
        blocks.len(),
        addrs.len(),
        "addr2line output did not split per address"
    );
    blocks
}

/// Our answer per address, printed as `addr2line -f -i` prints it.
pub fn ours(symbolizer: &Symbolizer, source: &Source, addrs: &[u64]) -> Vec<String> {
    let results = symbolizer.symbolize(source, addrs).unwrap();
    assert_eq!(results.len(), addrs.len());
    results.iter().map(format_addr2line).collect()
}

/// One result in `addr2line -f -i` format.
pub fn format_addr2line(result: &Symbolized) -> String {
    let sym = match result {
        Symbolized::Sym(sym) => sym,
        Symbolized::Unknown(_) => return "??\n??:0\n".to_string(),
    };
    let mut text = String::new();
    let loc = |l: &Option<Location>| match l {
        Some(Location {
            file,
            line: Some(line),
            ..
        }) if *line != 0 => format!("{file}:{line}"),
        Some(Location { file, .. }) => format!("{file}:?"),
        None => "??:?".to_string(),
    };
    for f in &sym.inlined {
        text.push_str(&format!("{}\n{}\n", f.name, loc(&f.location)));
    }
    text.push_str(&format!("{}\n{}\n", sym.name, loc(&sym.location)));
    text
}

/// Compares ours with the reference, prints the agreement rate and the first
/// disagreements, and returns the rate.
pub fn compare(label: &str, addrs: &[u64], ours: &[String], theirs: &[String]) -> f64 {
    assert!(!addrs.is_empty(), "{label}: no function addresses found");
    let mut same = 0usize;
    let mut shown = 0;
    for ((addr, a), b) in addrs.iter().zip(ours).zip(theirs) {
        if a == b {
            same += 1;
        } else if shown < 8 {
            shown += 1;
            eprintln!("{label}: {addr:#x} differs\n--- rover\n{a}--- addr2line\n{b}");
        }
    }
    let rate = same as f64 / addrs.len() as f64;
    println!(
        "{label}: {same}/{} addresses agree with addr2line ({:.2}%)",
        addrs.len(),
        rate * 100.0
    );
    rate
}
