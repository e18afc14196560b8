//! Finding a cloud disk's device on the node, without any cloud API.
//!
//! A cloud disk announces itself through udev links made from the device's
//! own identity, so the node can find it from the record alone:
//!
//! * EBS on Nitro (NVMe): `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123...`
//!   (some systemd versions add `_1`, Amazon Linux's rules `-ns-1`); the
//!   NVMe serial in `/sys/block/nvmeXnY/device/serial` must equal the volume
//!   id without its dash.
//! * EBS on Xen: the device name given at attach, `/dev/sdf` or `/dev/xvdf`.
//! * Compute Engine: `/dev/disk/by-id/google-<deviceName>` (and
//!   `scsi-0Google_PersistentDisk_<deviceName>`); the attach sets the device
//!   name to the disk name.
//!
//! When the record knows the disk's size (`size_bytes`, set by disk-attach),
//! the device's size must match too. Nothing is ever guessed: no link, no
//! device. `APPSCALE_PERSIST_DEV_ROOT` moves `/dev` for tests, where loop
//! devices stand in for cloud volumes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blockdev::Device;
use crate::record::{ProviderKind, Record};
use crate::step::Failure;
use crate::wait::{self, Poll, WaitParams};

/// Environment variable that replaces `/dev` when looking for links.
pub const DEV_ROOT_ENV: &str = "APPSCALE_PERSIST_DEV_ROOT";

/// The record key holding the provider's id for the disk (`vol-...`), when
/// it differs from `disk` (an EBS Name tag).
pub const DISK_ID_KEY: &str = "disk_id";

/// The record key holding the disk's size in bytes, as the cloud reports it.
pub const SIZE_KEY: &str = "size_bytes";

/// The record key holding the device name the cloud attached the disk as
/// (EC2: `/dev/sdf`).
pub const ATTACHED_AS_KEY: &str = "attached_as";

/// How long the node-side tools wait for a cloud disk's device to appear.
pub const DEVICE_WAIT: Duration = Duration::from_secs(60);

