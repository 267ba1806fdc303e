//! Folded stacks (`comm;root;...;leaf VALUE`), the text format flame graph
//! tools (`flamegraph.pl`, `inferno`, speedscope) read.

use std::io::{self, Write};

use hashbrown::HashMap;

use crate::profile::{Frame, FrameKind, Metric, Profile, StackId};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldedOptions {
    /// The number on each line. [`Metric::OffCpuNanos`] is written in
    /// microseconds (rounded to nearest), as off-CPU flame graphs expect.
    pub metric: Metric,
    /// What starts each line.
    pub prefix: FoldedPrefix,
}

impl FoldedOptions {
    /// On-CPU sample counts, lines prefixed by the thread name.
    pub fn on_cpu() -> Self {
        Self {
            metric: Metric::OnCpuSamples,
            prefix: FoldedPrefix::Comm,
        }
    }

    /// Off-CPU time in microseconds, lines prefixed by the thread name.
    pub fn off_cpu_time() -> Self {
        Self {
            metric: Metric::OffCpuNanos,
            prefix: FoldedPrefix::Comm,
        }
    }

    /// Off-CPU switch counts, lines prefixed by the thread name.
    pub fn off_cpu_switches() -> Self {
        Self {
            metric: Metric::OffCpuSwitches,
            prefix: FoldedPrefix::Comm,
        }
    }
}

/// The folded lines of `profile`, sorted, one per distinct (prefix, stack),
/// without trailing newlines. Lines whose value is zero (after conversion to
/// microseconds for off-CPU time) are left out.
///
/// Frames are written root first. Kernel frames get the suffix `_[k]`, JIT
/// frames `_[j]`, inlined frames `_[i]` (inlined wins over kernel); unknown
/// frames read `[module+0xOFFSET]` or `[unknown]`. `;` in names becomes `:`
/// and line breaks become spaces, and an empty name or prefix reads
/// `[unknown]`, so every line parses with one field per frame.
pub fn folded_lines(profile: &Profile, options: &FoldedOptions) -> Vec<String> {
    // Lines are keyed by (prefix index, stack): threads sharing a prefix
    // share lines, and each prefix string is built once.
    let mut prefixes: Vec<String> = Vec::new();
    let mut prefix_ids: HashMap<String, u32> = HashMap::new();
    let mut prefix_of: HashMap<(u8, u32, u32), u32> = HashMap::new();
    let mut sums: HashMap<(u32, StackId), u64> = HashMap::new();
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
            // Threads with equal prefixes (same comm) share one index.
            let next = prefixes.len() as u32;
            *prefix_ids.entry(s).or_insert_with_key(|s| {
                prefixes.push(s.clone());
                next
            })
        });
        let sum = sums.entry((prefix, entry.stack)).or_insert(0);
        *sum = sum.saturating_add(value);
    }
    let mut lines: Vec<String> = sums
        .into_iter()
        .filter_map(|((prefix, stack), raw)| {
            let value = match options.metric {
                Metric::OffCpuNanos => raw.saturating_add(500) / 1000,
                Metric::OnCpuSamples | Metric::OffCpuSwitches => raw,
            };
            (value > 0).then(|| render_line(profile, &prefixes[prefix as usize], stack, value))
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
/// write_folded(profile, &FoldedOptions::off_cpu_time(), file)?;
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

fn render_line(profile: &Profile, prefix: &str, stack: StackId, value: u64) -> String {
    let mut line = String::with_capacity(prefix.len() + 32 * profile.stack(stack).len());
    line.push_str(prefix);
    let mut first = prefix.is_empty();
    for &id in profile.stack(stack).iter().rev() {
        if !first {
            line.push(';');
        }
        first = false;
        match profile.frame(id) {
            Some(frame) => push_frame_label(&mut line, &frame),
            None => line.push_str("[unknown]"),
        }
    }
    line.push(' ');
    line.push_str(&value.to_string());
    line
}

/// Appends the folded label of `frame`: its display name, sanitized, with
/// the kind suffix.
pub(crate) fn push_frame_label(out: &mut String, frame: &Frame<'_>) {
    let name = frame.display_name();
    if name.is_empty() {
        out.push_str("[unknown]");
    } else {
        sanitize_into(out, &name);
    }
    let suffix = if frame.inlined {
        "_[i]"
    } else {
        match frame.kind {
            FrameKind::Kernel => "_[k]",
            FrameKind::Jit => "_[j]",
            FrameKind::Native | FrameKind::Unknown => "",
        }
    };
    out.push_str(suffix);
}

fn sanitize_into(out: &mut String, s: &str) {
    for c in s.chars() {
        out.push(match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        });
    }
}
