//! The `profile` example's OTLP file and pushes, read by code no one here
//! wrote: the official OpenTelemetry Python classes (`testkit/otel/`:
//! `decode.py` for the file, `receiver.py` for gRPC and HTTP pushes) and
//! `go tool pprof` for what reaches a (recording) Pyroscope server. Not a
//! guest test: it needs the Python peers' venv (`testkit::otel_python`) and
//! loopback networking.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testkit::otel::Receiver;

fn example() -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("examples").join("profile")
}

/// Runs the example in `dir` with `args` and `env`; its stdout, after
/// checking that it succeeded.
fn run_demo(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(example())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{args:?} failed");
    stdout
}

/// Every function name in the samples of `sample_type`, with the total of
/// their values.
fn functions(decoded: &Value, sample_type: &str) -> (Vec<String>, u64) {
    let mut names = Vec::new();
    let mut total = 0;
    for resource in decoded["resources"].as_array().unwrap() {
        for profile in resource["profiles"].as_array().unwrap() {
            if profile["sample_type"][0] != sample_type {
                continue;
            }
            for sample in profile["samples"].as_array().unwrap() {
                total += sample["value"].as_u64().unwrap();
                for location in sample["stack"].as_array().unwrap() {
                    for f in location["functions"].as_array().unwrap() {
                        names.push(f.as_str().unwrap().to_owned());
                    }
                }
            }
        }
    }
    (names, total)
}

/// `pushed to NAME: S of A windows sent, …, D dropped …, F refused, …` of
/// the example's summary, as (sent, accepted, dropped, refused).
fn pushed(stdout: &str, name: &str) -> (u64, u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("pushed to {name}")))
        .unwrap_or_else(|| panic!("no push summary for {name} in:\n{stdout}"));
    let number_before = |word: &str| -> u64 {
        let at = line
            .find(word)
            .unwrap_or_else(|| panic!("{word} not in {line}"));
        line[..at]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before {word} in {line}"))
    };
    let after = line.split_once(": ").unwrap().1;
    let mut words = after.split_whitespace();
    let sent = words.next().unwrap().parse().unwrap();
    words.next();
    let accepted = words.next().unwrap().parse().unwrap();
    (
        sent,
        accepted,
        number_before(" dropped"),
        number_before(" refused"),
    )
}

/// Checks that every window of the run reached `record`, with the demo's
/// functions and `service`; returns the records.
fn every_window_arrived(stdout: &str, name: &str, record: &Path, service: &str) -> Vec<Value> {
    let (sent, accepted, dropped, refused) = pushed(stdout, name);
    assert!(accepted >= 1, "{accepted} windows");
    assert_eq!((sent, dropped, refused), (accepted, 0, 0), "{stdout}");
    let records = testkit::otel::records(record);
    assert_eq!(records.len() as u64, accepted);
    for r in &records {
        for resource in r["resources"].as_array().unwrap() {
            assert_eq!(resource["service.name"], service);
        }
    }
    records
}

