//! One writer at a time on a node.
//!
//! Two runs at once are normal: Ansible forks, cron, a second operator.
//! Every step that changes a node (formatting, mounting, unmounting, editing
//! fstab, creating, attaching or detaching a local image) therefore holds
//! the **node lock**, [`NODE_LOCK`], from the moment it looks at the node
//! until it has finished acting on what it saw: a second run waits, then
//! reads the node afresh and finds the first one's result.
//!
//! * The lock is a BSD `flock(2)` on a file in `/run`, which the kernel
//!   releases when the process ends, however it ends (a crash, `kill -9`):
//!   a killed run never leaves the node locked.
//! * The wait is bounded ([`TIMEOUT_ENV`], default [`DEFAULT_TIMEOUT`]; for a
//!   device, [`DEVICE_TIMEOUT_ENV`], default [`DEFAULT_DEVICE_TIMEOUT`]) and
//!   says who holds the lock: the holder writes its pid and tool name into
//!   the file.
//! * The file and its directory are created only by a run that changes
//!   something; `--check` takes a shared lock when the file exists (it then
//!   waits for a writer to finish, and sees its result) and creates nothing.
//! * The lock file is opened with `O_NOFOLLOW`: a symlink planted at its path
//!   is refused, not followed.
//!
//! [`DeviceLock`] is the same kind of lock on a whole-disk device node, the
//! convention udev and the partitioning tools follow: while it is held, udev
//! does not probe the device and no other careful tool writes to it.

use crate::codes;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::log;
use crate::wait::{self, Poll, WaitParams};

/// The node lock's path.
pub const NODE_LOCK: &str = "/run/appscale-persist/lock";

/// The environment variable that bounds the wait for the node lock, in
/// seconds.
pub(crate) const TIMEOUT_ENV: &str = "APPSCALE_PERSIST_LOCK_TIMEOUT";

/// How long a run waits for the node lock unless [`TIMEOUT_ENV`] says
/// otherwise: long enough for another run's mkfs or fsck of a large disk,
/// short enough that a stuck run is reported rather than waited on for ever.
/// A `--seed` copy holds the lock while it copies (up to 6 hours): a run
/// started meanwhile gives up after this long, saying who holds the lock.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The environment variable that bounds the wait for a device lock, in
/// seconds.
pub(crate) const DEVICE_TIMEOUT_ENV: &str = "APPSCALE_PERSIST_DEVICE_LOCK_TIMEOUT";

/// How long a run waits for a device another tool has locked unless
/// [`DEVICE_TIMEOUT_ENV`] says otherwise: udev holds it for milliseconds, a
/// partitioner for seconds.
pub(crate) const DEFAULT_DEVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run held the lock for the whole wait.
    #[error(
        "{path} is still held by {holder} after {waited:?}: another run is at work on this node; let it finish, or stop it, then rerun"
    )]
    NodeTimeout {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote itself into the file.
        holder: String,
        /// How long this run waited.
        waited: Duration,
    },
    /// Another tool held the device lock for the whole wait.
    #[error(
        "{path} is locked by another tool (flock) after {waited:?}: a partitioner or formatter is at work on it; not touching it"
    )]
    DeviceTimeout {
        /// The device node.
        path: PathBuf,
        /// How long this run waited.
        waited: Duration,
    },
    /// A signal asked the run to stop while it waited.
    #[error("stopped by {1} while waiting for {0}")]
    Interrupted(PathBuf, nix::sys::signal::Signal),
    /// The lock file or its directory could not be opened, created or
    /// locked.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl LockError {
    /// The record error code for this failure.
    pub fn code(&self) -> codes::Code {
        match self {
            LockError::NodeTimeout { .. } => codes::NODE_LOCKED,
            LockError::DeviceTimeout { .. } => codes::DEVICE_LOCKED,
            LockError::Interrupted(..) => codes::INTERRUPTED,
            LockError::Io(..) => codes::LOCK_FAILED,
        }
    }
}

impl From<LockError> for crate::failure::Failure {
    fn from(e: LockError) -> Self {
        crate::failure::Failure::new(e.code(), e.to_string())
    }
}

/// A wait bound: the environment variable `var` when set to a number of
/// seconds, else `default`.
fn timeout(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// The node lock, held until dropped (or, in `--check` mode, possibly not
/// held at all: see [`NodeLock::take`]).
#[derive(Debug)]
pub struct NodeLock {
    _held: Option<Flock<File>>,
}

impl NodeLock {
    /// Takes the node lock: exclusively to change the node, or, with
    /// `check`, shared and only if the lock file already exists (creating
    /// nothing). Waits (bounded, saying so) while another run holds it.
    pub fn take(check: bool) -> Result<NodeLock, LockError> {
        NodeLock::take_at(Path::new(NODE_LOCK), check)
    }

    /// Takes an exclusive lock like the node lock's on another lock file
    /// (created `0600` in a `0700` directory when missing): one run at a
    /// time on something narrower than the node (the archive of one disk),
    /// waiting as for the node lock.
    pub fn take_file(path: &Path) -> Result<NodeLock, LockError> {
        NodeLock::take_at(path, false)
    }

    fn take_at(path: &Path, check: bool) -> Result<NodeLock, LockError> {
        let io = |e| LockError::Io(path.to_path_buf(), e);
        if check {
            let file = match OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(NodeLock { _held: None });
                }
                Err(e) => return Err(io(e)),
            };
            let held = flock_bounded(file, FlockArg::LockSharedNonblock, node_timeout(), || {
                format!("another run ({})", holder_of(path))
            })
            .map_err(|e| {
                lock_error(path, e, |waited| LockError::NodeTimeout {
                    path: path.to_path_buf(),
                    holder: holder_of(path),
                    waited,
                })
            })?;
            return Ok(NodeLock { _held: Some(held) });
        }
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| LockError::Io(dir.to_path_buf(), e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        let mut held = flock_bounded(
            file,
            FlockArg::LockExclusiveNonblock,
            node_timeout(),
            || format!("another run ({})", holder_of(path)),
        )
        .map_err(|e| {
            lock_error(path, e, |waited| LockError::NodeTimeout {
                path: path.to_path_buf(),
                holder: holder_of(path),
                waited,
            })
        })?;
        // Say who holds it, for the next run that has to wait.
        let me = format!("pid {} ({})\n", std::process::id(), log::tool());
        let _ = held
            .set_len(0)
            .and_then(|()| held.rewind())
            .and_then(|()| held.write_all(me.as_bytes()));
        Ok(NodeLock { _held: Some(held) })
    }
}

