//! SVG flame graphs of a profile, and differential flame graphs of two,
//! drawn by `inferno` from the folded export.

use std::io::Write;

use inferno::flamegraph::color::{BasicPalette, MultiPalette};
use inferno::flamegraph::{self, Palette};

use super::error::ExportError;
use super::folded::{FoldedOptions, folded_lines};
use crate::profile::{Metric, Profile};

/// Options of the SVG flame graphs.
///
/// The constructors follow the naming scheme of [`FoldedOptions`]:
/// `on_cpu` draws [`Metric::OnCpuSamples`], `off_cpu` draws
/// [`Metric::OffCpuNanos`] (in microseconds) and `off_cpu_switches` draws
/// [`Metric::OffCpuSwitches`]; `new(metric, title)` takes any.
///
/// ```
/// use rover_core::export::FlameGraphOptions;
/// let mut options = FlameGraphOptions::off_cpu("checkout service, off-CPU");
/// options.subtitle = Some("blocked at least 100 us".into());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FlameGraphOptions {
    /// Title at the top of the graph.
    pub title: String,
    /// Optional second line under the title.
    pub subtitle: Option<String>,
    /// Which metric and line prefix to draw (see [`FoldedOptions`]).
    pub folded: FoldedOptions,
    /// For differential graphs: scale the first profile to the second's total,
    /// so a change in load does not paint everything red or blue.
    pub normalize: bool,
}

impl FlameGraphOptions {
    /// `metric`, titled `title`, frames prefixed by the thread name.
    pub fn new(metric: Metric, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            subtitle: None,
            folded: FoldedOptions::new(metric),
            normalize: false,
        }
    }

    /// On-CPU samples ([`Metric::OnCpuSamples`]), titled `title`.
    pub fn on_cpu(title: impl Into<String>) -> Self {
        Self::new(Metric::OnCpuSamples, title)
    }

    /// Off-CPU time in microseconds ([`Metric::OffCpuNanos`]), titled `title`.
    pub fn off_cpu(title: impl Into<String>) -> Self {
        Self::new(Metric::OffCpuNanos, title)
    }

    /// Off-CPU switch counts ([`Metric::OffCpuSwitches`]), titled `title`.
    pub fn off_cpu_switches(title: impl Into<String>) -> Self {
        Self::new(Metric::OffCpuSwitches, title)
    }

    fn inferno(&self) -> flamegraph::Options<'static> {
        let mut o = flamegraph::Options::default();
        o.title = self.title.clone();
        o.subtitle = self.subtitle.clone();
        // Java's palette colours the `_[k]`, `_[j]` and `_[i]` annotations
        // apart; off-CPU graphs are blue by convention.
        let (palette, count) = match self.folded.metric {
            Metric::OnCpuSamples => (Palette::Multi(MultiPalette::Java), "samples"),
            Metric::OffCpuNanos => (Palette::Basic(BasicPalette::Io), "us"),
            Metric::OffCpuSwitches => (Palette::Basic(BasicPalette::Io), "switches"),
        };
        o.colors = palette;
        o.count_name = count.to_string();
        o
    }
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::OnCpuSamples => "on-CPU samples",
        Metric::OffCpuNanos => "off-CPU time",
        Metric::OffCpuSwitches => "off-CPU switches",
    }
}

/// Writes an SVG flame graph of `profile` to `out`, drawn from its
/// [`folded_lines`](super::folded_lines), so each printed stack is one box.
///
/// ```no_run
/// # fn demo(profile: &rover_core::profile::Profile) -> Result<(), Box<dyn std::error::Error>> {
/// use rover_core::export::{write_flamegraph, FlameGraphOptions};
/// let mut options = FlameGraphOptions::on_cpu("checkout service, on-CPU");
/// options.subtitle = Some("99 Hz, 30 s".into());
/// write_flamegraph(profile, &options, std::fs::File::create("cpu.svg")?)?;
/// # Ok(()) }
/// ```
///
/// Fails with [`ExportError::Empty`] when the profile has nothing for the
/// chosen metric (inferno would draw an error picture instead).
pub fn write_flamegraph(
    profile: &Profile,
    options: &FlameGraphOptions,
    out: impl Write,
) -> Result<(), ExportError> {
    let lines = folded_lines(profile, &options.folded);
    if lines.is_empty() {
        return Err(ExportError::Empty(metric_name(options.folded.metric)));
    }
    let mut inferno = options.inferno();
    flamegraph::from_lines(&mut inferno, lines.iter().map(String::as_str), out)?;
    Ok(())
}

/// Writes a differential flame graph to `out`: the shape of `after`,
/// coloured red where a stack grew since `before` and blue where it shrank,
/// as `difffolded.pl | flamegraph.pl` draws it.
///
/// ```no_run
/// # fn demo(off: &rover_core::profile::Profile, on: &rover_core::profile::Profile) -> Result<(), Box<dyn std::error::Error>> {
/// use rover_core::export::{write_differential_flamegraph, FlameGraphOptions};
/// let mut options = FlameGraphOptions::on_cpu("envoy: tracing off -> on");
/// options.normalize = true;
/// write_differential_flamegraph(off, on, &options, std::fs::File::create("diff.svg")?)?;
/// # Ok(()) }
/// ```
pub fn write_differential_flamegraph(
    before: &Profile,
    after: &Profile,
    options: &FlameGraphOptions,
    out: impl Write,
) -> Result<(), ExportError> {
    let join = |p: &Profile| {
        let mut text = folded_lines(p, &options.folded).join("\n");
        text.push('\n');
        text
    };
    let (b, a) = (join(before), join(after));
    if b.trim().is_empty() && a.trim().is_empty() {
        return Err(ExportError::Empty(metric_name(options.folded.metric)));
    }
    let diff_options = inferno::differential::Options {
        normalize: options.normalize,
        strip_hex: false,
    };
    let mut two_columns = Vec::new();
    inferno::differential::from_readers(
        diff_options,
        b.as_bytes(),
        a.as_bytes(),
        &mut two_columns,
    )?;
    let mut inferno = options.inferno();
    flamegraph::from_reader(&mut inferno, two_columns.as_slice(), out)?;
    Ok(())
}
