//! SVG flame graphs and differential flame graphs drawn by `inferno`.

mod profile_support;

use profile_support::*;
use rover_core::export::{
    ExportError, FlameGraphOptions, write_differential_flamegraph, write_flamegraph,
};
use rover_core::profile::{OffCpuState, ProfileBuilder};

fn svg(result: impl FnOnce(&mut Vec<u8>) -> Result<(), ExportError>) -> String {
    let mut out = Vec::new();
    result(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The `<g>` element of the frame titled `name`, up to its closing tag.
fn frame_group<'a>(svg: &'a str, name: &str) -> &'a str {
    let start = svg
        .find(&format!("<title>{name} ("))
        .unwrap_or_else(|| panic!("{name} not in the SVG"));
    let end = svg[start..].find("</g>").unwrap() + start;
    &svg[start..end]
}

#[test]
fn on_cpu_flame_graph_has_title_and_every_function() {
    let mut p = ProfileBuilder::new();
    on_cpu(
        &mut p,
        10,
        "app",
        &kernel(&["clear_page"]),
        &user(&["work", "main"]),
        30,
    );
    on_cpu(
        &mut p,
        10,
        "app",
        &[],
        &[sym_inlined("outer", APP, &["inner"]), sym("main", APP)],
        10,
    );
    let p = p.build();
    let mut options = FlameGraphOptions::on_cpu("rover on-CPU: app");
    options.subtitle = Some("pid 10".into());
    let svg = svg(|out| write_flamegraph(&p, &options, out));
    assert!(svg.starts_with("<?xml"));
    assert!(svg.contains("rover on-CPU: app"));
    assert!(svg.contains("pid 10"));
    assert!(frame_group(&svg, "clear_page").contains("30 samples"));
    assert!(frame_group(&svg, "main").contains("40 samples"));
    frame_group(&svg, "inner");
    frame_group(&svg, "outer");
}

#[test]
fn off_cpu_flame_graph_counts_microseconds() {
    let mut p = ProfileBuilder::new();
    let k = kernel(&["schedule", "io_schedule"]);
    off_cpu(
        &mut p,
        10,
        "app",
        &k,
        &user(&["read", "main"]),
        (OffCpuState::Uninterruptible, 20, 1_000_000_000),
    );
    let p = p.build();
    let svg = svg(|out| write_flamegraph(&p, &FlameGraphOptions::off_cpu("off-CPU"), out));
    assert!(
        frame_group(&svg, "io_schedule").contains("1,000,000 us"),
        "{}",
        frame_group(&svg, "io_schedule")
    );
}

#[test]
fn empty_metric_is_an_error_not_a_broken_picture() {
    let mut p = ProfileBuilder::new();
    on_cpu(&mut p, 10, "app", &[], &user(&["main"]), 1);
    let p = p.build();
    let err = write_flamegraph(&p, &FlameGraphOptions::off_cpu("x"), Vec::new()).unwrap_err();
    assert!(matches!(err, ExportError::Empty(_)), "{err}");
    assert!(err.to_string().contains("off-CPU time"));
}

#[test]
fn differential_flame_graph_marks_growth_red_and_shrink_blue() {
    let mut before = ProfileBuilder::new();
    on_cpu(
        &mut before,
        10,
        "envoy",
        &[],
        &user(&["filter", "main"]),
        50,
    );
    on_cpu(&mut before, 10, "envoy", &[], &user(&["proxy", "main"]), 50);
    let mut after = ProfileBuilder::new();
    on_cpu(&mut after, 11, "envoy", &[], &user(&["proxy", "main"]), 20);
    on_cpu(&mut after, 11, "envoy", &[], &user(&["filter", "main"]), 50);
    on_cpu(
        &mut after,
        11,
        "envoy",
        &[],
        &user(&["tracing", "filter", "main"]),
        60,
    );
    let (before, after) = (before.build(), after.build());
    let options = FlameGraphOptions::on_cpu("envoy: tracing off vs on");
    let svg = svg(|out| write_differential_flamegraph(&before, &after, &options, out));
    assert!(svg.contains("envoy: tracing off vs on"));
    let tracing = frame_group(&svg, "tracing");
    let proxy = frame_group(&svg, "proxy");
    // inferno shows the change (in points of the after total, 130) in the
    // frame's title and paints it: red for growth, blue for shrinkage.
    // tracing: 0 -> 60 is +60/130; proxy: 50 -> 20 is -30/130.
    assert!(
        tracing.contains("(60 samples, 46.15%; +46.15%)"),
        "{tracing}"
    );
    assert!(tracing.contains("fill=\"rgb(255,"), "{tracing}");
    assert!(proxy.contains("(20 samples, 15.38%; -23.08%)"), "{proxy}");
    assert!(proxy.contains(",255)\""), "{proxy}");
}
