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
//!   [`crate::interrupt`]) thaws them all first ([`thaw_all`], registered
//!   with [`crate::interrupt::before_exit_now`] before the first freeze).
//!
//! Only SIGKILL (an OOM kill, `systemctl kill -s KILL`) can leave a
//! filesystem frozen. So every freeze is recorded before `FIFREEZE`, in a
//! marker under [`MARKERS`] naming its holder (pid and start time), and the
//! marker removed once thawed: the next tool that takes the node lock
//! ([`node_lock`]) thaws every freeze whose holder is dead, and says so.
//! `disk-status` reports a frozen filesystem ([`frozen`]), and
//! `disk-unmount` never unmounts one (it would stay frozen, with no
//! mountpoint left to thaw it through).
//!
//! A cloud disk's filesystem can be frozen only on the node it is attached
//! to: [`find_mounted`] finds its device there (the disk's own links and
//! serial, never the record's word alone) and where it is mounted, and
//! checks that the filesystem mounted is the record's.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::blockdev::Device;
use crate::codes;
use crate::discover;
use crate::lock::NodeLock;
use crate::log;
use crate::record::Record;
use crate::step::Failure;

/// Where a freeze is recorded while it is held: one file per frozen
/// filesystem, named by its device (`<major>:<minor>`), holding a
/// [`Marker`].
pub(crate) const MARKERS: &str = "/run/appscale-persist/frozen";

/// Who froze a filesystem, written before the freeze and removed after the
/// thaw: a marker whose holder is gone is a freeze nobody will thaw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// The holder's pid.
    pub pid: u32,
    /// Its start time (`/proc/PID/stat`, clock ticks since boot): a pid
    /// reused by another process is not the holder.
    pub start: u64,
    /// The holder (`disk-snapshot`).
    pub tool: String,
    /// Where the filesystem was frozen.
    pub mountpoint: PathBuf,
    /// Its device (major, minor).
    pub dev: (u64, u64),
}

impl Marker {
    fn path(dev: (u64, u64)) -> PathBuf {
        Path::new(MARKERS).join(format!("{}:{}", dev.0, dev.1))
    }

