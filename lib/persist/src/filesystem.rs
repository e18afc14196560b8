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

/// Options each `mkfs` takes that are followed by a value (getopt letters).
fn takes_value(fstype: FsType) -> &'static str {
    match fstype {
        FsType::Ext4 => "bdegGilmorstCEIJLMNORTUz",
        FsType::Xfs => "bcdilLmnprs",
    }
}

/// Options refused in `--mkfs-option`: forcing (`-F`, `-f`), and what this
/// toolkit sets itself (label, UUID).
fn refused_options(fstype: FsType) -> &'static str {
    match fstype {
        FsType::Ext4 => "FLSU",
        FsType::Xfs => "fLN",
    }
}

/// What an option's value must not say: it must not name another device
/// or file for mkfs to write (`-l logdev=`, `-r rtdev=`, `-d name=`,
/// `-J device=`, or any path), nor set the UUID.
fn check_value(opt: &str, value: &str) -> Result<(), String> {
    let lower = value.to_ascii_lowercase();
    if value.contains('/')
        || ["dev=", "device=", "name=", "logdev", "rtdev"]
            .iter()
            .any(|w| lower.contains(w))
    {
        return Err(format!(
            "--mkfs-option `{opt}`: a value naming another device or a path is refused (mkfs writes only the device disk-ensure-fs checked)"
        ));
    }
    if lower.contains("uuid=") {
        return Err(format!(
            "--mkfs-option `{opt}`: the UUID is set by disk-ensure-fs"
        ));
    }
    Ok(())
}

/// Checks extra `mkfs` arguments (`--mkfs-option`): options only, each
/// known to take a value or not as getopt reads them, never a force flag,
/// a label or UUID (set by this toolkit), a long option, a positional
/// argument (another device), or a value naming another device or a path
/// ([`check_value`]). An option's value may be attached
/// (`-Elazy_itable_init=0`) or be the next argument.
pub fn check_mkfs_options(fstype: FsType, options: &[String]) -> Result<(), String> {
    let mut expect_value = false;
    for opt in options {
        if expect_value {
            expect_value = false;
            check_value(opt, opt)?;
            continue;
        }
        let Some(letters) = opt
            .strip_prefix('-')
            .filter(|l| !l.is_empty() && !l.starts_with('-'))
        else {
            return Err(format!(
                "--mkfs-option `{opt}` is not a short option of mkfs.{fstype}: positional arguments and long options are refused (the device is given by disk-ensure-fs)"
            ));
        };
        for (i, c) in letters.char_indices() {
            if refused_options(fstype).contains(c) {
                return Err(format!(
                    "--mkfs-option `{opt}`: -{c} is refused (disk-ensure-fs never forces mkfs, and sets the label and UUID itself)"
                ));
            }
            if takes_value(fstype).contains(c) {
                let rest = &letters[i + c.len_utf8()..];
                if rest.is_empty() {
                    expect_value = true;
                } else {
                    check_value(opt, rest)?;
                }
                break;
            }
            if !c.is_ascii_alphabetic() {
                return Err(format!(
                    "--mkfs-option `{opt}` is not an option of mkfs.{fstype}"
                ));
            }
        }
    }
    if expect_value {
        return Err(format!(
            "--mkfs-option `{}` needs a value (give it as the next --mkfs-option, or attached)",
            options.last().map(String::as_str).unwrap_or("")
        ));
    }
    Ok(())
}