/// What the holder wrote into the lock file, or "unknown".
fn holder_of(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let t = log::escape_controls(text.trim());
    if t.is_empty() {
        "a run that did not say who it is".into()
    } else {
        t
    }
}

/// A `flock(LOCK_EX)` on a whole-disk device node, held until dropped.
#[derive(Debug)]
pub struct DeviceLock {
    held: Flock<File>,
}

impl DeviceLock {
    /// Locks the device node `path` (a whole disk, not a partition), waiting
    /// (bounded) while another tool holds it. udev's short shared locks
    /// while it probes are waited out too.
    pub fn take(path: &Path) -> Result<DeviceLock, LockError> {
        let file = File::open(path).map_err(|e| LockError::Io(path.to_path_buf(), e))?;
        let limit = timeout(DEVICE_TIMEOUT_ENV, DEFAULT_DEVICE_TIMEOUT);
        let held = flock_bounded(file, FlockArg::LockExclusiveNonblock, limit, || {
            format!("another tool's lock on {}", path.display())
        })
        .map_err(|e| {
            lock_error(path, e, |waited| LockError::DeviceTimeout {
                path: path.to_path_buf(),
                waited,
            })
        })?;
        Ok(DeviceLock { held })
    }

    /// The open device node the lock is held on.
    pub fn file(&self) -> &File {
        &self.held
    }
}

/// How long a run waits for the node lock ([`TIMEOUT_ENV`], else
/// [`DEFAULT_TIMEOUT`]): also how long it waits for another program at work
/// on one of its devices.
pub(crate) fn node_timeout() -> Duration {
    timeout(TIMEOUT_ENV, DEFAULT_TIMEOUT)
}

/// Tries `how` until it succeeds or `limit` passes; says once what it waits
/// for (`what`), then shows the wait's progress (a live line on a terminal,
/// else a line every 10 s, [`crate::progress`]). Returns the time waited
/// when it gives up.
fn flock_bounded(
    file: File,
    how: FlockArg,
    limit: Duration,
    what: impl Fn() -> String,
) -> Result<Flock<File>, wait::WaitError<Errno>> {
    let mut file = Some(file);
    let mut said = false;
    let progress = crate::progress::Progress::start(what(), 0);
    wait::until_with(&progress, WaitParams::quick(limit), || {
        let f = file.take().expect("the file is put back on every retry");
        match Flock::lock(f, how) {
            Ok(held) => Poll::Ready(held),
            Err((f, Errno::EWOULDBLOCK)) => {
                file = Some(f);
                // Said once; the progress line goes on from there.
                if !said {
                    log::warn(format_args!("waiting for {} (at most {limit:?})", what()));
                    said = true;
                }
                Poll::Pending
            }
            Err((f, Errno::EINTR)) => {
                file = Some(f);
                Poll::Pending
            }
            Err((_, e)) => Poll::Failed(e),
        }
    })
}

/// The [`LockError`] for a failed wait on `path`; `timed_out` builds the
/// error for a wait that ran out.
fn lock_error(
    path: &Path,
    e: wait::WaitError<Errno>,
    timed_out: impl FnOnce(Duration) -> LockError,
) -> LockError {
    match e {
        wait::WaitError::TimedOut(d) => timed_out(d),
        wait::WaitError::Interrupted(sig) => LockError::Interrupted(path.to_path_buf(), sig),
        wait::WaitError::Failed(errno) => LockError::Io(path.to_path_buf(), errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_and_check_mode_creates_nothing() {
        let dir = std::env::temp_dir().join(format!("lock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/lock");
        // --check on a node where no run ever wrote: nothing is created.
        NodeLock::take_at(&path, true).unwrap();
        assert!(!dir.exists());
        let held = NodeLock::take_at(&path, false).unwrap();
        assert!(holder_of(&path).starts_with(&format!("pid {}", std::process::id())));
        // A second open file description of the same file: it must wait.
        let f = File::open(&path).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err());
        drop(held);
        let f = File::open(&path).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
        // A symlink planted at the lock's path is not followed.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(matches!(
            NodeLock::take_at(&path, false),
            Err(LockError::Io(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