    /// The marker of the filesystem on `dev`, if it is recorded frozen.
    pub fn of(dev: (u64, u64)) -> Option<Marker> {
        let text = std::fs::read(Marker::path(dev)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every marker, with its path.
    fn all() -> Vec<(PathBuf, Option<Marker>)> {
        let Ok(entries) = std::fs::read_dir(MARKERS) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| {
                let m = std::fs::read(e.path())
                    .ok()
                    .and_then(|t| serde_json::from_slice(&t).ok());
                (e.path(), m)
            })
            .collect()
    }

    /// Whether its holder still runs.
    pub fn holder_alive(&self) -> bool {
        crate::run::start_time(self.pid) == Some(self.start)
    }

    /// Records this process as freezing `mountpoint` (device `dev`).
    fn write(mountpoint: &Path, dev: (u64, u64)) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let pid = std::process::id();
        let m = Marker {
            pid,
            start: crate::run::start_time(pid).unwrap_or(0),
            tool: log::tool().to_string(),
            mountpoint: mountpoint.to_path_buf(),
            dev,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(MARKERS)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(Marker::path(dev))?;
        std::io::Write::write_all(
            &mut f,
            &serde_json::to_vec(&m).map_err(std::io::Error::other)?,
        )
    }

    fn remove(dev: (u64, u64)) {
        let _ = std::fs::remove_file(Marker::path(dev));
    }

    /// For messages: `pid 123 (disk-snapshot)`.
    fn holder(&self) -> String {
        format!("pid {} ({})", self.pid, self.tool)
    }
}

/// Takes the node lock ([`NodeLock::take`]) and then, unless `check`,
/// thaws every filesystem whose freeze was recorded by a process that is
/// gone ([`thaw_abandoned`]): the one way the tools that act on a disk take
/// the lock.
pub fn node_lock(check: bool) -> Result<NodeLock, Failure> {
    let lock = NodeLock::take(check)?;
    thaw_abandoned(check);
    Ok(lock)
}

/// Thaws each filesystem a dead process left frozen (its [`Marker`]'s
/// holder is gone: SIGKILL, an OOM kill), found where its device is
/// mounted, and says so; removes markers of freezes already undone. With
/// `check`, says what it would thaw and changes nothing. Called under the
/// node lock, which every freeze is held under: no live run is mid-freeze.
pub(crate) fn thaw_abandoned(check: bool) {
    for (path, marker) in Marker::all() {
        let Some(m) = marker else {
            // Not a marker we can read: leave it, and say so.
            log::warn(format_args!(
                "{} is not a freeze record: left alone",
                path.display()
            ));
            continue;
        };
        if m.holder_alive() {
            continue;
        }
        let table = match crate::mount::Table::read() {
            Ok(t) => t,
            Err(_) => return,
        };
        let mounts = table.by_device(m.dev.0, m.dev.1);
        let Some(at) = mounts
            .iter()
            .find(|e| e.target == m.mountpoint)
            .or(mounts.first())
            .map(|e| e.target.clone())
        else {
            log::error(format_args!(
                "the filesystem on {}:{} was frozen by {}, which died, and is mounted nowhere now: mount it again and run `fsfreeze -u` on it",
                m.dev.0,
                m.dev.1,
                m.holder()
            ));
            continue;
        };
        if check {
            log::warn(format_args!(
                "would thaw {}, frozen by {}, which died without thawing it",
                at.display(),
                m.holder()
            ));
            continue;
        }
        let thawed = File::open(&at).map_err(|e| e.to_string()).and_then(|dir| {
            let st = nix::sys::stat::fstat(&dir).map_err(|e| e.to_string())?;
            let on = (
                nix::sys::stat::major(st.st_dev),
                nix::sys::stat::minor(st.st_dev),
            );
            if on != m.dev {
                return Err(format!("{} is on another device now", at.display()));
            }
            let mut arg: nix::libc::c_int = 0;
            // SAFETY: as for FITHAW in `thaw`.
            match unsafe { fithaw(dir.as_raw_fd(), &mut arg) } {
                Ok(_) => Ok(true),
                // Not frozen: thawed by hand already.
                Err(nix::errno::Errno::EINVAL) => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        });
        match thawed {
            Ok(was) => {
                Marker::remove(m.dev);
                if was {
                    log::warn(format_args!(
                        "thawed {}: {} froze it and died without thawing it (killed)",
                        at.display(),
                        m.holder()
                    ));
                }
            }
            Err(e) => log::error(format_args!(
                "thawing {}, left frozen by {}, which died: {e}: run `fsfreeze -u {}`",
                at.display(),
                m.holder(),
                at.display()
            )),
        }
    }
}

/// Why the filesystem on `dev`, mounted (read-write when `rw`), is frozen,
/// or `None` when nothing says it is: a recorded freeze (ours, see
/// [`Marker`]), or, for ext4, its superblock (a mounted, writable ext4
/// always has a journal to replay, except while frozen: the freeze flushes
/// the journal and clears that flag). An XFS frozen by another tool is not
/// seen.
pub fn frozen(dev: &Device, rw: bool) -> Option<String> {
    if let Some(m) = Marker::of((dev.major, dev.minor)) {
        return Some(if m.holder_alive() {
            format!("frozen by {} (a snapshot being taken)", m.holder())
        } else {
            format!("frozen by {}, which died without thawing it", m.holder())
        });
    }
    let sb = crate::blockdev::read_superblock(&dev.real).ok()??;
    (rw && sb.fstype == "ext4" && !sb.needs_recovery)
        .then(|| "frozen (its superblock says so; not by this toolkit)".to_string())
}

/// The mountpoints this process has frozen and not yet thawed, with an open
/// directory on each (a thaw needs one).
static FROZEN: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Whether [`thaw_all`] is registered to run before a second signal ends
/// the process ([`crate::interrupt::before_exit_now`]).
static THAW_ON_EXIT: Once = Once::new();

/// A freeze this process holds: the mountpoint, a directory open on it,
/// and its device (major, minor), whose [`Marker`] records it.
type Held = (PathBuf, File, (u64, u64));

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
    /// most `limit` (the caller's work checks [`Frozen::deadline`]). `dev`
    /// is the device (major, minor) the caller found mounted there: the
    /// directory opened must be on it (its `st_dev`), or nothing is frozen.
    /// A disk unmounted meanwhile leaves an empty directory on the parent
    /// filesystem (often `/`), which must never be the one frozen. An error
    /// (code `freeze-failed`) means nothing is frozen.
    pub fn take(mountpoint: &Path, dev: (u64, u64), limit: Duration) -> Result<Frozen, Failure> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Failure::new(
                codes::FREEZE_FAILED,
                format!("{what} {}: {e}", mountpoint.display()),
            )
        };
        let dir = File::open(mountpoint).map_err(|e| fail("opening", &e))?;
        let st = nix::sys::stat::fstat(&dir).map_err(|e| fail("examining", &e))?;
        let have = (
            nix::sys::stat::major(st.st_dev),
            nix::sys::stat::minor(st.st_dev),
        );
        if have != dev {
            return Err(Failure::new(
                codes::FREEZE_FAILED,
                format!(
                    "{} is on device {}:{}, not on {}:{}, the device found mounted there: it was unmounted or replaced meanwhile; not freezing the filesystem it is on now",
                    mountpoint.display(),
                    have.0,
                    have.1,
                    dev.0,
                    dev.1
                ),
            ));
        }
        nix::unistd::syncfs(&dir).map_err(|e| fail("flushing", &e))?;
        // Before the registry's lock: the signal thread takes it to thaw.
        THAW_ON_EXIT.call_once(|| crate::interrupt::before_exit_now(thaw_all));
        let mut registry = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
        // Recorded first: a holder killed while it holds the freeze leaves
        // a marker the next run finds (`thaw_abandoned`).
        Marker::write(mountpoint, dev)
            .map_err(|e| fail(&format!("recording the freeze in {MARKERS} of"), &e))?;
        let mut arg: nix::libc::c_int = 0;
        // SAFETY: an open descriptor and a pointer to a live integer, as
        // FIFREEZE takes (the kernel ignores the integer).
        if let Err(e) = unsafe { fifreeze(dir.as_raw_fd(), &mut arg) } {
            Marker::remove(dev);
            return Err(match e {
                nix::errno::Errno::EBUSY => Failure::new(
                    codes::FREEZE_FAILED,
                    format!(
                        "{} is frozen already, by someone else (fsfreeze -f, another backup tool): nothing taken; thaw it (`fsfreeze -u {}`) once they are done, or pass --no-freeze",
                        mountpoint.display(),
                        mountpoint.display()
                    ),
                ),
                e => fail("freezing", &e),
            });
        }
        registry.push((mountpoint.to_path_buf(), dir, dev));
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
        if let Some(i) = registry.iter().position(|(p, ..)| *p == self.mountpoint) {
            let (path, dir, dev) = registry.remove(i);
            thaw(&path, &dir, dev);
        }
    }
}