/// A new random (version 4) UUID for a filesystem, from `/dev/urandom`.
pub(crate) fn new_uuid() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Makes a filesystem with the given label and UUID on `device` (a
/// resolved device node). `mkfs` is not a safety check: without a terminal
/// `mke2fs` formats over an existing filesystem, so the caller must have
/// decided the device is blank ([`crate::blockdev::assess`]). `extra` must
/// have passed [`check_mkfs_options`].
pub fn mkfs(
    device: &Path,
    fstype: FsType,
    label: &str,
    uuid: &str,
    extra: &[String],
) -> Result<(), RunError> {
    let cmd = match fstype {
        FsType::Ext4 => Cmd::new("mkfs.ext4").args(["-q", "-L", label, "-U", uuid]),
        FsType::Xfs => Cmd::new("mkfs.xfs")
            .args(["-q", "-L", label, "-m"])
            .arg(format!("uuid={uuid}")),
    };
    cmd.args(extra)
        .arg(device)
        .timeout(SLOW_TOOL_TIMEOUT)
        .never_killed()
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
    /// Killed by a signal or at its deadline: it may have stopped part-way
    /// through a repair; do not mount.
    Interrupted {
        /// How it ended.
        how: String,
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
    let out = match cmd.output() {
        Err(RunError::TimedOut { timeout, .. }) => {
            return Ok(Fsck::Interrupted {
                how: format!("killed at its deadline of {timeout:?}"),
            });
        }
        other => other?,
    };
    match out.code {
        // 2 asks for a reboot, which matters for the root filesystem only.
        Some(0) => Ok(Fsck::Clean { fixed: false }),
        Some(1 | 2) => Ok(Fsck::Clean { fixed: true }),
        Some(code) => Ok(Fsck::Uncorrected {
            code,
            output: format!("{}{}", out.stdout, out.stderr).trim().to_string(),
        }),
        None => Ok(Fsck::Interrupted {
            how: "killed by a signal".into(),
        }),
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
/// `mounted_at` must be given for it. The grow itself is never killed
/// ([`Cmd::never_killed`]): a signal, or its deadline, lets it finish, as
/// resize2fs stopped half-way leaves the filesystem with errors.
pub fn grow(device: &Path, fstype: FsType, mounted_at: Option<&Path>) -> Result<(), RunError> {
    let grow = match (fstype, mounted_at) {
        (FsType::Ext4, None) => {
            let check = Cmd::new("e2fsck")
                .args(["-f", "-p"])
                .arg(device)
                .timeout(SLOW_TOOL_TIMEOUT);
            let out = check.output()?;
            if !matches!(out.code, Some(0 | 1)) {
                return Err(check.failed(&out));
            }
            Cmd::new("resize2fs").arg(device)
        }
        (FsType::Ext4, Some(_)) => Cmd::new("resize2fs").arg(device),
        (FsType::Xfs, Some(at)) => Cmd::new("xfs_growfs").arg(at),
        (FsType::Xfs, None) => {
            return Err(RunError::Failed {
                cmdline: "xfs_growfs".into(),
                status: "not run".into(),
                code: None,
                stderr: "XFS grows only while mounted".into(),
            });
        }
    };
    grow.timeout(SLOW_TOOL_TIMEOUT)
        .never_killed()
        .run()
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mkfs_options_never_force_or_name_a_device() {
        let ok = |t, v: &[&str]| check_mkfs_options(t, &opts(v));
        assert!(ok(FsType::Ext4, &["-E", "lazy_itable_init=0", "-m0", "-qj"]).is_ok());
        assert!(ok(FsType::Xfs, &["-m", "crc=1", "-ireclen=1", "-K"]).is_ok());
        for bad in [
            &["-F"][..],
            &["-qF"],
            &["/dev/sdb"],
            &["--force"],
            &["-"],
            &["-L", "x"],
            &["-E"],
        ] {
            assert!(ok(FsType::Ext4, bad).is_err(), "{bad:?}");
        }
        for bad in [
            &["-f"][..],
            &["-Kf"],
            &["-m", "uuid=1"],
            &["-muuid=1"],
            &["sdb"],
        ] {
            assert!(ok(FsType::Xfs, bad).is_err(), "{bad:?}");
        }
        // The value of an option that takes one is not read as letters.
        assert!(ok(FsType::Xfs, &["-mfinobt=1"]).is_ok());
    }

    #[test]
    fn new_uuids_are_version_4() {
        let u = new_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid().unwrap());
    }
}