/// `/dev`, or the test override.
pub fn dev_root() -> PathBuf {
    std::env::var_os(DEV_ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev"))
}

/// The provider's id for the record's disk.
pub fn disk_id(rec: &Record) -> Option<&str> {
    rec.extra
        .get(DISK_ID_KEY)
        .and_then(|v| v.as_str())
        .or(rec.disk.as_deref())
}

/// Candidate device paths for a cloud record, most specific first.
pub fn candidates(rec: &Record, root: &Path) -> Vec<PathBuf> {
    let by_id = root.join("disk/by-id");
    let Some(id) = disk_id(rec) else {
        return Vec::new();
    };
    match rec.provider {
        Some(ProviderKind::Ec2 | ProviderKind::Euca) => {
            let serial = id.replacen('-', "", 1);
            let mut c: Vec<PathBuf> = ["", "_1", "-ns-1"]
                .iter()
                .map(|s| by_id.join(format!("nvme-Amazon_Elastic_Block_Store_{serial}{s}")))
                .collect();
            if let Some(name) = rec.extra.get(ATTACHED_AS_KEY).and_then(|v| v.as_str()) {
                let base = name.trim_start_matches("/dev/");
                c.push(root.join(base));
                if let Some(rest) = base.strip_prefix("sd") {
                    c.push(root.join(format!("xvd{rest}")));
                }
            }
            c
        }
        Some(ProviderKind::Gce) => vec![
            by_id.join(format!("google-{id}")),
            by_id.join(format!("scsi-0Google_PersistentDisk_{id}")),
        ],
        _ => Vec::new(),
    }
}

/// Checks that `dev` is the record's disk: NVMe serial for EBS, and size
/// when the record knows it.
pub fn check_identity(rec: &Record, dev: &Device) -> Result<(), Failure> {
    let name = dev
        .real
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if matches!(rec.provider, Some(ProviderKind::Ec2 | ProviderKind::Euca))
        && name.starts_with("nvme")
    {
        let want = disk_id(rec).unwrap_or_default().replacen('-', "", 1);
        let serial =
            std::fs::read_to_string(format!("/sys/block/{name}/device/serial")).unwrap_or_default();
        if serial.trim() != want {
            return Err(Failure::new(
                "identity-mismatch",
                format!(
                    "{} has NVMe serial `{}`, not `{want}`: not this volume",
                    dev.path.display(),
                    serial.trim()
                ),
            ));
        }
    }
    if let Some(size) = rec.extra.get(SIZE_KEY).and_then(|v| v.as_u64())
        && dev.size != size
    {
        return Err(Failure::new(
            "identity-mismatch",
            format!(
                "{} is {} bytes but the disk is {size}: not this disk",
                dev.path.display(),
                dev.size
            ),
        ));
    }
    Ok(())
}

/// Checks that the `device` a cloud record names is that record's disk:
/// at least one of the paths the disk is known by here must exist, every
/// one that exists must be the same kernel device as `dev`, and
/// [`check_identity`] must pass. A record's word alone is never enough: a
/// stale record may name a device that now holds another disk.
pub fn verify_device(rec: &Record, dev: &Device) -> Result<(), Failure> {
    let cands = candidates(rec, &dev_root());
    let mut confirmed = None;
    for c in cands.iter().filter(|c| c.exists()) {
        let other = Device::open(c).map_err(|e| Failure::new("device-unusable", e.to_string()))?;
        if (other.major, other.minor) != (dev.major, dev.minor) {
            return Err(Failure::new(
                "identity-mismatch",
                format!(
                    "the record names {} for {}, but {} leads to {}: not this disk",
                    dev.path.display(),
                    disk_id(rec).unwrap_or("?"),
                    c.display(),
                    other.real.display()
                ),
            ));
        }
        confirmed = Some(c.clone());
    }
    if confirmed.is_none() {
        return Err(Failure::new(
            "identity-unconfirmed",
            format!(
                "nothing on this node confirms that {} is {} (looked for {}): run disk-attach on the node, or drop `device` from the record so it is found",
                dev.path.display(),
                disk_id(rec).unwrap_or("?"),
                cands
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    check_identity(rec, dev)
}

/// Waits (at most `timeout`) for the record's device to appear, then checks
/// its identity. Returns the device path as found (a by-id link when there
/// is one: stable across reboots).
pub fn find(rec: &Record, timeout: Duration) -> Result<PathBuf, Failure> {
    let root = dev_root();
    let cands = candidates(rec, &root);
    if cands.is_empty() {
        return Err(Failure::new(
            "no-device",
            "the record has no `device` and its provider gives no way to find one",
        ));
    }
    let found = wait::until(WaitParams::quick(timeout), || {
        match cands.iter().find(|c| c.exists()) {
            Some(c) => Poll::<PathBuf, ()>::Ready(c.clone()),
            None => Poll::Pending,
        }
    });
    let path = found.map_err(|e| {
        if let wait::WaitError::Interrupted(sig) = e {
            return crate::interrupt::failure(sig);
        }
        Failure::new(
            "device-not-found",
            format!(
                "no device for {} appeared within {timeout:?} (looked for {})",
                disk_id(rec).unwrap_or("?"),
                cands
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let dev = Device::open(&path).map_err(|e| Failure::new("device-unusable", e.to_string()))?;
    check_identity(rec, &dev)?;
    Ok(path)
}

/// Refuses when the record's disk is mounted (or otherwise held) on this
/// machine: its `device`, if it names one, and every path the disk would be
/// found at here. On a controller, where the disk's device is not visible,
/// nothing is found and nothing is refused.
pub fn refuse_if_mounted_here(rec: &Record) -> Result<(), Failure> {
    let mut paths: Vec<PathBuf> = rec.device.iter().map(PathBuf::from).collect();
    paths.extend(candidates(rec, &dev_root()));
    paths.iter().try_for_each(|p| super::refuse_if_in_use(p))
}

/// For a record with no `device` on a cloud provider, finds it; other
/// records are left alone. Used by the node-side tools, so that a record
/// attached from a controller can be completed on the node.
pub fn fill_device(rec: &mut Record, timeout: Duration) -> Result<(), Failure> {
    if rec.device.is_none() && rec.provider.is_some_and(ProviderKind::is_cloud) {
        rec.device = Some(find(rec, timeout)?.display().to_string());
    }
    Ok(())
}
