//! `disk-unmount`: flush and unmount a record's mountpoint, and confirm the
//! kernel let go of it.

use std::path::PathBuf;
use std::time::Duration;

use crate::fstab::Fstab;
use crate::mount::{self, UnmountError};
use crate::record::{Record, State};
use crate::tool::{Ctx, Diff, Failure, Outcome, Step, StepResult, one_by_one};

use super::mount::{open_device, resolve_mountpoint};

/// Options for [`Unmount`].
#[derive(Debug, Clone)]
pub struct UnmountOptions {
    /// Mountpoint for records that name none.
    pub mountpoint: Option<String>,
    /// Detach a busy mount lazily (`umount -l`) instead of failing.
    pub lazy: bool,
    /// Remove our entry from this fstab.
    pub fstab: Option<PathBuf>,
}

/// The `disk-unmount` step.
#[derive(Debug)]
pub struct Unmount {
    /// Its options.
    pub options: UnmountOptions,
}

impl Step for Unmount {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)> {
        one_by_one(records, |r| self.one(r, cx))
    }
}

impl Unmount {
    fn one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let mp = resolve_mountpoint(rec, self.options.mountpoint.as_deref())?;
        let table = mount::Table::read().map_err(|e| Failure::new("mount-table", e.to_string()))?;
        let mut done = Vec::new();
        let mut changed = false;
        if let Some(entry) = table.at(&mp) {
            // Unmount only what is ours: the record's device, when it names one.
            if let Some(device) = &rec.device
                && let Ok(dev) = open_device(device)
                && (dev.major, dev.minor) != (entry.major, entry.minor)
            {
                return Err(Failure::new(
                    "mountpoint-other-device",
                    format!(
                        "{} has {} mounted, not {device}: leaving it alone",
                        mp.display(),
                        entry.source
                    ),
                ));
            }
            changed = true;
            if cx.check {
                done.push(format!(
                    "would unmount {} from {}",
                    entry.source,
                    mp.display()
                ));
            } else {
                mount::unmount(&mp, entry.major, entry.minor, self.options.lazy).map_err(|e| {
                    match e {
                        UnmountError::Busy { .. } => Failure::new(
                            "busy",
                            format!(
                                "{e}; stop them and rerun (or pass --lazy to detach it anyway)"
                            ),
                        ),
                        other => Failure::new("unmount-failed", other.to_string()),
                    }
                })?;
                done.push(format!("unmounted {} from {}", entry.source, mp.display()));
            }
        } else {
            done.push(format!("{} is not mounted", mp.display()));
        }
        let mut diff = None;
        if let Some(path) = &self.options.fstab {
            let tab = Fstab::load(path).map_err(|e| Failure::new("fstab", e.to_string()))?;
            if let Some(new) = tab.without_entry(&mp.display().to_string()) {
                changed = true;
                if !cx.check {
                    tab.replace(&new)
                        .map_err(|e| Failure::new("fstab", e.to_string()))?;
                }
                done.push(format!(
                    "{} its entry from {}",
                    if cx.check { "would remove" } else { "removed" },
                    path.display()
                ));
                diff = Some(Diff {
                    path: path.display().to_string(),
                    before: tab.text.clone(),
                    after: new,
                });
            }
        }
        crate::provider::release::stamp(rec, table.at(&mp), cx.check);
        Ok(Outcome {
            state: State::Unmounted,
            changed,
            message: done.join(", "),
            diff,
        })
    }
}
