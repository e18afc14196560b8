//! `disk-unmount`: flush and unmount a record's filesystem, and confirm the
//! kernel let go of it.
//!
//! Only the record's own filesystem is ever unmounted. What is mounted at
//! the mountpoint is the record's when one of these says so: the record's
//! `device` is that device; the record's `fs.uuid` is its UUID; the record's
//! disk, found on this node ([`crate::discover::find_here`]), is that device;
//! or our own entry (marked `x-appscale-persist`) in the fstab (`--fstab`,
//! `/etc/fstab` by default) mounts that UUID there. Anything else (a tmpfs, an
//! NFS share, another disk) is left alone and reported.
//!
//! A disk is reported unmounted only once the kernel has let go of it: an
//! exclusive open of the device must succeed (bounded wait). After a lazy
//! unmount the filesystem stays alive while anything still uses it; the
//! record then fails with `still-in-use`, naming the processes, so the disk
//! is not detached under a live filesystem.

use crate::codes;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blockdev::{self, Device};
use crate::discover::find_here;
use crate::fstab::{self, Fstab};
use crate::lock::NodeLock;
use crate::mount::{self, Entry};
use crate::record::{Record, State};
use crate::step::{Ctx, Diff, Failure, Outcome, Step, StepResult, one_by_one};
use crate::wait::{self, Poll, WaitParams};

use super::mount::{open_device, resolve_mountpoint};

/// The environment variable bounding the wait for the kernel to release a
/// device after an unmount, in seconds.
pub const RELEASE_WAIT_ENV: &str = "APPSCALE_PERSIST_RELEASE_WAIT";

