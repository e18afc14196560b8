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
//!    the reads below then read the device themselves;
//! 3. `wipefs --no-act` lists no signature;
//! 4. no partitions, no holders (LVM, dm-crypt, RAID), not mounted, not swap;
//! 5. the metadata that survives a wiped head is absent ([`secondary`]): ext2/3/4
//!    backup superblocks, XFS secondary AG headers, btrfs superblock mirrors,
//!    the GPT backup header;
//! 6. the first and the last MiB read back as zeros, and so do
//!    [`SAMPLES`] blocks of 4 KiB spread evenly across the whole device: a new
//!    EBS volume or persistent disk does, a disk holding data in a format no
//!    probe knows does not.
//!
//! [`assess_file`] makes the same checks through a descriptor the caller
//! holds open with `O_EXCL` until `mkfs` runs. Nothing relies on `mkfs` refusing
//! a device that holds data: without a terminal, `mke2fs` formats over an
//! existing filesystem.
//!
//! [`refuse_if_in_use`] says whether a device is still in use on this node
//! (mounted, held by something stacked on it, open exclusively): nothing is
//! detached or let go while it is. [`dev_root`] and [`sys_root`] are `/dev`
//! and `/sys`, or the directories tests put in their place.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::codes;
use crate::failure::Failure;
use crate::mount;
use crate::run::{Cmd, RunError};

/// Environment variable that replaces `/dev` when looking for links.
pub const DEV_ROOT_ENV: &str = "APPSCALE_PERSIST_DEV_ROOT";

/// Environment variable that replaces `/sys` when reading a device's serial
/// (tests plant a serial for a loop device standing in for a volume).
pub const SYS_ROOT_ENV: &str = "APPSCALE_PERSIST_SYS_ROOT";

