//! The OpenTelemetry test peers in `testkit/otel/`, built only on the
//! official Python classes (PyPI `opentelemetry-proto`, `grpcio`): a
//! decoder of serialized requests and a receiver (gRPC and HTTP) with fault
//! modes. Run them with [`otel_python`](crate::otel_python)'s interpreter.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `decode.py REQUEST_FILE`: prints the request as the official classes
/// read it (JSON), after checking the dictionary's invariants.
pub const DECODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/otel/decode.py");

/// `receiver.py (grpc|http) PORT RECORD [faults]`: see its docstring.
pub const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/otel/receiver.py");

/// What `decode.py` printed for `request`, parsed; panics with the
/// decoder's reason when the official classes refuse it.
pub fn decode(python: &Path, request: &Path) -> serde_json::Value {
    let out = Command::new(python)
        .arg(DECODE)
        .arg(request)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "the official classes refused {}: {}",
        request.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("decode.py prints JSON")
}

/// A running `receiver.py`, killed when dropped.
#[derive(Debug)]
pub struct Receiver {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Receiver {
    /// Starts a `transport` (`grpc` or `http`) receiver on `port` (0: a
    /// free one) recording to `record`, with `faults` (such as
    /// `["--slow", "0.4"]`), and waits until it listens.
    pub fn start(
        python: &Path,
        transport: &str,
        port: u16,
        record: &Path,
        faults: &[&str],
    ) -> Receiver {
        let mut child = Command::new(python)
            .arg(RECEIVER)
            .arg(transport)
            .arg(port.to_string())
            .arg(record)
            .args(faults)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {RECEIVER}: {e}"));
        let mut line = Vec::new();
        if let Some(stdout) = child.stdout.as_mut() {
            let mut byte = [0u8];
            while matches!(stdout.read(&mut byte), Ok(1)) && byte[0] != b'\n' {
                line.push(byte[0]);
            }
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver did not start: {line:?}"));
        Receiver { child, port }
    }

    /// Kills it (as a crash would: no goodbye to open connections).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The requests a receiver recorded in `record` (one JSON object per line;
/// a line cut short by a kill is left out).
pub fn records(record: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
