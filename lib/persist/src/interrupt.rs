//! Stopping cleanly on SIGINT, SIGTERM and SIGHUP.
//!
//! A node-side step holds things that must be released on every path: a
//! temporary mount, an fstab line to take back, a half-copied seed. Killed
//! by a signal's default action, it would leave them behind. So the node
//! tools [`install`] this at start-up:
//!
//! * the three signals are blocked in every thread (threads inherit the
//!   mask), and one thread waits for them (`sigwait`);
//! * the first one is recorded ([`interrupted`]): the child process being
//!   waited for is stopped ([`crate::run::Cmd`]; `mkfs`, `mount` and `umount`
//!   are let finish, as killing them would only leave half a filesystem or
//!   hide what the kernel did), waits stop ([`crate::wait::until`]), the
//!   record being worked on fails and takes back what it did through its
//!   normal error path, and the records not yet started fail as
//!   `interrupted` without being touched;
//! * a second signal ends the process at once (exit 128 + signal): the
//!   operator's choice, when cleaning up itself hangs; what must not outlive
//!   the process is released first, by the hooks registered for it
//!   ([`before_exit_now`]: a filesystem frozen for a snapshot is thawed,
//!   [`crate::freeze`] registers that before its first freeze).
//!
//! Children get an unblocked mask again before they run ([`unblock_in_child`]),
//! except those let finish, which keep them blocked ([`block_in_child`]).

use crate::codes;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::log;

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

/// What runs before a second signal ends the process at once, in the order
/// registered ([`before_exit_now`]).
static HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Registers `hook` to run when a second signal ends the process at once,
/// before it exits: for what a module holds that nothing else would release
/// (a frozen filesystem). Register it before holding anything: the signal
/// thread runs the hooks registered by then.
pub(crate) fn before_exit_now(hook: fn()) {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
}

/// Runs the hooks [`before_exit_now`] registered, in order. Copied out of
/// the registry first: a hook may wait for a thread that is registering one
/// (the freeze registry's lock).
fn run_exit_hooks() {
    let hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    hooks.iter().for_each(|hook| hook());
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Blocks SIGINT, SIGTERM and SIGHUP and starts the thread that waits for
/// them. Call once, from the main thread, before any other thread starts.
pub fn install() {
    let set = signals();
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let Ok(sig) = set.wait() else { continue };
                if SIGNALLED
                    .compare_exchange(0, sig as i32, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    log::warn(format_args!(
                        "{sig} received: stopping, and taking back what this run started (send it again to stop at once)"
                    ));
                } else {
                    log::error(format_args!("{sig} received again: stopping at once"));
                    run_exit_hooks();
                    std::process::exit(128 + sig as i32);
                }
            }
        });
    if spawned.is_err() {
        // Without the waiter, blocked signals would never be seen: give
        // them their default action back.
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    }
}

/// The signal that asked this run to stop, if one did.
pub fn interrupted() -> Option<Signal> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// For a child about to `exec`: unblocks the signals [`install`] blocked, so
/// the child can be stopped by them. Async-signal-safe (it only calls
/// `pthread_sigmask`), as a `pre_exec` hook must be.
pub(crate) fn unblock_in_child() -> std::io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&signals()), None).map_err(std::io::Error::from)
}

/// For a child about to `exec` that is let finish
/// ([`crate::run::Cmd::finish_on_interrupt`]): blocks the signals
/// [`install`] handles, so that they do not stop it. Async-signal-safe,
/// as [`unblock_in_child`].
pub(crate) fn block_in_child() -> std::io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals()), None).map_err(std::io::Error::from)
}

/// The failure of a record the run stopped before, or while, acting on.
pub fn failure(sig: Signal) -> crate::failure::Failure {
    crate::failure::Failure::new(
        codes::INTERRUPTED,
        format!(
            "stopped by {sig}: this record was not finished, and what was done for it was taken back"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{before_exit_now, run_exit_hooks};

    static RAN: AtomicUsize = AtomicUsize::new(0);

    /// What the second signal's path runs before it exits: every hook
    /// registered (the freeze's thaw), however many.
    #[test]
    fn the_hooks_registered_run_before_the_exit() {
        before_exit_now(|| {
            RAN.fetch_add(1, Ordering::SeqCst);
        });
        before_exit_now(|| {
            RAN.fetch_add(10, Ordering::SeqCst);
        });
        run_exit_hooks();
        assert_eq!(RAN.load(Ordering::SeqCst), 11);
    }
}
