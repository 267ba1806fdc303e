//! Top-N functions by self value (where the stack ends) and by total value
//! (the stack passes through them), each function counted once per stack
//! even when it recurses.

use hashbrown::HashMap;

use super::frame::{FrameKind, FrameRecord};
use super::model::Profile;
use super::value::Metric;

/// A function's share of a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStat {
    /// Function name (`[module+0xOFFSET]` for unknown frames).
    pub name: String,
    /// Module of the function, if known.
    pub module: Option<String>,
    /// Kind of code.
    pub kind: FrameKind,
    /// Value of the stacks ending in this function.
    pub self_value: u64,
    /// Value of the stacks containing this function, once per stack.
    pub total_value: u64,
}

/// How [`Profile::top_functions`] ranks: by [`FunctionStat::self_value`]
/// or by [`FunctionStat::total_value`], the variants named after the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopOrder {
    /// By self value, then total.
    SelfValue,
    /// By total (inclusive) value, then self.
    TotalValue,
}

/// Identity of a function across frames: inlined or not, any line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FunctionKey {
    kind: FrameKind,
    name: u32,
    module: u32,
    offset: u64,
}

impl FunctionKey {
    fn of(r: &FrameRecord) -> Self {
        Self {
            kind: r.kind,
            name: r.name,
            module: r.module,
            offset: r.offset,
        }
    }
}

/// Self and total values per function, for stack values given per stack id.
pub(crate) struct FunctionTotals {
    pub(crate) values: HashMap<FunctionKey, (u64, u64)>,
}

impl FunctionTotals {
    pub(crate) fn compute(profile: &Profile, stack_values: &[u64]) -> Self {
        let mut values: HashMap<FunctionKey, (u64, u64)> = HashMap::new();
        let mut seen: Vec<FunctionKey> = Vec::new();
        for (stack, &value) in stack_values.iter().enumerate() {
            if value == 0 {
                continue;
            }
            let frames = profile.stacks.get(stack as u32).unwrap_or(&[]);
            seen.clear();
            for (depth, &f) in frames.iter().enumerate() {
                let Some(record) = profile.frames.get(f.0) else {
                    continue;
                };
                let key = FunctionKey::of(record);
                let slot = values.entry(key).or_insert((0, 0));
                if depth == 0 {
                    slot.0 = slot.0.saturating_add(value);
                }
                // Recursion repeats a function in one stack; its total counts once.
                if !seen.contains(&key) {
                    seen.push(key);
                    slot.1 = slot.1.saturating_add(value);
                }
            }
        }
        Self { values }
    }

    pub(crate) fn stat(
        profile: &Profile,
        key: &FunctionKey,
        (self_value, total_value): (u64, u64),
    ) -> FunctionStat {
        let record = FrameRecord {
            kind: key.kind,
            inlined: false,
            frame_pointer: false,
            has_offset: key.kind == FrameKind::Unknown && key.module != 0,
            name: key.name,
            module: key.module,
            file: 0,
            line: 0,
            reason: 0,
            offset: key.offset,
        };
        let frame = super::frame::frame_view(&profile.strings, &record);
        FunctionStat {
            name: frame.display_name().into_owned(),
            module: frame.module.map(str::to_owned),
            kind: key.kind,
            self_value,
            total_value,
        }
    }
}

impl Profile {
    /// Sum of `metric` per stack id, over all threads.
    pub(crate) fn stack_values(&self, metric: Metric) -> Vec<u64> {
        let mut out = vec![0u64; self.stack_count()];
        for e in self.entries() {
            if let Some(slot) = out.get_mut(e.stack.0 as usize) {
                *slot = slot.saturating_add(e.value.get(metric));
            }
        }
        out
    }

    /// The `n` functions with the most `metric`, ranked by `order`; ties by
    /// name. Functions are told apart by name, module and kind, so one
    /// function's inlined and outlined copies add up.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::profile::Profile) {
    /// use rover_core::profile::{Metric, TopOrder};
    /// for f in profile.top_functions(Metric::OnCpuSamples, TopOrder::TotalValue, 10) {
    ///     println!("{:>8} {:>8}  {}", f.self_value, f.total_value, f.name);
    /// }
    /// # }
    /// ```
    pub fn top_functions(&self, metric: Metric, order: TopOrder, n: usize) -> Vec<FunctionStat> {
        let totals = FunctionTotals::compute(self, &self.stack_values(metric));
        let mut stats: Vec<FunctionStat> = totals
            .values
            .iter()
            .map(|(key, &v)| FunctionTotals::stat(self, key, v))
            .collect();
        stats.sort_by(|a, b| {
            let (ka, kb) = match order {
                TopOrder::SelfValue => {
                    ((a.self_value, a.total_value), (b.self_value, b.total_value))
                }
                TopOrder::TotalValue => {
                    ((a.total_value, a.self_value), (b.total_value, b.self_value))
                }
            };
            kb.cmp(&ka)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.module.cmp(&b.module))
        });
        stats.truncate(n);
        stats
    }
}
