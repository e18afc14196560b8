//! A record's disk on this node: finding its device and checking that it is
//! that disk, without any cloud API; and refusing to let go of a device that
//! is still in use here. The node-side tools use it; it is not a provider.
//!
//! * [`verify_claimed_device`]: the `device` a record names must be its disk
//!   (a local image's loop device, a static device, a cloud disk's links);
//! * [`resolve`]: which device on this node is the record's disk, from its
//!   identity alone, for every provider; [`find_here`]: the same, a `device`
//!   the record names first; [`find`]: the same lookup for a cloud disk,
//!   waited on until it arrives, then checked. The providers take a local
//!   image's loop device ([`local::bound_loop`]) and a static disk's device
//!   ([`static_disk::device`]) from here too;
//! * [`refuse_if_in_use`]: never detach what is mounted or held here.
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
//!   name to the disk name. On NVMe machine families (C3, C4, N4, ...) only
//!   the guest environment's udev rules (`65-gce-disk-naming.rules`,
//!   `google_nvme_id`) make the `google-` link; without them the name is
//!   read from each `nvme_card-pd` namespace's Identify data as those rules
//!   read it ([`crate::nvme`]), and when nothing names the disk the failure
//!   says the rules are missing (`no-disk-naming`), at once when no
//!   namespace's name can be read at all.
//!
//! * Eucalyptus on KVM: virtio disks named `vdb`, `vdc`, ... in the order
//!   they arrived (not after the attach name), each with the serial the node
//!   controller gives it, `euca-<volume>-dev-<device>` cut to virtio's 20
//!   characters (`euca-vol-1234abcd-de`): found by that serial (and its
//!   `/dev/disk/by-id/virtio-<serial>` link), never by name.
//!
//! Every path that exists must lead to the same device: two links that
//! disagree are refused, never resolved by taking the first. A device that
//! carries a serial (`/sys/block/<name>/device/serial` on NVMe,
//! `/sys/block/<name>/serial` on virtio) must carry the volume's; an NVMe
//! or Eucalyptus device without one is refused. When the record knows the disk's size
//! (`size_bytes`, set by disk-attach), the device's size must match too.
//! Nothing is ever guessed: no link, no device. `APPSCALE_PERSIST_DEV_ROOT`
//! moves `/dev` and `APPSCALE_PERSIST_SYS_ROOT` moves `/sys` (for the serial)
//! for tests, where loop devices stand in for cloud volumes.

use crate::codes;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blockdev::Device;
pub use crate::blockdev::{DEV_ROOT_ENV, SYS_ROOT_ENV, dev_root, refuse_if_in_use, sys_root};
use crate::record::{ProviderKind, Record};
use crate::step::Failure;
use crate::wait::{self, Poll, WaitParams};

pub(crate) mod local;
pub(crate) mod static_disk;

/// The record's `disk`, or a failure saying it is missing.
pub fn disk_of(rec: &Record) -> Result<&str, Failure> {
    rec.disk
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Failure::new(codes::NO_DISK, "the record names no `disk`"))
}

/// How long the node-side tools wait for a cloud disk's device to appear.
pub const DEVICE_WAIT: Duration = Duration::from_secs(60);

/// Candidate device paths for a cloud record, most specific first.
pub(crate) fn candidates(rec: &Record, root: &Path) -> Vec<PathBuf> {
    let by_id = root.join("disk/by-id");
    let Some(id) = rec.disk_id() else {
        return Vec::new();
    };
    let attached_as = rec.attached_as.as_deref().filter(|s| !s.is_empty());
    match rec.provider {
        Some(ProviderKind::Euca) => euca_candidates(id, root),
        Some(ProviderKind::Ec2) => {
            let serial = id.replacen('-', "", 1);
            let mut c: Vec<PathBuf> = ["", "_1", "-ns-1"]
                .iter()
                .map(|s| by_id.join(format!("nvme-Amazon_Elastic_Block_Store_{serial}{s}")))
                .collect();
            if let Some(name) = attached_as {
                let base = name.trim_start_matches("/dev/");
                c.push(root.join(base));
                if let Some(rest) = base.strip_prefix("sd") {
                    c.push(root.join(format!("xvd{rest}")));
                }
            }
            c
        }
        Some(ProviderKind::Gce) => {
            // The attach sets the device name; a disk attached by hand may
            // carry another one, which disk-attach and disk-detach record.
            let name = attached_as.unwrap_or(id);
            vec![
                by_id.join(format!("google-{name}")),
                by_id.join(format!("scsi-0Google_PersistentDisk_{name}")),
            ]
        }
        _ => Vec::new(),
    }
}

