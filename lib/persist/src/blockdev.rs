//! Block devices: what is on them, and whether one is truly blank.
//!
//! [`assess`] is the gate in front of `mkfs`. It fails closed: a device is
//! [`Assessment::Blank`] only when every check agrees, and any check that
//! cannot be made (a tool missing, a device that cannot be read) is an
//! error, never "blank". The checks:
//!
//! 1. the path is a block device with media (size above zero: a detached
//!    loop device or an empty drive reads as nothing, which is not blank);
//! 2. `blkid -p` (low-level probe, no cache) finds no filesystem and no
//!    partition table; its exit 2 counts as "nothing found" only because
//!    check 5 has already read the device;
//! 3. `wipefs --no-act` lists no signature;
//! 4. no partitions, no holders (LVM, dm-crypt, RAID), not mounted, not swap;
//! 5. the first and the last MiB read back as zeros: a new EBS volume or
//!    persistent disk does, a disk holding data in a format no probe knows
//!    does not.
//!
//! [`assess_exclusive`] repeats all of it while holding the device open with
//! `O_EXCL`, the last step before `mkfs`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::mount;
use crate::run::{Cmd, RunError};

/// How many bytes at each end of a device must be zero.
pub const EDGE_BYTES: u64 = 1 << 20;

/// Identity and size of a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The path as given.
    pub path: PathBuf,
    /// The path with symlinks resolved (`/dev/disk/by-id/...` → `/dev/nvme1n1`).
    pub real: PathBuf,
    /// Kernel device number, major.
    pub major: u64,
    /// Kernel device number, minor.
    pub minor: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Device {
    /// Opens `path` and checks that it is a block device with media.
    pub fn open(path: &Path) -> Result<Device, BlockError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BlockError::Missing(path.to_path_buf()),
            _ => BlockError::Io(path.to_path_buf(), e),
        })?;
        if !meta.file_type().is_block_device() {
            return Err(BlockError::NotBlock(path.to_path_buf()));
        }
        let real =
            std::fs::canonicalize(path).map_err(|e| BlockError::Io(path.to_path_buf(), e))?;
        let rdev = meta.rdev();
        let size = device_size(path)?;
        if size == 0 {
            return Err(BlockError::NoMedia(path.to_path_buf()));
        }
        Ok(Device {
            path: path.to_path_buf(),
            real,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            size,
        })
    }

    /// `/sys/dev/block/MAJ:MIN`.
    pub fn sysfs(&self) -> PathBuf {
        PathBuf::from(format!("/sys/dev/block/{}:{}", self.major, self.minor))
    }

    /// Partitions of this device, and devices stacked on it (LVM, dm-crypt,
    /// RAID), by kernel name.
    pub fn children(&self) -> Vec<String> {
        let sys = self.sysfs();
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&sys) {
            for e in entries.flatten() {
                if e.path().join("partition").exists() {
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(sys.join("holders")) {
            out.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        out.sort();
        out
    }
}

/// The size of a block device in bytes (seeking to its end).
pub fn device_size(path: &Path) -> Result<u64, BlockError> {
    let mut f = File::open(path).map_err(|e| BlockError::Io(path.to_path_buf(), e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| BlockError::Io(path.to_path_buf(), e))
}

/// What `blkid -p` found on a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Every `KEY=value` blkid printed.
    pub tags: BTreeMap<String, String>,
}

impl Probe {
    fn get(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    /// `TYPE`: filesystem or other content (`ext4`, `swap`, `LVM2_member`).
    pub fn fstype(&self) -> Option<&str> {
        self.get("TYPE")
    }
    /// `PTTYPE`: partition table (`gpt`, `dos`).
    pub fn pttype(&self) -> Option<&str> {
        self.get("PTTYPE")
    }
    /// `UUID`.
    pub fn uuid(&self) -> Option<&str> {
        self.get("UUID")
    }
    /// `LABEL`.
    pub fn label(&self) -> Option<&str> {
        self.get("LABEL")
    }
    /// `USAGE`: `filesystem`, `raid`, `crypto`, `other`.
    pub fn usage(&self) -> Option<&str> {
        self.get("USAGE")
    }
    /// A short description for messages: `ext4 filesystem`, `gpt partition table`.
    pub fn describe(&self) -> String {
        match (self.fstype(), self.pttype()) {
            (Some(t), _) => match self.usage() {
                Some("filesystem") => format!("{t} filesystem"),
                Some(u) => format!("{t} ({u})"),
                None => t.to_string(),
            },
            (None, Some(pt)) => format!("{pt} partition table"),
            (None, None) => "an unrecognised signature".to_string(),
        }
    }
}

/// Runs `blkid -p` (low-level probe, no cache) on `path`.
///
/// `Ok(None)` means blkid found nothing (its exit 2). That alone does not
/// make a device blank: blkid exits 2 for a device it cannot read, too.
pub fn probe(path: &Path) -> Result<Option<Probe>, BlockError> {
    let cmd = Cmd::new("blkid").args(["-p", "-o", "export"]).arg(path);
    let out = cmd.output()?;
    match out.code {
        Some(0) => {
            let tags = out
                .stdout
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Ok(Some(Probe { tags }))
        }
        Some(2) => Ok(None),
        // 8: several signatures at once ("ambivalent"): data, and confusing.
        Some(8) => Ok(Some(Probe {
            tags: BTreeMap::from([("AMBIVALENT".to_string(), out.stderr.trim().to_string())]),
        })),
        _ => Err(BlockError::Tool(cmd.failed(&out))),
    }
}

/// Signatures `wipefs --no-act` lists (`ext4 at 0x438`), empty when none.
pub fn signatures(path: &Path) -> Result<Vec<String>, BlockError> {
    let out = Cmd::new("wipefs")
        .args(["--no-act", "--noheadings", "--parsable"])
        .arg(path)
        .run()?;
    // Lines are `offset,uuid,label,type`.
    Ok(out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!(
                "{} at {}",
                f.last().unwrap_or(&"?"),
                f.first().unwrap_or(&"?")
            )
        })
        .collect())
}

/// The offset of the first non-zero byte in the first or last
/// [`EDGE_BYTES`] of the device, or `None` when both read as zeros.
pub fn first_nonzero_at_edges(file: &mut File, size: u64) -> std::io::Result<Option<u64>> {
    let head = EDGE_BYTES.min(size);
    let tail_start = size.saturating_sub(EDGE_BYTES).max(head);
    for (start, len) in [(0, head), (tail_start, size - tail_start)] {
        if len == 0 {
            continue;
        }
        file.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf)?;
        if let Some(i) = buf.iter().position(|&b| b != 0) {
            return Ok(Some(start + i as u64));
        }
    }
    Ok(None)
}

