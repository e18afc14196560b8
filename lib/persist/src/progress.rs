//! What a long wait shows while it runs: progress on stderr, never stdout.
//!
//! A wait ([`crate::wait::until_with`], and the cloud providers' async poll
//! loop over the same schedule) holds a [`Progress`]: what it waits for, how
//! many of how many are done, and its deadline. Nothing is shown for a wait
//! that ends within [`SHOW_AFTER`] (about 2 s). After that, while the wait
//! goes on:
//!
//! * stderr a terminal: one live line (drawn with `indicatif`), for example
//!   `⠙ waiting for volumes to be attached: 1 of 3 done, 12s elapsed, deadline in 1m48s`,
//!   cleared when the wait ends;
//! * stderr not a terminal (a log file, a pipe, systemd's journal): the same
//!   text as one plain log line every [`interval`] (10 s;
//!   `APPSCALE_PERSIST_PROGRESS_EVERY=SECONDS` changes it, for tests).
//!
//! `-q` (the quiet level, and so the Ansible binary-module mode) shows
//! nothing. Log lines written while a line is drawn go through
//! [`suspend`], so they never mix with it ([`crate::log`] does that).
//!
//! One display thread, started on first use, draws every wait in progress:
//! a wait costs a few atomics, not a thread.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::log;

/// How long a wait runs silently before it shows progress.
pub(crate) const SHOW_AFTER: Duration = Duration::from_secs(2);

/// Between two plain progress lines when stderr is not a terminal.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Environment variable: seconds between plain progress lines (default 10).
pub(crate) const INTERVAL_ENV: &str = "APPSCALE_PERSIST_PROGRESS_EVERY";

/// How often the display thread looks at the waits in progress.
const TICK: Duration = Duration::from_millis(200);

/// The interval between plain progress lines: [`INTERVAL_ENV`] seconds
/// when set to a positive number, else [`DEFAULT_INTERVAL`].
pub(crate) fn interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_INTERVAL, Duration::from_secs_f64)
}

/// A wait in progress, as shown on stderr.
///
/// Make one before waiting with [`Progress::start`] (what is waited for,
/// and how many things: 0 when there is nothing to count), give it the
/// deadline ([`Progress::deadline`]; the wait primitives set it from their
/// schedule when it is not set), and count what is done with
/// [`Progress::inc`] or [`Progress::set_done`] as the wait goes on. Then
/// wait with [`crate::wait::until_with`] (blocking) or the cloud poll loop's
/// `poll_until_with` (async), several waits at once may share one handle.
/// Cloning is cheap and shares the counts; the line goes away when the last
/// clone is dropped.
///
/// ```
/// use std::time::Duration;
/// use appscale_persist::progress::Progress;
/// use appscale_persist::wait::{self, Poll, WaitParams};
///
/// let ids = ["snap-1", "snap-2"];
/// let progress = Progress::start("snapshots to complete", ids.len() as u64);
/// let mut polls = 0;
/// let r: Result<(), wait::WaitError<()>> =
///     wait::until_with(&progress, WaitParams::quick(Duration::from_secs(5)), || {
///         polls += 1;
///         progress.set_done(polls.min(2)); // what this poll found done
///         if polls >= 2 { Poll::Ready(()) } else { Poll::Pending }
///     });
/// assert!(r.is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    what: String,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    deadline: Mutex<Option<Instant>>,
    /// The drawn line (terminal) or when the last plain line was written.
    shown: Mutex<Shown>,
}

#[derive(Debug, Default)]
enum Shown {
    #[default]
    Nothing,
    Bar(ProgressBar),
    Lines(Instant),
}

impl Progress {
    /// Starts the clock for a wait on `what` ("volumes to be attached",
    /// "the node lock"), with `total` things to wait for (0: nothing to
    /// count, the line then shows no "n of m").
    pub fn start(what: impl Into<String>, total: u64) -> Progress {
        let shared = Arc::new(Shared {
            what: what.into(),
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
            started: Instant::now(),
            deadline: Mutex::new(None),
            shown: Mutex::new(Shown::Nothing),
        });
        if log::enabled(log::Level::Info) {
            display().add(&shared);
        }
        Progress { shared }
    }

    /// Sets the deadline shown (the wait's own timeout, or the operation's
    /// `--timeout` when that is shared by several waits).
    pub fn deadline(self, at: Instant) -> Progress {
        self.set_deadline(at);
        self
    }

    /// Sets the deadline shown.
    pub fn set_deadline(&self, at: Instant) {
        *lock(&self.shared.deadline) = Some(at);
    }

    /// Sets the deadline shown unless one is set already (what the wait
    /// primitives do with their schedule's).
    pub fn default_deadline(&self, at: Instant) {
        lock(&self.shared.deadline).get_or_insert(at);
    }