/// The serial Eucalyptus's node controller gives a volume's disk
/// (`set_serial_and_bus`: `euca-<volume>-dev-<device>`), as far as it is
/// known without the device name: the whole 20 characters virtio keeps
/// when `euca-<volume>-dev-` is at least that long, else that prefix.
fn euca_serial(id: &str) -> String {
    format!("euca-{id}-dev-")
        .chars()
        .take(VIRTIO_SERIAL_MAX)
        .collect()
}

/// virtio keeps at most this many characters of a disk's serial.
const VIRTIO_SERIAL_MAX: usize = 20;

/// A Eucalyptus volume on a KVM node: a virtio disk, named `vdb`, `vdc`,
/// ... in the order disks arrived, whatever name the attach asked for (so
/// `/dev/vdf` for `/dev/sdf` is a guess, never a candidate). It is found by
/// its serial only: the udev link `disk/by-id/virtio-<serial>` when the
/// serial is known whole, and every `vd*` disk whose serial names the
/// volume ([`serial_names`]).
fn euca_candidates(id: &str, root: &Path) -> Vec<PathBuf> {
    let serial = euca_serial(id);
    let mut c = Vec::new();
    if serial.chars().count() == VIRTIO_SERIAL_MAX {
        c.push(root.join("disk/by-id").join(format!("virtio-{serial}")));
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return c;
    };
    let mut disks: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vd").is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase())
            })
        })
        .map(|e| e.path())
        .filter(|p| {
            Device::open(p).is_ok_and(|d| {
                let kernel = d.real.file_name().unwrap_or_default().to_string_lossy();
                serial_names(Some(ProviderKind::Euca), &serial_of(&kernel), id)
            })
        })
        .collect();
    disks.sort();
    c.extend(disks);
    c
}

/// The device name a Compute Engine record's disk is attached as (the
/// attach sets it to the disk's name; one attached by hand may carry
/// another, which disk-attach records).
fn gce_device_name(rec: &Record) -> Option<&str> {
    if rec.provider != Some(ProviderKind::Gce) {
        return None;
    }
    rec.attached_as
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(rec.disk_id())
}

/// The Compute Engine persistent disks on NVMe here: the kernel names of
/// the namespaces (under [`sys_root`]) whose controller model is
/// `nvme_card-pd`, sorted.
fn google_nvme_namespaces() -> Vec<String> {
    let block = sys_root().join("block");
    let Ok(dir) = std::fs::read_dir(&block) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nvme"))
        .filter(|n| {
            std::fs::read_to_string(block.join(n).join("device/model"))
                .is_ok_and(|m| m.trim() == crate::nvme::GOOGLE_PD_MODEL)
        })
        .collect();
    out.sort();
    out
}

/// Whether the guest environment's udev rules name disks here: they link
/// every disk, the boot disk included, as `disk/by-id/google-*`.
fn guest_rules_present(root: &Path) -> bool {
    std::fs::read_dir(root.join("disk/by-id")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("google-"))
    })
}