#[test]
fn the_demo_writes_one_otlp_request_the_official_classes_read() {
    let test = "the_demo_writes_one_otlp_request_the_official_classes_read";
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    if !testkit::require_root(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("run.otlp.pb");
    let stdout = run_demo(
        dir.path(),
        &[
            "--duration",
            "2",
            "--service",
            "demo-svc",
            "--label",
            "team=rover",
            "--otlp",
            request.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        stdout.contains(&format!("wrote {}", request.display())),
        "{stdout}"
    );
    let decoded = testkit::otel::decode(&python, &request);
    let resources = decoded["resources"].as_array().unwrap();
    assert!(!resources.is_empty());
    for resource in resources {
        assert_eq!(resource["attributes"]["service.name"], "demo-svc");
        assert_eq!(resource["attributes"]["team"], "rover");
    }
    let (on_cpu, samples) = functions(&decoded, "samples");
    assert!(samples > 0);
    for name in ["profile::demo::count_primes", "profile::demo::hash_round"] {
        assert!(on_cpu.iter().any(|f| f == name), "{name} not on CPU");
    }
    let (off_cpu, nanos) = functions(&decoded, "off_cpu");
    assert!(nanos > 0);
    for name in ["profile::demo::timer_wait", "profile::demo::pipe_read"] {
        assert!(off_cpu.iter().any(|f| f == name), "{name} not off CPU");
    }
    let (_, switches) = functions(&decoded, "context_switch");
    assert!(switches > 0);
}

#[test]
fn a_bad_label_is_a_one_line_error() {
    let output = Command::new(example())
        .args(["--label", "novalue"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KEY=VALUE"), "{stderr}");
}

#[test]
fn the_demo_pushes_every_window_over_grpc_and_http() {
    let test = "the_demo_pushes_every_window_over_grpc_and_http";
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    if !testkit::require_root(test) {
        return;
    }
    for (protocol, name) in [("grpc", "OTLP/gRPC"), ("http", "OTLP/HTTP")] {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("received.jsonl");
        let receiver = Receiver::start(&python, protocol, 0, &record, &[]);
        let endpoint = format!("http://127.0.0.1:{}", receiver.port);
        let stdout = run_demo(
            dir.path(),
            &[
                "--duration",
                "2",
                "--service",
                "demo-svc",
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                protocol,
            ],
            &[],
        );
        let records = every_window_arrived(&stdout, name, &record, "demo-svc");
        let functions: Vec<&str> = records
            .iter()
            .flat_map(|r| r["functions"].as_array().unwrap())
            .filter_map(|f| f.as_str())
            .collect();
        for f in ["profile::demo::count_primes", "profile::demo::timer_wait"] {
            assert!(functions.contains(&f), "{f} never arrived over {protocol}");
        }
    }
}

#[test]
fn the_demo_pushes_where_the_otel_variables_say() {
    let test = "the_demo_pushes_where_the_otel_variables_say";
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    if !testkit::require_root(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("received.jsonl");
    let receiver = Receiver::start(&python, "grpc", 0, &record, &[]);
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let stdout = run_demo(
        dir.path(),
        &["--duration", "1", "--mode", "on-cpu", "--otlp-from-env"],
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-rover-test=from%20env"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
        ],
    );
    let name = "OTLP (OTEL_EXPORTER_OTLP_*)";
    let records = every_window_arrived(&stdout, name, &record, "unknown_service:profile");
    for r in &records {
        assert_eq!(r["transport"], "grpc");
        assert_eq!(r["x_rover_test"], "from env", "the header, percent-decoded");
    }
    // A protocol the variables may name but rover does not speak: one line.
    let output = Command::new(example())
        .args(["--otlp-from-env"])
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("http/json"), "{stderr}");
}

#[test]
fn a_push_to_nobody_is_counted_not_fatal() {
    let test = "a_push_to_nobody_is_counted_not_fatal";
    if !testkit::require_root(test) {
        return;
    }
    // A port nothing listens on: every window fails to connect, is
    // retried and finally dropped or cut off, and the run's files are
    // still written.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let stdout = run_demo(
        dir.path(),
        &[
            "--duration",
            "1",
            "--mode",
            "on-cpu",
            "--otlp-endpoint",
            &endpoint,
        ],
        &[],
    );
    let (sent, accepted, dropped, refused) = pushed(&stdout, "OTLP/gRPC");
    assert!(accepted >= 1);
    assert_eq!(sent, 0);
    assert_eq!(dropped + refused, accepted, "{stdout}");
    assert!(stdout.contains("last error"), "{stdout}");
    assert!(dir.path().join("rover-demo-on-cpu.svg").exists());
}

#[test]
fn the_demo_pushes_pprof_to_pyroscope() {
    let test = "the_demo_pushes_pprof_to_pyroscope";
    if !testkit::require_root(test) || !testkit::require_tool(test, "go") {
        return;
    }
    let (port, requests) = testkit::http::recording_server();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let stdout = run_demo(
        dir.path(),
        &[
            "--duration",
            "2",
            "--service",
            "demo-svc",
            "--label",
            "team=rover",
            "--pyroscope",
            &url,
        ],
        &[],
    );
    let (sent, accepted, dropped, refused) = pushed(&stdout, "Pyroscope");
    assert_eq!((sent, dropped, refused), (accepted, 0, 0), "{stdout}");
    let requests: Vec<_> = requests.try_iter().collect();
    assert_eq!(requests.len() as u64, accepted);
    let mut series = std::collections::BTreeSet::new();
    let mut functions = String::new();
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.method, "POST");
        let (path, query) = request.target.split_once('?').unwrap();
        assert_eq!(path, "/ingest");
        let name = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("name="))
            .map(testkit::http::percent_decode)
            .unwrap();
        series.insert(name);
        assert!(query.split('&').any(|kv| kv == "format=pprof"), "{query}");
        let file = dir.path().join(format!("window-{i}.pb.gz"));
        std::fs::write(&file, &request.body).unwrap();
        let top = Command::new("go")
            .args(["tool", "pprof", "-top", "-sample_index=0"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            top.status.success(),
            "{}",
            String::from_utf8_lossy(&top.stderr)
        );
        functions.push_str(&String::from_utf8_lossy(&top.stdout));
    }
    // Both modes of the demo, as their own series, with the label.
    assert_eq!(
        series.into_iter().collect::<Vec<_>>(),
        ["demo-svc.cpu{team=rover}", "demo-svc.off_cpu{team=rover}"]
    );
    for f in ["profile::demo::count_primes", "profile::demo::timer_wait"] {
        assert!(functions.contains(f), "{f} in no window");
    }
}
