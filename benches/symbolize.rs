//! Warm symbolization throughput (addresses per second) of rover, blazesym and
//! addr2line's `Loader` on the same seeded address set of real binaries, at
//! each level of detail, after checking that their answers agree.
//!
//! Time is the benchmark thread's CPU time, not wall time (see
//! `common/cpu_time.rs`). Run with
//! `cargo bench -p rover-benches --bench symbolize` (or
//! `benches/symbolize.sh`); at the end it prints a table of the medians side
//! by side.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput};

use common::cpu_time::{ThreadCpuTime, thread_cpu_now};

use common::addrs::AddressSet;
use common::agree::Agreement;
use common::subjects::{Implementation, Level, Subject};
use common::{SEED, address_count, agree, binaries};

/// One benchmark group: a binary at a level, with rover's agreement.
struct Group {
    binary: &'static str,
    level: Level,
    addrs: usize,
    rover_vs_blazesym: Option<Agreement>,
    /// Median over paired passes of blazesym's time / rover's time.
    paired_ratio: Option<f64>,
}

/// Paired passes for the ratio: few enough to be quick, enough for a median.
const PAIRS: usize = 21;

/// rover's speed relative to blazesym's from passes over the whole set run
/// back to back, alternating which goes first, each timed in thread CPU time:
/// a load that comes and goes on a shared machine hits both sides of a pair,
/// where criterion's runs of one, then the other, seconds apart, can differ.
fn paired_ratio(rover: &Subject, blazesym: &Subject, addrs: &[u64]) -> f64 {
    let time = |s: &Subject| {
        let start = thread_cpu_now();
        black_box(s.run(addrs));
        (thread_cpu_now() - start).as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..PAIRS)
        .map(|i| {
            let (r, b) = if i % 2 == 0 {
                let r = time(rover);
                (r, time(blazesym))
            } else {
                let b = time(blazesym);
                (time(rover), b)
            };
            b / r
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[PAIRS / 2]
}

impl Group {
    fn id(&self) -> String {
        format!("symbolize/{}/{}", self.binary, self.level.name())
    }
}

fn symbolize(c: &mut Criterion<ThreadCpuTime>) -> Vec<Group> {
    let n = address_count();
    let mut groups = Vec::new();
    for bin in binaries() {
        let set = match AddressSet::draw(&bin.path, n, SEED) {
            Ok(set) => set,
            Err(e) => {
                eprintln!(
                    "bench: cannot draw addresses from {}: {e}",
                    bin.path.display()
                );
                continue;
            }
        };
        println!(
            "{}: {} addresses from {} functions of {}",
            bin.name,
            set.addrs.len(),
            set.functions,
            bin.path.display()
        );
        for &level in bin.levels {
            let mut subjects = Vec::new();
            for imp in Implementation::ALL {
                match Subject::open(imp, &bin.path, level) {
                    Ok(s) => subjects.push((imp, s)),
                    Err(e) => eprintln!("bench: {} skipped: {e}", imp.name()),
                }
            }
            // One full pass each before timing: it warms every cache, and its
            // answers are checked against blazesym's.
            let answers: Vec<_> = subjects
                .iter()
                .map(|(_, s)| s.answers(&set.addrs))
                .collect();
            let mut group = Group {
                binary: bin.name,
                level,
                addrs: set.addrs.len(),
                rover_vs_blazesym: None,
                paired_ratio: None,
            };
            let reference = subjects
                .iter()
                .position(|(i, _)| *i == Implementation::Blazesym);
            if let Some(r) = reference {
                for (k, (imp, _)) in subjects.iter().enumerate().filter(|&(k, _)| k != r) {
                    let agreement = agree::compare(&set, &answers[k], &answers[r]);
                    println!("{} {} vs blazesym: {agreement}", group.id(), imp.name());
                    for example in &agreement.examples {
                        println!("    {example}");
                    }
                    if *imp == Implementation::Rover {
                        group.rover_vs_blazesym = Some(agreement);
                    }
                }
            }
            drop(answers);

            let mut timed = c.benchmark_group(group.id());
            timed.throughput(Throughput::Elements(set.addrs.len() as u64));
            timed.sample_size(10);
            timed.warm_up_time(Duration::from_secs(1));
            timed.measurement_time(Duration::from_secs(5));
            for (imp, subject) in &subjects {
                timed.bench_function(imp.name(), |b| b.iter(|| subject.run(&set.addrs)));
            }
            timed.finish();
            let find = |want| subjects.iter().find(|(i, _)| *i == want).map(|(_, s)| s);
            if let (Some(r), Some(b)) =
                (find(Implementation::Rover), find(Implementation::Blazesym))
            {
                group.paired_ratio = Some(paired_ratio(r, b, &set.addrs));
            }
            groups.push(group);
        }
    }
    groups
}

/// Where criterion writes its estimates: set explicitly so the summary can
/// read them back, in the workspace's target directory (this package's
/// manifest is in benches/).
fn output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion")
}

/// Median addresses per second of one benchmark, if it ran in this process.
fn throughput(dir: &Path, group: &Group, imp: Implementation, since: SystemTime) -> Option<f64> {
    let file = dir
        .join(group.id().replace('/', "_"))
        .join(imp.name())
        .join("new/estimates.json");
    if std::fs::metadata(&file).ok()?.modified().ok()? < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    let ns = json["median"]["point_estimate"].as_f64()?;
    Some(group.addrs as f64 / (ns * 1e-9))
}

fn summary(groups: &[Group], dir: &Path, since: SystemTime) {
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}", v));
    println!();
    println!(
        "Warm throughput, addresses per second of thread CPU time (criterion median; paired: \
         median of {PAIRS} back-to-back passes):"
    );
    println!();
    println!(
        "| binary | level | rover | blazesym | addr2line::Loader | rover / blazesym | \
         rover / blazesym, paired | names agree (rover vs blazesym) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for g in groups {
        let [rover, blaze, loader] = Implementation::ALL.map(|i| throughput(dir, g, i, since));
        let ratio = rover
            .zip(blaze)
            .map_or("-".to_owned(), |(r, b)| format!("{:.2}x", r / b));
        let agreement = g.rover_vs_blazesym.as_ref().map_or("-".to_owned(), |a| {
            format!(
                "{:.2}% (exact {:.2}%)",
                100.0 * a.name_rate(),
                100.0 * a.exact_rate()
            )
        });
        let paired = g
            .paired_ratio
            .map_or("-".to_owned(), |r| format!("{r:.2}x"));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            g.binary,
            g.level.name(),
            fmt(rover),
            fmt(blaze),
            fmt(loader),
            ratio,
            paired,
            agreement
        );
    }
}

fn main() {
    let since = SystemTime::now();
    let dir = output_dir();
    let mut c = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .output_directory(&dir)
        .configure_from_args();
    let groups = symbolize(&mut c);
    c.final_summary();
    summary(&groups, &dir, since);
}
