//! The exporter of `rover_core::push` against receivers no one here wrote:
//! an OTLP gRPC service and an OTLP/HTTP handler built on the official
//! Python classes (`testkit/otel/receiver.py`, PyPI
//! `opentelemetry-proto` and `grpcio`), fed by live on-CPU sessions, with
//! the receiver absent, killed, slow, erroring and partially rejecting; and
//! a Pyroscope ingest server whose bodies `go tool pprof` reads.
//!
//! Not named `session_*`: these tests need loopback networking, which the
//! qemu guests that run the kernel and session tests do not set up.

mod session_fixtures;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rover_core::export::Labels;
use rover_core::profile::{Metric, Profile};
use rover_core::push::{Exporter, ExporterBuilder, PushStats, Retry};
use rover_core::{Profiler, Window};
use serde_json::Value;
use session_fixtures::{Fixture, SPIN, Start, profiler};
/// A Python receiver on 127.0.0.1, killed when dropped.
use testkit::otel::Receiver as Peer;

const SERVICE: &str = "rover-push-test";

/// The requests a receiver took (and, apart, those it refused).
fn records(path: &Path) -> (Vec<Value>, Vec<Value>) {
    testkit::otel::records(path)
        .into_iter()
        .partition(|record| record.get("refused").is_none())
}

