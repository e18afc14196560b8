//! The kernel's mount table, and mounting and unmounting filesystems.
//!
//! The table is read from `/proc/self/mountinfo` every time it matters; it
//! is the only source of truth for "is this mounted" (never `/etc/mtab`,
//! never a cache). Devices are compared by kernel device number, so
//! `/dev/disk/by-uuid/...`, `/dev/loop3` and `/dev/xvdf` naming the same
//! device compare equal.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::codes;
use crate::failure::Failure;
use crate::run::{Cmd, RunError};
use crate::wait::{self, Poll, WaitParams};

/// Where the kernel publishes this process's mount table.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Directories that must never themselves become a mountpoint: mounting a
/// data disk over one would hide the system or users' files. Directories
/// below them are allowed (`/opt/appscale`, `/srv/data`, `/mnt/disk`).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/sbin",
    "/var/lib",
    "/var/log",
    "/var/tmp",
];

/// Trees nothing may be mounted anywhere inside: the system's own files
/// (the EFI partition and snaps included), the kernel's virtual
/// filesystems, package state, logs, spools and caches, and users' homes.
/// (`/lib*` means every top-level directory whose name starts with `lib`.)
const SYSTEM_TREES: &[&str] = &[
    "/etc",
    "/usr",
    "/boot",
    "/efi",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/bin",
    "/sbin",
    "/snap",
    "/home",
    "/root",
    "/var/lib",
    "/var/log",
    "/var/spool",
    "/var/cache",
];

/// How long `mount` and `umount` may take. The kernel call cannot be
/// interrupted, so a short deadline would only hide what happened: the
/// deadline is long, and the mount table is read afterwards to learn the
/// truth either way.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Device number, major.
    pub major: u64,
    /// Device number, minor.
    pub minor: u64,
    /// The mountpoint.
    pub target: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// The mount source (`/dev/loop3`).
    pub source: String,
    /// Per-mount options (`rw,noatime`).
    pub options: String,
}

impl Entry {
    /// Whether it is mounted read-write (its per-mount options).
    pub fn is_rw(&self) -> bool {
        self.options.split(',').any(|o| o == "rw")
    }
}

/// A snapshot of the mount table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Entries in kernel order: later entries sit on top of earlier ones.
    pub entries: Vec<Entry>,
}

impl Table {
    /// Reads the current table.
    pub fn read() -> std::io::Result<Table> {
        Ok(Table::parse(&std::fs::read_to_string(MOUNTINFO)?))
    }

    /// Parses mountinfo text; malformed lines are skipped.
    pub fn parse(text: &str) -> Table {
        let entries = text
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let l: Vec<&str> = left.split(' ').collect();
                let r: Vec<&str> = right.split(' ').collect();
                let (major, minor) = l.get(2)?.split_once(':')?;
                Some(Entry {
                    major: major.parse().ok()?,
                    minor: minor.parse().ok()?,
                    target: PathBuf::from(unescape(l.get(4)?)),
                    options: l.get(5)?.to_string(),
                    fstype: r.first()?.to_string(),
                    source: unescape(r.get(1)?),
                })
            })
            .collect();
        Table { entries }
    }

    /// The mount visible at `target` (the topmost), if any.
    pub fn at(&self, target: &Path) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.target == target)
    }

    /// Every mount of the device `major:minor`.
    pub fn by_device(&self, major: u64, minor: u64) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.major == major && e.minor == minor)
            .collect()
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the device `major:minor` is an active swap area.
pub fn is_swap(major: u64, minor: u64) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string("/proc/swaps") {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .any(|p| {
            std::fs::metadata(unescape(p))
                .map(|m| {
                    nix::sys::stat::major(m.rdev()) == major
                        && nix::sys::stat::minor(m.rdev()) == minor
                })
                .unwrap_or(false)
        }))
}

