//! Continuous profiling for real: a fixture that idles then burns CPU is
//! profiled by itself once its current CPU rate crosses the threshold, and
//! not again while silent; the rate is the current one, not the lifetime
//! average; the session cap and a process exiting mid-session are data.

mod session_fixtures;

use std::sync::Mutex;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use rover_core::continuous::{
    Check, ContinuousProfiler, CpuReading, Ended, Event, Events, Mode, Policy, PolicyError,
    ProcessMeta,
};
use rover_core::profile::{Metric, ProfileKind};
use rover_core::{ConfigError, Error};
use session_fixtures::{Fixture, Start, profiler, value_through};

/// Idles or burns in `burn_here` as the test says, one command byte at a
/// time: `i` idles until the next byte, `b` burns until the next byte
/// (polling stdin between rounds of work), `q` quits. It prints `idling`
/// or `burning` as it starts each, so the test knows when the burn began.
const BURST: &str = r#"
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

static int pending(void) {
    struct pollfd fd = { 0, POLLIN, 0 };
    return poll(&fd, 1, 0) > 0;
}

__attribute__((noinline)) unsigned long burn_here(void) {
    volatile unsigned long x = 0;
    while (!pending()) {
        for (int i = 0; i < 200000; i++) x += i;
    }
    return x;
}

int main(void) {
    char command;
    printf("ready\n");
    fflush(stdout);
    if (read(0, &command, 1) != 1) return 1;
    for (;;) {
        if (read(0, &command, 1) != 1) return 1;
        switch (command) {
        case 'i':
            printf("idling\n");
            fflush(stdout);
            break;
        case 'b':
            printf("burning\n");
            fflush(stdout);
            burn_here();
            break;
        case 'q':
            return 0;
        }
    }
}
"#;

/// The tests that burn CPU run one at a time: with two CPUs, two burning
/// fixtures and a session starting would starve each other's rates.
static BURNING: Mutex<()> = Mutex::new(());

fn burning() -> std::sync::MutexGuard<'static, ()> {
    BURNING.lock().unwrap_or_else(|poison| poison.into_inner())
}

struct Burst {
    running: session_fixtures::Running,
}

impl Burst {
    fn start(fixture: &Fixture) -> Burst {
        let mut running = fixture.start(&[]);
        running.go();
        Burst { running }
    }

    fn pid(&self) -> u32 {
        self.running.pid()
    }

    fn command(&mut self, command: &[u8], reply: &str) {
        use std::io::Write;
        let stdin = self.running.child.stdin.as_mut().unwrap();
        stdin.write_all(command).unwrap();
        stdin.flush().unwrap();
        assert_eq!(self.running.line(), reply);
    }

    fn idle(&mut self) {
        self.command(b"i", "idling");
    }

    fn burn(&mut self) {
        self.command(b"b", "burning");
    }
}

/// The next event, within `timeout`, which must be about `pid` (the
/// policies match only the fixtures).
fn next_about(events: &Events, pid: u32, timeout: Duration) -> Option<Event> {
    match events.next_blocking(timeout) {
        Ok(event) => {
            assert_eq!(
                event.trigger().pid,
                pid,
                "an event about another process: {event:?}"
            );
            Some(event)
        }
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => panic!("the events ended early"),
    }
}

/// A pattern that matches only this fixture: its path, in a folder of its own.
fn pattern(fixture: &Fixture) -> String {
    format!("^{}$", fixture.path.display())
}

