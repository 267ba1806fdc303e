//! The per-process state of a policy: its last `period` check results and
//! whether it is watched, being profiled, or silent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One policy's view of one process.
#[derive(Debug)]
pub(crate) struct CheckWindow {
    /// The last `period` values, oldest first (`None`: no value).
    values: VecDeque<Option<f64>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Watching,
    Profiling,
    SilentUntil(Instant),
}

/// The window's rules, from the policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub(crate) threshold: f64,
    pub(crate) period: u32,
    pub(crate) count: u32,
    pub(crate) silence: Duration,
}

impl CheckWindow {
    pub(crate) fn new() -> Self {
        CheckWindow {
            values: VecDeque::new(),
            state: State::Watching,
        }
    }

    /// Adds a check's value. Returns the window's values when they
    /// trigger (at least `count` of the last `period` strictly above the
    /// threshold): the window is then cleared and the process is being
    /// profiled until [`ended`](Self::ended) or [`skipped`](Self::skipped).
    /// While profiled or silent, values are not kept.
    pub(crate) fn record(
        &mut self,
        value: Option<f64>,
        now: Instant,
        rules: &Rules,
    ) -> Option<Vec<Option<f64>>> {
        match self.state {
            State::Profiling => return None,
            State::SilentUntil(until) if now < until => return None,
            State::SilentUntil(_) | State::Watching => self.state = State::Watching,
        }
        self.values.push_back(value);
        while self.values.len() > rules.period as usize {
            self.values.pop_front();
        }
        let breaches = self
            .values
            .iter()
            .filter(|v| v.is_some_and(|v| v > rules.threshold))
            .count();
        if breaches < rules.count as usize {
            return None;
        }
        self.state = State::Profiling;
        Some(self.values.drain(..).collect())
    }

    /// The session of a trigger ended at `now`: silent for `silence`.
    pub(crate) fn ended(&mut self, now: Instant, rules: &Rules) {
        self.state = match now.checked_add(rules.silence) {
            Some(until) => State::SilentUntil(until),
            // A silence past the clock's range: silent for good.
            None => State::Profiling,
        };
    }

    /// A trigger was not acted on (the session cap was reached): watched
    /// again, with the window it cleared.
    pub(crate) fn skipped(&mut self) {
        self.state = State::Watching;
    }

    #[cfg(test)]
    pub(crate) fn is_profiling(&self) -> bool {
        self.state == State::Profiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        threshold: 50.0,
        period: 3,
        count: 2,
        silence: Duration::from_secs(10),
    };

    fn feed(window: &mut CheckWindow, values: &[Option<f64>], at: Instant) -> Vec<bool> {
        values
            .iter()
            .map(|v| window.record(*v, at, &RULES).is_some())
            .collect()
    }

    #[test]
    fn count_of_the_last_period_breaches_trigger() {
        let now = Instant::now();
        let mut window = CheckWindow::new();
        // 60 breaches, 10 does not, 70 is the second breach of the last three.
        assert_eq!(
            feed(&mut window, &[Some(60.0), Some(10.0), Some(70.0)], now),
            [false, false, true]
        );
        assert!(window.is_profiling());
        // Breaches that fell out of the window do not count.
        let mut window = CheckWindow::new();
        assert_eq!(
            feed(
                &mut window,
                &[Some(60.0), Some(10.0), Some(10.0), Some(70.0), Some(10.0)],
                now
            ),
            [false; 5]
        );
        // Missing values and values equal to the threshold are no breach.
        let mut window = CheckWindow::new();
        assert_eq!(
            feed(&mut window, &[None, Some(50.0), Some(51.0), None], now),
            [false; 4]
        );
    }

    #[test]
    fn a_trigger_reports_its_window_and_clears_it() {
        let now = Instant::now();
        let mut window = CheckWindow::new();
        window.record(Some(10.0), now, &RULES);
        window.record(Some(60.0), now, &RULES);
        let values = window.record(Some(61.0), now, &RULES);
        assert_eq!(values, Some(vec![Some(10.0), Some(60.0), Some(61.0)]));
        // Profiling: checks are not kept.
        assert_eq!(feed(&mut window, &[Some(90.0); 4], now), [false; 4]);
        window.ended(now, &RULES);
        // Silent: still nothing kept.
        let during = now + Duration::from_secs(9);
        assert_eq!(feed(&mut window, &[Some(90.0); 4], during), [false; 4]);
        // After the silence, `count` fresh breaches.
        let after = now + Duration::from_secs(10);
        assert_eq!(
            feed(&mut window, &[Some(90.0), Some(90.0)], after),
            [false, true]
        );
    }

    #[test]
    fn a_skipped_trigger_needs_count_fresh_breaches() {
        let now = Instant::now();
        let mut window = CheckWindow::new();
        assert_eq!(
            feed(&mut window, &[Some(90.0), Some(90.0)], now),
            [false, true]
        );
        window.skipped();
        assert!(!window.is_profiling());
        assert_eq!(
            feed(&mut window, &[Some(90.0), Some(90.0)], now),
            [false, true]
        );
    }
}
