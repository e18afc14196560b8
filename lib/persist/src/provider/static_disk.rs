//! The `static` provider: the disk is a block device that is already there
//! (a VirtualBox disk, a bare-metal drive). Nothing is created or detached;
//! create and attach check that the device exists, detach that it is not
//! mounted.
//!
//! A disk named by its kernel name (`/dev/sdb`) may be another disk after a
//! reboot: create and attach say so, with the stable name to use instead
//! (`/dev/disk/by-id/...`), and attach gives the record that stable name as
//! its `device`, which the later steps then use.

use crate::codes;
use std::path::PathBuf;

use super::{DiskStatus, Provider};
use crate::blockdev::refuse_if_in_use;
use crate::blockdev::{self, Device};
pub use crate::discover::static_disk::device_path;
use crate::record::{ProviderKind, Record, State};
use crate::step::{Ctx, Failure, Outcome, StepResult};

/// The static provider.
#[derive(Debug, Clone, Default)]
pub struct Static;

/// For a disk named by its kernel name ([`blockdev::is_kernel_name`]):
/// warns that the name may change, naming the stable name to put in the
/// AppScalefile instead, and returns it (`None` when the disk is named
/// stably, or has no stable name here).
fn stable_name(rec: &Record, d: &Device) -> Option<PathBuf> {
    if !blockdev::is_kernel_name(&d.path) {
        return None;
    }
    let by_id = crate::blockdev::dev_root().join("disk/by-id");
    let stable = blockdev::stable_names(d, &by_id).into_iter().next();
    let instead = match &stable {
        Some(s) => format!("name it {} in the AppScalefile", s.display()),
        None => format!(
            "name it by a link that lasts (none found in {}; `lsblk -o NAME,SERIAL,WWN`)",
            by_id.display()
        ),
    };
    crate::log::warn(format_args!(
        "{}: {} is a kernel name, which another disk may have after a reboot or once a disk is added: {instead}",
        rec.label(),
        d.path.display()
    ));
    stable
}

fn device_of(rec: &Record) -> Result<Device, Failure> {
    crate::discover::static_disk::device(rec, codes::NO_SUCH_DISK)
}

impl Provider for Static {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Static
    }

    fn create(&mut self, records: &mut [Record], _cx: Ctx) -> Vec<StepResult> {
        records
            .iter_mut()
            .map(|r| {
                let d = device_of(r)?;
                stable_name(r, &d);
                Ok(Outcome::unchanged(
                    State::Created,
                    format!("{} exists ({} MiB)", d.path.display(), d.size >> 20),
                ))
            })
            .collect()
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        records
            .iter()
            .map(|r| {
                let d = device_of(r)?;
                let id = d.path.display().to_string();
                Ok(DiskStatus {
                    attached_to: vec![id.clone()],
                    id,
                    zone: None,
                    size: Some(d.size),
                    ..DiskStatus::default()
                })
            })
            .collect()
    }

    fn attach(&mut self, records: &mut [Record], _cx: Ctx) -> Vec<StepResult> {
        records
            .iter_mut()
            .map(|r| {
                let d = device_of(r)?;
                let stable = stable_name(r, &d);
                let device = stable.clone().unwrap_or_else(|| d.path.clone());
                r.device = Some(device.display().to_string());
                Ok(Outcome::unchanged(
                    State::Attached,
                    match stable {
                        Some(s) => format!("{} is present, as {}", d.path.display(), s.display()),
                        None => format!("{} is present", d.path.display()),
                    },
                ))
            })
            .collect()
    }

    fn detach(&mut self, records: &mut [Record], _cx: Ctx) -> Vec<StepResult> {
        records
            .iter_mut()
            .map(|r| {
                let path = device_path(r)?;
                refuse_if_in_use(&path)?;
                Ok(Outcome::unchanged(
                    State::Detached,
                    format!("{} is a static disk: nothing to detach", path.display()),
                ))
            })
            .collect()
    }

    fn snapshot(&mut self, records: &mut [Record], _cx: Ctx) -> Vec<StepResult> {
        records
            .iter()
            .map(|r| {
                Err(Failure::new(
                    codes::SNAPSHOT_UNSUPPORTED,
                    format!(
                        "{} is a static disk: there is no provider to snapshot it with (back up its files instead, or use the local or a cloud provider)",
                        r.disk.as_deref().map(crate::log::escape_controls).unwrap_or_default()
                    ),
                ))
            })
            .collect()
    }
}
