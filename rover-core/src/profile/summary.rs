//! Per-process totals of a profile: what an agent reports per process
//! without adding up samples itself.

use hashbrown::HashMap;

use super::model::Profile;
use super::value::Metric;

/// One process's share of a profile, from [`Profile::process_summaries`].
///
/// A process is a pid and a name: a pid seen under two names (after
/// `exec`) gives two summaries, as in [`Profile::processes`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessSummary {
    /// Process id (tgid).
    pub pid: u32,
    /// Process name.
    pub name: String,
    /// On-CPU samples of all its threads ([`Metric::OnCpuSamples`]).
    pub on_cpu_samples: u64,
    /// CPU time those samples stand for, in nanoseconds: samples × 10⁹ /
    /// [`Profile::sampling_frequency`], rounded down; `None` when the
    /// profile does not know its sampling frequency.
    pub on_cpu_nanos: Option<u64>,
    /// Time its threads spent off CPU, all states ([`Metric::OffCpuNanos`]).
    pub off_cpu_nanos: u64,
    /// Times its threads were switched off CPU ([`Metric::OffCpuSwitches`]).
    pub off_cpu_switches: u64,
}

impl Profile {
    /// Totals per process, most on-CPU samples first, then most off-CPU
    /// time, then most switches; ties by pid and name. For an on-CPU
    /// profile that ranks by CPU time, for an off-CPU profile by time
    /// blocked.
    ///
    /// ```
    /// # fn demo(profile: &rover_core::Profile) {
    /// for p in profile.process_summaries().iter().take(5) {
    ///     let cpu_ms = p.on_cpu_nanos.map_or(0, |ns| ns / 1_000_000);
    ///     println!(
    ///         "{:>7} {:<16} {:>6} ms on CPU {:>6} ms blocked ({} switches)",
    ///         p.pid, p.name, cpu_ms, p.off_cpu_nanos / 1_000_000, p.off_cpu_switches,
    ///     );
    /// }
    /// # }
    /// ```
    pub fn process_summaries(&self) -> Vec<ProcessSummary> {
        // Keyed by (pid, interned name), so names are copied once per process.
        let mut index: HashMap<(u32, u32), usize> = HashMap::new();
        let mut totals: Vec<(u32, u32, [u64; 3])> = Vec::new();
        for entry in self.entries() {
            let Some(thread) = self.threads.get(entry.thread.0) else {
                continue;
            };
            let slot = *index
                .entry((thread.pid, thread.process))
                .or_insert_with(|| {
                    totals.push((thread.pid, thread.process, [0; 3]));
                    totals.len() - 1
                });
            let sums = &mut totals[slot].2;
            let metrics = [
                Metric::OnCpuSamples,
                Metric::OffCpuNanos,
                Metric::OffCpuSwitches,
            ];
            for (sum, metric) in sums.iter_mut().zip(metrics) {
                *sum = sum.saturating_add(entry.value.get(metric));
            }
        }
        let hz = self.sampling_frequency();
        let mut out: Vec<ProcessSummary> = totals
            .into_iter()
            .map(|(pid, name, [samples, nanos, switches])| ProcessSummary {
                pid,
                name: self.strings.get(name).to_owned(),
                on_cpu_samples: samples,
                on_cpu_nanos: hz.map(|hz| cpu_nanos(samples, hz)),
                off_cpu_nanos: nanos,
                off_cpu_switches: switches,
            })
            .collect();
        out.sort_by(|a, b| {
            (b.on_cpu_samples, b.off_cpu_nanos, b.off_cpu_switches)
                .cmp(&(a.on_cpu_samples, a.off_cpu_nanos, a.off_cpu_switches))
                .then(a.pid.cmp(&b.pid))
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }
}

/// `samples` periods of a `hz` clock in nanoseconds, rounded down; computed
/// wide so a long profile at a high frequency cannot overflow.
fn cpu_nanos(samples: u64, hz: u64) -> u64 {
    let nanos = u128::from(samples) * 1_000_000_000 / u128::from(hz.max(1));
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::cpu_nanos;

    #[test]
    fn cpu_time_rounds_down_and_saturates() {
        assert_eq!(cpu_nanos(3, 99), 30_303_030);
        assert_eq!(cpu_nanos(100, 100), 1_000_000_000);
        assert_eq!(cpu_nanos(u64::MAX, 1), u64::MAX);
    }
}
