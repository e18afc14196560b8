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
//!
//! A run takes the node lock once, reads the mount table and the fstab
//! once, and works on its records concurrently (records whose mountpoints
//! nest, children first); with `--remove-fstab`, the
//! entries of every record unmounted are removed in one atomic rewrite of
//! the fstab at the end.

use crate::codes;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::blockdev::{self, Device};
use crate::discover::find_here;
use crate::fstab::{self, Fstab};
use crate::lock::NodeLock;
use crate::mount::{self, Entry};
use crate::record::{Record, State};
use crate::step::{Ctx, Diff, Failure, Outcome, Step, StepResult, in_waves};
use crate::wait::{self, Poll, WaitParams};

use super::mount::{open_device, planned_mountpoint, resolve_mountpoint};

/// An fstab entry `--remove-fstab` takes out: its mountpoint, and the UUID
/// of the filesystem it must name (when known).
type FstabTarget = (String, Option<String>);

/// The environment variable bounding the wait for the kernel to release a
/// device after an unmount, in seconds.
pub(crate) const RELEASE_WAIT_ENV: &str = "APPSCALE_PERSIST_RELEASE_WAIT";

/// How long to wait for the kernel to release a device after an unmount,
/// unless [`RELEASE_WAIT_ENV`] says otherwise.
pub(crate) const RELEASE_WAIT: Duration = Duration::from_secs(10);

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
        let look = || -> Result<(NodeLock, mount::Table, Option<Fstab>), Failure> {
            let lock = crate::freeze::node_lock(cx.check)?;
            let table = mount::read_table()?;
            let tab = if self.options.remove_fstab {
                Some(Fstab::load(&self.options.fstab)?)
            } else {
                None
            };
            Ok((lock, table, tab))
        };
        let (lock, table, tab) = match look() {
            Ok(l) => l,
            Err(f) => {
                return records
                    .iter()
                    .map(|_| (Err(f.clone()), Duration::ZERO))
                    .collect();
            }
        };
        let targets: Vec<Mutex<Option<FstabTarget>>> =
            records.iter().map(|_| Mutex::new(None)).collect();
        // Nested mountpoints: children before parents.
        let mps: Vec<Option<PathBuf>> = records
            .iter()
            .map(|r| planned_mountpoint(r, self.options.mountpoint.as_deref()))
            .collect();
        let mut waves = mount::nesting_waves(&mps);
        waves.reverse();
        let mut results = in_waves(records, &waves, |i, r| {
            let (outcome, target) = self.one(r, cx, &table, tab.as_ref())?;
            *targets[i].lock().unwrap_or_else(|e| e.into_inner()) = target;
            Ok(outcome)
        });
        if self.options.remove_fstab && !cx.check {
            let targets: Vec<Option<FstabTarget>> = targets
                .into_iter()
                .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
                .collect();
            self.remove_entries(&mut results, targets);
        }
        drop(lock);
        results
    }
}

fn release_wait() -> Duration {
    std::env::var(RELEASE_WAIT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(RELEASE_WAIT)
}

/// The UUID of the filesystem on `dev`: from its superblock, read
/// in-process, else as blkid reads it.
fn uuid_of(dev: &Device) -> Option<String> {
    if let Ok(Some(sb)) = blockdev::read_superblock(&dev.real) {
        return Some(sb.uuid);
    }
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

    /// Removes the fstab entries of the records that got that far, in one
    /// transaction; a record whose entry cannot be removed fails.
    fn remove_entries(
        &self,
        results: &mut [(StepResult, Duration)],
        targets: Vec<Option<FstabTarget>>,
    ) {
        let todo: Vec<(usize, FstabTarget)> = targets
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t?)))
            .filter(|(i, _)| results[*i].0.is_ok())
            .collect();
        if todo.is_empty() {
            return;
        }
        let list: Vec<(&str, Option<&str>)> = todo
            .iter()
            .map(|(_, (mp, uuid))| (mp.as_str(), uuid.as_deref()))
            .collect();
        match fstab::remove_all(&self.options.fstab, &list) {
            Err(e) => {
                let f = Failure::from(e);
                for (i, _) in todo {
                    results[i].0 = Err(f.clone());
                }
            }
            Ok((applied, each)) => {
                // The whole change, shown once.
                let mut diff = applied.changed().then(|| Diff {
                    path: applied.path.display().to_string(),
                    before: applied.before.clone(),
                    after: applied.after.clone(),
                });
                for ((i, _), gone) in todo.into_iter().zip(each) {
                    if let (true, Ok(o)) = (gone, &mut results[i].0) {
                        o.changed = true;
                        o.message.push_str(&format!(
                            ", removed its entry from {}",
                            applied.path.display()
                        ));
                        if let Some(d) = diff.take() {
                            o.diff = Some(d);
                        }
                    }
                }
            }
        }
    }

    /// Unmounts one record's filesystem; returns what was done, and (with
    /// `--remove-fstab`) the entry to remove in the run's one transaction.
    fn one(
        &self,
        rec: &mut Record,
        cx: Ctx,
        table: &mount::Table,
        tab: Option<&Fstab>,
    ) -> Result<(Outcome, Option<FstabTarget>), Failure> {
        let mp = resolve_mountpoint(rec, self.options.mountpoint.as_deref())?;
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
            // A frozen filesystem unmounted stays frozen, with no
            // mountpoint left to thaw it through: never.
            if let Ok(dev) = Device::from_number(entry.major, entry.minor)
                && let Some(frozen) = crate::freeze::frozen(&dev, entry.is_rw())
            {
                return Err(Failure::new(
                    codes::FROZEN,
                    format!(
                        "{} is {frozen}: not unmounting it (it would stay frozen with no mountpoint to thaw it through); once its holder is done, `fsfreeze -u {}`, then rerun",
                        mp.display(),
                        mp.display()
                    ),
                ));
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
            released(&dev)?;
        }
        let mut diff = None;
        let mountpoint = mp.display().to_string();
        if let (Some(tab), true) = (tab, cx.check)
            && let Some(after) = tab.without_entry(&mountpoint, uuid.as_deref())
        {
            changed = true;
            done.push(format!(
                "would remove its entry from {}",
                tab.path.display()
            ));
            diff = Some(Diff {
                path: tab.path.display().to_string(),
                before: tab.text(),
                after: String::from_utf8_lossy(&after).into_owned(),
            });
        }
        crate::release::stamp(rec, table.at(&mp), cx.check);
        let outcome = Outcome {
            state: State::Unmounted,
            changed,
            message: done.join(", "),
            diff,
        };
        let target = self.options.remove_fstab.then_some((mountpoint, uuid));
        Ok((outcome, target))
    }
}

/// Waits (bounded) until an exclusive open of `dev` succeeds: the kernel
/// holds no filesystem (mounted, or lazily unmounted and still in use) or
/// other exclusive user on it. Fails with `still-in-use`, naming the
/// processes still using the filesystem.
fn released(dev: &Device) -> Result<(), Failure> {
    // Mounted somewhere else too: not this mountpoint's business to
    // unmount, and not ready to detach either.
    let elsewhere: Vec<String> = mount::read_table()?
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
    let progress =
        crate::progress::Progress::start(format!("{} to be let go", dev.path.display()), 0);
    let r = wait::until_with(
        &progress,
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
