//! A real session's profile exported: folded stacks read back by inferno,
//! and pprof read by `go tool pprof -top`.

mod session_fixtures;

use std::process::Command;

use object::Object;
use std::time::Duration;

use rover_core::export::{
    FlameGraphOptions, FoldedOptions, write_flamegraph, write_folded, write_pprof,
};
use rover_core::profile::Metric;
use session_fixtures::{BLOCK, Fixture, SPIN, Start, profiler};

#[test]
fn session_profiles_export_to_folded_svg_and_pprof() {
    let test = "session_profiles_export_to_folded_svg_and_pprof";
    if !testkit::require_tool(test, "go") {
        return;
    }
    let Some(profiler) = profiler(test) else {
        return;
    };
    let spin_fixture = Fixture::build("spin", SPIN);
    let block_fixture = Fixture::build("block", BLOCK);
    let mut spin = spin_fixture.start(&["800"]);
    let mut block = block_fixture.start(&[]);
    let on_cpu = profiler
        .on_cpu()
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
    let dir = tempfile::tempdir().unwrap();

    // Folded stacks: inferno parses every line and draws the graph.
    let mut folded = Vec::new();
    write_folded(&cpu, &FoldedOptions::on_cpu(), &mut folded).unwrap();
    let text = String::from_utf8(folded).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let folded_total: u64 = lines
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(folded_total, cpu.total(Metric::OnCpuSamples));
    assert!(
        lines.iter().any(|l| l.contains(";main;spin_here")),
        "{text}"
    );
    let mut svg = Vec::new();
    let mut options = inferno::flamegraph::Options::default();
    inferno::flamegraph::from_lines(&mut options, lines.iter().copied(), &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("spin_here"));
    let mut own_svg = Vec::new();
    write_flamegraph(
        &blocked,
        &FlameGraphOptions::off_cpu("blocking fixture"),
        &mut own_svg,
    )
    .unwrap();
    assert!(String::from_utf8(own_svg).unwrap().contains("block_here"));

    // pprof: go tool pprof reads both files and names the functions.
    for (profile, name, function) in [
        (&cpu, "cpu.pb.gz", "spin_here"),
        (&blocked, "off.pb.gz", "block_here"),
    ] {
        let path = dir.path().join(name);
        write_pprof(profile, std::fs::File::create(&path).unwrap()).unwrap();
        let output = match Command::new("go")
            .args(["tool", "pprof", "-top"])
            .arg(&path)
            .output()
        {
            Ok(output) => output,
            Err(error) => panic!("go (Debian golang-go) is needed to read pprof files: {error}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "go tool pprof failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("{stdout}");
        assert!(stdout.contains(function), "{function} not in:\n{stdout}");
    }

    // The fixture's GNU build id (gcc writes one) reaches the profile and
    // the pprof mapping of its binary, as `go tool pprof -raw` lists it.
    let binary = std::fs::canonicalize(&spin_fixture.path).unwrap();
    let data = std::fs::read(&binary).unwrap();
    let expected: String = object::File::parse(&*data)
        .unwrap()
        .build_id()
        .unwrap()
        .expect("gcc wrote no build id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let module = binary.to_string_lossy();
    assert_eq!(cpu.build_id(&module), Some(expected.as_str()));
    let raw = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(dir.path().join("cpu.pb.gz"))
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw.stdout);
    let mapping = raw
        .lines()
        .skip_while(|line| !line.starts_with("Mappings"))
        .find(|line| line.contains(&*module))
        .unwrap_or_else(|| panic!("no mapping of {module} in:\n{raw}"));
    assert!(mapping.contains(&expected), "{mapping}");
}