/// Why a mountpoint is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountpointError {
    /// Not an absolute path.
    #[error("mountpoint `{0}` is not an absolute path")]
    NotAbsolute(String),
    /// Holds `..` or `.` components or a control character, or is empty.
    #[error(
        "mountpoint `{}` must be a plain absolute path, without `.`, `..` or control characters",
        crate::log::escape_controls(.0)
    )]
    NotPlain(String),
    /// A system directory, or inside a system tree.
    #[error(
        "mountpoint `{0}` is a system directory or inside one (/etc, /usr, /boot, /efi, /proc, /sys, /dev, /run, /bin, /sbin, /lib*, /snap, /home, /root, /var/lib, /var/log, /var/spool, /var/cache): mounting a data disk there would hide or break the system, or users' files"
    )]
    System(String),
    /// A component of the path is a symbolic link.
    #[error(
        "mountpoint `{0}` goes through the symbolic link {1} (to {2}): give the real path, so the disk is mounted where it seems to be"
    )]
    Symlink(String, String, String),
    /// A component of the path exists and is not a directory.
    #[error("mountpoint `{0}`: {1} is not a directory")]
    NotDirectory(String, String),
    /// A component of the path could not be examined.
    #[error("mountpoint `{0}`: {1}: {2}")]
    Unreadable(String, String, String),
}

/// Checks that `mountpoint` is absolute, plain, not a system directory nor
/// inside a system tree, and that none of its existing components is a
/// symbolic link (so the path is already canonical: the disk is mounted
/// where the path says); returns it without a trailing slash.
pub fn check_mountpoint(mountpoint: &str) -> Result<PathBuf, MountpointError> {
    let p = Path::new(mountpoint);
    if !p.is_absolute() {
        return Err(MountpointError::NotAbsolute(mountpoint.into()));
    }
    // A control character (a tab, a carriage return, an escape) would
    // reach fstab and the mount table raw, and break both.
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || mountpoint.chars().any(char::is_control)
    {
        return Err(MountpointError::NotPlain(mountpoint.into()));
    }
    let clean: PathBuf = p.components().collect();
    let shown = || clean.display().to_string();
    let in_lib = clean
        .components()
        .nth(1)
        .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with("lib"));
    if SYSTEM_DIRS.iter().any(|d| Path::new(d) == clean)
        || SYSTEM_TREES.iter().any(|t| clean.starts_with(t))
        || in_lib
    {
        return Err(MountpointError::System(shown()));
    }
    let mut prefix = PathBuf::from("/");
    for c in clean.components().skip(1) {
        prefix.push(c);
        match std::fs::symlink_metadata(&prefix) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&prefix)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(MountpointError::Symlink(
                    shown(),
                    prefix.display().to_string(),
                    to,
                ));
            }
            Ok(m) if !m.is_dir() => {
                return Err(MountpointError::NotDirectory(
                    shown(),
                    prefix.display().to_string(),
                ));
            }
            Ok(_) => {}
            // What does not exist yet is made as a plain directory.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                return Err(MountpointError::Unreadable(
                    shown(),
                    prefix.display().to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    Ok(clean)
}

/// The order in which mountpoints nested in one another are mounted: waves
/// of indices into `mountpoints`, parents before children (a mountpoint
/// goes in the wave after the deepest of the others it is inside); those
/// inside none (or `None`: not known) go first. Unmounting goes through the
/// waves in reverse, children first.
pub fn nesting_waves(mountpoints: &[Option<PathBuf>]) -> Vec<Vec<usize>> {
    let parents = nesting_parents(mountpoints);
    let mut depth: Vec<Option<usize>> = vec![None; mountpoints.len()];
    // A parent is strictly shorter than its child: by length, parents first.
    let mut by_len: Vec<usize> = (0..mountpoints.len()).collect();
    by_len.sort_by_key(|&i| {
        mountpoints[i]
            .as_ref()
            .map_or(0, |p| p.components().count())
    });
    for i in by_len {
        let d = parents[i]
            .iter()
            .filter_map(|&j| depth[j])
            .max()
            .map_or(0, |d| d + 1);
        depth[i] = Some(d);
    }
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, d) in depth.into_iter().enumerate() {
        let d = d.unwrap_or(0);
        if waves.len() <= d {
            waves.resize(d + 1, Vec::new());
        }
        waves[d].push(i);
    }
    waves
}