/// `/dev`, or the test override.
pub fn dev_root() -> PathBuf {
    std::env::var_os(DEV_ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev"))
}

/// `/sys`, or the test override.
pub fn sys_root() -> PathBuf {
    std::env::var_os(SYS_ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys"))
}

/// How many bytes at each end of a device must be zero.
pub const EDGE_BYTES: u64 = 1 << 20;

/// How many blocks of [`SAMPLE_BYTES`], spread evenly across the device,
/// must read as zeros.
pub const SAMPLES: u64 = 256;

/// The size of one sample.
pub const SAMPLE_BYTES: u64 = 4096;

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

    /// The device numbered `major:minor`, by the node sysfs names for it
    /// (`/dev/<DEVNAME>`), checked to carry that number.
    pub fn from_number(major: u64, minor: u64) -> Result<Device, BlockError> {
        let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let uevent = std::fs::read_to_string(sys.join("uevent"))
            .map_err(|_| BlockError::Missing(sys.clone()))?;
        let name = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .ok_or_else(|| BlockError::Missing(sys.clone()))?;
        let dev = Device::open(&PathBuf::from("/dev").join(name))?;
        if (dev.major, dev.minor) != (major, minor) {
            return Err(BlockError::NotBlock(dev.path));
        }
        Ok(dev)
    }

    /// `/sys/dev/block/MAJ:MIN`.
    pub fn sysfs(&self) -> PathBuf {
        PathBuf::from(format!("/sys/dev/block/{}:{}", self.major, self.minor))
    }

    /// The node of the whole disk this device is on: the device itself, or
    /// the disk a partition belongs to (from sysfs). Its major:minor is
    /// checked, so a node that names another device is never returned.
    pub fn whole_disk(&self) -> Result<PathBuf, BlockError> {
        let sys = self.sysfs();
        if !sys.join("partition").exists() {
            return Ok(self.real.clone());
        }
        let io = |e| BlockError::Io(self.path.clone(), e);
        let parent = std::fs::canonicalize(&sys).map_err(io)?.join("..");
        let uevent = std::fs::read_to_string(parent.join("uevent")).map_err(io)?;
        let name = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .ok_or_else(|| BlockError::NotBlock(parent.clone()))?;
        let node = PathBuf::from("/dev").join(name);
        let want = std::fs::read_to_string(parent.join("dev")).map_err(io)?;
        let have = Device::open(&node)?;
        if format!("{}:{}", have.major, have.minor) != want.trim() {
            return Err(BlockError::NotBlock(node));
        }
        Ok(node)
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

impl Probe {
    /// A probe made from a superblock read in-process.
    pub fn from_superblock(sb: &Superblock) -> Probe {
        let mut tags = BTreeMap::new();
        tags.insert("TYPE".to_string(), sb.fstype.to_string());
        tags.insert("USAGE".to_string(), "filesystem".to_string());
        tags.insert("UUID".to_string(), sb.uuid.clone());
        if let Some(l) = &sb.label {
            tags.insert("LABEL".to_string(), l.clone());
        }
        Probe { tags }
    }
}

/// The superblock of an ext4 or XFS filesystem, read in-process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// `ext4` or `xfs`.
    pub fstype: &'static str,
    /// Its UUID, as blkid writes it.
    pub uuid: String,
    /// Its label, when it has one.
    pub label: Option<String>,
    /// The superblock says the filesystem was left clean: for ext4, valid,
    /// no errors recorded and no journal to replay (what `e2fsck -p` reads
    /// to decide there is nothing to do); XFS has no such state to read
    /// and is always `true` (its fsck does nothing at mount time).
    pub clean: bool,
    /// The superblock records errors found while it was in use (ext4's
    /// `s_state` error bit, which a mount leaves alone: readable while
    /// mounted, unlike [`Superblock::clean`]); never for XFS.
    pub errors: bool,
    /// ext4's journal has transactions to replay (`needs_recovery`): set
    /// while it is mounted read-write, cleared when cleanly unmounted, and
    /// while frozen; never for XFS.
    pub needs_recovery: bool,
}

/// Reads an ext4 or XFS superblock at the start of `path`, without a
/// subprocess: the fast way to name a filesystem already known to be there
/// (one this run just made, or one the kernel has mounted). It is no blank
/// check and no replacement for `blkid -p`'s view of other signatures.
pub fn read_superblock(path: &Path) -> Result<Option<Superblock>, BlockError> {
    let io = |e| BlockError::Io(path.to_path_buf(), e);
    let file = File::open(path).map_err(io)?;
    let mut b = vec![0u8; 2048];
    file.read_exact_at(&mut b, 0).map_err(io)?;
    let uuid = |u: &[u8]| {
        let h: String = u.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    let label = |l: &[u8]| {
        let end = l.iter().position(|&c| c == 0).unwrap_or(l.len());
        (end > 0).then(|| String::from_utf8_lossy(&l[..end]).into_owned())
    };
    let ext = &b[1024..2048];
    if le16(ext, 0x38) == 0xEF53 {
        // ext2/3/4 share the magic; this toolkit makes and accepts ext4,
        // which has a journal and extents.
        let compat = le32(ext, 0x5C);
        let incompat = le32(ext, 0x60);
        if compat & 0x4 == 0 || incompat & 0x40 == 0 {
            return Ok(None);
        }
        // s_state: 1 valid, 2 errors; incompat 0x4: the journal needs
        // recovery.
        let state = le16(ext, 0x3A);
        return Ok(Some(Superblock {
            fstype: "ext4",
            uuid: uuid(&ext[0x68..0x78]),
            label: label(&ext[0x78..0x88]),
            clean: state & 1 != 0 && state & 2 == 0 && incompat & 0x4 == 0,
            errors: state & 2 != 0,
            needs_recovery: incompat & 0x4 != 0,
        }));
    }
    if &b[..4] == b"XFSB" {
        return Ok(Some(Superblock {
            fstype: "xfs",
            uuid: uuid(&b[32..48]),
            label: label(&b[108..120]),
            clean: true,
            errors: false,
            needs_recovery: false,
        }));
    }
    Ok(None)
}

/// Whether `path` is a kernel name (`/dev/sdb`, `/dev/vdb`, `/dev/nvme1n1`,
/// `/dev/loop3`: directly under `/dev`), which the kernel gives in the
/// order it finds devices: another disk may have it after a reboot, or
/// once a disk is added. Links under `/dev/disk/by-*`, `/dev/mapper` or
/// `/dev/md` name a device for good.
pub fn is_kernel_name(path: &Path) -> bool {
    path.parent() == Some(Path::new("/dev"))
}

/// The stable names udev gave `dev` in `by_id` (`/dev/disk/by-id`): the
/// links there that lead to it (never to a partition of it), the most
/// lasting first: a world-wide name (`wwn-`, `nvme-eui.`), then the
/// transport's model and serial (`ata-`, `scsi-`, `nvme-`, `virtio-`,
/// `usb-`), then any other.
pub fn stable_names(dev: &Device, by_id: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(by_id) else {
        return Vec::new();
    };
    let rank = |n: &str| {
        let order = [
            "wwn-",
            "nvme-eui.",
            "ata-",
            "scsi-",
            "nvme-",
            "virtio-",
            "usb-",
        ];
        order
            .iter()
            .position(|p| n.starts_with(p))
            .unwrap_or(order.len())
    };
    let mut names: Vec<(usize, String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let d = Device::open(&e.path()).ok()?;
            ((d.major, d.minor) == (dev.major, dev.minor) && !n.contains("-part"))
                .then(|| (rank(&n), n, e.path()))
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, _, p)| p).collect()
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
pub fn first_nonzero_at_edges(file: &File, size: u64) -> std::io::Result<Option<u64>> {
    let head = EDGE_BYTES.min(size);
    let tail_start = size.saturating_sub(EDGE_BYTES).max(head);
    for (start, len) in [(0, head), (tail_start, size - tail_start)] {
        if len == 0 {
            continue;
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, start)?;
        if let Some(i) = buf.iter().position(|&b| b != 0) {
            return Ok(Some(start + i as u64));
        }
    }
    Ok(None)
}

/// The offsets of the [`SAMPLES`] blocks of [`SAMPLE_BYTES`] spread evenly
/// across a device of `size` bytes (block-aligned, inside the device).
fn sample_offsets(size: u64) -> impl Iterator<Item = u64> {
    let last = size.saturating_sub(SAMPLE_BYTES) / SAMPLE_BYTES * SAMPLE_BYTES;
    (0..SAMPLES).map(move |i| (size / SAMPLES * i / SAMPLE_BYTES * SAMPLE_BYTES).min(last))
}

/// The offset of the first non-zero byte among [`SAMPLES`] blocks of
/// [`SAMPLE_BYTES`] spread evenly across the device (block-aligned), or
/// `None` when all read as zeros.
pub fn first_nonzero_in_sample(file: &File, size: u64) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; SAMPLE_BYTES as usize];
    for at in sample_offsets(size) {
        let len = SAMPLE_BYTES.min(size - at) as usize;
        file.read_exact_at(&mut buf[..len], at)?;
        if let Some(j) = buf[..len].iter().position(|&b| b != 0) {
            return Ok(Some(at + j as u64));
        }
    }
    Ok(None)
}

/// Asks the kernel to start reading every place the blank check reads
/// past the edges ([`secondary`]'s candidates, the samples), all at once.
/// Read one by one, about a thousand small reads each wait for the device
/// (on a loop device, 100 to 400 ms in all); started together, the reads
/// that follow find them in the page cache. Only a hint: where the kernel
/// ignores it, the reads are as before.
pub fn prefetch_blank_check(file: &File, size: u64) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let looks = secondary_looks(size)
        .into_iter()
        .map(|l| (l.at, l.len as u64));
    let samples = sample_offsets(size).map(|at| (at, SAMPLE_BYTES));
    for (at, len) in looks.chain(samples) {
        let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
            continue;
        };
        let _ = posix_fadvise(file, at, len, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
    }
}

