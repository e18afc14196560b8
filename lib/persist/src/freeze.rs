//! Freezing a mounted filesystem for the shortest time, and always thawing it.
//!
//! A snapshot of a mounted disk is consistent only if nothing writes to it
//! meanwhile: [`Frozen::take`] flushes the filesystem (`syncfs`, while
//! writers still run, so the freeze itself has little left to write), then
//! freezes it (`FIFREEZE`, what `fsfreeze -f` does); writers block until it
//! is thawed (`FITHAW`). A frozen filesystem left behind hangs every
//! process that writes to it, so the thaw happens on every path:
//!
//! * the guard thaws when dropped: on success, on error, on a panic that
//!   unwinds;
//! * the caller bounds its work with [`Frozen::deadline`] and checks
//!   [`crate::interrupt::interrupted`] while it works, so a timeout or a
//!   first SIGINT/SIGTERM/SIGHUP ends the work and drops the guard;
//! * every frozen mountpoint is also listed in a process-wide registry, and
//!   a second signal (which ends the process at once, see
//!   [`crate::interrupt`]) thaws them all first ([`thaw_all`]).
//!
//! Only SIGKILL (and a kernel crash) can leave a filesystem frozen: thaw it
//! with `fsfreeze -u MOUNTPOINT`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::codes;
use crate::log;
use crate::step::Failure;

/// The mountpoints this process has frozen and not yet thawed, with an open
/// directory on each (a thaw needs one).
static FROZEN: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

nix::ioctl_readwrite_bad!(
    /// `FIFREEZE`: freeze the filesystem the descriptor is on.
    fifreeze, nix::libc::_IOWR::<nix::libc::c_int>(b'X' as u32, 119), nix::libc::c_int);
nix::ioctl_readwrite_bad!(
    /// `FITHAW`: thaw it.
    fithaw, nix::libc::_IOWR::<nix::libc::c_int>(b'X' as u32, 120), nix::libc::c_int);

/// A frozen filesystem; dropping it thaws it.
#[derive(Debug)]
pub struct Frozen {
    mountpoint: PathBuf,
    deadline: Instant,
}

impl Frozen {
    /// Flushes, then freezes the filesystem mounted at `mountpoint`, for at
    /// most `limit` (the caller's work checks [`Frozen::deadline`]). An
    /// error (code `freeze-failed`) means nothing is frozen.
    pub fn take(mountpoint: &Path, limit: Duration) -> Result<Frozen, Failure> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Failure::new(
                codes::FREEZE_FAILED,
                format!("{what} {}: {e}", mountpoint.display()),
            )
        };
        crate::files::sync_fs(mountpoint).map_err(|e| fail("flushing", &e))?;
        let dir = File::open(mountpoint).map_err(|e| fail("opening", &e))?;
        let mut registry = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
        let mut arg: nix::libc::c_int = 0;
        // SAFETY: an open descriptor and a pointer to a live integer, as
        // FIFREEZE takes (the kernel ignores the integer).
        unsafe { fifreeze(dir.as_raw_fd(), &mut arg) }.map_err(|e| fail("freezing", &e))?;
        registry.push((mountpoint.to_path_buf(), dir));
        log::debug(format_args!("froze {}", mountpoint.display()));
        Ok(Frozen {
            mountpoint: mountpoint.to_path_buf(),
            deadline: Instant::now() + limit,
        })
    }

    /// When the work done while frozen must have ended.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The frozen mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let mut registry = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = registry.iter().position(|(p, _)| *p == self.mountpoint) {
            let (path, dir) = registry.remove(i);
            thaw(&path, &dir);
        }
    }
}

fn thaw(path: &Path, dir: &File) {
    let mut arg: nix::libc::c_int = 0;
    // SAFETY: as for FIFREEZE.
    match unsafe { fithaw(dir.as_raw_fd(), &mut arg) } {
        Ok(_) => log::debug(format_args!("thawed {}", path.display())),
        Err(e) => log::error(format_args!(
            "thawing {}: {e}: run `fsfreeze -u {}`",
            path.display(),
            path.display()
        )),
    }
}

/// Thaws every filesystem this process froze: for the path that ends the
/// process at once (a second signal). A thread freezing meanwhile holds
/// the registry only for the `FIFREEZE` call, so this waits for it and
/// thaws its filesystem too.
pub fn thaw_all() {
    let mut registry = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
    for (path, dir) in registry.drain(..) {
        thaw(&path, &dir);
    }
}