/// What the NVMe namespaces here say of Compute Engine device `name`.
#[derive(Debug, Default)]
struct NvmeLook {
    /// The namespace attached as `name`, under the dev root: the only one
    /// that says so (two that claim one name are neither taken).
    found: Option<PathBuf>,
    /// Every namespace that claims the name.
    claims: Vec<PathBuf>,
    /// How many `nvme_card-pd` namespaces there are.
    namespaces: usize,
    /// Those whose name could not be read, and why.
    unreadable: Vec<String>,
}

/// Reads the device name of every Compute Engine NVMe namespace here
/// ([`crate::nvme::device_name`]) and finds the one attached as `name`.
fn nvme_look(name: &str) -> NvmeLook {
    let root = dev_root();
    let mut look = NvmeLook::default();
    for k in google_nvme_namespaces() {
        look.namespaces += 1;
        let path = root.join(&k);
        match crate::nvme::device_name(&k, &path) {
            Ok(Some(n)) if n == name => look.claims.push(path),
            Ok(_) => {}
            Err(e) => look.unreadable.push(format!("{k}: {e}")),
        }
    }
    if let [one] = look.claims.as_slice() {
        look.found = Some(one.clone());
    }
    look
}

/// The failure when nothing names a Compute Engine NVMe disk here.
fn no_disk_naming(rec: &Record, look: &NvmeLook, waited: Option<Duration>) -> Failure {
    let after = waited.map(|t| format!(" within {t:?}")).unwrap_or_default();
    let unreadable = if look.unreadable.is_empty() {
        String::new()
    } else {
        format!(
            "; the NVMe Identify data that names them could not be read ({}): run as root, with nvme-cli's kernel support",
            look.unreadable.join("; ")
        )
    };
    Failure::new(
        codes::NO_DISK_NAMING,
        format!(
            "no device for {} appeared{after}: this node's disks are NVMe ({} Compute Engine namespace(s), a C3, C4, N4 or other NVMe machine family) and the guest environment's udev rules that link them as /dev/disk/by-id/google-<deviceName> (65-gce-disk-naming.rules and google_nvme_id, from the google-guest-configs package) are not installed{unreadable}. Install the guest environment, or attach the disk again",
            rec.disk_id().unwrap_or("?"),
            look.namespaces,
        ),
    )
}

