//! The one way to wait: capped exponential backoff under a hard deadline.
//!
//! [`Backoff`] only computes delays and watches the clock, so the same
//! schedule drives a blocking loop ([`until`]) and an async one (the cloud
//! providers sleep on tokio with the delay [`Backoff::next_delay`] hands out).
//! Nothing in this workspace loops on a condition without one of these.
//! A wait says what it waits for with a [`Progress`] ([`until_with`]),
//! shown on stderr when it lasts (see [`crate::progress`]).

use std::time::{Duration, Instant};

use crate::progress::Progress;

/// How long and how often to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitParams {
    /// The first delay.
    pub initial: Duration,
    /// No delay grows past this.
    pub max: Duration,
    /// Total time allowed, from [`Backoff::start`].
    pub timeout: Duration,
}

impl Default for WaitParams {
    /// 100 ms doubling to 5 s, for at most 2 minutes: long enough for a
    /// cloud attach, short enough that a stuck one is reported, not waited on
    /// for ever.
    fn default() -> Self {
        WaitParams {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            timeout: Duration::from_secs(120),
        }
    }
}

impl WaitParams {
    /// The same schedule with another timeout.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        WaitParams { timeout, ..self }
    }

    /// A quick schedule for local conditions (a udev link, a process exit):
    /// 10 ms doubling to 500 ms.
    pub fn quick(timeout: Duration) -> Self {
        WaitParams {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(500),
            timeout,
        }
    }
}

/// A running backoff schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    params: WaitParams,
    deadline: Instant,
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts the clock now.
    pub fn start(params: WaitParams) -> Backoff {
        Backoff {
            params,
            deadline: Instant::now() + params.timeout,
            next: params.initial,
            attempts: 0,
        }
    }

    /// The delay before the next attempt, or `None` when the deadline has
    /// passed. The last delay is cut short so that the final attempt happens
    /// at the deadline rather than after it.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        self.attempts += 1;
        let delay = self.next.min(self.deadline - now);
        self.next = (self.next * 2).min(self.params.max);
        Some(delay)
    }

    /// Attempts made so far (delays handed out).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// When the deadline passes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The configured timeout, for messages.
    pub fn timeout(&self) -> Duration {
        self.params.timeout
    }
}

/// What one poll found.
#[derive(Debug)]
pub enum Poll<T, E> {
    /// The condition holds: stop with this value.
    Ready(T),
    /// Not yet: wait and poll again.
    Pending,
    /// A terminal failure: stop now, waiting longer cannot help.
    Failed(E),
}

/// Why [`until`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    /// The deadline passed with the condition still pending.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// A signal asked the run to stop ([`crate::interrupt`]).
    #[error("stopped by {0}")]
    Interrupted(nix::sys::signal::Signal),
    /// The poll reported a terminal failure.
    #[error(transparent)]
    Failed(E),
}

/// Polls `f` until it is ready, fails, the deadline passes, or a signal
/// asks the run to stop ([`crate::interrupt::interrupted`]) (blocking).
///
/// `f` is always called at least once, and once more at the deadline.
/// A wait past about 2 s shows progress on stderr as "a condition"; name
/// what is waited for with [`until_with`] instead.
pub fn until<T, E>(params: WaitParams, f: impl FnMut() -> Poll<T, E>) -> Result<T, WaitError<E>> {
    until_with(&Progress::start("a condition", 0), params, f)
}

/// [`until`], showing `progress` on stderr while it waits (see
/// [`crate::progress`]): its deadline, when not set, is this wait's. `f`
/// may count what is done on the same handle.
pub fn until_with<T, E>(
    progress: &Progress,
    params: WaitParams,
    mut f: impl FnMut() -> Poll<T, E>,
) -> Result<T, WaitError<E>> {
    let mut backoff = Backoff::start(params);
    progress.default_deadline(backoff.deadline());
    loop {
        match f() {
            Poll::Ready(v) => return Ok(v),
            Poll::Failed(e) => return Err(WaitError::Failed(e)),
            Poll::Pending if let Some(sig) = crate::interrupt::interrupted() => {
                return Err(WaitError::Interrupted(sig));
            }
            Poll::Pending => match backoff.next_delay() {
                Some(d) => std::thread::sleep(d),
                None => return Err(WaitError::TimedOut(params.timeout)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::start(WaitParams {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            timeout: Duration::from_secs(3600),
        });
        let got: Vec<u128> = (0..5)
            .map(|_| b.next_delay().unwrap().as_millis())
            .collect();
        assert_eq!(got, [100, 200, 350, 350, 350]);
        assert_eq!(b.attempts(), 5);
    }

    #[test]
    fn the_deadline_stops_a_condition_that_never_holds() {
        let mut polls = 0;
        let r: Result<(), WaitError<()>> =
            until(WaitParams::quick(Duration::from_millis(50)), || {
                polls += 1;
                Poll::Pending
            });
        assert!(matches!(r, Err(WaitError::TimedOut(_))));
        assert!(
            polls >= 2,
            "polled at least at the start and at the deadline, got {polls}"
        );
    }

    #[test]
    fn a_terminal_failure_stops_at_once() {
        let mut polls = 0;
        let r: Result<(), _> = until(WaitParams::default(), || {
            polls += 1;
            Poll::Failed("broken")
        });
        assert!(matches!(r, Err(WaitError::Failed("broken"))));
        assert_eq!(polls, 1);
    }
}
