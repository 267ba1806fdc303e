//! Folded stacks (`comm;root;...;leaf VALUE`), the text format flame graph
//! tools (`flamegraph.pl`, `inferno`, speedscope) read.

use std::io::{self, Write};

use hashbrown::HashMap;

use crate::profile::{Metric, PrintedStacks, Profile, sanitize_into};

/// What starts each folded line, before the root frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FoldedPrefix {
    /// The thread's name (`comm`), as `perf script | stackcollapse` does.
    #[default]
    Comm,
    /// The process name.
    Process,
    /// The process name and pid, `name-pid`.
    ProcessPid,
    /// Nothing: lines start at the root frame.
    None,
}

/// Options of [`write_folded`] and [`folded_lines`].
///
/// The constructors follow the one naming scheme of rover's exports:
/// `on_cpu` reads [`Metric::OnCpuSamples`], `off_cpu` reads
/// [`Metric::OffCpuNanos`] (written in microseconds) and `off_cpu_switches`
/// reads [`Metric::OffCpuSwitches`]; `new(metric)` takes any. Lines start
/// with the thread name; set [`prefix`](FoldedOptions::prefix) to change it.
///
/// ```
/// use rover_core::export::{FoldedOptions, FoldedPrefix};
/// use rover_core::profile::Metric;
///
/// let options = FoldedOptions {
///     prefix: FoldedPrefix::ProcessPid,
///     ..FoldedOptions::off_cpu()
/// };
/// assert_eq!(options.metric, Metric::OffCpuNanos);
/// assert_eq!(FoldedOptions::new(Metric::OffCpuSwitches), FoldedOptions::off_cpu_switches());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldedOptions {
    /// The number on each line. [`Metric::OffCpuNanos`] is written in
    /// microseconds (rounded to nearest), as off-CPU flame graphs expect.
    pub metric: Metric,
    /// What starts each line.
    pub prefix: FoldedPrefix,
}

impl FoldedOptions {
    /// `metric`, lines prefixed by the thread name.
    pub fn new(metric: Metric) -> Self {
        Self {
            metric,
            prefix: FoldedPrefix::Comm,
        }
    }

    /// On-CPU sample counts ([`Metric::OnCpuSamples`]).
    pub fn on_cpu() -> Self {
        Self::new(Metric::OnCpuSamples)
    }

    /// Off-CPU time in microseconds ([`Metric::OffCpuNanos`]).
    pub fn off_cpu() -> Self {
        Self::new(Metric::OffCpuNanos)
    }

    /// Off-CPU switch counts ([`Metric::OffCpuSwitches`]).
    pub fn off_cpu_switches() -> Self {
        Self::new(Metric::OffCpuSwitches)
    }
}

/// The folded lines of `profile`, sorted, without trailing newlines: one
/// per distinct printed text, values summed. Rows whose prefix and frames
/// print the same are one line: threads of one name (or processes of one
/// name with [`FoldedPrefix::Process`]), and stacks that differ only in
/// what is not printed (source lines, files, the module of a named
/// function). Lines whose value is zero (after conversion to microseconds
/// for off-CPU time) are left out.
///
/// Frames are written root first. Kernel frames get the suffix `_[k]`, JIT
/// frames `_[j]`, inlined frames `_[i]` (inlined wins over kernel); unknown
/// frames read `[module+0xOFFSET]` or `[unknown]`. `;` in names becomes `:`
/// and line breaks become spaces, and an empty name or prefix reads
/// `[unknown]`, so every line parses with one field per frame.
///
/// ```
/// # fn demo(profile: &rover_core::Profile) {
/// use rover_core::export::{FoldedOptions, folded_lines};
/// for line in folded_lines(profile, &FoldedOptions::on_cpu()).iter().take(3) {
///     println!("{line}");
/// }
/// # }
/// ```
pub fn folded_lines(profile: &Profile, options: &FoldedOptions) -> Vec<String> {
    // Lines are keyed by (prefix text, stack text) ids: every row that
    // prints the same adds into one line, and each text is built once.
    let mut prefixes: Vec<String> = Vec::new();
    let mut prefix_ids: HashMap<String, u32> = HashMap::new();
    let mut prefix_of: HashMap<(u8, u32, u32), u32> = HashMap::new();
    let mut printed = PrintedStacks::new(profile);
    let mut sums: HashMap<(u32, u32), u64> = HashMap::new();
    for entry in profile.entries() {
        let value = entry.value.get(options.metric);
        if value == 0 {
            continue;
        }
        let Some(thread) = profile.thread(entry.thread) else {
            continue;
        };
        let key = match options.prefix {
            FoldedPrefix::Comm => (0, 0, entry.thread.0),
            FoldedPrefix::Process | FoldedPrefix::ProcessPid => (1, thread.pid, entry.thread.0),
            FoldedPrefix::None => (2, 0, 0),
        };
        let prefix = *prefix_of.entry(key).or_insert_with(|| {
            let mut s = String::new();
            match options.prefix {
                FoldedPrefix::Comm => sanitize_into(&mut s, thread.comm),
                FoldedPrefix::Process => sanitize_into(&mut s, thread.process_name),
                FoldedPrefix::ProcessPid => {
                    sanitize_into(&mut s, thread.process_name);
                    s.push('-');
                    s.push_str(&thread.pid.to_string());
                }
                FoldedPrefix::None => {}
            }
            // An empty name would silently drop the first field.
            if s.is_empty() && options.prefix != FoldedPrefix::None {
                s.push_str("[unknown]");
            }
            let next = prefixes.len() as u32;
            *prefix_ids.entry(s).or_insert_with_key(|s| {
                prefixes.push(s.clone());
                next
            })
        });
        let sum = sums.entry((prefix, printed.id(entry.stack))).or_insert(0);
        *sum = sum.saturating_add(value);
    }
    let mut lines: Vec<String> = sums
        .into_iter()
        .filter_map(|((prefix, stack), raw)| {
            let value = match options.metric {
                Metric::OffCpuNanos => raw.saturating_add(500) / 1000,
                Metric::OnCpuSamples | Metric::OffCpuSwitches => raw,
            };
            (value > 0).then(|| render_line(&prefixes[prefix as usize], printed.text(stack), value))
        })
        .collect();
    lines.sort_unstable();
    lines
}

/// Writes [`folded_lines`] to `out`, one per line.
///
/// ```no_run
/// # fn demo(profile: &rover_core::profile::Profile) -> std::io::Result<()> {
/// use rover_core::export::{write_folded, FoldedOptions};
/// let file = std::io::BufWriter::new(std::fs::File::create("offcpu.folded")?);
/// write_folded(profile, &FoldedOptions::off_cpu(), file)?;
/// # Ok(()) }
/// ```
pub fn write_folded(
    profile: &Profile,
    options: &FoldedOptions,
    mut out: impl Write,
) -> io::Result<()> {
    for line in folded_lines(profile, options) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn render_line(prefix: &str, stack: &str, value: u64) -> String {
    let mut line = String::with_capacity(prefix.len() + stack.len() + 22);
    line.push_str(prefix);
    if !prefix.is_empty() && !stack.is_empty() {
        line.push(';');
    }
    line.push_str(stack);
    line.push(' ');
    line.push_str(&value.to_string());
    line
}