    /// Counts `n` more things done.
    pub fn inc(&self, n: u64) {
        self.shared.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets how many things are done.
    pub fn set_done(&self, n: u64) {
        self.shared.done.store(n, Ordering::Relaxed);
    }

    /// Changes how many things there are to wait for.
    pub fn set_total(&self, n: u64) {
        self.shared.total.store(n, Ordering::Relaxed);
    }

    /// How many things there are to wait for.
    pub fn total(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// The text shown: what, n of m done, elapsed, the deadline.
    pub fn text(&self) -> String {
        self.shared.text()
    }
}

impl Shared {
    fn text(&self) -> String {
        let mut s = self.what.clone();
        let total = self.total.load(Ordering::Relaxed);
        if total > 0 {
            let done = self.done.load(Ordering::Relaxed).min(total);
            s.push_str(&format!(": {done} of {total} done,"));
        } else {
            s.push(':');
        }
        s.push_str(&format!(" {} elapsed", human(self.started.elapsed())));
        if let Some(at) = *lock(&self.deadline) {
            let left = at.saturating_duration_since(Instant::now());
            s.push_str(&format!(", deadline in {}", human(left)));
        }
        s
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The wait's end, for `-v`: how many were done and how long it took
        // (a wait too short to show progress still leaves this trace).
        let total = self.total.load(Ordering::Relaxed);
        if total > 0 && log::enabled(log::Level::Debug) {
            let done = self.done.load(Ordering::Relaxed).min(total);
            log::debug(format_args!(
                "waited for {}: {done} of {total} done in {:.1}s",
                self.what,
                self.started.elapsed().as_secs_f64()
            ));
        }
        let shown = std::mem::take(self.shown.get_mut().unwrap_or_else(PoisonError::into_inner));
        if let Shown::Bar(bar) = shown {
            bar.finish_and_clear();
            if let Some(d) = DISPLAY.get() {
                d.multi.remove(&bar);
            }
        }
    }
}

/// `d` in whole seconds, as `42s` or `1m48s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` (writing a log line) with any drawn progress lines taken off
/// the terminal, and draws them again after.
pub(crate) fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match DISPLAY.get() {
        Some(d) if d.terminal => d.multi.suspend(f),
        _ => f(),
    }
}

/// The waits in progress and how they are shown.
struct Display {
    terminal: bool,
    multi: MultiProgress,
    waits: Mutex<Vec<Weak<Shared>>>,
}

static DISPLAY: OnceLock<Display> = OnceLock::new();

fn display() -> &'static Display {
    DISPLAY.get_or_init(|| {
        let terminal = std::io::stderr().is_terminal();
        let target = if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let d = Display {
            terminal,
            multi: MultiProgress::with_draw_target(target),
            waits: Mutex::new(Vec::new()),
        };
        // Never joined: it sleeps between ticks and ends with the process.
        let _ = std::thread::Builder::new()
            .name("progress".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TICK);
                    if let Some(d) = DISPLAY.get() {
                        d.tick();
                    }
                }
            });
        d
    })
}

impl Display {
    fn add(&self, shared: &Arc<Shared>) {
        lock(&self.waits).push(Arc::downgrade(shared));
    }

    /// Shows every wait older than [`SHOW_AFTER`]; forgets finished ones.
    fn tick(&self) {
        let live: Vec<Arc<Shared>> = {
            let mut waits = lock(&self.waits);
            waits.retain(|w| w.strong_count() > 0);
            waits.iter().filter_map(Weak::upgrade).collect()
        };
        if !log::enabled(log::Level::Info) {
            return;
        }
        let every = interval();
        for w in live {
            if w.started.elapsed() < SHOW_AFTER {
                continue;
            }
            let text = format!("waiting for {}", w.text());
            let mut shown = lock(&w.shown);
            match &*shown {
                Shown::Bar(bar) => bar.set_message(text),
                Shown::Nothing if self.terminal => {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    let style = ProgressStyle::with_template("{spinner} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner());
                    bar.set_style(style);
                    bar.set_message(text);
                    bar.enable_steady_tick(TICK);
                    *shown = Shown::Bar(bar);
                }
                // The first plain line one interval after the start.
                Shown::Nothing if w.started.elapsed() >= every => {
                    log::info(format_args!("{text}"));
                    *shown = Shown::Lines(Instant::now());
                }
                Shown::Lines(last) if last.elapsed() >= every => {
                    log::info(format_args!("{text}"));
                    *shown = Shown::Lines(Instant::now());
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_says_what_how_many_and_the_deadline() {
        let p = Progress::start("volumes to be attached", 3)
            .deadline(Instant::now() + Duration::from_secs(150));
        p.inc(1);
        let t = p.text();
        assert!(
            t.starts_with("volumes to be attached: 1 of 3 done, 0s elapsed, deadline in 2m"),
            "{t}"
        );
        p.set_done(7);
        assert!(p.text().contains("3 of 3 done"), "{}", p.text());
        let q = Progress::start("the node lock", 0);
        assert_eq!(q.text(), "the node lock: 0s elapsed");
    }

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(human(Duration::from_millis(42_900)), "42s");
        assert_eq!(human(Duration::from_secs(108)), "1m48s");
    }
}
