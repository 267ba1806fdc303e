//! The exporter of `rover_core::push` pushing a live session's windows to
//! Pyroscope's ingest API, received by a small HTTP/1.1 server on loopback
//! that checks each request's path and query; `go tool pprof` reads the
//! bodies.
//!
//! Not named `session_*`: it needs loopback networking, which the qemu
//! guests that run the kernel and session tests do not set up.

mod session_fixtures;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rover_core::export::Labels;
use rover_core::profile::Metric;
use rover_core::push::Exporter;
use session_fixtures::{BLOCK, Fixture, SPIN, Start, profiler};
use testkit::http::{Request, percent_decode, recording_server as pyroscope_server};

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn pyroscope_ingest_takes_a_live_sessions_windows_as_pprof() {
    let test = "pyroscope_ingest_takes_a_live_sessions_windows_as_pprof";
    if !testkit::require_tool(test, "go") {
        return;
    }
    let Some(profiler) = profiler(test) else {
        return;
    };
    let (port, requests) = pyroscope_server();
    let exporter = Exporter::builder()
        .pyroscope(format!("http://127.0.0.1:{port}/"))
        .labels(
            Labels::new()
                .service("rover.push-test")
                .version("1.2")
                .environment("ci")
                .label("team.name", "push"),
        )
        .build()
        .unwrap();
    let started = unix_seconds();
    let fixture = Fixture::build("spin", SPIN);
    let mut spin = fixture.start(&["1000"]);
    let mut session = profiler
        .on_cpu()
        .pids([spin.pid()])
        .window(Duration::from_millis(250))
        .start()
        .unwrap();
    let following = exporter.follow(session.windows()).unwrap();
    let mut own = session.windows();
    let collector = std::thread::spawn(move || {
        let mut totals = Vec::new();
        while let Some(window) = futures::executor::block_on(own.next()) {
            totals.push(window.profile.total(Metric::OnCpuSamples));
        }
        totals
    });
    spin.go();
    spin.wait_done();
    let profile = session.stop_blocking().unwrap();
    let followed = following.wait();
    let totals = collector.join().unwrap();
    let stats = exporter.shutdown(Duration::from_secs(20));
    let ended = unix_seconds();
    eprintln!("{} windows; {stats:?}", totals.len());
    assert_eq!(followed, totals.len() as u64);
    assert_eq!(
        totals.iter().sum::<u64>(),
        profile.total(Metric::OnCpuSamples)
    );
    assert_eq!(
        (stats.sent, stats.accounted()),
        (followed, followed),
        "{stats:?}"
    );

    let requests: Vec<Request> = requests.try_iter().collect();
    assert_eq!(requests.len() as u64, stats.sent);
    let dir = tempfile::tempdir().unwrap();
    let mut tops = String::new();
    let mut raw_samples = 0;
    for (n, request) in requests.iter().enumerate() {
        assert_eq!(request.method, "POST");
        let (path, query) = request.target.split_once('?').unwrap();
        assert_eq!(path, "/ingest");
        let query: HashMap<&str, String> = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k, percent_decode(v))
            })
            .collect();
        assert_eq!(
            query["name"],
            "rover.push-test.cpu{service_version=1.2,deployment_environment_name=ci,team_name=push}"
        );
        assert_eq!(query["format"], "pprof");
        let from: u64 = query["from"].parse().unwrap();
        let until: u64 = query["until"].parse().unwrap();
        assert!(from <= until, "{from} > {until}");
        assert!(from + 1 >= started && until <= ended + 1, "{from}..{until}");
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/octet-stream")
        );
        let path = dir.path().join(format!("window{n}.pb.gz"));
        std::fs::write(&path, &request.body).unwrap();
        for (flag, out) in [("-top", &mut tops), ("-raw", &mut String::new())] {
            let output = Command::new("go")
                .args(["tool", "pprof", flag])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "go tool pprof {flag}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            out.push_str(&String::from_utf8_lossy(&output.stdout));
            if flag == "-raw" {
                let samples = raw_sample_total(out);
                raw_samples += samples;
                assert!(
                    samples == 0 || out.contains("service.name:[rover.push-test]"),
                    "{out}"
                );
            }
        }
    }
    eprintln!("{tops}");
    assert!(tops.contains("spin_here"), "{tops}");
    assert_eq!(raw_samples, profile.total(Metric::OnCpuSamples));
}

/// The first values of the samples `go tool pprof -raw` lists (lines
/// `      N: loc loc …` between `Samples:` and `Locations`).
fn raw_sample_total(raw: &str) -> u64 {
    let mut total = 0;
    let mut in_samples = false;
    for line in raw.lines() {
        if line.starts_with("Samples:") {
            in_samples = true;
            continue;
        }
        if line.starts_with("Locations") {
            break;
        }
        if in_samples
            && let Some((values, _)) = line.trim_start().split_once(':')
            && let Some(first) = values.split_whitespace().next()
            && let Ok(n) = first.parse::<u64>()
        {
            total += n;
        }
    }
    total
}

/// Off-CPU windows go to the `.off_cpu` series; their pprof holds the
/// fixture's blocking function and its off-CPU time.
#[test]
fn pyroscope_takes_off_cpu_windows_as_their_own_series() {
    let test = "pyroscope_takes_off_cpu_windows_as_their_own_series";
    if !testkit::require_tool(test, "go") {
        return;
    }
    let Some(profiler) = profiler(test) else {
        return;
    };
    let (port, requests) = pyroscope_server();
    let exporter = Exporter::builder()
        .pyroscope(format!("http://127.0.0.1:{port}"))
        .pyroscope_app("blocker")
        .build()
        .unwrap();
    let fixture = Fixture::build("block", BLOCK);
    let mut block = fixture.start(&[]);
    let mut session = profiler
        .off_cpu()
        .pids([block.pid()])
        .window(Duration::from_millis(250))
        .start()
        .unwrap();
    let following = exporter.follow(session.windows()).unwrap();
    block.go();
    assert_eq!(block.line(), "done");
    let profile = session.stop_blocking().unwrap();
    let followed = following.wait();
    let stats = exporter.shutdown(Duration::from_secs(20));
    eprintln!("{followed} windows; {stats:?}");
    assert_eq!(
        (stats.sent, stats.accounted()),
        (followed, followed),
        "{stats:?}"
    );
    let requests: Vec<Request> = requests.try_iter().collect();
    assert_eq!(requests.len() as u64, stats.sent);
    let dir = tempfile::tempdir().unwrap();
    let mut tops = String::new();
    for (n, request) in requests.iter().enumerate() {
        let query = request.target.split_once('?').unwrap().1;
        let name = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("name="))
            .map(percent_decode);
        assert_eq!(name.as_deref(), Some("blocker.off_cpu{}"));
        let path = dir.path().join(format!("window{n}.pb.gz"));
        std::fs::write(&path, &request.body).unwrap();
        let output = Command::new("go")
            .args(["tool", "pprof", "-top", "-sample_index=off_cpu"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success() || request.body.is_empty(),
            "go tool pprof: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tops.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    eprintln!("{tops}");
    assert!(profile.total(Metric::OffCpuNanos) > 0);
    assert!(tops.contains("block_here"), "{tops}");
}
