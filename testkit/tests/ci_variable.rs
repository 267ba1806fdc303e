//! The `CI` variable as the tests see it: this test binary runs its own
//! `child` test in a fresh process, with and without `CI`, and reads what it
//! printed.

use std::process::{Command, Output};

const CHILD: &str = "child_requires_a_missing_tool";
const TOOL: &str = "rover-testkit-no-such-tool";

/// Set only in the child processes: the child's requirement check runs there,
/// never in a plain `cargo test` (where it would fail under CI).
const IN_CHILD: &str = "ROVER_TESTKIT_CHILD";

#[test]
#[ignore = "run by the other tests of this file, in a child process"]
fn child_requires_a_missing_tool() {
    if std::env::var_os(IN_CHILD).is_none() {
        return;
    }
    assert!(!testkit::require_tool(CHILD, TOOL));
    println!("child went on after the skip");
}

fn run_child(ci: Option<&str>) -> (Output, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            CHILD,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_CHILD, "1");
    match ci {
        Some(value) => command.env("CI", value),
        None => command.env_remove("CI"),
    };
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

#[test]
fn with_ci_set_a_missing_tool_fails_the_test_and_says_what_is_missing() {
    for ci in ["1", "true"] {
        let (output, text) = run_child(Some(ci));
        assert!(!output.status.success(), "CI={ci}: {text}");
        assert!(
            text.contains(&format!("{CHILD}: {TOOL} is not installed (CI is set")),
            "CI={ci}: {text}"
        );
        assert!(!text.contains("child went on"), "CI={ci}: {text}");
    }
}

#[test]
fn without_ci_a_missing_tool_prints_one_skip_line_and_passes() {
    for ci in [None, Some(""), Some("0"), Some("false")] {
        let (output, text) = run_child(ci);
        assert!(output.status.success(), "CI={ci:?}: {text}");
        let skips: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("skipping "))
            .collect();
        assert_eq!(
            skips,
            [format!("skipping {CHILD}: {TOOL} is not installed")],
            "CI={ci:?}: {text}"
        );
        assert!(text.contains("child went on"), "CI={ci:?}: {text}");
        assert!(text.contains("1 passed"), "CI={ci:?}: {text}");
    }
}
