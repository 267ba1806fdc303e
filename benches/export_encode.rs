//! The exports of one large window side by side: rover's pprof writer (the
//! format most backends read today) and its OTLP profiles encoder, on the
//! same profile; time per encode, bytes out (raw and gzipped), and the OTLP
//! request decoded again by the official OpenTelemetry Python classes (when
//! `testkit`'s venv is there) to time the reference decoder on the same bytes.
//!
//! `cargo bench -p rover-benches --bench export_encode`
//!
//! The profile: 40 processes of 8 threads each, 6000 distinct stacks of
//! 12 to 40 frames over 4000 functions in 30 modules, a fifth of the
//! frames inlined, on-CPU samples; and the same stacks off-CPU in two
//! states (two OTLP profiles).

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rover_core::Profile;
use rover_core::export::{OtlpOptions, write_otlp, write_pprof};
use rover_core::profile::{OffCpuState, ProfileBuilder, Sample, SampleValue};
use rover_symbolize::{InlinedFrame, Module, Origin, Sym, Symbolized};

const STACKS: usize = 6000;
const FUNCTIONS: usize = 4000;
const MODULES: usize = 30;

fn profile(off_cpu: bool) -> Profile {
    let mut rng = fastrand::Rng::with_seed(7);
    let modules: Vec<Module> = (0..MODULES)
        .map(|m| Module::new(format!("/usr/lib/libbench{m}.so"), None))
        .collect();
    let names: Vec<Arc<str>> = (0..FUNCTIONS)
        .map(|f| Arc::from(format!("bench::module{}::function_{f}", f % MODULES).as_str()))
        .collect();
    let frame = |rng: &mut fastrand::Rng| {
        let f = rng.usize(..FUNCTIONS);
        let inlined = if rng.u8(..5) == 0 {
            vec![InlinedFrame {
                name: names[(f + 1) % FUNCTIONS].clone(),
                location: None,
            }]
        } else {
            Vec::new()
        };
        Symbolized::Sym(Sym {
            name: names[f].clone(),
            module: modules[f % MODULES].clone(),
            origin: Origin::File,
            address: 0x1000 + f as u64 * 16,
            file_offset: Some(0x1000 + f as u64 * 16),
            vaddr: Some(0x1000 + f as u64 * 16),
            sym_addr: 0x1000 + f as u64 * 16,
            location: None,
            inlined,
        })
    };
    let mut builder = ProfileBuilder::new();
    builder.sampling_frequency(99).time_range(1, 10_000_000_001);
    for s in 0..STACKS {
        let depth = rng.usize(12..=40);
        let user: Vec<Symbolized> = (0..depth).map(|_| frame(&mut rng)).collect();
        let pid = 1000 + (s % 40) as u32;
        let tid = pid * 10 + (s % 8) as u32;
        let comm = format!("worker-{}", s % 8);
        let process = format!("service-{}", s % 40);
        let mut sample = Sample {
            pid,
            tid,
            process_name: &process,
            comm: &comm,
            kernel: &[],
            user: &user,
            value: SampleValue::OnCpu {
                samples: rng.u64(1..50),
            },
        };
        if off_cpu {
            for state in [OffCpuState::Interruptible, OffCpuState::Uninterruptible] {
                sample.value = SampleValue::OffCpu {
                    state,
                    switches: rng.u64(1..20),
                    nanos: rng.u64(1_000..10_000_000),
                };
                builder.add_sample(&sample);
            }
        } else {
            builder.add_sample(&sample);
        }
    }
    builder.build()
}

/// Median and minimum of `runs` timings of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[0])
}

fn gzipped(bytes: &[u8]) -> usize {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(bytes);
    gz.finish().map_or(0, |v| v.len())
}

fn main() {
    let python = std::env::var_os("ROVER_OTEL_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/rover-venv/bin/python3".into());
    println!(
        "{:<8} {:<6} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "profile", "format", "median ms", "min ms", "bytes", "gzipped", "python decode"
    );
    for (label, off) in [("on-CPU", false), ("off-CPU", true)] {
        let p = profile(off);
        let mut pprof = Vec::new();
        let (median, min) = time(15, || {
            pprof.clear();
            write_pprof(&p, &mut pprof).expect("in-memory pprof");
        });
        println!(
            "{label:<8} {:<6} {:>10.2} {:>10.2} {:>12} {:>12} {:>14}",
            "pprof",
            median.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            "-",
            pprof.len(),
            "-"
        );
        let mut otlp = Vec::new();
        let options = OtlpOptions::default();
        let (median, min) = time(15, || {
            otlp.clear();
            write_otlp(&p, &options, &mut otlp).expect("in-memory OTLP");
        });
        let path = std::env::temp_dir().join(format!("rover-bench-{}.otlp.pb", std::process::id()));
        let decode = std::fs::write(&path, &otlp).ok().and_then(|()| {
            let script = "import sys,time\nfrom opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as s\nb=open(sys.argv[1],'rb').read()\nt=time.perf_counter()\nfor _ in range(5): r=s.ExportProfilesServiceRequest.FromString(b)\nprint((time.perf_counter()-t)/5*1e3)";
            let out = Command::new(&python).args(["-c", script]).arg(&path).output().ok()?;
            out.status
                .success()
                .then(|| format!("{} ms", String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().map_or(0.0, |ms| (ms * 100.0).round() / 100.0)))
        });
        let _ = std::fs::remove_file(&path);
        println!(
            "{label:<8} {:<6} {:>10.2} {:>10.2} {:>12} {:>12} {:>14}",
            "OTLP",
            median.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            otlp.len(),
            gzipped(&otlp),
            decode.unwrap_or_else(|| "no venv".into())
        );
    }
}
