//! The one async poll loop, over [`appscale_persist::wait`]'s schedule.
//!
//! A wait says what it waits for, how many of how many are done and its
//! deadline with a [`Progress`] ([`poll_until_with`]): shown on stderr when
//! the wait lasts (see [`appscale_persist::progress`]).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use appscale_persist::log;
use appscale_persist::progress::Progress;
use appscale_persist::step::Failure;
use appscale_persist::wait::{Backoff, Poll, WaitParams};

use crate::{ApiError, failures};

/// The one deadline all of an operation's waiting shares: `--timeout`
/// from the start of the operation, however many waits it takes.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    started: Instant,
    timeout: Duration,
}

impl Deadline {
    /// `timeout` from now.
    pub fn start(timeout: Duration) -> Deadline {
        Deadline {
            started: Instant::now(),
            timeout,
        }
    }

    /// The time given, for messages.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.elapsed())
    }

    /// When the deadline passes.
    pub fn at(&self) -> Instant {
        self.started + self.timeout
    }

    /// A [`Progress`] for a wait on `what` (`total` things, 0: nothing to
    /// count) under this deadline.
    pub fn progress(&self, what: impl Into<String>, total: u64) -> Progress {
        Progress::start(what, total).deadline(self.at())
    }

    /// `schedule` (first delay, cap) ending at this deadline.
    pub fn schedule(&self, schedule: WaitParams) -> WaitParams {
        schedule.with_timeout(self.remaining())
    }
}

/// Why [`poll_until`] stopped without a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfinished {
    /// The deadline passed with the condition still pending.
    TimedOut {
        /// The last poll's failure, when the last poll failed (transiently).
        last_failure: Option<Failure>,
    },
    /// Waiting longer cannot help: the condition failed, or a poll failed
    /// for good.
    Failed(Failure),
    /// A signal asked the run to stop ([`appscale_persist::interrupt`]).
    Interrupted(Failure),
}

impl Unfinished {
    /// The record's failure: for a timeout, `what` (`volume vol-1 was not
    /// attached`) "within" the deadline's timeout, and the last failed poll.
    pub fn into_failure(self, what: impl Display, deadline: &Deadline) -> Failure {
        match self {
            Unfinished::TimedOut { last_failure } => {
                failures::timed_out(what, deadline.timeout(), last_failure.as_ref())
            }
            Unfinished::Failed(f) | Unfinished::Interrupted(f) => f,
        }
    }
}

/// Calls `poll` until it is ready ([`Poll::Ready`]) or fails
/// ([`Poll::Failed`], or an error that is not transient), or the schedule's
/// deadline passes, sleeping the [`Backoff`] delays in between (async).
///
/// A poll that fails for a passing reason ([`ApiError::is_transient`]:
/// throttling, a server error, no answer) is logged and tried again until
/// the deadline: a bad minute fails nothing. At the deadline, the last such
/// failure is kept in [`Unfinished::TimedOut`]. `poll` is always called at
/// least once, and once more at the deadline.
///
/// A wait past about 2 s shows progress on stderr as "a cloud operation";
/// name what is waited for, and count what is done, with
/// [`poll_until_with`] instead.
pub async fn poll_until<T, F, Fut>(schedule: WaitParams, poll: F) -> Result<T, Unfinished>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T, Failure>, ApiError>>,
{
    poll_until_with(&Progress::start("a cloud operation", 0), schedule, poll).await
}