/// Reads `len` bytes at `at`, or `None` past the end of the device.
fn read_at(file: &File, size: u64, at: u64, len: usize) -> std::io::Result<Option<Vec<u8>>> {
    if at.checked_add(len as u64).is_none_or(|end| end > size) {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, at)?;
    Ok(Some(buf))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Block groups that hold an ext2/3/4 backup superblock (`sparse_super`):
/// 1 and the powers of 3, 5 and 7, below `groups`.
fn ext_backup_groups(groups: u64) -> Vec<u64> {
    let mut out = vec![1];
    for base in [3u64, 5, 7] {
        let mut g = base;
        while g < groups {
            out.push(g);
            g = match g.checked_mul(base) {
                Some(n) => n,
                None => break,
            };
        }
    }
    out.retain(|&g| g < groups);
    out.sort_unstable();
    out
}

/// What [`secondary`] looks for at one place.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// A GPT backup header (`EFI PART`) in the last sector.
    Gpt,
    /// An ext2/3/4 backup superblock of block size `bs`, in block group `group`.
    Ext { bs: u64, group: u64 },
    /// An XFS secondary superblock of block size `bs` (AG 1).
    Xfs { bs: u64 },
    /// A btrfs superblock mirror.
    Btrfs,
}

/// One place [`secondary`] reads: `len` bytes at `at`, inside the device.
#[derive(Debug, Clone, Copy)]
struct Look {
    at: u64,
    len: usize,
    mark: Mark,
}