/// For each of `mountpoints`, the indices of the others it is strictly
/// inside.
pub fn nesting_parents(mountpoints: &[Option<PathBuf>]) -> Vec<Vec<usize>> {
    mountpoints
        .iter()
        .map(|me| {
            mountpoints
                .iter()
                .enumerate()
                .filter(|(_, other)| match (me, other) {
                    (Some(me), Some(other)) => me != other && me.starts_with(other),
                    _ => false,
                })
                .map(|(j, _)| j)
                .collect()
        })
        .collect()
}

/// Mounts the device `major:minor` (node `device`) at `target` with
/// `fstype` and `options`, and judges the result by the kernel's mount
/// table, not by mount(8)'s exit status alone: a mount that went through is
/// success even when mount(8) reported otherwise (it is logged), and one
/// that did not is an error even when it reported success.
pub fn mount(
    device: &Path,
    (major, minor): (u64, u64),
    target: &Path,
    fstype: &str,
    options: &str,
) -> Result<(), MountError> {
    let ran = Cmd::new("mount")
        .args(["-t", fstype, "-o", options])
        .arg(device)
        .arg(target)
        .timeout(MOUNT_TIMEOUT)
        .finish_on_interrupt()
        .run();
    let table = Table::read().map_err(MountError::Table)?;
    let there = table
        .at(target)
        .is_some_and(|e| (e.major, e.minor) == (major, minor));
    match (ran, there) {
        (Ok(_), true) => Ok(()),
        (Err(e), true) => {
            crate::log::warn(format_args!(
                "{e}; but the kernel shows {} mounted on {}: going on",
                device.display(),
                target.display()
            ));
            Ok(())
        }
        (Err(e), false) => Err(MountError::Tool(e)),
        (Ok(_), false) => Err(MountError::NotThere {
            device: device.to_path_buf(),
            target: target.to_path_buf(),
            found: table
                .at(target)
                .map(|e| format!("{} ({})", e.source, e.fstype))
                .unwrap_or_else(|| "nothing".into()),
        }),
    }
}

impl MountpointError {
    /// The record error code for this failure.
    pub fn code(&self) -> codes::Code {
        codes::BAD_MOUNTPOINT
    }
}

impl From<MountpointError> for Failure {
    fn from(e: MountpointError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

/// Reads the kernel's mount table, as a record failure when it cannot.
pub fn read_table() -> Result<Table, Failure> {
    Table::read().map_err(|e| Failure::new(codes::MOUNT_TABLE, format!("reading {MOUNTINFO}: {e}")))
}

/// Why a mount did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// mount(8) failed, and the kernel shows nothing mounted.
    #[error(transparent)]
    Tool(#[from] RunError),
    /// mount(8) said it succeeded, but the mountpoint shows something else.
    #[error("mount reported success, but {target} shows {found}, not {device}")]
    NotThere {
        /// The device.
        device: PathBuf,
        /// The mountpoint.
        target: PathBuf,
        /// What the mountpoint shows.
        found: String,
    },
    /// Reading the mount table failed.
    #[error("reading {MOUNTINFO}: {0}")]
    Table(std::io::Error),
}

impl MountError {
    /// The record error code for this failure.
    pub fn code(&self) -> codes::Code {
        match self {
            MountError::Table(_) => codes::MOUNT_TABLE,
            MountError::Tool(_) | MountError::NotThere { .. } => codes::MOUNT_FAILED,
        }
    }
}

impl From<MountError> for Failure {
    fn from(e: MountError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

/// A process keeping a mount busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// How it holds the mount: `cwd`, `root`, `exe`, `fd 3 (/opt/appscale/x)`.
    pub how: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({}) {}", self.pid, self.comm, self.how)
    }
}

/// Processes with a working directory, root, executable or open file on the
/// filesystem `major:minor` (what `fuser -m` reports).
pub fn holders(major: u64, minor: u64) -> Vec<Holder> {
    let dev = nix::sys::stat::makedev(major, minor);
    let on_dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev() == dev)
            .unwrap_or(false)
    };
    let mut out = Vec::new();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = p.path();
        let comm = std::fs::read_to_string(base.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut hows = Vec::new();
        for what in ["cwd", "root", "exe"] {
            if on_dev(&base.join(what)) {
                hows.push(what.to_string());
            }
        }
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                if on_dev(&fd.path()) {
                    let target = std::fs::read_link(fd.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    hows.push(format!(
                        "fd {} ({target})",
                        fd.file_name().to_string_lossy()
                    ));
                }
            }
        }
        if !hows.is_empty() {
            out.push(Holder {
                pid,
                comm,
                how: hows.join(", "),
            });
        }
    }
    out
}

