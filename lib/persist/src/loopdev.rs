//! Loop devices over image files.
//!
//! A loop device is ours for an image when the kernel says so twice: the
//! backing inode and device number `losetup` reports equal the image's, and
//! `/sys/block/loopN/loop/backing_file` names the image's path.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::codes;
use crate::progress::Progress;
use crate::run::{Cmd, RunError};
use crate::wait::{self, Poll, WaitParams};

/// A loop device and what backs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    /// `/dev/loop3`.
    pub device: PathBuf,
    /// The backing file as the kernel recorded it.
    pub backing_file: PathBuf,
    /// Inode of the backing file.
    pub ino: u64,
    /// Device number (`major:minor`) of the filesystem holding it.
    pub dev: String,
}

impl Loop {
    /// `loop3`.
    pub fn name(&self) -> String {
        self.device
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// What sysfs says backs this loop device.
    pub fn sysfs_backing_file(&self) -> Option<PathBuf> {
        let p = format!("/sys/block/{}/loop/backing_file", self.name());
        std::fs::read_to_string(p)
            .ok()
            .map(|s| PathBuf::from(s.trim_end_matches('\n')))
    }
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    loopdevices: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    #[serde(rename = "back-file")]
    back_file: Option<String>,
    #[serde(rename = "back-ino")]
    back_ino: Option<serde_json::Value>,
    #[serde(rename = "back-maj:min")]
    back_majmin: Option<String>,
}

/// Every loop device in use.
pub fn list() -> Result<Vec<Loop>, RunError> {
    let out = Cmd::new("losetup")
        .args([
            "--list",
            "--json",
            "--output",
            "NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN",
        ])
        .run()?;
    if out.stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: List = serde_json::from_str(&out.stdout).map_err(|e| RunError::Failed {
        cmdline: "losetup --list --json".into(),
        status: "unreadable output".into(),
        code: Some(0),
        stderr: e.to_string(),
    })?;
    Ok(parsed
        .loopdevices
        .into_iter()
        .map(|r| Loop {
            device: PathBuf::from(r.name),
            backing_file: PathBuf::from(r.back_file.unwrap_or_default()),
            ino: match r.back_ino {
                Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
                Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
                _ => 0,
            },
            dev: r
                .back_majmin
                .unwrap_or_default()
                .split_whitespace()
                .collect(),
        })
        .collect())
}

/// The loop devices backed by `image` (same inode on the same filesystem).
pub fn bound_to(image: &Path) -> Result<Vec<Loop>, LoopError> {
    let meta = std::fs::metadata(image).map_err(|e| LoopError::Image(image.to_path_buf(), e))?;
    let dev = format!(
        "{}:{}",
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev())
    );
    Ok(list()?
        .into_iter()
        .filter(|l| l.ino == meta.ino() && l.dev == dev)
        .collect())
}

/// Checks through sysfs that `lo` is backed by `image`.
pub fn verify(lo: &Loop, image: &Path) -> Result<(), LoopError> {
    let canonical =
        std::fs::canonicalize(image).map_err(|e| LoopError::Image(image.to_path_buf(), e))?;
    match lo.sysfs_backing_file() {
        Some(b) if b == canonical => Ok(()),
        other => Err(LoopError::Identity {
            device: lo.device.clone(),
            expected: canonical,
            found: other
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "nothing".into()),
        }),
    }
}

/// Binds a free loop device to the image open as `file` (opened by the
/// caller without following symlinks, so what is bound is the very file
/// checked) and returns it, verified against `image` and the file's inode.
pub fn attach(image: &Path, file: &std::fs::File) -> Result<Loop, LoopError> {
    use std::os::fd::AsRawFd;
    let meta = file
        .metadata()
        .map_err(|e| LoopError::Image(image.to_path_buf(), e))?;
    // losetup opens the path it is given; through our descriptor it opens
    // the file we hold, whatever the name points at by then.
    let through = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    let out = Cmd::new("losetup")
        .args(["--find", "--show", "--nooverlap", &through])
        .run()?;
    let device = PathBuf::from(out.stdout.trim());
    let dev = format!(
        "{}:{}",
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev())
    );
    let lo = list()?
        .into_iter()
        .find(|l| l.device == device && l.ino == meta.ino() && l.dev == dev)
        .ok_or_else(|| LoopError::Identity {
            device: device.clone(),
            expected: image.to_path_buf(),
            found: "no matching backing inode".into(),
        })?;
    verify(&lo, image)?;
    Ok(lo)
}

/// The size `lo` shows now, in bytes (`/sys/block/loopN/size`): behind
/// its backing file's until the kernel reads that again
/// ([`refresh_capacity`]).
pub fn size(lo: &Loop) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/block/{}/size", lo.name()))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|sectors| sectors * 512)
}

/// Has the kernel read the size of `lo`'s backing file again (`losetup
/// --set-capacity`, after the image grew), and waits (bounded) until the
/// device shows `bytes`.
pub fn refresh_capacity(lo: &Loop, bytes: u64) -> Result<(), LoopError> {
    Cmd::new("losetup")
        .arg("--set-capacity")
        .arg(&lo.device)
        .run()?;
    let progress = Progress::start(format!("{} to grow", lo.device.display()), 0);
    wait::until_with(
        &progress,
        WaitParams::quick(Duration::from_secs(10)),
        || match size(lo) {
            Some(n) if n >= bytes => Poll::Ready(()),
            _ => Poll::<(), ()>::Pending,
        },
    )
    .map_err(|_| LoopError::NotRefreshed(lo.device.clone(), bytes))
}

/// Detaches `lo` and waits (bounded) until the kernel has let go.
pub fn detach(lo: &Loop) -> Result<(), LoopError> {
    Cmd::new("losetup").arg("--detach").arg(&lo.device).run()?;
    let sys = PathBuf::from(format!("/sys/block/{}/loop/backing_file", lo.name()));
    let progress = Progress::start(format!("{} to be detached", lo.device.display()), 0);
    wait::until_with(
        &progress,
        WaitParams::quick(Duration::from_secs(10)),
        || {
            if sys.exists() {
                Poll::Pending
            } else {
                Poll::<(), ()>::Ready(())
            }
        },
    )
    .map_err(|_| LoopError::StillBound(lo.device.clone()))
}

impl LoopError {
    /// The record error code for this failure.
    pub fn code(&self) -> codes::Code {
        match self {
            LoopError::Identity { .. } => codes::IDENTITY_MISMATCH,
            LoopError::Image(..) => codes::STATE_DIR,
            LoopError::StillBound(_) | LoopError::NotRefreshed(..) | LoopError::Tool(_) => {
                codes::LOOP_FAILED
            }
        }
    }
}

impl From<LoopError> for crate::failure::Failure {
    fn from(e: LoopError) -> Self {
        crate::failure::Failure::new(e.code(), e.to_string())
    }
}

/// Why a loop operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The image cannot be read.
    #[error("{0}: {1}")]
    Image(PathBuf, std::io::Error),
    /// A loop device is not backed by the image we expect.
    #[error("{device} should be backed by {expected} but is backed by {found}")]
    Identity {
        /// The loop device.
        device: PathBuf,
        /// The image.
        expected: PathBuf,
        /// What sysfs says.
        found: String,
    },
    /// The kernel did not release the loop device in time.
    #[error("{0} is still bound 10s after losetup --detach")]
    StillBound(PathBuf),
    /// The loop device did not take its image's new size in time.
    #[error("{0} does not show {1} bytes 10s after losetup --set-capacity")]
    NotRefreshed(PathBuf, u64),
    /// losetup failed.
    #[error(transparent)]
    Tool(#[from] RunError),
}