/// Every place [`secondary`] reads on a device of `size` bytes, in the
/// order it checks them, each inside the device.
fn secondary_looks(size: u64) -> Vec<Look> {
    let mut looks = Vec::new();
    for sector in [512u64, 4096] {
        if size >= 2 * sector {
            looks.push(Look {
                at: size - sector,
                len: 8,
                mark: Mark::Gpt,
            });
        }
    }
    for bs in [1024u64, 2048, 4096, 65536] {
        let per_group = 8 * bs;
        let first_data_block = u64::from(bs == 1024);
        let groups = (size / bs).div_ceil(per_group);
        for group in ext_backup_groups(groups) {
            looks.push(Look {
                at: (group * per_group + first_data_block) * bs,
                len: 1024,
                mark: Mark::Ext { bs, group },
            });
        }
    }
    let mut xfs_offsets: Vec<(u64, u64)> = Vec::new();
    for bs in [512u64, 1024, 2048, 4096, 65536] {
        let blocks = size / bs;
        for count in 2..=128u64 {
            for ag in [blocks / count, blocks.div_ceil(count)] {
                xfs_offsets.push((ag * bs, bs));
            }
        }
        xfs_offsets.push(((1u64 << 40) / bs * bs, bs));
    }
    xfs_offsets.sort_unstable();
    xfs_offsets.dedup();
    looks.extend(
        xfs_offsets
            .into_iter()
            .filter(|&(at, _)| at != 0)
            .map(|(at, bs)| Look {
                at,
                len: 512,
                mark: Mark::Xfs { bs },
            }),
    );
    for at in [64u64 << 20, 256 << 30, 1 << 50] {
        looks.push(Look {
            at: at + 0x40,
            len: 8,
            mark: Mark::Btrfs,
        });
    }
    looks.retain(|l| {
        l.at.checked_add(l.len as u64)
            .is_some_and(|end| end <= size)
    });
    looks
}