/// Why an unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    /// Processes hold the mount.
    #[error("{target} is busy: {}", list(.holders))]
    Busy {
        /// The mountpoint.
        target: PathBuf,
        /// Who holds it (may be empty when the kernel itself does).
        holders: Vec<Holder>,
    },
    /// umount failed for another reason.
    #[error(transparent)]
    Tool(#[from] RunError),
    /// Something else was mounted on top meanwhile; it is left alone.
    #[error("{target} now has {found} mounted on top: leaving it alone")]
    Changed {
        /// The mountpoint.
        target: PathBuf,
        /// What is on top now.
        found: String,
    },
    /// umount succeeded but the kernel still lists the mount.
    #[error("{0} is still mounted {1:?} after umount succeeded")]
    NotReleased(PathBuf, Duration),
    /// Reading the mount table failed.
    #[error("reading {MOUNTINFO}: {0}")]
    Table(#[from] std::io::Error),
}

impl UnmountError {
    /// The record error code for this failure.
    pub fn code(&self) -> codes::Code {
        match self {
            UnmountError::Busy { .. } => codes::BUSY,
            UnmountError::Changed { .. } => codes::MOUNTPOINT_OTHER_DEVICE,
            UnmountError::Table(_) => codes::MOUNT_TABLE,
            UnmountError::Tool(_) | UnmountError::NotReleased(..) => codes::UNMOUNT_FAILED,
        }
    }
}

impl From<UnmountError> for Failure {
    fn from(e: UnmountError) -> Self {
        let hint = match e {
            UnmountError::Busy { .. } => {
                "; stop them and rerun (or pass --lazy to detach it anyway)"
            }
            _ => "",
        };
        Failure::new(e.code(), format!("{e}{hint}"))
    }
}

/// Who holds the filesystem `major:minor` ([`holders`]), in words.
pub fn who_holds(major: u64, minor: u64) -> String {
    list(&holders(major, minor))
}

fn list(holders: &[Holder]) -> String {
    if holders.is_empty() {
        "held by the kernel or another mount namespace (no process found)".to_string()
    } else {
        holders
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Flushes and unmounts the filesystem `major:minor` at `target`, then waits
/// (bounded) until the kernel no longer lists it. A busy mount is an error
/// naming the processes holding it, unless `lazy` (`umount -l`) is asked.
/// umount(8) has a long deadline (the kernel call cannot be interrupted),
/// and whatever it reports, the mount table decides: gone is success.
pub fn unmount(target: &Path, major: u64, minor: u64, lazy: bool) -> Result<(), UnmountError> {
    // umount acts on whatever is on top at the path: look once more, right
    // before, that it is still the filesystem the caller decided on.
    let top = Table::read()?
        .at(target)
        .map(|e| (e.major, e.minor, format!("{} ({})", e.source, e.fstype)));
    match top {
        None => return Ok(()),
        Some((a, b, _)) if (a, b) == (major, minor) => {}
        Some((_, _, found)) => {
            return Err(UnmountError::Changed {
                target: target.to_path_buf(),
                found,
            });
        }
    }
    // Flush this filesystem's dirty data before anything else.
    if let Ok(dir) = std::fs::File::open(target) {
        let _ = nix::unistd::syncfs(&dir);
    }
    let still_there = || -> Result<bool, UnmountError> {
        Ok(Table::read()?
            .at(target)
            .is_some_and(|e| e.major == major && e.minor == minor))
    };
    let mut cmd = Cmd::new("umount")
        .timeout(MOUNT_TIMEOUT)
        .finish_on_interrupt();
    if lazy {
        cmd = cmd.arg("--lazy");
    }
    cmd = cmd.arg(target);
    // A busy answer is tried again for a moment: a file of this filesystem
    // open in this process is also, for the instant between fork and exec,
    // open in any child another thread is starting, and that passes.
    let attempt = || -> Poll<(), UnmountError> {
        match cmd.output() {
            Ok(out) if !out.success() => match still_there() {
                Err(e) => Poll::Failed(e),
                Ok(false) => {
                    crate::log::warn(format_args!(
                        "{}; but the kernel no longer shows it mounted: going on",
                        cmd.failed(&out)
                    ));
                    Poll::Ready(())
                }
                Ok(true) if out.stderr.contains("busy") => Poll::Pending,
                Ok(true) => Poll::Failed(cmd.failed(&out).into()),
            },
            Ok(_) => Poll::Ready(()),
            Err(e) => match still_there() {
                Ok(true) => Poll::Failed(e.into()),
                Ok(false) => Poll::Ready(()),
                Err(e) => Poll::Failed(e),
            },
        }
    };
    let busy_for = Duration::from_secs(1);
    wait::until(WaitParams::quick(busy_for), attempt).map_err(|e| match e {
        wait::WaitError::Failed(e) => e,
        _ => UnmountError::Busy {
            target: target.to_path_buf(),
            holders: holders(major, minor),
        },
    })?;
    let timeout = Duration::from_secs(10);
    let progress = crate::progress::Progress::start(
        format!("the kernel to let go of {}", target.display()),
        0,
    );
    wait::until_with(
        &progress,
        WaitParams::quick(timeout),
        || match still_there() {
            Ok(true) => Poll::Pending,
            Ok(false) => Poll::Ready(()),
            Err(e) => Poll::Failed(e),
        },
    )
    .map_err(|e| match e {
        wait::WaitError::TimedOut(d) => UnmountError::NotReleased(target.to_path_buf(), d),
        wait::WaitError::Interrupted(_) => UnmountError::NotReleased(target.to_path_buf(), timeout),
        wait::WaitError::Failed(e) => e,
    })
}

/// A filesystem mounted in a private temporary directory for a short job
/// (seeding a new disk, growing XFS); unmounted and removed on drop.
#[derive(Debug)]
pub struct TempMount {
    dir: PathBuf,
    major: u64,
    minor: u64,
    mounted: bool,
}

/// Where temporary mounts live.
const TEMP_MOUNT_DIR: &str = "/run/appscale-persist";

/// Unmounts temporary mounts of `major:minor` left by a run that was
/// killed (its process is gone), so a rerun is not blocked by them.
pub fn reap_stale_temp_mounts(table: &Table, major: u64, minor: u64) {
    for e in table.by_device(major, minor) {
        let Ok(rest) = e.target.strip_prefix(TEMP_MOUNT_DIR) else {
            continue;
        };
        let name = rest.to_string_lossy();
        let Some(pid) = name
            .strip_prefix("tmp-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if crate::run::running(pid) {
            continue;
        }
        crate::log::warn(format_args!(
            "unmounting {}, left by an interrupted run",
            e.target.display()
        ));
        if unmount(&e.target, major, minor, false).is_ok() {
            let _ = std::fs::remove_dir(&e.target);
        }
    }
}

impl TempMount {
    /// Mounts `device` (number `major:minor`) under `/run/appscale-persist`.
    pub fn new(
        device: &Path,
        major: u64,
        minor: u64,
        fstype: &str,
    ) -> Result<TempMount, MountError> {
        let dir =
            Path::new(TEMP_MOUNT_DIR).join(format!("tmp-{}-{major}-{minor}", std::process::id()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|error| {
                MountError::Tool(RunError::Spawn {
                    cmdline: format!("mkdir {}", dir.display()),
                    error,
                })
            })?;
        let mut t = TempMount {
            dir,
            major,
            minor,
            mounted: false,
        };
        mount(
            device,
            (major, minor),
            &t.dir,
            fstype,
            "nodev,nosuid,noexec",
        )?;
        t.mounted = true;
        Ok(t)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and removes the directory, reporting failure.
    pub fn finish(mut self) -> Result<(), UnmountError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), UnmountError> {
        if self.mounted {
            unmount(&self.dir, self.major, self.minor, false)?;
            self.mounted = false;
        }
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            crate::log::error(format_args!(
                "cleaning up temporary mount {}: {e}",
                self.dir.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let t = Table::parse(
            "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
             37 35 7:3 / /opt/appscale rw,relatime - ext4 /dev/loop3 rw\n\
             garbage\n",
        );
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries[0].target, Path::new("/mnt/with space"));
        assert_eq!((t.entries[0].major, t.entries[0].minor), (98, 0));
        assert_eq!(t.entries[0].fstype, "ext3");
        assert_eq!(
            t.at(Path::new("/opt/appscale")).unwrap().source,
            "/dev/loop3"
        );
        assert_eq!(t.by_device(7, 3).len(), 1);
    }

    #[test]
    fn nested_mountpoints_go_parents_first() {
        let p = |s: &str| Some(PathBuf::from(s));
        let mps = [p("/a/b/c"), p("/a"), p("/x"), None, p("/a/b"), p("/ab")];
        assert_eq!(nesting_waves(&mps), [vec![1, 2, 3, 5], vec![4], vec![0]]);
        assert_eq!(nesting_parents(&mps)[0], [1, 4]);
    }

    #[test]
    fn mountpoints_must_be_absolute_plain_and_not_system() {
        assert_eq!(
            check_mountpoint("/opt/appscale/").unwrap(),
            Path::new("/opt/appscale")
        );
        assert!(matches!(
            check_mountpoint("opt/appscale"),
            Err(MountpointError::NotAbsolute(_))
        ));
        assert!(matches!(
            check_mountpoint("/opt/../etc"),
            Err(MountpointError::NotPlain(_))
        ));
        for sys in [
            "/",
            "/etc",
            "/usr/",
            "/var",
            "//etc",
            "/etc/appscale",
            "/usr/local/x",
            "/lib64/x",
            "/libx32",
            "/var/lib/x",
            "/run/x",
            "/boot/efi2",
            "/home/appscale",
            "/root/data",
            "/var/log/appscale",
            "/var/spool/x",
            "/var/cache/x",
            "/efi/x",
            "/snap/x",
        ] {
            assert!(
                matches!(check_mountpoint(sys), Err(MountpointError::System(_))),
                "{sys}"
            );
        }
        assert!(check_mountpoint("/tmp/test dir/mnt").is_ok());
        for ctl in ["/srv/a\tb", "/srv/a\rb", "/srv/a\u{1b}b", "/srv/a\u{7f}"] {
            assert!(
                matches!(check_mountpoint(ctl), Err(MountpointError::NotPlain(_))),
                "{ctl:?}"
            );
        }
        assert!(check_mountpoint("/var/appscale").is_ok());
        assert!(check_mountpoint("/library/x").is_err(), "starts with lib");
        let dir = std::env::temp_dir().join(format!("mp-link-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        std::fs::write(dir.join("file"), "").unwrap();
        let link = dir.join("link/mnt");
        assert!(matches!(
            check_mountpoint(link.to_str().unwrap()),
            Err(MountpointError::Symlink(..))
        ));
        let file = dir.join("file/mnt");
        assert!(matches!(
            check_mountpoint(file.to_str().unwrap()),
            Err(MountpointError::NotDirectory(..))
        ));
        assert!(check_mountpoint(dir.join("real/new/deeper").to_str().unwrap()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
