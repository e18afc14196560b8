//! Making, checking and growing the filesystems we support: ext4 (the
//! default) and xfs.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::run::{Cmd, RunError};

/// How long `mkfs` and `fsck` may take on a large disk before we give up.
const SLOW_TOOL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// A filesystem type this toolkit makes and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext4: the default.
    Ext4,
    /// XFS.
    Xfs,
}

impl FsType {
    /// Parses `ext4` or `xfs`.
    pub fn parse(s: &str) -> Result<FsType, String> {
        match s {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            other => Err(format!(
                "filesystem type `{other}` is not supported (ext4 or xfs)"
            )),
        }
    }

    /// The name blkid and mount use.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// The longest label the filesystem stores.
    pub fn max_label(self) -> usize {
        match self {
            FsType::Ext4 => 16,
            FsType::Xfs => 12,
        }
    }

    /// Checks a label against the filesystem's limit.
    pub fn check_label(self, label: &str) -> Result<(), String> {
        if label.len() > self.max_label() || label.contains(['\n', ' ', ',']) {
            Err(format!(
                "label `{label}` is not valid for {self}: at most {} bytes, no spaces or commas",
                self.max_label()
            ))
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl clap::ValueEnum for FsType {
    fn value_variants<'a>() -> &'a [Self] {
        &[FsType::Ext4, FsType::Xfs]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Makes a filesystem. Never forces: `mkfs.ext4` without `-F` and
/// `mkfs.xfs` without `-f` refuse a device that holds a filesystem, a last
/// guard behind [`crate::blockdev::assess`].
pub fn mkfs(device: &Path, fstype: FsType, label: &str, extra: &[String]) -> Result<(), RunError> {
    let program = match fstype {
        FsType::Ext4 => "mkfs.ext4",
        FsType::Xfs => "mkfs.xfs",
    };
    Cmd::new(program)
        .args(["-q", "-L", label])
        .args(extra)
        .arg(device)
        .timeout(SLOW_TOOL_TIMEOUT)
        .run()
        .map(drop)
}

/// What `fsck -a` concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fsck {
    /// Clean, or errors fixed (exit 0 or 1).
    Clean {
        /// Whether it fixed anything.
        fixed: bool,
    },
    /// Exit 4 or more: errors left uncorrected; do not mount.
    Uncorrected {
        /// Exit code.
        code: i32,
        /// What fsck said.
        output: String,
    },
}

/// Runs `fsck.ext4 -a` (preen: fix what is safe, nothing interactive) before
/// a read-write mount. Only ext4 is checked; XFS checks itself at mount.
pub fn fsck(device: &Path, fstype: FsType) -> Result<Fsck, RunError> {
    if fstype != FsType::Ext4 {
        return Ok(Fsck::Clean { fixed: false });
    }
    let cmd = Cmd::new("fsck.ext4")
        .arg("-a")
        .arg(device)
        .timeout(SLOW_TOOL_TIMEOUT);
    let out = cmd.output()?;
    match out.code {
        // 2 asks for a reboot, which matters for the root filesystem only.
        Some(0) => Ok(Fsck::Clean { fixed: false }),
        Some(1 | 2) => Ok(Fsck::Clean { fixed: true }),
        Some(code) => Ok(Fsck::Uncorrected {
            code,
            output: format!("{}{}", out.stdout, out.stderr).trim().to_string(),
        }),
        None => Err(cmd.failed(&out)),
    }
}

/// The size of the filesystem on `device`, in bytes.
pub fn size(device: &Path, fstype: FsType) -> Result<u64, RunError> {
    let (cmd, count_key, size_key) = match fstype {
        FsType::Ext4 => (
            Cmd::new("dumpe2fs").arg("-h").arg(device),
            "Block count:",
            "Block size:",
        ),
        FsType::Xfs => (
            Cmd::new("xfs_db")
                .args(["-r", "-c", "sb 0", "-c", "p dblocks blocksize"])
                .arg(device),
            "dblocks =",
            "blocksize =",
        ),
    };
    let out = cmd.run()?;
    let field = |key: &str| -> Option<u64> {
        out.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field(count_key), field(size_key)) {
        (Some(n), Some(b)) => Ok(n * b),
        _ => Err(RunError::Failed {
            cmdline: cmd.cmdline(),
            status: "unexpected output".into(),
            code: Some(0),
            stderr: format!("no `{count_key}` / `{size_key}` in its output"),
        }),
    }
}

/// Grows the filesystem to fill its device. ext4 grows offline (after a
/// forced check, as resize2fs requires) or online; XFS only online, so
/// `mounted_at` must be given for it.
pub fn grow(device: &Path, fstype: FsType, mounted_at: Option<&Path>) -> Result<(), RunError> {
    match (fstype, mounted_at) {
        (FsType::Ext4, None) => {
            let check = Cmd::new("e2fsck")
                .args(["-f", "-p"])
                .arg(device)
                .timeout(SLOW_TOOL_TIMEOUT);
            let out = check.output()?;
            if !matches!(out.code, Some(0 | 1)) {
                return Err(check.failed(&out));
            }
            Cmd::new("resize2fs")
                .arg(device)
                .timeout(SLOW_TOOL_TIMEOUT)
                .run()
                .map(drop)
        }
        (FsType::Ext4, Some(_)) => Cmd::new("resize2fs")
            .arg(device)
            .timeout(SLOW_TOOL_TIMEOUT)
            .run()
            .map(drop),
        (FsType::Xfs, Some(at)) => Cmd::new("xfs_growfs")
            .arg(at)
            .timeout(SLOW_TOOL_TIMEOUT)
            .run()
            .map(drop),
        (FsType::Xfs, None) => Err(RunError::Failed {
            cmdline: "xfs_growfs".into(),
            status: "not run".into(),
            code: None,
            stderr: "XFS grows only while mounted".into(),
        }),
    }
}