/// Metadata a filesystem or partition table keeps away from the start of
/// the device, so that it survives a wiped head: a description of the first
/// one found, or `None`.
///
/// * ext2/3/4: backup superblocks at the start of block groups 1, 3, 5, 7,
///   9, 25, 27, ... for each block size (1, 2, 4 and 64 KiB, groups of
///   8 × block size blocks), checked by magic and block size;
/// * XFS: the secondary superblock at the start of allocation group 1, for
///   the AG sizes `mkfs.xfs` chooses (2 to 128 groups, or 1 TiB groups),
///   checked by magic, block size and AG size;
/// * btrfs: the superblock mirrors at 64 MiB and 256 GiB;
/// * GPT: the backup header in the last sector (512 or 4096 bytes).
pub fn secondary(file: &File, size: u64) -> std::io::Result<Option<String>> {
    for Look { at, len, mark } in secondary_looks(size) {
        let Some(b) = read_at(file, size, at, len)? else {
            continue;
        };
        let found = match mark {
            Mark::Gpt if &b[..] == b"EFI PART" => {
                format!(
                    "a GPT backup header at offset {at} (a partition table whose start was wiped)"
                )
            }
            Mark::Ext { bs, group }
                if le16(&b, 0x38) == 0xEF53
                    && u64::from(le32(&b, 0x18)) + 10 == bs.ilog2() as u64 =>
            {
                format!(
                    "an ext2/3/4 backup superblock at offset {at} (block group {group}): a filesystem whose start was wiped"
                )
            }
            Mark::Xfs { bs }
                if &b[..4] == b"XFSB"
                    && u64::from(be32(&b, 4)) == bs
                    && u64::from(be32(&b, 84)) * bs == at =>
            {
                format!(
                    "an XFS secondary superblock at offset {at}: a filesystem whose start was wiped"
                )
            }
            Mark::Btrfs if &b[..] == b"_BHRfS_M" => format!(
                "a btrfs superblock mirror at offset {}: a filesystem whose start was wiped",
                at - 0x40
            ),
            _ => continue,
        };
        return Ok(Some(found));
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

impl BlockError {
    /// The record error code for this failure.
    pub fn code(&self) -> codes::Code {
        match self {
            BlockError::Missing(_) => codes::NO_SUCH_DEVICE,
            BlockError::NotBlock(_) => codes::NOT_A_BLOCK_DEVICE,
            BlockError::NoMedia(_) => codes::NO_MEDIA,
            BlockError::Busy(..) => codes::DEVICE_BUSY,
            BlockError::Io(..) => codes::DEVICE_UNREADABLE,
            BlockError::Tool(_) => codes::PROBE_FAILED,
        }
    }
}

impl From<BlockError> for Failure {
    fn from(e: BlockError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

/// Assesses `path` (see the module docs for the checks).
pub fn assess(path: &Path) -> Result<Assessment, BlockError> {
    let dev = Device::open(path)?;
    let file = File::open(path).map_err(|e| BlockError::Io(path.to_path_buf(), e))?;
    assess_open(&dev, &file)
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

/// Assesses the device `dev` through `file`, a descriptor the caller holds
/// (with `O_EXCL` from [`open_exclusive`], so nothing can mount or claim the
/// device meanwhile; drop it right before running `mkfs`).
pub fn assess_file(dev: &Device, file: &File) -> Result<Assessment, BlockError> {
    assess_open(dev, file)
}

fn assess_open(dev: &Device, file: &File) -> Result<Assessment, BlockError> {
    let path = dev.path.as_path();
    let io = |e| BlockError::Io(path.to_path_buf(), e);
    // What blkid recognises decides at once. Its "nothing found" means
    // something only for a device read here: the reads come next, before
    // anything is called blank.
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
    prefetch_blank_check(file, dev.size);
    let edges = first_nonzero_at_edges(file, dev.size).map_err(io)?;
    // Named before wipefs's list: "a GPT backup header" says more than "gpt".
    if let Some(what) = secondary(file, dev.size).map_err(io)? {
        return Ok(Assessment::NotBlank(what));
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
    if let Some(at) = edges {
        return Ok(Assessment::NotBlank(format!(
            "non-zero bytes at offset {at} (the first and last MiB of a blank disk read as zeros)"
        )));
    }
    if let Some(at) = first_nonzero_in_sample(file, dev.size).map_err(io)? {
        return Ok(Assessment::NotBlank(format!(
            "non-zero bytes at offset {at} (found sampling {SAMPLES} blocks across the device; a blank disk reads as zeros throughout)"
        )));
    }
    Ok(Assessment::Blank)
}

/// Refuses when `device`, a partition of it, or something stacked on it is
/// mounted or otherwise held on this node. A device that does not exist
/// here is not mounted here.
pub fn refuse_if_in_use(device: &Path) -> Result<(), Failure> {
    let dev = match Device::open(device) {
        Ok(d) => d,
        Err(_) => return Ok(()),
    };
    let table = mount::read_table()?;
    let mut numbers = vec![(dev.major, dev.minor)];
    for child in dev.children() {
        if let Ok(s) = std::fs::read_to_string(format!("/sys/class/block/{child}/dev"))
            && let Some((a, b)) = s.trim().split_once(':')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            numbers.push((a, b));
        }
    }
    for (major, minor) in numbers {
        if let Some(m) = table.by_device(major, minor).first() {
            return Err(Failure::new(
                codes::MOUNTED,
                format!(
                    "{} is mounted on {}: run disk-unmount first; not detaching a mounted disk",
                    device.display(),
                    m.target.display()
                ),
            ));
        }
    }
    let holders: Vec<String> = std::fs::read_dir(dev.sysfs().join("holders"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !holders.is_empty() {
        return Err(Failure::new(
            codes::IN_USE,
            format!(
                "{} is in use by {}: not detaching it",
                device.display(),
                holders.join(", ")
            ),
        ));
    }
    // Last, the kernel's own word: a filesystem lazily unmounted but still
    // alive, a running mkfs or fsck, any exclusive user, holds the device
    // open exclusively, and then this open fails.
    match open_exclusive(&dev.real) {
        Ok(_) => Ok(()),
        Err(e @ BlockError::Busy(..)) => Err(Failure::new(
            codes::IN_USE,
            format!(
                "{}: {e}; a lazily unmounted filesystem stays alive until its last user exits: not detaching it",
                device.display()
            ),
        )),
        Err(e) => Err(Failure::new(
            e.code(),
            format!(
                "{}: {e}: cannot tell whether it is in use; not detaching it",
                device.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_groups_are_one_and_powers_of_three_five_seven() {
        assert_eq!(ext_backup_groups(60), [1, 3, 5, 7, 9, 25, 27, 49]);
        assert_eq!(ext_backup_groups(2), [1]);
        assert!(ext_backup_groups(1).is_empty());
    }

    #[test]
    fn the_superblock_read_in_process_agrees_with_blkid() {
        let dir = std::env::temp_dir().join(format!("sb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (mkfs, size, fstype) in [
            (
                &["mkfs.ext4", "-q", "-F", "-L", "lab-ext"][..],
                64u64 << 20,
                "ext4",
            ),
            (
                &["mkfs.xfs", "-q", "-f", "-L", "lab-xfs"][..],
                320 << 20,
                "xfs",
            ),
        ] {
            assert!(
                crate::run::installed(mkfs[0]),
                "{} is installed (scripts/setup test)",
                mkfs[0]
            );
            let img = dir.join(fstype);
            std::fs::File::create(&img).unwrap().set_len(size).unwrap();
            Cmd::new(mkfs[0]).args(&mkfs[1..]).arg(&img).run().unwrap();
            let sb = read_superblock(&img).unwrap().unwrap();
            let p = probe(&img).unwrap().unwrap();
            assert_eq!(Some(sb.fstype), p.fstype());
            assert_eq!(Some(sb.uuid.as_str()), p.uuid());
            assert_eq!(sb.label.as_deref(), p.label());
        }
        std::fs::write(dir.join("zeros"), vec![0u8; 4096]).unwrap();
        assert_eq!(read_superblock(&dir.join("zeros")).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sample_covers_the_device_and_stays_inside_it() {
        let path = std::env::temp_dir().join(format!("sample-{}", std::process::id()));
        let size = (10 << 20) + 512;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(size).unwrap();
        assert_eq!(first_nonzero_in_sample(&f, size).unwrap(), None);
        assert_eq!(secondary(&f, size).unwrap(), None);
        // A byte in a sampled block far from both ends.
        let at = size / SAMPLES * 100 / SAMPLE_BYTES * SAMPLE_BYTES + 7;
        f.write_all_at(&[1], at).unwrap();
        assert_eq!(first_nonzero_in_sample(&f, size).unwrap(), Some(at));
        std::fs::remove_file(&path).unwrap();
    }
}