/// The serial a device reports in sysfs (under [`sys_root`]): NVMe's
/// `device/serial`, else virtio's `serial`; empty when it has none.
pub(crate) fn serial_of(kernel_name: &str) -> String {
    let block = sys_root().join("block").join(kernel_name);
    ["device/serial", "serial"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(block.join(f)).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// Whether a device serial names volume `id` on `provider`: on EC2 the
/// NVMe serial, the id without its dash (`vol0123...`); on Eucalyptus the
/// node controller's `euca-<id>-dev-<device>`, cut to 20 characters on
/// virtio (`euca-vol-1234abcd-de`), whole on SCSI.
pub(crate) fn serial_names(provider: Option<ProviderKind>, serial: &str, id: &str) -> bool {
    if id.is_empty() || serial.is_empty() {
        return false;
    }
    match provider {
        Some(ProviderKind::Euca) => {
            let whole = format!("euca-{id}-dev-");
            serial.starts_with(&whole)
                || (serial.chars().count() == VIRTIO_SERIAL_MAX && whole.starts_with(serial))
        }
        _ => serial == id.replacen('-', "", 1),
    }
}

/// Checks that `dev` is the record's disk: for EBS, the serial the device
/// carries (an NVMe device must carry one), and size when the record knows
/// it.
pub(crate) fn check_identity(rec: &Record, dev: &Device) -> Result<(), Failure> {
    let name = dev
        .real
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if matches!(rec.provider, Some(ProviderKind::Ec2 | ProviderKind::Euca)) {
        let want = rec.disk_id().unwrap_or_default();
        let serial = serial_of(&name);
        let euca = rec.provider == Some(ProviderKind::Euca);
        let refuse = |why: String| {
            Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!("{} {why}: not this volume", dev.path.display()),
            ))
        };
        if serial.is_empty() && (euca || name.starts_with("nvme")) {
            return refuse(format!(
                "({name}) reports no serial, so it cannot be shown to be {want}"
            ));
        }
        if !serial.is_empty() && !serial_names(rec.provider, &serial, want) {
            let named = if euca {
                euca_serial(want)
            } else {
                want.replacen('-', "", 1)
            };
            return refuse(format!("({name}) has serial `{serial}`, not `{named}`"));
        }
    }
    if let Some(size) = rec.size_bytes
        && dev.size != size
    {
        return Err(Failure::new(
            codes::IDENTITY_MISMATCH,
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
pub(crate) fn verify_device(rec: &Record, dev: &Device) -> Result<(), Failure> {
    let cands = candidates(rec, &dev_root());
    let mut confirmed = None;
    for c in cands.iter().filter(|c| c.exists()) {
        let other = Device::open(c)?;
        if (other.major, other.minor) != (dev.major, dev.minor) {
            return Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!(
                    "the record names {} for {}, but {} leads to {}: not this disk",
                    dev.path.display(),
                    rec.disk_id().unwrap_or("?"),
                    c.display(),
                    other.real.display()
                ),
            ));
        }
        confirmed = Some(c.clone());
    }
    if confirmed.is_none()
        && let Some(name) = gce_device_name(rec)
    {
        // A Compute Engine NVMe namespace names its own device.
        let look = nvme_look(name);
        confirmed = look.found.filter(|p| {
            Device::open(p).is_ok_and(|o| (o.major, o.minor) == (dev.major, dev.minor))
        });
    }
    if confirmed.is_none() {
        return Err(Failure::new(
            codes::IDENTITY_UNCONFIRMED,
            format!(
                "nothing on this node confirms that {} is {} (looked for {}): run disk-attach on the node, or drop `device` from the record so it is found",
                dev.path.display(),
                rec.disk_id().unwrap_or("?"),
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
            codes::NO_DEVICE,
            "the record has no `device` and its provider gives no way to find one",
        ));
    }
    // Compute Engine on NVMe without the guest's udev rules: no link will
    // ever name the disk; its namespace's own Identify data still does.
    let nvme = gce_device_name(rec).filter(|_| !guest_rules_present(&root));
    if let Some(name) = nvme {
        let look = nvme_look(name);
        if look.claims.len() > 1 {
            return Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!(
                    "{} NVMe namespaces all say they are device {name} ({}): not using any",
                    look.claims.len(),
                    look.claims
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if look.found.is_none() && look.namespaces > 0 && look.unreadable.len() == look.namespaces {
            // Nothing here can be named: waiting cannot help.
            return Err(no_disk_naming(rec, &look, None));
        }
    }
    let progress = crate::progress::Progress::start(
        format!("the device of disk {}", rec.disk_id().unwrap_or("?")),
        0,
    );
    // Looked for again each round: a Eucalyptus volume's disk is known by
    // its serial once it has arrived.
    let found = wait::until_with(&progress, WaitParams::quick(timeout), || {
        match first_path(rec, &root, nvme, |c| c.exists().then(|| c.to_path_buf())) {
            Some(p) => Poll::<PathBuf, ()>::Ready(p),
            None => Poll::Pending,
        }
    });
    let path = found.map_err(|e| {
        if let wait::WaitError::Interrupted(sig) = e {
            return crate::interrupt::failure(sig);
        }
        if let Some(name) = nvme {
            let look = nvme_look(name);
            if look.namespaces > 0 {
                return no_disk_naming(rec, &look, Some(timeout));
            }
        }
        Failure::new(
            codes::DEVICE_NOT_FOUND,
            format!(
                "no device for {} appeared within {timeout:?} (looked for {})",
                rec.disk_id().unwrap_or("?"),
                cands
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let dev = open(&path)?;
    agree(rec, &dev, &candidates(rec, &root))?;
    check_identity(rec, &dev)?;
    Ok(path)
}

/// The first of the paths a cloud record's disk is known by here (its
/// identity links, [`candidates`], then the Compute Engine NVMe namespace
/// that names itself `nvme`) that `take` accepts: the one lookup [`find`]
/// waits on and [`resolve`] makes once.
fn first_path<T>(
    rec: &Record,
    root: &Path,
    nvme: Option<&str>,
    take: impl Fn(&Path) -> Option<T>,
) -> Option<T> {
    candidates(rec, root)
        .iter()
        .find_map(|c| take(c))
        .or_else(|| take(&nvme_look(nvme?).found?))
}

fn open(path: &Path) -> Result<Device, Failure> {
    Ok(Device::open(path)?)
}

/// Every candidate path that exists leads to `dev`: a link to another
/// device means one of them lies, and then neither is trusted.
fn agree(rec: &Record, dev: &Device, cands: &[PathBuf]) -> Result<(), Failure> {
    for c in cands.iter().filter(|c| c.exists()) {
        let other = open(c)?;
        if (other.major, other.minor) != (dev.major, dev.minor) {
            return Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!(
                    "{} and {} both claim to be {} but lead to different devices ({} and {}): not using either",
                    dev.path.display(),
                    c.display(),
                    rec.disk_id().unwrap_or("?"),
                    dev.real.display(),
                    other.real.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses when the record's disk is mounted (or otherwise held) on this
/// machine: its `device`, if it names one, and every path the disk would be
/// found at here. On a controller, where the disk's device is not visible,
/// nothing is found and nothing is refused.
pub fn refuse_if_mounted_here(rec: &Record) -> Result<(), Failure> {
    let mut paths: Vec<PathBuf> = rec.device.iter().map(PathBuf::from).collect();
    paths.extend(candidates(rec, &dev_root()));
    paths.iter().try_for_each(|p| refuse_if_in_use(p))
}

/// For a record with no `device` on a cloud provider, finds it; other
/// records are left alone. Used by the node-side tools, so that a record
/// attached from a controller can be completed on the node.
pub(crate) fn fill_device(rec: &mut Record, timeout: Duration) -> Result<(), Failure> {
    if rec.device.is_none() && rec.provider.is_some_and(ProviderKind::is_cloud) {
        rec.device = Some(find(rec, timeout)?.display().to_string());
    }
    Ok(())
}

/// Checks that the `device` a record names is the disk the record names,
/// before a node-side step acts on it: a local record's loop device must be
/// bound to its image, a static record's device must be its disk, a cloud
/// record's device must be what the disk's own links and serial lead to
/// ([`verify_device`]). A record naming only a device claims
/// nothing else, and passes.
pub(crate) fn verify_claimed_device(rec: &Record, dev: &Device) -> Result<(), Failure> {
    if rec.disk.is_none() && rec.disk_id.is_none() {
        return Ok(());
    }
    match rec.provider {
        Some(ProviderKind::Local) => local::verify_device(rec, dev),
        Some(ProviderKind::Static) => {
            let disk = static_disk::device(rec, codes::IDENTITY_MISMATCH)?;
            if (disk.major, disk.minor) == (dev.major, dev.minor) {
                Ok(())
            } else {
                Err(Failure::new(
                    codes::IDENTITY_MISMATCH,
                    format!(
                        "the record names {} for the disk {}, which is another device: not this disk",
                        dev.path.display(),
                        disk.path.display()
                    ),
                ))
            }
        }
        Some(p) if p.is_cloud() => verify_device(rec, dev),
        _ => Ok(()),
    }
}

/// The record's disk on this node, found without waiting and without
/// guessing: its `device`, else what its identity leads to ([`resolve`]).
/// `None` when it is not found here.
pub(crate) fn find_here(rec: &Record, state_dir: Option<&Path>) -> Option<Device> {
    if let Some(d) = &rec.device {
        return Device::open(Path::new(d)).ok();
    }
    resolve(rec, state_dir)
}

/// Which device on this node is the record's disk, from the disk's own
/// identity alone (never the record's `device`), without waiting: the one
/// loop device bound to its image (local: its `disk_id`, else
/// `<state_dir>/<disk>.img`, the state directory being
/// [`local::state_dir`]'s), its device path (static), or what its identity
/// links and serial lead to (clouds). `None` when it is not here, or when
/// what is here is not provably it.
pub fn resolve(rec: &Record, state_dir: Option<&Path>) -> Option<Device> {
    match rec.provider? {
        ProviderKind::Local => local::bound_device(rec, state_dir),
        ProviderKind::Static => static_disk::device(rec, codes::NO_SUCH_DEVICE).ok(),
        _ => first_path(rec, &dev_root(), gce_device_name(rec), |c| {
            Device::open(c).ok()
        })
        .filter(|d| check_identity(rec, d).is_ok()),
    }
}

/// Waits (as long as for the node lock) until nothing holds `dev`
/// exclusively: a resize2fs (or mkfs) that a run stopped by SIGKILL left
/// running is never killed, and is let finish before anything else touches
/// the filesystem (an fsck, a mount, a grow).
pub(crate) fn wait_unheld(dev: &Device) -> Result<(), Failure> {
    let limit = crate::lock::node_timeout();
    let progress = crate::progress::Progress::start(
        format!(
            "{} to be free (another program holds it)",
            dev.path.display()
        ),
        0,
    );
    let mut said = false;
    let waited = crate::wait::until_with(&progress, WaitParams::quick(limit), || {
        match crate::blockdev::open_exclusive(&dev.real) {
            Ok(_) => Poll::Ready(()),
            Err(crate::blockdev::BlockError::Busy(..)) => {
                if !said {
                    crate::log::warn(format_args!(
                        "{} is held by another program (a resize2fs left by a stopped run?): waiting for it, at most {limit:?}",
                        dev.path.display()
                    ));
                    said = true;
                }
                Poll::Pending
            }
            Err(e) => Poll::Failed(e),
        }
    });
    match waited {
        Ok(()) => Ok(()),
        Err(crate::wait::WaitError::Failed(e)) => Err(e.into()),
        Err(crate::wait::WaitError::Interrupted(sig)) => Err(crate::interrupt::failure(sig)),
        Err(crate::wait::WaitError::TimedOut(d)) => Err(Failure::new(
            codes::DEVICE_BUSY,
            format!(
                "{} is still held by another program after {d:?}: not touching its filesystem meanwhile",
                dev.path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eucalyptus's node controller names a volume's disk
    /// `euca-<vol>-dev-<dev>` (`set_serial_and_bus`), which virtio cuts to
    /// 20 characters; EC2's NVMe serial is the id without its dash. Neither
    /// rule confirms another volume, and the bare id is no Eucalyptus serial.
    #[test]
    fn serials_name_volumes_as_each_cloud_gives_them() {
        let euca = Some(ProviderKind::Euca);
        assert!(serial_names(euca, "euca-vol-1234abcd-de", "vol-1234abcd"));
        assert!(serial_names(
            euca,
            "euca-vol-1234abcd-dev-sdf",
            "vol-1234abcd"
        ));
        assert!(!serial_names(euca, "euca-vol-1234abce-de", "vol-1234abcd"));
        assert!(!serial_names(euca, "vol-1234abcd", "vol-1234abcd"));
        assert!(!serial_names(euca, "", "vol-1234abcd"));
        let long = "vol-0123456789abcdef0";
        assert_eq!(euca_serial(long), "euca-vol-0123456789a");
        assert!(serial_names(euca, &euca_serial(long), long));
        let ec2 = Some(ProviderKind::Ec2);
        assert!(serial_names(ec2, "vol0123456789abcdef0", long));
        assert!(!serial_names(ec2, "euca-vol-0123456789a", long));
    }
}
