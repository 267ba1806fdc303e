//! The demo workload: threads burning CPU in named functions and threads
//! blocking on a timer, a pipe and disk syncs, for the profiler to find.
//!
//! Each blocking function calls its blocking helper through one more named
//! function: frame-pointer unwinding cannot see the frame that called into
//! libc (libc keeps no frame pointer), so the helper is the one hidden and
//! the function named in the profile is the one that blocked.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Runs the workload for `seconds` after the parent says go.
pub fn run(seconds: f64) {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(b"r");
    let _ = stdout.flush();
    let mut go = [0u8; 1];
    if std::io::stdin().read_exact(&mut go).is_err() {
        return;
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut threads = vec![
        spawn("burn-hash", move || burn_hashing(until)),
        spawn("burn-math", move || burn_math(until)),
        spawn("sleeper", move || sleep_on_timer(until)),
        spawn("disk-sync", move || sync_to_disk(until)),
    ];
    if let Ok((reader, writer)) = std::io::pipe() {
        threads.push(spawn("pipe-reader", move || wait_on_pipe(reader)));
        threads.push(spawn("pipe-writer", move || feed_pipe(writer, until)));
    }
    for thread in threads.into_iter().flatten() {
        let _ = thread.join();
    }
    // Stay alive, idle, until the profiler is done with us (it kills us, or
    // its end closes our stdin): a process that has exited can no longer be
    // symbolized, and the last windows are symbolized after the work ends
    // (seconds after it on a slow machine, such as an emulated one).
    let _ = std::io::stdin().read(&mut go);
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .ok()
}

#[inline(never)]
fn burn_hashing(until: Instant) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    while Instant::now() < until {
        state = hash_round(state);
    }
    black_box(state);
}

#[inline(never)]
fn hash_round(mut state: u64) -> u64 {
    for i in 0..100_000u64 {
        state ^= i;
        state = state.wrapping_mul(0x100_0000_01b3).rotate_left(17);
    }
    black_box(state)
}

#[inline(never)]
fn burn_math(until: Instant) {
    let mut found = 0usize;
    while Instant::now() < until {
        found += count_primes(black_box(20_000));
    }
    black_box(found);
}

#[inline(never)]
fn count_primes(below: u64) -> usize {
    (2..below)
        .filter(|n| (2..).take_while(|d| d * d <= *n).all(|d| n % d != 0))
        .count()
}

#[inline(never)]
fn sleep_on_timer(until: Instant) {
    while Instant::now() < until {
        timer_wait(Duration::from_millis(20));
    }
}

#[inline(never)]
fn timer_wait(duration: Duration) {
    std::thread::sleep(black_box(duration));
}

/// The file the demo workload of process `pid` writes and syncs: in the
/// current folder, as /tmp is often tmpfs, where fsync waits on nothing.
/// The parent removes it too, when it stops the workload early.
pub fn scratch_file(pid: u32) -> Option<std::path::PathBuf> {
    let dir = std::env::current_dir().ok()?;
    Some(dir.join(format!(".rover-demo-{pid}.tmp")))
}

#[inline(never)]
fn sync_to_disk(until: Instant) {
    let Some(path) = scratch_file(std::process::id()) else {
        return;
    };
    let Ok(mut file) = std::fs::File::create(&path) else {
        return;
    };
    let block = vec![0x5au8; 256 * 1024];
    while Instant::now() < until {
        if file_sync(&mut file, &block).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&path);
}

#[inline(never)]
fn file_sync(file: &mut std::fs::File, block: &[u8]) -> std::io::Result<()> {
    file.write_all(block)?;
    file.sync_data()
}

#[inline(never)]
fn wait_on_pipe(mut reader: std::io::PipeReader) {
    let mut buffer = [0u8; 64];
    while pipe_read(&mut reader, &mut buffer) > 0 {}
}

#[inline(never)]
fn pipe_read(reader: &mut std::io::PipeReader, buffer: &mut [u8]) -> usize {
    reader.read(buffer).unwrap_or(0)
}

#[inline(never)]
fn feed_pipe(mut writer: std::io::PipeWriter, until: Instant) {
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        if writer.write_all(b"tick").is_err() {
            break;
        }
    }
}
