//! The difference of two profiles (before and after a change), per stack and
//! per function, as SkyWalking Rover compares Envoy with tracing on and off.

use hashbrown::{HashMap, HashSet};

use super::frame::FrameKind;
use super::import::Importer;
use super::model::{Profile, StackId};
use super::printed::PrintedStacks;
use super::top::{FunctionKey, FunctionTotals};
use super::value::Metric;

/// One printed stack's value before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackDelta {
    /// The stack's frames, leaf first, labelled as the folded export prints
    /// them (`name`, `name_[k]`, `name_[j]`, `name_[i]`,
    /// `[module+0xOFFSET]`): stacks that print the same are one delta.
    pub frames: Vec<String>,
    /// Value in the first profile.
    pub before: u64,
    /// Value in the second profile.
    pub after: u64,
}

impl StackDelta {
    /// `after - before`.
    pub fn delta(&self) -> i128 {
        i128::from(self.after) - i128::from(self.before)
    }
}

/// One function's self and total values before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDelta {
    /// Function name (`[module+0xOFFSET]` for unknown frames).
    pub name: String,
    /// Module, if known.
    pub module: Option<String>,
    /// Kind of code.
    pub kind: FrameKind,
    /// Self value in the first profile.
    pub self_before: u64,
    /// Self value in the second profile.
    pub self_after: u64,
    /// Total (inclusive) value in the first profile.
    pub total_before: u64,
    /// Total (inclusive) value in the second profile.
    pub total_after: u64,
}

impl FunctionDelta {
    /// `self_after - self_before`.
    pub fn self_delta(&self) -> i128 {
        i128::from(self.self_after) - i128::from(self.self_before)
    }

    /// `total_after - total_before`.
    pub fn total_delta(&self) -> i128 {
        i128::from(self.total_after) - i128::from(self.total_before)
    }
}

/// The difference of two profiles for one metric, from [`Profile::diff`].
///
/// Stacks are compared as they print (threads and pids are ignored: the
/// two runs are usually different processes, and lines and files are not
/// printed), so each printed stack is listed once and the profiles'
/// interning order does not matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileDiff {
    /// The metric compared.
    pub metric: Metric,
    /// Every printed stack present in either profile, largest absolute
    /// change first.
    pub stacks: Vec<StackDelta>,
    /// Every function present in either profile, largest absolute change of
    /// total value first.
    pub functions: Vec<FunctionDelta>,
}

impl ProfileDiff {
    /// The function delta named `name`, if any.
    ///
    /// ```
    /// # fn demo(diff: &rover_core::profile::ProfileDiff) {
    /// if let Some(f) = diff.function("malloc") {
    ///     println!("malloc: {:+} total", f.total_delta());
    /// }
    /// # }
    /// ```
    pub fn function(&self, name: &str) -> Option<&FunctionDelta> {
        self.functions.iter().find(|f| f.name == name)
    }
}

impl Profile {
    /// Compares `before` with `after` on `metric`, per printed stack and
    /// per function; see [`ProfileDiff`].
    ///
    /// ```
    /// # fn demo(off: &rover_core::profile::Profile, on: &rover_core::profile::Profile) {
    /// use rover_core::profile::{Metric, Profile};
    /// let diff = Profile::diff(off, on, Metric::OnCpuSamples);
    /// for f in diff.functions.iter().take(5) {
    ///     println!("{:+8} {}", f.total_delta(), f.name);
    /// }
    /// for s in diff.stacks.iter().take(5) {
    ///     let root_first: Vec<&str> = s.frames.iter().rev().map(String::as_str).collect();
    ///     println!("{:+8} {}", s.delta(), root_first.join(";"));
    /// }
    /// # }
    /// ```
    pub fn diff(before: &Profile, after: &Profile, metric: Metric) -> ProfileDiff {
        let mut tables = Profile::new();
        let mut sides: [Vec<(StackId, u64)>; 2] = [Vec::new(), Vec::new()];
        for (side, src) in sides.iter_mut().zip([before, after]) {
            let mut importer = Importer::new(src);
            for (stack, &value) in src.stack_values(metric).iter().enumerate() {
                if value > 0 {
                    side.push((importer.stack(&mut tables, StackId(stack as u32)), value));
                }
            }
        }
        let mut per_stack = [
            vec![0u64; tables.stack_count()],
            vec![0u64; tables.stack_count()],
        ];
        for (values, side) in per_stack.iter_mut().zip(&sides) {
            for &(stack, value) in side {
                if let Some(slot) = values.get_mut(stack.0 as usize) {
                    *slot = slot.saturating_add(value);
                }
            }
        }
        // Stacks that print the same add up, in the order their first
        // member was interned.
        let mut printed = PrintedStacks::new(&tables);
        let mut group_of: HashMap<u32, usize> = HashMap::new();
        let mut groups: Vec<(u32, u64, u64)> = Vec::new();
        for (i, (&b, &a)) in per_stack[0].iter().zip(&per_stack[1]).enumerate() {
            if b == 0 && a == 0 {
                continue;
            }
            let id = printed.id(StackId(i as u32));
            let slot = *group_of.entry(id).or_insert_with(|| {
                groups.push((id, 0, 0));
                groups.len() - 1
            });
            let group = &mut groups[slot];
            group.1 = group.1.saturating_add(b);
            group.2 = group.2.saturating_add(a);
        }
        let mut stacks: Vec<StackDelta> = groups
            .into_iter()
            .map(|(id, before, after)| StackDelta {
                frames: leaf_first(printed.text(id)),
                before,
                after,
            })
            .collect();
        // Stable: equal changes keep interning order.
        stacks.sort_by_key(|d| std::cmp::Reverse(d.delta().abs()));

        let totals = [
            FunctionTotals::compute(&tables, &per_stack[0]),
            FunctionTotals::compute(&tables, &per_stack[1]),
        ];
        let keys: HashSet<&FunctionKey> = totals.iter().flat_map(|t| t.values.keys()).collect();
        let mut functions: Vec<FunctionDelta> = keys
            .into_iter()
            .map(|key| {
                let b = totals[0].values.get(key).copied().unwrap_or((0, 0));
                let a = totals[1].values.get(key).copied().unwrap_or((0, 0));
                let stat = FunctionTotals::stat(&tables, key, (0, 0));
                FunctionDelta {
                    name: stat.name,
                    module: stat.module,
                    kind: stat.kind,
                    self_before: b.0,
                    self_after: a.0,
                    total_before: b.1,
                    total_after: a.1,
                }
            })
            .collect();
        functions.sort_by(|a, b| {
            b.total_delta()
                .abs()
                .cmp(&a.total_delta().abs())
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.module.cmp(&b.module))
        });
        ProfileDiff {
            metric,
            stacks,
            functions,
        }
    }
}

/// The frames of a printed stack (root first, `;`-separated, labels
/// sanitized so none holds a `;`), leaf first.
fn leaf_first(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.rsplit(';').map(str::to_owned).collect()
}