/// The issue's proof: idle, then burn; the policy fires within `period`
/// checks of the burn's start, the profile names `burn_here`, and a second
/// burst within the silence does not fire.
#[test]
fn a_burning_process_is_profiled_once_per_silence() {
    let Some(profiler) = profiler("a_burning_process_is_profiled_once_per_silence") else {
        return;
    };
    let _burning = burning();
    let fixture = Fixture::build("burst", BURST);
    let mut burst = Burst::start(&fixture);
    let pid = burst.pid();
    burst.idle();
    let silence = Duration::from_secs(40);
    let policy = Policy::builder(Check::CpuPercent, 50.0)
        .select(|p: &ProcessMeta| p.comm == "burst")
        .match_regex(&pattern(&fixture))
        .period(3)
        .count(2)
        .execute(Duration::from_secs(1))
        .silence(silence)
        .interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let continuous = ContinuousProfiler::new(&profiler)
        .policy(policy)
        .start()
        .unwrap();
    let events = continuous.events();

    // Idle for at least three checks (the first has no value): no trigger.
    let idle_from = continuous.rounds(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while continuous.rounds(0).unwrap() < idle_from + 4 {
        assert!(Instant::now() < deadline, "the checks stopped");
        if let Some(event) = next_about(&events, pid, Duration::from_millis(200)) {
            panic!("fired while idle: {event:?}");
        }
    }

    burst.burn();
    let burn_round = continuous.rounds(0).unwrap();
    let Some(Event::Triggered(trigger)) = next_about(&events, pid, Duration::from_secs(60)) else {
        panic!("no trigger within 60 s of the burn");
    };
    eprintln!(
        "burn seen from round {burn_round}; fired in round {} on {:?}",
        trigger.round, trigger.values
    );
    assert!(
        trigger.round <= burn_round + 3,
        "fired in round {}, more than period (3) checks after the burn began in round {burn_round}",
        trigger.round
    );
    assert_eq!(trigger.comm, "burst");
    assert_eq!(trigger.kind, ProfileKind::OnCpu);
    assert_eq!(trigger.check, "cpu_percent");
    assert_eq!(trigger.threshold, 50.0);
    let breaches = trigger
        .values
        .iter()
        .filter(|v| v.is_some_and(|v| v > 50.0))
        .count();
    assert!(
        breaches >= 2 && trigger.values.len() <= 3,
        "{:?}",
        trigger.values
    );
    // A rate of one process with one thread: at most one CPU, give or take
    // a tick of accounting.
    assert!(
        trigger.values.iter().flatten().all(|&v| v <= 115.0),
        "{:?}",
        trigger.values
    );

    let Some(Event::Profiled {
        profile,
        ended,
        ran,
        ..
    }) = next_about(&events, pid, Duration::from_secs(120))
    else {
        panic!("no profile within 120 s of the trigger");
    };
    let profiled_at = Instant::now();
    let total = profile.total(Metric::OnCpuSamples);
    let in_burn = value_through(&profile, "burn_here", Metric::OnCpuSamples);
    eprintln!("profile after {ran:?} ({ended:?}): {in_burn} of {total} samples in burn_here");
    assert_eq!(ended, Ended::Completed);
    assert!(ran >= Duration::from_secs(1), "{ran:?}");
    assert!(
        in_burn > 0 && in_burn * 10 >= total * 8,
        "{in_burn} of {total}"
    );

    // A second burst within the silence: checked for five rounds, and no
    // trigger.
    burst.idle();
    burst.burn();
    let second = continuous.rounds(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while continuous.rounds(0).unwrap() < second + 5 {
        assert!(Instant::now() < deadline, "the checks stopped");
        if let Some(event) = next_about(&events, pid, Duration::from_millis(200)) {
            panic!("fired within the silence: {event:?}");
        }
    }
    assert!(
        profiled_at.elapsed() < silence,
        "the second burst outlasted the silence: nothing shown"
    );
    let stats = continuous.stop_blocking();
    assert_eq!(
        (stats.triggered, stats.profiled, stats.failed, stats.skipped),
        (1, 1, 0, 0)
    );
    assert_eq!(stats.running, 0);
    assert_eq!(
        events.next_blocking(Duration::from_secs(5)).err(),
        Some(RecvTimeoutError::Disconnected)
    );
}

/// The check is the current rate: a process that burned and now idles
/// reads near 0 at the next check, while its lifetime average (what
/// SkyWalking Rover reports) stays high.
#[test]
fn cpu_percent_is_the_current_rate_not_the_lifetime_average() {
    let _burning = burning();
    let fixture = Fixture::build("burst", BURST);
    let mut burst = Burst::start(&fixture);
    let pid = burst.pid();
    let before = CpuReading::read(pid).unwrap();
    burst.burn();
    std::thread::sleep(Duration::from_millis(1500));
    burst.idle();
    let burned = CpuReading::read(pid).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let idle = CpuReading::read(pid).unwrap();
    let burn_rate = burned.percent_since(&before).unwrap();
    let idle_rate = idle.percent_since(&burned).unwrap();
    let lifetime = idle.lifetime_percent().unwrap();
    eprintln!(
        "burning {burn_rate:.1} %, then idle {idle_rate:.1} %; lifetime average {lifetime:.1} % \
         ({:.2} CPU s)",
        idle.cpu_seconds()
    );
    assert!(burn_rate > 30.0, "burning at {burn_rate} %");
    assert!(idle_rate < 5.0, "idle at {idle_rate} %");
    assert!(lifetime > 20.0, "lifetime average {lifetime} %");
    assert!(idle.cpu_seconds() >= 0.3, "{}", idle.cpu_seconds());
    assert_eq!(idle.pid(), pid);
    assert!(idle.percent_since(&idle).is_none(), "no time elapsed");
}

#[test]
fn invalid_policies_are_errors() {
    let cpu = |threshold| Policy::builder(Check::CpuPercent, threshold);
    assert_eq!(
        cpu(50.0).count(0).build().err(),
        Some(PolicyError::ZeroCount)
    );
    assert_eq!(
        cpu(50.0).period(2).count(3).build().err(),
        Some(PolicyError::CountAbovePeriod {
            count: 3,
            period: 2
        })
    );
    for threshold in [-5.0, f64::NAN, 1e9] {
        let error = cpu(threshold).build().err().unwrap();
        eprintln!("{threshold}: {error}");
        assert!(matches!(error, PolicyError::Threshold { .. }), "{error:?}");
    }
    assert!(matches!(
        Policy::builder(Check::Threads, -1.0).build(),
        Err(PolicyError::Threshold { .. })
    ));
    assert!(matches!(
        Policy::builder(Check::LoadAverage, -1.0).build(),
        Err(PolicyError::Threshold { .. })
    ));
    assert_eq!(
        cpu(50.0).execute(Duration::ZERO).build().err(),
        Some(PolicyError::ZeroExecute)
    );
    assert!(matches!(
        cpu(50.0).interval(Duration::ZERO).build(),
        Err(PolicyError::IntervalTooShort { .. })
    ));
    let error = cpu(50.0).match_regex("[z-a]").build().err().unwrap();
    eprintln!("{error}");
    assert!(matches!(error, PolicyError::Pattern { .. }), "{error:?}");

    let Some(profiler) = profiler("invalid_policies_are_errors") else {
        return;
    };
    assert!(matches!(
        ContinuousProfiler::new(&profiler).start(),
        Err(Error::Policy(PolicyError::NoPolicies))
    ));
    assert!(matches!(
        ContinuousProfiler::new(&profiler)
            .policy(cpu(50.0).build().unwrap())
            .max_sessions(0)
            .start(),
        Err(Error::Policy(PolicyError::ZeroMaxSessions))
    ));
}

/// Two processes fire in the same round with room for one session: one is
/// profiled, the other skipped (counted, and again at each check while the
/// cap is reached). The profiled one is killed mid-session: its session
/// ends at once, as data, and the other is then profiled, until the stop
/// ends its session.
#[test]
fn the_session_cap_skips_and_an_exit_ends_a_session() {
    let Some(profiler) = profiler("the_session_cap_skips_and_an_exit_ends_a_session") else {
        return;
    };
    let fixture = Fixture::build("burst", BURST);
    let mut first = Burst::start(&fixture);
    let mut second = Burst::start(&fixture);
    first.idle();
    second.idle();
    // Every check of a live process has a thread: the first round fires.
    let policy = Policy::builder(Check::Threads, 0.0)
        .match_regex(&pattern(&fixture))
        .period(1)
        .count(1)
        .mode(Mode::OffCpu)
        .execute(Duration::from_secs(120))
        .silence(Duration::from_secs(600))
        .build()
        .unwrap();
    let continuous = ContinuousProfiler::new(&profiler)
        .policy(policy)
        .max_sessions(1)
        .start()
        .unwrap();
    let events = continuous.events();
    let next = |what: &str| {
        events
            .next_blocking(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no event ({what}): {e}"))
    };
    let Event::Triggered(profiled) = next("the first trigger") else {
        panic!("the first event is a trigger");
    };
    let Event::Skipped {
        trigger: skipped,
        running,
    } = next("the skip")
    else {
        panic!("the second process of the round is skipped");
    };
    assert_eq!((profiled.round, skipped.round), (1, 1));
    assert_eq!(running, 1);
    assert_eq!(profiled.kind, ProfileKind::OffCpu);
    assert_eq!(profiled.values, [Some(1.0)]);
    let mut found = [profiled.pid, skipped.pid];
    found.sort_unstable();
    let mut expected = [first.pid(), second.pid()];
    expected.sort_unstable();
    assert_eq!(found, expected);

    // Kill the profiled one, likely once its session started (loading
    // the program takes a moment): its session ends well before 120 s.
    std::thread::sleep(Duration::from_secs(2));
    let killed = if profiled.pid == first.pid() {
        &mut first
    } else {
        &mut second
    };
    let _ = killed.running.child.kill();
    let _ = killed.running.child.wait();
    let killed_at = Instant::now();
    let end = loop {
        match next("the end of the killed one's session") {
            Event::Skipped { trigger, .. } if trigger.pid == skipped.pid => continue,
            event => break event,
        }
    };
    match end {
        Event::Profiled {
            trigger,
            ended,
            ran,
            ..
        } if trigger.pid == profiled.pid => {
            eprintln!("the session ended after {ran:?}: {ended:?}");
            assert_eq!(ended, Ended::ProcessExited);
        }
        // Killed before its session could start.
        Event::Failed { trigger, error } if trigger.pid == profiled.pid => {
            eprintln!("the session did not start: {error}");
            assert!(
                matches!(error, Error::Config(ConfigError::NoSuchProcess(_))),
                "{error:?}"
            );
        }
        other => panic!("expected the end of the killed one's session: {other:?}"),
    }
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    // The cap is free: the skipped one fires again and is profiled.
    // (A round between the end's event and the cap's release may still
    // skip it once more.)
    let again = loop {
        match next("the skipped one's trigger") {
            Event::Skipped { trigger, .. } if trigger.pid == skipped.pid => continue,
            Event::Triggered(trigger) => break trigger,
            other => panic!("the skipped process fires once the cap is free: {other:?}"),
        }
    };
    assert_eq!(again.pid, skipped.pid);
    assert!(again.round > 1);
    // Stopped while starting or running, the session still hands back
    // its profile.
    let stats = continuous.stop_blocking();
    let last = events.iter_blocking().last();
    match last {
        Some(Event::Profiled { trigger, ended, .. }) => {
            assert_eq!(trigger.pid, skipped.pid);
            assert_eq!(ended, Ended::Stopped);
        }
        other => panic!("the stop ends the running session with its profile: {other:?}"),
    }
    eprintln!("{stats:?}");
    assert!(stats.skipped >= 1);
    assert_eq!(stats.triggered, stats.skipped + 2);
    assert_eq!(stats.profiled + stats.failed, 2);
    assert_eq!(stats.running, 0);
}