/// [`poll_until`], showing `progress` on stderr while it waits: make it
/// with [`Deadline::progress`] (what, how many), count what each poll
/// finds done on it ([`Progress::set_done`], [`Progress::inc`]); several
/// concurrent waits may share one. Its deadline, when not set, is the
/// schedule's.
///
/// ```no_run
/// # async fn f(deadline: appscale_persist_cloudkit::Deadline, ids: Vec<String>) {
/// use appscale_persist::wait::{Poll, WaitParams};
/// use appscale_persist_cloudkit::poll_until_with;
///
/// let progress = deadline.progress("snapshots to complete", ids.len() as u64);
/// let waited = poll_until_with(&progress, deadline.schedule(WaitParams::default()), || async {
///     let done = 0; // ... describe the snapshots, count the completed ones ...
///     progress.set_done(done);
///     Ok(if done == ids.len() as u64 { Poll::Ready(()) } else { Poll::Pending })
/// })
/// .await;
/// # let _ = waited;
/// # }
/// ```
pub async fn poll_until_with<T, F, Fut>(
    progress: &Progress,
    schedule: WaitParams,
    mut poll: F,
) -> Result<T, Unfinished>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T, Failure>, ApiError>>,
{
    let mut backoff = Backoff::start(schedule);
    progress.default_deadline(backoff.deadline());
    loop {
        let last_failure = match poll().await {
            Ok(Poll::Ready(v)) => return Ok(v),
            Ok(Poll::Failed(f)) => return Err(Unfinished::Failed(f)),
            Ok(Poll::Pending) => None,
            Err(e) if e.is_transient() => {
                log::warn(format_args!("{e}; polling again until the deadline"));
                Some(e.failure)
            }
            Err(e) => return Err(Unfinished::Failed(e.failure)),
        };
        if let Some(sig) = appscale_persist::interrupt::interrupted() {
            return Err(Unfinished::Interrupted(
                appscale_persist::interrupt::failure(sig),
            ));
        }
        match backoff.next_delay() {
            Some(d) => tokio::time::sleep(d).await,
            None => return Err(Unfinished::TimedOut { last_failure }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault;
    use appscale_persist::codes;

    fn schedule(timeout_ms: u64) -> WaitParams {
        WaitParams {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// Codes an API gives, passed through as the record's code.
    const THROTTLING: &str = "RequestLimitExceeded";
    const DENIED: &str = "UnauthorizedOperation";

    fn throttled() -> ApiError {
        ApiError::new(
            Fault::Throttled,
            Failure::api(THROTTLING, "DescribeVolumes: slow down"),
        )
    }

    #[test]
    fn transient_failures_are_polled_through_until_ready() {
        let rt = crate::runtime().unwrap();
        let mut polls = 0;
        let r = rt.block_on(poll_until(schedule(5_000), || {
            polls += 1;
            let n = polls;
            async move {
                match n {
                    1..=6 => Err(throttled()),
                    7 => Ok(Poll::Pending),
                    _ => Ok(Poll::Ready("attached")),
                }
            }
        }));
        assert_eq!(r, Ok("attached"));
        assert_eq!(polls, 8);
    }

    #[test]
    fn the_deadline_ends_the_wait_and_keeps_the_last_failed_poll() {
        let rt = crate::runtime().unwrap();
        let started = Instant::now();
        let mut polls = 0;
        let r: Result<(), _> = rt.block_on(poll_until(schedule(150), || {
            polls += 1;
            async { Err(throttled()) }
        }));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150),
            "waited the whole time: {took:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "stopped at the deadline: {took:?}"
        );
        assert!(polls >= 3, "polled again and again: {polls}");
        let Err(Unfinished::TimedOut {
            last_failure: Some(f),
        }) = r
        else {
            panic!("{r:?}");
        };
        assert_eq!(f.code, THROTTLING);
        let f = Unfinished::TimedOut {
            last_failure: Some(f),
        }
        .into_failure(
            "volume vol-1 was not attached",
            &Deadline::start(Duration::from_secs(3)),
        );
        assert_eq!(f.code, codes::TIMEOUT);
        assert_eq!(
            f.message,
            "volume vol-1 was not attached within 3s; the last poll failed: DescribeVolumes: slow down [RequestLimitExceeded]"
        );
    }

    #[test]
    fn a_pending_poll_clears_the_last_failure() {
        let rt = crate::runtime().unwrap();
        let mut polls = 0;
        let r: Result<(), _> = rt.block_on(poll_until(schedule(60), || {
            polls += 1;
            let first = polls == 1;
            async move {
                if first {
                    Err(throttled())
                } else {
                    Ok(Poll::Pending)
                }
            }
        }));
        assert_eq!(r, Err(Unfinished::TimedOut { last_failure: None }));
    }

    #[test]
    fn a_failure_that_is_not_transient_ends_the_wait_at_once() {
        let rt = crate::runtime().unwrap();
        let mut polls = 0;
        let denied = Failure::api(DENIED, "no");
        let r: Result<(), _> = rt.block_on(poll_until(schedule(5_000), || {
            polls += 1;
            let denied = denied.clone();
            async move { Err(ApiError::new(Fault::Answered, denied)) }
        }));
        assert_eq!((r, polls), (Err(Unfinished::Failed(denied)), 1));
        let gone = Failure::new(codes::NO_SUCH_DISK, "gone");
        let r: Result<(), _> = rt.block_on(poll_until(schedule(5_000), || {
            let gone = gone.clone();
            async move { Ok(Poll::Failed(gone)) }
        }));
        assert_eq!(r, Err(Unfinished::Failed(gone)));
    }

    #[test]
    fn one_deadline_shrinks_as_the_operation_goes_on() {
        let d = Deadline::start(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(50));
        let s = d.schedule(schedule(0));
        assert!(s.timeout <= Duration::from_millis(150), "{s:?}");
        assert_eq!(
            (s.initial, s.max),
            (Duration::from_millis(5), Duration::from_millis(20))
        );
        assert_eq!(d.timeout(), Duration::from_millis(200));
    }
}
