//! The kernel's mount table, and mounting and unmounting filesystems.
//!
//! The table is read from `/proc/self/mountinfo` every time it matters; it
//! is the only source of truth for "is this mounted" (never `/etc/mtab`,
//! never a cache). Devices are compared by kernel device number, so
//! `/dev/disk/by-uuid/...`, `/dev/loop3` and `/dev/xvdf` naming the same
//! device compare equal.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::run::{Cmd, RunError};
use crate::wait::{self, Poll, WaitParams};

/// Where the kernel publishes this process's mount table.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Directories that must never become a mountpoint: mounting a data disk
/// over one would hide the system.
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
    /// Holds `..` or `.` components, or is empty.
    #[error("mountpoint `{0}` must be a plain absolute path, without `.` or `..`")]
    NotPlain(String),
    /// A system directory.
    #[error(
        "mountpoint `{0}` is a system directory: mounting a data disk there would hide the system"
    )]
    System(String),
}

/// Checks that `mountpoint` is absolute, plain and not a system directory;
/// returns it without a trailing slash.
pub fn check_mountpoint(mountpoint: &str) -> Result<PathBuf, MountpointError> {
    let p = Path::new(mountpoint);
    if !p.is_absolute() {
        return Err(MountpointError::NotAbsolute(mountpoint.into()));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || mountpoint.contains('\n')
    {
        return Err(MountpointError::NotPlain(mountpoint.into()));
    }
    let clean: PathBuf = p.components().collect();
    if SYSTEM_DIRS.iter().any(|d| Path::new(d) == clean) {
        return Err(MountpointError::System(clean.display().to_string()));
    }
    Ok(clean)
}

/// Mounts `device` at `target` with `fstype` and `options`.
pub fn mount(device: &Path, target: &Path, fstype: &str, options: &str) -> Result<(), RunError> {
    Cmd::new("mount")
        .args(["-t", fstype, "-o", options])
        .arg(device)
        .arg(target)
        .run()
        .map(drop)
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
    /// umount succeeded but the kernel still lists the mount.
    #[error("{0} is still mounted {1:?} after umount succeeded")]
    NotReleased(PathBuf, Duration),
    /// Reading the mount table failed.
    #[error("reading {MOUNTINFO}: {0}")]
    Table(#[from] std::io::Error),
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
pub fn unmount(target: &Path, major: u64, minor: u64, lazy: bool) -> Result<(), UnmountError> {
    // Flush this filesystem's dirty data before anything else.
    if let Ok(dir) = std::fs::File::open(target) {
        let _ = nix::unistd::syncfs(&dir);
    }
    let mut cmd = Cmd::new("umount");
    if lazy {
        cmd = cmd.arg("--lazy");
    }
    cmd = cmd.arg(target);
    let out = cmd.output()?;
    if !out.success() {
        let busy = out.stderr.contains("busy");
        if busy {
            return Err(UnmountError::Busy {
                target: target.to_path_buf(),
                holders: holders(major, minor),
            });
        }
        return Err(cmd.failed(&out).into());
    }
    let timeout = Duration::from_secs(10);
    wait::until(WaitParams::quick(timeout), || match Table::read() {
        Ok(t)
            if t.at(target)
                .is_some_and(|e| e.major == major && e.minor == minor) =>
        {
            Poll::Pending
        }
        Ok(_) => Poll::Ready(()),
        Err(e) => Poll::Failed(e),
    })
    .map_err(|e| match e {
        wait::WaitError::TimedOut(d) => UnmountError::NotReleased(target.to_path_buf(), d),
        wait::WaitError::Failed(e) => UnmountError::Table(e),
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
pub fn reap_stale_temp_mounts(major: u64, minor: u64) {
    let Ok(table) = Table::read() else { return };
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
        if Path::new(&format!("/proc/{pid}")).exists() {
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
    pub fn new(device: &Path, major: u64, minor: u64, fstype: &str) -> Result<TempMount, RunError> {
        let dir =
            Path::new(TEMP_MOUNT_DIR).join(format!("tmp-{}-{major}-{minor}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|error| RunError::Spawn {
            cmdline: format!("mkdir {}", dir.display()),
            error,
        })?;
        let mut t = TempMount {
            dir,
            major,
            minor,
            mounted: false,
        };
        mount(device, &t.dir, fstype, "nodev,nosuid,noexec")?;
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
        for sys in ["/", "/etc", "/usr/", "/var", "//etc"] {
            assert!(
                matches!(check_mountpoint(sys), Err(MountpointError::System(_))),
                "{sys}"
            );
        }
        assert!(check_mountpoint("/tmp/test dir/mnt").is_ok());
    }
}