/// Thaws the filesystem `dir` is on (mounted at `path`, device `dev`), and
/// removes its marker.
fn thaw(path: &Path, dir: &File, dev: (u64, u64)) {
    let mut arg: nix::libc::c_int = 0;
    // SAFETY: as for FIFREEZE.
    match unsafe { fithaw(dir.as_raw_fd(), &mut arg) } {
        Ok(_) => {
            Marker::remove(dev);
            log::debug(format_args!("thawed {}", path.display()))
        }
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
pub(crate) fn thaw_all() {
    let mut registry = FROZEN.lock().unwrap_or_else(|e| e.into_inner());
    for (path, dir, dev) in registry.drain(..) {
        thaw(&path, &dir, dev);
    }
}

/// Where a cloud disk's filesystem is on this node, as [`find_mounted`]
/// found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Here {
    /// Its device is not on this node.
    Absent,
    /// Its device is here (this path), its filesystem not mounted.
    Unmounted(PathBuf),
    /// Its filesystem is mounted here.
    Mounted {
        /// The device, as found.
        device: PathBuf,
        /// Its number (major, minor): what the mountpoint's `st_dev` is
        /// ([`Frozen::take`] checks it).
        dev: (u64, u64),
        /// The mountpoint to freeze.
        mountpoint: PathBuf,
    },
}

/// Finds a cloud record's disk on this node and where its filesystem is
/// mounted: the paths its identity gives ([`discover::candidates`]: the
/// NVMe link, the attach name), which must all lead to one device, whose
/// serial and size must be the disk's ([`discover::check_identity`]); then
/// the mount table. A filesystem mounted from it must be the one the
/// record names (`fs.uuid`), when it names one; when it names none, the
/// device's serial must name the disk: a size that matches is no proof
/// (`freeze-failed`). The record's `device` is
/// not trusted: a stale record may name a device that now holds another
/// disk.
pub fn find_mounted(rec: &Record) -> Result<Here, Failure> {
    let cands = discover::candidates(rec, &discover::dev_root());
    let mut found: Option<Device> = None;
    for c in cands.iter().filter(|c| c.exists()) {
        let dev = Device::open(c)?;
        match &found {
            Some(first) if (first.major, first.minor) != (dev.major, dev.minor) => {
                return Err(Failure::new(
                    codes::IDENTITY_MISMATCH,
                    format!(
                        "{} and {} both claim to be {} but lead to different devices: not freezing either",
                        first.path.display(),
                        c.display(),
                        rec.disk_id().unwrap_or("?")
                    ),
                ));
            }
            Some(_) => {}
            None => found = Some(dev),
        }
    }
    let Some(dev) = found else {
        return Ok(Here::Absent);
    };
    discover::check_identity(rec, &dev)?;
    let table = crate::mount::read_table()?;
    for child in dev.children() {
        if let Ok(n) = std::fs::read_to_string(format!("/sys/class/block/{child}/dev"))
            && let Some((a, b)) = n.trim().split_once(':')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
            && !table.by_device(a, b).is_empty()
        {
            return Err(Failure::new(
                codes::FREEZE_FAILED,
                format!(
                    "{} has a partition mounted ({child}): only a filesystem on the whole disk is frozen; pass --no-freeze for a crash-consistent snapshot",
                    dev.path.display()
                ),
            ));
        }
    }
    let Some(entry) = table.by_device(dev.major, dev.minor).first().cloned() else {
        // Mounted nowhere, but perhaps alive: a lazy unmount still in use
        // is written to, with no mountpoint left to freeze it through.
        return match crate::blockdev::open_exclusive(&dev.real) {
            Err(crate::blockdev::BlockError::Busy(..)) => Err(Failure::new(
                codes::FREEZE_FAILED,
                format!(
                    "{} is mounted nowhere, but is in use (a lazily unmounted filesystem still alive, held by {}): with no mountpoint it cannot be frozen, and a snapshot now would not be consistent; stop those processes and rerun, or pass --no-freeze (a crash-consistent snapshot); nothing taken",
                    dev.path.display(),
                    crate::mount::who_holds(dev.major, dev.minor)
                ),
            )),
            _ => Ok(Here::Unmounted(dev.path.clone())),
        };
    };
    let kernel_name = dev
        .real
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    // The serial EBS gives a device (NVMe; virtio on Eucalyptus) names
    // its volume.
    let serial_proves = discover::serial_names(
        rec.provider,
        &discover::serial_of(&kernel_name),
        rec.disk_id().unwrap_or_default(),
    );
    let want = rec.fs.as_ref().and_then(|f| f.uuid.as_deref());
    if let Some(want) = want {
        let probe = crate::blockdev::probe(&dev.real)?;
        let have = probe.as_ref().and_then(|p| p.uuid()).unwrap_or("");
        if !have.eq_ignore_ascii_case(want) {
            return Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!(
                    "the filesystem on {} (mounted at {}) has UUID `{have}`, but the record's has `{want}`: not this disk's filesystem, not freezing it",
                    dev.path.display(),
                    entry.target.display()
                ),
            ));
        }
    } else if !serial_proves {
        // Found by its attach name (Xen: no serial), matching in size
        // alone: every instance's first data volume has the same name, so
        // this may be another disk's filesystem. Never freeze on that.
        return Err(Failure::new(
            codes::FREEZE_FAILED,
            format!(
                "{} (mounted at {}) was found by its attach name and size alone: its device reports no serial and the record names no filesystem UUID (`fs.uuid`), so it cannot be shown to be {}; not freezing it. Give the record its `fs` (the records disk-ensure-fs writes carry it), or pass --no-freeze for a crash-consistent snapshot",
                dev.path.display(),
                entry.target.display(),
                rec.disk_id().unwrap_or("?")
            ),
        ));
    }
    Ok(Here::Mounted {
        device: dev.path.clone(),
        dev: (dev.major, dev.minor),
        mountpoint: entry.target.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mountpoint that is no longer the filesystem found mounted there
    /// (unmounted meanwhile: a plain directory on its parent's filesystem)
    /// is refused before any freeze. `/proc` stands in for it: procfs
    /// cannot be frozen, so even a take that skipped the check would freeze
    /// nothing (it would fail "freezing ...: not supported" instead).
    #[test]
    fn take_refuses_a_mountpoint_on_another_device_than_found() {
        let here = Path::new("/proc");
        let st = nix::sys::stat::stat(here).unwrap();
        let dev = (
            nix::sys::stat::major(st.st_dev),
            nix::sys::stat::minor(st.st_dev),
        );
        let found = (dev.0 + 7, dev.1 + 1);
        let f = Frozen::take(here, found, Duration::from_secs(1)).unwrap_err();
        assert_eq!(f.code, codes::FREEZE_FAILED, "{f:?}");
        assert!(f.message.contains("not freezing"), "{f:?}");
        assert!(FROZEN.lock().unwrap().is_empty());
        // The device found: the check passes, and the freeze itself is
        // what fails (procfs has none).
        let f = Frozen::take(here, dev, Duration::from_secs(1)).unwrap_err();
        assert!(f.message.starts_with("freezing "), "{f:?}");
    }
}
