//! A real session's profiles as OTLP, decoded by code no one here wrote:
//! the official OpenTelemetry Python classes (PyPI `opentelemetry-proto`)
//! read the serialized request, check the dictionary's invariants
//! (`testkit/otel/decode.py`), and this test checks what they read against
//! the profiles and the workload.

mod session_fixtures;

use std::time::Duration;

use object::Object;
use rover_core::export::{Labels, OtlpEncoder, OtlpOptions};
use rover_core::profile::Metric;
use serde_json::Value;
use session_fixtures::{BLOCK, Fixture, SPIN, Start, profiler};

/// The resource of `pid`.
fn resource(decoded: &Value, pid: u32) -> &Value {
    decoded["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["attributes"]["process.pid"] == pid)
        .unwrap_or_else(|| panic!("no resource of pid {pid} in {decoded}"))
}

fn profile<'v>(resource: &'v Value, sample_type: &str) -> &'v Value {
    resource["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sample_type"][0] == sample_type)
        .unwrap_or_else(|| panic!("no {sample_type} profile in {resource}"))
}

fn total(profile: &Value) -> u64 {
    profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_u64().unwrap())
        .sum()
}

/// Samples whose stack has `function`, with the function's frame and the
/// next location toward the root.
fn with_function<'v>(profile: &'v Value, function: &str) -> Vec<&'v Value> {
    profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["stack"].as_array().unwrap().iter().any(|l| {
                l["functions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f == function)
            })
        })
        .collect()
}

#[test]
fn the_official_classes_read_a_real_sessions_request() {
    let test = "the_official_classes_read_a_real_sessions_request";
    let Some(python) = testkit::otel_python(test) else {
        return;
    };
    let Some(profiler) = profiler(test) else {
        return;
    };
    let spin_fixture = Fixture::build("spin", SPIN);
    let block_fixture = Fixture::build("block", BLOCK);
    let mut spin = spin_fixture.start(&["800"]);
    let mut block = block_fixture.start(&[]);
    let on_cpu = profiler
        .on_cpu()
        .frequency(199)
        .pids([spin.pid()])
        .window(Duration::from_millis(250))
        .start()
        .unwrap();
    let off_cpu = profiler
        .off_cpu()
        .pids([block.pid()])
        .window(Duration::from_millis(250))
        .start()
        .unwrap();
    spin.go();
    block.go();
    assert_eq!(block.line(), "done");
    spin.wait_done();
    let cpu = on_cpu.stop_blocking().unwrap();
    let blocked = off_cpu.stop_blocking().unwrap();

    let options = OtlpOptions {
        labels: Labels::new()
            .service("otlp-test")
            .version("1.2.3")
            .label("team", "rover"),
        host_name: None,
    };
    let mut encoder = OtlpEncoder::new(&options);
    encoder.add(&cpu);
    encoder.add(&blocked);
    let request = encoder.finish();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("request.pb");
    std::fs::write(&path, prost::Message::encode_to_vec(&request)).unwrap();
    let decoded = testkit::otel::decode(&python, &path);

    // The spinning process: its resource and its on-CPU profile.
    let binary = std::fs::canonicalize(&spin_fixture.path).unwrap();
    let data = std::fs::read(&binary).unwrap();
    let build_id: String = object::File::parse(&*data)
        .unwrap()
        .build_id()
        .unwrap()
        .expect("gcc wrote no build id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let spin_resource = resource(&decoded, spin.pid());
    let attributes = &spin_resource["attributes"];
    assert_eq!(attributes["service.name"], "otlp-test", "{attributes}");
    assert_eq!(attributes["service.version"], "1.2.3");
    assert_eq!(attributes["team"], "rover");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(attributes["host.name"], host.trim());
    assert_eq!(
        attributes["process.executable.path"],
        binary.to_string_lossy().as_ref()
    );
    assert_eq!(attributes["process.executable.build_id.gnu"], build_id);
    let comm = binary.file_name().unwrap().to_string_lossy();
    let comm: String = comm.chars().take(15).collect();
    assert_eq!(attributes["process.executable.name"], comm.as_str());

    let samples = profile(spin_resource, "samples");
    assert_eq!(samples["sample_type"][1], "count");
    assert_eq!(
        samples["period_type"],
        serde_json::json!(["cpu", "nanoseconds"])
    );
    assert_eq!(samples["period"], 1_000_000_000u64 / 199);
    assert_eq!(samples["scope"], "rover");
    let (start, end) = cpu.time_range().unwrap();
    assert_eq!(samples["time_unix_nano"], start);
    assert_eq!(samples["duration_nano"], end - start);
    assert_eq!(total(samples), cpu.total(Metric::OnCpuSamples));
    assert!(total(samples) > 0);
    let spinning = with_function(samples, "spin_here");
    let in_spin: u64 = spinning.iter().map(|s| s["value"].as_u64().unwrap()).sum();
    assert!(
        in_spin * 10 >= total(samples) * 9,
        "{in_spin} of {} samples in spin_here",
        total(samples)
    );
    for sample in &spinning {
        assert_eq!(sample["attributes"]["thread.id"], spin.pid());
        assert!(sample["attributes"]["thread.name"].is_string());
        let stack: Vec<&Value> = sample["stack"].as_array().unwrap().iter().collect();
        let at = stack
            .iter()
            .position(|l| l["functions"][0] == "spin_here")
            .unwrap();
        // Leaf first: main is toward the root from spin_here.
        assert!(
            stack[at + 1..].iter().any(|l| l["functions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "main")),
            "{sample}"
        );
        assert_eq!(stack[at]["frame_type"], "native");
        assert_eq!(stack[at]["mapping"], binary.to_string_lossy().as_ref());
        assert_eq!(
            stack[at]["mapping_attributes"]["process.executable.build_id.gnu"],
            build_id
        );
        // Leaf-side of spin_here: the kernel's frames first (typed kernel,
        // in kernel mappings), then user frames spin_here called (now,
        // libc's and the vDSO's clock_gettime: typed native, in user files).
        let kernel = stack[..at]
            .iter()
            .take_while(|l| l["frame_type"] == "kernel")
            .count();
        for location in &stack[..kernel] {
            let mapping = location["mapping"].as_str().unwrap();
            assert!(mapping.starts_with('['), "{mapping} in {sample}");
        }
        for location in &stack[kernel..at] {
            assert_eq!(location["frame_type"], "native", "{sample}");
            let mapping = location["mapping"].as_str().unwrap();
            assert!(!mapping.starts_with("[kernel"), "{mapping} in {sample}");
        }
    }

    // The blocking process: off-CPU time and switches, two profiles.
    let block_resource = resource(&decoded, block.pid());
    let nanos = profile(block_resource, "off_cpu");
    let switches = profile(block_resource, "context_switch");
    assert_eq!(nanos["sample_type"][1], "nanoseconds");
    assert_eq!(switches["sample_type"][1], "count");
    assert_eq!(total(nanos), blocked.total(Metric::OffCpuNanos));
    assert_eq!(total(switches), blocked.total(Metric::OffCpuSwitches));
    let in_block = with_function(switches, "block_here");
    let blocks: u64 = in_block.iter().map(|s| s["value"].as_u64().unwrap()).sum();
    assert!(blocks >= 20, "{blocks} switches in block_here");
    for sample in in_block {
        assert_eq!(sample["attributes"]["rover.task.state"], "interruptible");
    }
    drop(spin);
}