/// What a device holds, as far as formatting is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Every check agrees the device holds nothing: safe to format.
    Blank,
    /// A filesystem blkid recognises (it may be the one wanted).
    Filesystem(Probe),
    /// Something that is data but not a filesystem to mount: a partition
    /// table, LVM, RAID, LUKS, swap, a signature, or non-zero bytes.
    NotBlank(String),
}

/// Why a device could not be assessed or used.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The path does not exist.
    #[error("{0}: no such device")]
    Missing(PathBuf),
    /// The path exists but is not a block device.
    #[error("{0}: not a block device")]
    NotBlock(PathBuf),
    /// The device has no media (size 0): a detached loop device, an empty drive.
    #[error(
        "{0}: device has no media (size 0); a detached loop device or a vanished disk reads like this"
    )]
    NoMedia(PathBuf),
    /// Reading or opening the device failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Another process holds the device exclusively (mounted, or in use).
    #[error("{0}: in use (exclusive open refused: {1})")]
    Busy(PathBuf, std::io::Error),
    /// A probing tool failed.
    #[error(transparent)]
    Tool(#[from] RunError),
}

/// Assesses `path` (see the module docs for the checks).
pub fn assess(path: &Path) -> Result<Assessment, BlockError> {
    let dev = Device::open(path)?;
    let mut file = File::open(path).map_err(|e| BlockError::Io(path.to_path_buf(), e))?;
    assess_open(&dev, &mut file)
}

/// Opens a block device with `O_EXCL`: the kernel refuses (`EBUSY`,
/// [`BlockError::Busy`]) while anything holds it exclusively: a mounted or
/// lazily unmounted filesystem, a device-mapper or RAID holder, `mkfs`.
pub fn open_exclusive(path: &Path) -> Result<File, BlockError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::EBUSY) => BlockError::Busy(path.to_path_buf(), e),
            _ => BlockError::Io(path.to_path_buf(), e),
        })
}

/// Assesses `path` while holding it open with `O_EXCL`, so nothing else can
/// mount or claim it meanwhile. Returns the open file: drop it right before
/// running `mkfs`.
pub fn assess_exclusive(path: &Path) -> Result<(Assessment, File), BlockError> {
    let dev = Device::open(path)?;
    let mut file = open_exclusive(path)?;
    let a = assess_open(&dev, &mut file)?;
    Ok((a, file))
}

fn assess_open(dev: &Device, file: &mut File) -> Result<Assessment, BlockError> {
    let path = dev.path.as_path();
    // Read first: blkid's "nothing found" means something only for a device
    // we have just read ourselves.
    let nonzero = first_nonzero_at_edges(file, dev.size)
        .map_err(|e| BlockError::Io(path.to_path_buf(), e))?;
    match probe(path)? {
        Some(p) if p.tags.contains_key("AMBIVALENT") => {
            return Ok(Assessment::NotBlank(format!(
                "several signatures at once ({})",
                p.tags["AMBIVALENT"]
            )));
        }
        Some(p) if p.usage() == Some("filesystem") && p.pttype().is_none() => {
            return Ok(Assessment::Filesystem(p));
        }
        Some(p) => return Ok(Assessment::NotBlank(p.describe())),
        None => {}
    }
    let sigs = signatures(path)?;
    if !sigs.is_empty() {
        return Ok(Assessment::NotBlank(format!(
            "signatures: {}",
            sigs.join(", ")
        )));
    }
    let children = dev.children();
    if !children.is_empty() {
        return Ok(Assessment::NotBlank(format!(
            "in use by {}",
            children.join(", ")
        )));
    }
    let table =
        mount::Table::read().map_err(|e| BlockError::Io(PathBuf::from(mount::MOUNTINFO), e))?;
    if let Some(m) = table.by_device(dev.major, dev.minor).first() {
        return Ok(Assessment::NotBlank(format!(
            "mounted at {}",
            m.target.display()
        )));
    }
    if mount::is_swap(dev.major, dev.minor)
        .map_err(|e| BlockError::Io(PathBuf::from("/proc/swaps"), e))?
    {
        return Ok(Assessment::NotBlank("active swap".into()));
    }
    if let Some(at) = nonzero {
        return Ok(Assessment::NotBlank(format!(
            "non-zero bytes at offset {at} (the first and last MiB of a blank disk read as zeros)"
        )));
    }
    Ok(Assessment::Blank)
}