/// How long to wait for the kernel to release a device after an unmount,
/// unless [`RELEASE_WAIT_ENV`] says otherwise.
pub const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Options for [`Unmount`].
#[derive(Debug, Clone)]
pub struct UnmountOptions {
    /// Mountpoint for records that name none.
    pub mountpoint: Option<String>,
    /// Detach a busy mount lazily (`umount -l`) instead of failing.
    pub lazy: bool,
    /// The fstab holding our entries: read to recognise our filesystem.
    pub fstab: PathBuf,
    /// Also remove our entry from it.
    pub remove_fstab: bool,
    /// The local provider's state directory, to recognise a local disk.
    pub state_dir: Option<PathBuf>,
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

fn release_wait() -> Duration {
    std::env::var(RELEASE_WAIT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(RELEASE_WAIT)
}

/// The UUID of the filesystem on `dev`, as blkid reads it.
fn uuid_of(dev: &Device) -> Option<String> {
    blockdev::probe(&dev.path)
        .ok()
        .flatten()
        .and_then(|p| p.uuid().map(str::to_string))
}

impl Unmount {
    /// Why the mount `entry` at `mp` is the record's, or why it is not.
    fn whose(&self, rec: &Record, mp: &Path, entry: &Entry) -> Result<String, Failure> {
        let mounted = Device::from_number(entry.major, entry.minor).ok();
        if let Some(device) = &rec.device
            && let Ok(dev) = open_device(device)
        {
            if (dev.major, dev.minor) == (entry.major, entry.minor) {
                return Ok(format!("the record's device {device}"));
            }
            return Err(Failure::new(
                codes::MOUNTPOINT_OTHER_DEVICE,
                format!(
                    "{} has {} mounted, not {device}: leaving it alone",
                    mp.display(),
                    entry.source
                ),
            ));
        }
        let uuid = mounted.as_ref().and_then(uuid_of);
        if let (Some(want), Some(have)) = (rec.fs.as_ref().and_then(|f| f.uuid.as_deref()), &uuid) {
            if want == have {
                return Ok(format!("the record's filesystem UUID={want}"));
            }
            return Err(Failure::new(
                codes::MOUNTPOINT_OTHER_DEVICE,
                format!(
                    "{} has {} (UUID={have}) mounted, not the record's filesystem UUID={want}: leaving it alone",
                    mp.display(),
                    entry.source
                ),
            ));
        }
        if rec.disk.is_some()
            && let Some(disk) = find_here(rec, self.options.state_dir.as_deref())
            && (disk.major, disk.minor) == (entry.major, entry.minor)
        {
            return Ok(format!(
                "the record's disk, found at {}",
                disk.path.display()
            ));
        }
        let tab_path = &self.options.fstab;
        if let Some(u) = &uuid
            && let Ok(tab) = Fstab::load(tab_path)
            && tab.entries().iter().any(|e| {
                let known_as = fstab::Filesystem {
                    uuid: u.clone(),
                    ..fstab::Filesystem::default()
                };
                e.is_ours()
                    && fstab::same_target(&e.file, &mp.display().to_string())
                    && known_as.named_by(&e.spec)
            })
        {
            return Ok(format!("our entry in {}", tab_path.display()));
        }
        Err(Failure::new(
            codes::NOT_OURS,
            format!(
                "{} has {} ({}{}) mounted, and nothing shows it is this record's disk (no matching device or fs.uuid in the record, the record's disk is not it, and no entry of ours in {} mounts it there): leaving it alone; name the disk with --device if it is yours",
                mp.display(),
                entry.source,
                entry.fstype,
                uuid.map(|u| format!(" UUID={u}")).unwrap_or_default(),
                tab_path.display()
            ),
        ))
    }

    fn one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let mp = resolve_mountpoint(rec, self.options.mountpoint.as_deref())?;
        let _lock = NodeLock::take(cx.check)?;
        let table = mount::read_table()?;
        let mut done = Vec::new();
        let mut changed = false;
        // The device to see released: the one unmounted here, else the
        // record's disk when it is found on this node.
        let mut device = None;
        // The filesystem whose fstab entry may be removed.
        let mut uuid = rec.fs.as_ref().and_then(|f| f.uuid.clone());
        if let Some(entry) = table.at(&mp) {
            let why = self.whose(rec, &mp, entry)?;
            if let Some(u) = Device::from_number(entry.major, entry.minor)
                .ok()
                .as_ref()
                .and_then(uuid_of)
            {
                uuid = Some(u);
            }
            changed = true;
            if cx.check {
                done.push(format!(
                    "would unmount {} from {} ({why})",
                    entry.source,
                    mp.display()
                ));
            } else {
                mount::unmount(&mp, entry.major, entry.minor, self.options.lazy)?;
                done.push(format!("unmounted {} from {}", entry.source, mp.display()));
                device = Device::from_number(entry.major, entry.minor).ok();
            }
        } else {
            done.push(format!("{} is not mounted", mp.display()));
            if !cx.check {
                device = find_here(rec, self.options.state_dir.as_deref());
            }
        }
        if let Some(dev) = device {
            if uuid.is_none() {
                uuid = uuid_of(&dev);
            }
            released(&dev, &table)?;
        }
        let mut diff = None;
        if self.options.remove_fstab {
            let path = &self.options.fstab;
            let mountpoint = mp.display().to_string();
            let would = if cx.check {
                let tab = Fstab::load(path)?;
                tab.without_entry(&mountpoint, uuid.as_deref())
                    .map(|after| Diff {
                        path: tab.path.display().to_string(),
                        before: tab.text(),
                        after: String::from_utf8_lossy(&after).into_owned(),
                    })
            } else {
                let a = fstab::remove(path, &mountpoint, uuid.as_deref())?;
                a.changed().then(|| Diff {
                    path: a.path.display().to_string(),
                    before: a.before,
                    after: a.after,
                })
            };
            if let Some(d) = would {
                changed = true;
                done.push(format!(
                    "{} its entry from {}",
                    if cx.check { "would remove" } else { "removed" },
                    path.display()
                ));
                diff = Some(d);
            }
        }
        crate::release::stamp(rec, table.at(&mp), cx.check);
        Ok(Outcome {
            state: State::Unmounted,
            changed,
            message: done.join(", "),
            diff,
        })
    }
}

/// Waits (bounded) until an exclusive open of `dev` succeeds: the kernel
/// holds no filesystem (mounted, or lazily unmounted and still in use) or
/// other exclusive user on it. Fails with `still-in-use`, naming the
/// processes still using the filesystem.
fn released(dev: &Device, table: &mount::Table) -> Result<(), Failure> {
    // Mounted somewhere else too: not this mountpoint's business to
    // unmount, and not ready to detach either.
    let elsewhere: Vec<String> = mount::Table::read()
        .unwrap_or_else(|_| table.clone())
        .by_device(dev.major, dev.minor)
        .iter()
        .map(|e| e.target.display().to_string())
        .collect();
    if !elsewhere.is_empty() {
        return Err(Failure::new(
            codes::MOUNTED_ELSEWHERE,
            format!(
                "{} is still mounted on {}: it is not ready to detach; unmount it there (with its own record) first",
                dev.path.display(),
                elsewhere.join(", ")
            ),
        ));
    }
    let limit = release_wait();
    let r = wait::until(
        WaitParams::quick(limit),
        || match blockdev::open_exclusive(&dev.real) {
            Ok(_) => Poll::Ready(()),
            Err(blockdev::BlockError::Busy(..)) => Poll::Pending,
            Err(e) => Poll::Failed(e),
        },
    );
    match r {
        Ok(()) => Ok(()),
        Err(wait::WaitError::Failed(e)) => Err(e.into()),
        Err(wait::WaitError::Interrupted(sig)) => Err(crate::interrupt::failure(sig)),
        Err(wait::WaitError::TimedOut(_)) => {
            let holders = mount::holders(dev.major, dev.minor);
            let who = if holders.is_empty() {
                "by the kernel: another mount of it, a holder, or another mount namespace".into()
            } else {
                format!(
                    "by {}",
                    holders
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            Err(Failure::new(
                codes::STILL_IN_USE,
                format!(
                    "{} is unmounted here, but its filesystem is still alive after {limit:?}, held {who}: it is not ready to detach; stop them, then rerun",
                    dev.path.display()
                ),
            ))
        }
    }
}
