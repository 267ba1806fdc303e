//! The `profile` example's OTLP output, read by the official OpenTelemetry
//! Python classes (rover-core/tests/otlp_peers/decode.py). Not a guest
//! test: it needs the Python peers' venv (`testkit::otel_python`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn example() -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("examples").join("profile")
}

fn decode_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rover-core/tests/otlp_peers/decode.py")
}

/// Every function name in `resources`' samples of `sample_type`, with
/// the total of their values.
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
    let output = Command::new(example())
        .args([
            "--duration",
            "2",
            "--service",
            "demo-svc",
            "--label",
            "team=rover",
            "--otlp",
        ])
        .arg(&request)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success());
    assert!(
        stdout.contains(&format!("wrote {}", request.display())),
        "{stdout}"
    );
    let out = Command::new(python)
        .arg(decode_script())
        .arg(&request)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the official classes refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Value = serde_json::from_slice(&out.stdout).unwrap();
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