fn samples(records: &[Value]) -> u64 {
    records.iter().map(|r| r["samples"].as_u64().unwrap()).sum()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `condition`, failing after a bound far above what it needs.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A live on-CPU session of the spin fixture, its windows followed by the
/// exporter and collected by the test from a stream of its own.
struct Run {
    windows: Vec<Window>,
    profile: Profile,
    followed: u64,
    spin_pid: u32,
}

fn live_session<T>(
    profiler: &Profiler,
    exporter: &Exporter,
    spin_ms: u32,
    window: Duration,
    during: impl FnOnce() -> T,
) -> (Run, T) {
    let fixture = Fixture::build("spin", SPIN);
    let mut spin = fixture.start(&[&spin_ms.to_string()]);
    let spin_pid = spin.pid();
    let mut session = profiler
        .on_cpu()
        .pids([spin_pid])
        .window(window)
        .start()
        .unwrap();
    let following = exporter.follow(session.windows()).unwrap();
    let mut own = session.windows();
    let collector = std::thread::spawn(move || {
        let mut windows = Vec::new();
        while let Some(window) = futures::executor::block_on(own.next()) {
            windows.push(window);
        }
        windows
    });
    spin.go();
    let during = during();
    spin.wait_done();
    let profile = session.stop_blocking().unwrap();
    let followed = following.wait();
    let windows = collector.join().unwrap();
    let run = Run {
        windows,
        profile,
        followed,
        spin_pid,
    };
    (run, during)
}

fn on_cpu(profile: &Profile) -> u64 {
    profile.total(Metric::OnCpuSamples)
}

/// What holds whatever the backend did: the session is unaffected (its
/// windows add up to its profile, none skipped), every window followed
/// was accepted, the counts add up, the queue stayed within its capacity.
fn check_accounting(run: &Run, stats: &PushStats, capacity: usize) {
    let windows_total: u64 = run.windows.iter().map(|w| on_cpu(&w.profile)).sum();
    assert_eq!(
        windows_total,
        on_cpu(&run.profile),
        "the windows do not add up to the session's profile"
    );
    assert!(on_cpu(&run.profile) > 0, "the session saw no samples");
    assert!(run.windows.iter().all(|w| w.stats.windows_skipped == 0));
    assert_eq!(run.followed, run.windows.len() as u64);
    assert_eq!(stats.accepted, run.followed, "{stats:?}");
    assert_eq!(stats.accounted(), stats.accepted, "{stats:?}");
    assert_eq!((stats.queued, stats.in_flight), (0, 0), "{stats:?}");
    assert!(stats.peak_queued <= capacity, "{stats:?}");
}

fn builder(transport: &str, port: u16) -> ExporterBuilder {
    let url = format!("http://127.0.0.1:{port}");
    let builder = match transport {
        "grpc" => Exporter::builder().otlp_grpc(url),
        _ => Exporter::builder().otlp_http(url),
    };
    builder
        .labels(Labels::new().service(SERVICE).label("team", "push"))
        .header("x-rover-test", "42")
}

/// Every window of a live session reaches the receiver with the workload's
/// functions, the session's sample totals and the agent's labels.
fn pushes_a_live_session(test: &str, transport: &str) {
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    let Some(profiler) = profiler(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let peer = Peer::start(&python, transport, 0, &record, &[]);
    let exporter = builder(transport, peer.port).build().unwrap();
    let (run, ()) = live_session(
        &profiler,
        &exporter,
        1000,
        Duration::from_millis(250),
        || {},
    );
    let stats = exporter.shutdown(Duration::from_secs(20));
    eprintln!("{transport}: {} windows, {stats:?}", run.windows.len());
    check_accounting(&run, &stats, 64);
    assert_eq!(stats.sent, stats.accepted, "{stats:?}");
    assert_eq!((stats.retries, stats.rejected_profiles), (0, 0));
    let (taken, refused) = records(&record);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(taken.len() as u64, stats.sent);
    assert_eq!(samples(&taken), on_cpu(&run.profile));
    assert!(
        taken.iter().any(|r| r["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "spin_here")),
        "spin_here in no request"
    );
    for r in &taken {
        assert_eq!(r["transport"], transport);
        assert_eq!(r["x_rover_test"], "42");
        assert_eq!(r["string_table_0"], "");
        if r["profiles"].as_u64().unwrap() > 0 {
            assert_eq!(r["sample_types"], serde_json::json!(["samples/count"]));
        }
        for resource in r["resources"].as_array().unwrap() {
            assert_eq!(resource["service.name"], SERVICE, "{resource}");
            assert_eq!(resource["team"], "push", "{resource}");
        }
        if transport == "http" {
            assert_eq!(r["content_type"], "application/x-protobuf");
            assert_eq!(r["content_encoding"], "gzip");
        }
    }
    assert!(
        taken.iter().any(|r| r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|res| res["process.pid"] == run.spin_pid)),
        "the fixture's process.pid in no resource"
    );
}

#[test]
fn grpc_receiver_takes_every_window_of_a_live_session() {
    pushes_a_live_session("grpc_receiver_takes_every_window_of_a_live_session", "grpc");
}

#[test]
fn http_receiver_takes_every_window_of_a_live_session() {
    pushes_a_live_session("http_receiver_takes_every_window_of_a_live_session", "http");
}

/// The receiver is absent when the session starts, then starts; later it
/// is killed mid-session and restarted on the same port. Connection errors
/// are retried, never counted as refusals; every window is delivered or
/// counted.
fn survives_an_absent_then_killed_receiver(test: &str, transport: &str) {
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    let Some(profiler) = profiler(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let port = free_port();
    let retry = Retry {
        max_attempts: 200,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let exporter = builder(transport, port)
        .retry(retry)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut retries_while_absent = 0;
    let mut retries_while_killed = 0;
    let (run, restarted) = live_session(
        &profiler,
        &exporter,
        3000,
        Duration::from_millis(200),
        || {
            wait_until("a retry while the receiver is absent", || {
                exporter.stats().retries >= 1
            });
            retries_while_absent = exporter.stats().retries;
            let mut peer = Peer::start(&python, transport, port, &record, &[]);
            wait_until("two requests taken", || records(&record).0.len() >= 2);
            peer.kill();
            let before = exporter.stats().retries;
            wait_until("a retry while the receiver is down", || {
                exporter.stats().retries > before
            });
            retries_while_killed = exporter.stats().retries - before;
            // Kept alive through the session's end and the shutdown.
            Peer::start(&python, transport, port, &record, &[])
        },
    );
    let stats = exporter.shutdown(Duration::from_secs(20));
    eprintln!(
        "{transport}: {} windows; retries while absent {retries_while_absent}, while killed \
         {retries_while_killed}; {stats:?}",
        run.windows.len()
    );
    check_accounting(&run, &stats, 64);
    assert_eq!(stats.failed, 0, "a connection error counted as a refusal");
    assert!(stats.sent >= 2, "{stats:?}");
    let (taken, _) = records(&record);
    // A request the killed receiver recorded but could not answer is sent
    // again: at most one more record than windows delivered.
    let taken = taken.len() as u64;
    assert!(
        taken >= stats.sent && taken <= stats.sent + 1,
        "{taken} records"
    );
    drop(restarted);
}

#[test]
fn grpc_survives_an_absent_then_killed_receiver() {
    survives_an_absent_then_killed_receiver("grpc_survives_an_absent_then_killed_receiver", "grpc");
}

#[test]
fn http_survives_an_absent_then_killed_receiver() {
    survives_an_absent_then_killed_receiver("http_survives_an_absent_then_killed_receiver", "http");
}

const REJECTION: &str = "rover test receiver: rejected on purpose";

/// A short live session pushed to a receiver with `faults`; the exporter's
/// final counts and the receiver's records.
struct FaultRun {
    run: Run,
    stats: PushStats,
    taken: Vec<Value>,
    refused: Vec<Value>,
}

fn fault_run(
    test: &str,
    transport: &str,
    faults: &[&str],
    configure: impl FnOnce(ExporterBuilder) -> ExporterBuilder,
    window: Duration,
    shutdown: Duration,
) -> Option<FaultRun> {
    let python = testkit::otel_python(test)?;
    let profiler = profiler(test)?;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let peer = Peer::start(&python, transport, 0, &record, faults);
    let exporter = configure(builder(transport, peer.port)).build().unwrap();
    let (run, ()) = live_session(&profiler, &exporter, 1000, window, || {});
    let stats = exporter.shutdown(shutdown);
    drop(peer);
    let (taken, refused) = records(&record);
    eprintln!(
        "{test}: {} windows, {} requests taken, {} refused; {stats:?}",
        run.windows.len(),
        taken.len(),
        refused.len()
    );
    Some(FaultRun {
        run,
        stats,
        taken,
        refused,
    })
}

fn quick_retry(max_attempts: u32) -> Retry {
    Retry {
        max_attempts,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

/// The first three requests answered UNAVAILABLE (gRPC) or 503 (HTTP):
/// each is retried once more, and every window is delivered.
fn unavailable_answers_are_retried(test: &str, transport: &str) {
    let Some(f) = fault_run(
        test,
        transport,
        &["--unavailable", "3"],
        |b| b.retry(quick_retry(5)),
        Duration::from_millis(250),
        Duration::from_secs(20),
    ) else {
        return;
    };
    check_accounting(&f.run, &f.stats, 64);
    assert_eq!(f.stats.retries, 3, "{:?}", f.stats);
    assert_eq!(f.refused.len(), 3);
    assert_eq!(f.stats.sent, f.stats.accepted, "{:?}", f.stats);
    assert_eq!(f.taken.len() as u64, f.stats.sent);
    assert_eq!(samples(&f.taken), on_cpu(&f.run.profile));
}

#[test]
fn grpc_unavailable_answers_are_retried() {
    unavailable_answers_are_retried("grpc_unavailable_answers_are_retried", "grpc");
}

#[test]
fn http_unavailable_answers_are_retried() {
    unavailable_answers_are_retried("http_unavailable_answers_are_retried", "http");
}

/// Every request refused for good (INVALID_ARGUMENT, 400): no retry, every
/// window counted failed, the error kept.
fn refusals_are_counted_failed(test: &str, transport: &str, error: &str) {
    let Some(f) = fault_run(
        test,
        transport,
        &["--refuse"],
        |b| b.retry(quick_retry(5)),
        Duration::from_millis(250),
        Duration::from_secs(20),
    ) else {
        return;
    };
    check_accounting(&f.run, &f.stats, 64);
    assert_eq!(
        (f.stats.sent, f.stats.retries, f.stats.failed),
        (0, 0, f.stats.accepted)
    );
    assert_eq!(f.refused.len() as u64, f.stats.accepted);
    let last = f.stats.last_error.clone().unwrap_or_default();
    assert!(last.contains(error), "{last}");
}

#[test]
fn grpc_refusals_are_counted_failed() {
    refusals_are_counted_failed(
        "grpc_refusals_are_counted_failed",
        "grpc",
        "InvalidArgument",
    );
}

#[test]
fn http_refusals_are_counted_failed() {
    refusals_are_counted_failed("http_refusals_are_counted_failed", "http", "400");
}

/// Every answer a partial success rejecting one profile: the windows count
/// as sent, the rejected profiles apart, with the server's message.
fn partial_successes_are_counted_rejected(test: &str, transport: &str) {
    let Some(f) = fault_run(
        test,
        transport,
        &["--partial", "1"],
        |b| b,
        Duration::from_millis(250),
        Duration::from_secs(20),
    ) else {
        return;
    };
    check_accounting(&f.run, &f.stats, 64);
    assert_eq!(f.stats.sent, f.stats.accepted);
    assert_eq!(f.stats.rejected_profiles, f.stats.sent);
    assert_eq!(f.stats.partially_rejected, f.stats.sent);
    assert_eq!(f.stats.last_rejection.as_deref(), Some(REJECTION));
    assert_eq!(f.taken.len() as u64, f.stats.sent);
}

#[test]
fn grpc_partial_successes_are_counted_rejected() {
    partial_successes_are_counted_rejected("grpc_partial_successes_are_counted_rejected", "grpc");
}

#[test]
fn http_partial_successes_are_counted_rejected() {
    partial_successes_are_counted_rejected("http_partial_successes_are_counted_rejected", "http");
}

/// A receiver slower than the windows, with a queue of 2: the queue never
/// holds more than 2, what cannot wait is dropped oldest first and
/// counted, and what was delivered is what the receiver took.
#[test]
fn a_slow_receiver_never_grows_the_queue_past_its_capacity() {
    let test = "a_slow_receiver_never_grows_the_queue_past_its_capacity";
    let Some(f) = fault_run(
        test,
        "grpc",
        &["--slow", "0.4"],
        |b| b.queue_capacity(2),
        Duration::from_millis(100),
        Duration::from_secs(20),
    ) else {
        return;
    };
    check_accounting(&f.run, &f.stats, 2);
    assert_eq!(f.taken.len() as u64, f.stats.sent);
    assert_eq!(f.stats.failed + f.stats.dropped_gave_up, 0, "{:?}", f.stats);
}

/// A receiver slower than the timeout: every attempt times out, is
/// retried once, and the window is given up (apart from queue drops).
#[test]
fn a_receiver_slower_than_the_timeout_is_given_up() {
    let test = "a_receiver_slower_than_the_timeout_is_given_up";
    let Some(f) = fault_run(
        test,
        "http",
        &["--slow", "1.5"],
        |b| b.timeout(Duration::from_millis(200)).retry(quick_retry(2)),
        Duration::from_millis(250),
        Duration::from_secs(3),
    ) else {
        return;
    };
    check_accounting(&f.run, &f.stats, 64);
    assert_eq!(f.stats.sent, 0, "{:?}", f.stats);
    assert!(f.stats.dropped_gave_up >= 1, "{:?}", f.stats);
    assert!(f.stats.retries >= f.stats.dropped_gave_up, "{:?}", f.stats);
    let last = f.stats.last_error.clone().unwrap_or_default();
    assert!(last.contains("no answer within"), "{last}");
}

/// A profile of `n` samples in one function.
fn numbered_profile(n: u64) -> Profile {
    use rover_core::profile::{ProfileBuilder, Sample, SampleValue};
    use rover_symbolize::{Module, Origin, Sym, Symbolized};
    let module = Module::new("/usr/bin/numbered", None);
    let frame = Symbolized::Sym(Sym {
        name: std::sync::Arc::from("numbered"),
        module,
        origin: Origin::File,
        address: 0x1000,
        file_offset: Some(0x1000),
        vaddr: Some(0x1000),
        sym_addr: 0x1000,
        location: None,
        inlined: vec![],
    });
    let mut builder = ProfileBuilder::new();
    builder.add_sample(&Sample {
        pid: 7,
        tid: 7,
        process_name: "numbered",
        comm: "numbered",
        kernel: &[],
        user: std::slice::from_ref(&frame),
        value: SampleValue::OnCpu { samples: n },
    });
    builder.build()
}

/// With the receiver holding its answer, 40 windows sent at once into a
/// queue of 4: exactly one is in flight, the 4 newest wait, the 35 between
/// are dropped oldest first; once released, the 5 arrive.
#[test]
fn a_full_queue_drops_the_oldest_windows() {
    let test = "a_full_queue_drops_the_oldest_windows";
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let release = dir.path().join("release");
    let peer = Peer::start(
        &python,
        "grpc",
        0,
        &record,
        &["--hold", release.to_str().unwrap()],
    );
    let exporter = builder("grpc", peer.port)
        .queue_capacity(4)
        .build()
        .unwrap();
    exporter.send_profile(numbered_profile(1), rover_core::profile::ProfileKind::OnCpu);
    wait_until("the first window in flight", || {
        exporter.stats().in_flight == 1
    });
    for n in 2..=40 {
        exporter.send_profile(numbered_profile(n), rover_core::profile::ProfileKind::OnCpu);
    }
    let held = exporter.stats();
    assert_eq!(
        (held.accepted, held.in_flight, held.queued, held.peak_queued),
        (40, 1, 4, 4),
        "{held:?}"
    );
    assert_eq!(held.dropped_queue_full, 35);
    assert_eq!(held.accounted(), held.accepted);
    std::fs::write(&release, b"").unwrap();
    let stats = exporter.shutdown(Duration::from_secs(20));
    assert_eq!((stats.sent, stats.dropped_queue_full), (5, 35), "{stats:?}");
    assert_eq!(stats.accounted(), stats.accepted);
    let (taken, _) = records(&record);
    let mut delivered: Vec<u64> = taken
        .iter()
        .map(|r| r["samples"].as_u64().unwrap())
        .collect();
    delivered.sort_unstable();
    assert_eq!(delivered, vec![1, 37, 38, 39, 40]);
}

/// Shutdown's timeout bounds it: with the receiver holding every answer,
/// the queued windows are counted as cut off, and dropping an exporter
/// returns within its shutdown timeout too.
#[test]
fn shutdown_and_drop_are_bounded_by_their_timeout() {
    let test = "shutdown_and_drop_are_bounded_by_their_timeout";
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.jsonl");
    let never = dir.path().join("never");
    let peer = Peer::start(
        &python,
        "http",
        0,
        &record,
        &["--hold", never.to_str().unwrap()],
    );
    let exporter = builder("http", peer.port).build().unwrap();
    for n in 1..=3 {
        exporter.send_profile(numbered_profile(n), rover_core::profile::ProfileKind::OnCpu);
    }
    let stats = exporter.shutdown(Duration::from_millis(300));
    assert_eq!(stats.sent, 0, "{stats:?}");
    assert_eq!(stats.dropped_at_shutdown, 3, "{stats:?}");
    assert_eq!(stats.accounted(), stats.accepted);
    let exporter = builder("http", peer.port)
        .shutdown_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    exporter.send_profile(numbered_profile(1), rover_core::profile::ProfileKind::OnCpu);
    let started = Instant::now();
    drop(exporter);
    // Far above the 300 ms plus the second of grace: only "not forever".
    assert!(started.elapsed() < Duration::from_secs(10));
}
