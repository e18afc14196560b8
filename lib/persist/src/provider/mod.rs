//! Disk providers: one trait, one implementation per place disks come from.
//!
//! [`Provider`] works on batches of records so that a cloud provider can run
//! attaches concurrently and poll all of them with one API call; the
//! `local` and `static` providers here simply loop. The cloud providers
//! (`appscale-persist-ec2`, `appscale-persist-gce`) implement the same trait
//! in their own crates, so this crate links no cloud SDK.
//!
//! Every operation is idempotent: creating a disk that exists, attaching one
//! attached here, detaching one attached nowhere are successes with
//! `changed: false`. Attached elsewhere, in another zone, or mounted on this
//! node are errors, reported before any change is made.

pub mod discover;
pub mod local;
pub mod release;
pub mod static_disk;

use std::path::{Path, PathBuf};

use crate::blockdev::Device;
use crate::mount;
use crate::record::{ProviderKind, Record};
use crate::step::{Ctx, Failure, StepResult};

/// What a provider knows about one disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStatus {
    /// The provider's id for it (volume id, disk name, image path, device).
    pub id: String,
    /// Its zone, for cloud disks.
    pub zone: Option<String>,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// What it is attached to: instance ids, or loop devices for images.
    pub attached_to: Vec<String>,
}

/// A place disks come from.
pub trait Provider {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Creates each record's disk unless it exists (`changed: false` then).
    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult>;

    /// Looks each record's disk up without changing anything; an absent disk
    /// is a failure with code `no-such-disk`.
    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>>;

    /// Attaches each record's disk to its instance (or this machine) and sets
    /// `device` when the device is visible here. Attached here already:
    /// `changed: false`; attached elsewhere: an error.
    fn attach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult>;

    /// Detaches each record's disk and waits until it is detached. Refuses a
    /// disk whose device is mounted on this node; not attached is success.
    fn detach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult>;

    /// Finds the record's device on this node and checks that it is this
    /// disk (by backing file, serial number or device link), never guessing.
    fn discover(&mut self, record: &Record) -> Result<PathBuf, Failure>;
}

/// The record's `disk`, or a failure saying it is missing.
pub fn disk_of(rec: &Record) -> Result<&str, Failure> {
    rec.disk
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Failure::new("no-disk", "the record names no `disk`"))
}

/// Checks that the `device` a record names is the disk the record names,
/// before a node-side step acts on it: a local record's loop device must be
/// bound to its image, a static record's device must be its disk, a cloud
/// record's device must be what the disk's own links and serial lead to
/// ([`discover::verify_device`]). A record naming only a device claims
/// nothing else, and passes.
pub fn verify_claimed_device(rec: &Record, dev: &Device) -> Result<(), Failure> {
    if rec.disk.is_none() && !rec.extra.contains_key(discover::DISK_ID_KEY) {
        return Ok(());
    }
    match rec.provider {
        Some(ProviderKind::Local) => local::verify_device(rec, dev),
        Some(ProviderKind::Static) => {
            let disk = Device::open(&static_disk::device_path(rec)?)
                .map_err(|e| Failure::new("identity-mismatch", e.to_string()))?;
            if (disk.major, disk.minor) == (dev.major, dev.minor) {
                Ok(())
            } else {
                Err(Failure::new(
                    "identity-mismatch",
                    format!(
                        "the record names {} for the disk {}, which is another device: not this disk",
                        dev.path.display(),
                        disk.path.display()
                    ),
                ))
            }
        }
        Some(p) if p.is_cloud() => discover::verify_device(rec, dev),
        _ => Ok(()),
    }
}

/// The record's disk on this node, found without waiting and without
/// guessing: its `device`, else the loop device bound to its image (local:
/// its `disk_id`, else `<state_dir>/<disk>.img`, the state directory being
/// [`local::Local::state_dir`]'s), its device path (static), or what its
/// identity links lead to (clouds). `None` when it is not found here.
pub fn find_here(rec: &Record, state_dir: Option<&Path>) -> Option<Device> {
    if let Some(d) = &rec.device {
        return Device::open(Path::new(d)).ok();
    }
    match rec.provider? {
        ProviderKind::Local => {
            let image = match rec
                .extra
                .get(discover::DISK_ID_KEY)
                .and_then(|v| v.as_str())
            {
                Some(p) => PathBuf::from(p),
                None => local::Local::new(
                    local::Local::state_dir(state_dir.map(Path::to_path_buf)),
                    None,
                )
                .image(rec)
                .ok()?,
            };
            let loops = crate::loopdev::bound_to(&image).ok()?;
            let [lo] = loops.as_slice() else {
                return None;
            };
            crate::loopdev::verify(lo, &image).ok()?;
            Device::open(&lo.device).ok()
        }
        ProviderKind::Static => Device::open(&static_disk::device_path(rec).ok()?).ok(),
        _ => discover::candidates(rec, &discover::dev_root())
            .iter()
            .find_map(|c| Device::open(c).ok())
            .filter(|d| discover::check_identity(rec, d).is_ok()),
    }
}

/// Refuses when `device`, a partition of it, or something stacked on it is
/// mounted or otherwise held on this node. A device that does not exist
/// here is not mounted here.
pub fn refuse_if_in_use(device: &Path) -> Result<(), Failure> {
    let dev = match Device::open(device) {
        Ok(d) => d,
        Err(_) => return Ok(()),
    };
    let table = mount::Table::read().map_err(|e| Failure::new("mount-table", e.to_string()))?;
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
                "mounted",
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
            "in-use",
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
    match crate::blockdev::open_exclusive(&dev.real) {
        Ok(_) => Ok(()),
        Err(e @ crate::blockdev::BlockError::Busy(..)) => Err(Failure::new(
            "in-use",
            format!(
                "{}: {e}; a lazily unmounted filesystem stays alive until its last user exits: not detaching it",
                device.display()
            ),
        )),
        Err(e) => Err(Failure::new(
            "device-unusable",
            format!(
                "{}: {e}: cannot tell whether it is in use; not detaching it",
                device.display()
            ),
        )),
    }
}

/// A disk size: `10G`, `512M`, `1T`, `20GiB`; a bare number is GiB, as the
/// clouds count. Units are binary (1G = 2^30 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Whole GiB, rounded up (what EC2 and Compute Engine take).
    pub fn gib(self) -> u64 {
        self.0.div_ceil(1 << 30)
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (like 10G, 512M, 1T)"))?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "" | "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(format!("`{s}`: unknown unit (use K, M, G or T)")),
        };
        let bytes = n
            .checked_mul(1 << shift)
            .ok_or_else(|| format!("`{s}` is too large"))?;
        if bytes == 0 {
            return Err("a disk cannot be empty".into());
        }
        Ok(Size(bytes))
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            b if b % (1 << 40) == 0 => write!(f, "{}T", b >> 40),
            b if b % (1 << 30) == 0 => write!(f, "{}G", b >> 30),
            b if b % (1 << 20) == 0 => write!(f, "{}M", b >> 20),
            b => write!(f, "{b}B"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("10G".parse::<Size>().unwrap().bytes(), 10 << 30);
        assert_eq!("10".parse::<Size>().unwrap().gib(), 10);
        assert_eq!("512MiB".parse::<Size>().unwrap().bytes(), 512 << 20);
        assert_eq!("1500M".parse::<Size>().unwrap().gib(), 2, "rounded up");
        assert!("0".parse::<Size>().is_err());
        assert!("ten".parse::<Size>().is_err());
        assert!("5X".parse::<Size>().is_err());
        assert_eq!("64M".parse::<Size>().unwrap().to_string(), "64M");
    }
}
