//! `disk-ensure-fs`: format a device only if it is truly blank.
//!
//! The decision is [`crate::blockdev::assess`]'s; this step only acts on it:
//! a wanted filesystem already there is `has-fs` (unchanged), another
//! filesystem or any other data is a refusal, and only a blank device is
//! formatted. Around that, what the record claims is checked, never
//! trusted:
//!
//! * the run holds the node lock ([`crate::lock`]) from its first look to
//!   its last act, and works on several records at once
//!   ([`crate::step::concurrently`]);
//! * the record's `device` must be the disk the record names
//!   ([`crate::discover::verify_claimed_device`]);
//! * a record that already names a filesystem (`fs.uuid`, or a state that
//!   implies one) is never formatted: a device that now reads blank, or
//!   holds another filesystem, is an identity error;
//! * from the blank check to the end of `mkfs`, the whole-disk device node
//!   is locked with `flock` (udev's convention, so nothing probes or writes
//!   it meanwhile) and held open with `O_EXCL` (so nothing mounts or claims
//!   it) until `mkfs` starts; `mkfs` runs on the resolved node (not a link
//!   that could be re-pointed), whose major:minor is checked before and
//!   after;
//! * a device the kernel has mounted is named by its superblock, read
//!   in-process (no subprocess), and the mount's type; a filesystem just
//!   made is checked the same way;
//! * the new filesystem gets a UUID chosen here, marked fresh
//!   ([`crate::seed::mark_fresh`]) before `mkfs` runs, so that only a
//!   filesystem this flow made is ever seeded.

use crate::codes;
use std::path::Path;

use crate::blockdev::{self, Assessment, BlockError, Device, Probe};
use crate::discover::verify_claimed_device;
use crate::discover::{self, DEVICE_WAIT};
use crate::filesystem::{self, FsType};
use crate::lock::DeviceLock;
use crate::mount::{self, TempMount};
use crate::record::{Fs, Record, State};
use crate::seed;
use crate::step::{Ctx, Failure, Outcome, Step, StepResult, concurrently};

/// A filesystem smaller than its device by more than this is grown by
/// `--grow` (below it, the difference is rounding to the filesystem's
/// allocation units).
const GROW_SLACK: u64 = 8 << 20;

/// Options for [`EnsureFs`].
#[derive(Debug, Clone)]
pub struct EnsureFsOptions {
    /// The filesystem wanted.
    pub fstype: FsType,
    /// Label for a new filesystem.
    pub label: String,
    /// Extra arguments for `mkfs`, before the device.
    pub mkfs_options: Vec<String>,
    /// Grow an existing filesystem that is smaller than its device.
    pub grow: bool,
}

/// The `disk-ensure-fs` step.
#[derive(Debug)]
pub struct EnsureFs {
    /// Its options.
    pub options: EnsureFsOptions,
}

impl Step for EnsureFs {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, std::time::Duration)> {
        let lock = match crate::freeze::node_lock(cx.check) {
            Ok(l) => l,
            Err(f) => {
                return records
                    .iter()
                    .map(|_| (Err(f.clone()), Default::default()))
                    .collect();
            }
        };
        let results = concurrently(records, |_, r| self.one(r, cx));
        drop(lock);
        results
    }
}

fn block_failure(e: BlockError) -> Failure {
    Failure::new(e.code(), format!("{e}; not formatting"))
}

/// Checks that `dev`'s resolved node is still the device first opened.
fn same_device(dev: &Device, when: &str) -> Result<(), Failure> {
    let now = Device::open(&dev.real).map_err(block_failure)?;
    if (now.major, now.minor) != (dev.major, dev.minor) {
        return Err(Failure::new(
            codes::IDENTITY_MISMATCH,
            format!(
                "{} became device {}:{} {when} (it was {}:{}): not formatting it",
                dev.real.display(),
                now.major,
                now.minor,
                dev.major,
                dev.minor
            ),
        ));
    }
    Ok(())
}

fn fs_of(p: &Probe, formatted: bool) -> Fs {
    Fs {
        fstype: p.fstype().unwrap_or_default().to_string(),
        uuid: p.uuid().map(str::to_string),
        label: p.label().map(str::to_string),
        formatted,
    }
}

/// The filesystem a record already names, if it names one: its `fs` with a
/// UUID (always: a UUID is only ever probed), or a state only a device
/// holding a filesystem reaches (unless the record comes from `--check`,
/// whose states are predictions).
fn named_fs(rec: &Record) -> Option<String> {
    if let Some(fs) = &rec.fs
        && let Some(uuid) = &fs.uuid
    {
        return Some(format!("{} UUID={uuid}", fs.fstype));
    }
    if rec.is_check() {
        return None;
    }
    matches!(
        rec.state,
        Some(State::HasFs | State::Formatted | State::Mounted | State::Unmounted)
    )
    .then(|| {
        format!(
            "a filesystem (state {})",
            rec.state.map(State::as_str).unwrap_or("?")
        )
    })
}

/// What ensuring a filesystem on one record takes, decided under the node
/// lock before anything is done; [`EnsureFs::describe`] says it (`--check`),
/// [`EnsureFs::apply`] does it. Refusals are decided here, as errors.
enum Plan {
    /// `--check` on a record whose disk an earlier step would have made.
    Pending(String),
    /// The wanted filesystem is there; grow it when asked and it is smaller
    /// than its device.
    HasFs {
        device: String,
        probe: Probe,
        grow: Option<Grow>,
    },
    /// The device is blank: format it, still holding what was held for the
    /// blank check.
    Format { dev: Device, held: Held },
}

/// What is held on a blank device from its blank check to `mkfs`: the
/// whole disk's `flock`, and an `O_EXCL` open (both absent in `--check`).
struct Held {
    _lock: Option<DeviceLock>,
    exclusive: Option<std::fs::File>,
}

/// A filesystem smaller than its device.
struct Grow {
    dev: Device,
    fs_size: u64,
}

impl Grow {
    fn what(&self, fstype: FsType) -> String {
        format!(
            "{fstype} filesystem from {} MiB to fill {} MiB",
            self.fs_size >> 20,
            self.dev.size >> 20
        )
    }
}

impl EnsureFs {
    fn one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let pending = cx.check && rec.is_check();
        if !pending {
            discover::fill_device(rec, DEVICE_WAIT)?;
        }
        match self.plan(rec, pending, cx)? {
            Plan::Pending(what) => Ok(Outcome::changed(State::Formatted, what)),
            plan if cx.check => Ok(self.describe(&plan)),
            plan => self.apply(rec, plan),
        }
    }

    /// Checks the record against its device: the device is the record's
    /// disk, a filesystem the record names is there, the device is blank or
    /// holds the wanted filesystem (anything else is a refusal). Changes
    /// nothing.
    fn plan(&self, rec: &mut Record, pending: bool, cx: Ctx) -> Result<Plan, Failure> {
        let want = self.options.fstype;
        let Some(device) = rec.device.clone() else {
            if pending {
                return Ok(Plan::Pending(format!(
                    "would format the disk as {want} once it is attached"
                )));
            }
            return Err(Failure::new(
                codes::NO_DEVICE,
                "the record has no `device`: run disk-attach first, or pass --device",
            ));
        };
        let path = Path::new(&device);
        let dev = match Device::open(path) {
            Err(BlockError::Missing(_) | BlockError::NoMedia(_)) if pending => {
                return Ok(Plan::Pending(format!(
                    "would format {device} as {want} once it is attached"
                )));
            }
            r => r.map_err(block_failure)?,
        };
        verify_claimed_device(rec, &dev)?;
        let named = named_fs(rec);
        if let Some(m) = mount::read_table()?.by_device(dev.major, dev.minor).first() {
            return self.mounted(rec, device, dev.clone(), m);
        }
        // Held from the blank check to mkfs (not in --check).
        let held = if cx.check {
            Held {
                _lock: None,
                exclusive: None,
            }
        } else {
            let lock = DeviceLock::take(&dev.whole_disk().map_err(block_failure)?)?;
            same_device(&dev, "while it was being locked")?;
            // Held exclusively by someone else (LVM, RAID, dm-crypt): the
            // assessment below says by whom, and it is never formatted.
            let exclusive = match blockdev::open_exclusive(&dev.real) {
                Ok(f) => Some(f),
                Err(BlockError::Busy(..)) => None,
                Err(e) => return Err(block_failure(e)),
            };
            Held {
                _lock: Some(lock),
                exclusive,
            }
        };
        let assessment = match &held.exclusive {
            Some(f) => blockdev::assess_file(&dev, f),
            None => blockdev::assess(path),
        };
        if !cx.check && held.exclusive.is_none() && matches!(assessment, Ok(Assessment::Blank)) {
            return Err(block_failure(BlockError::Busy(
                dev.path.clone(),
                std::io::Error::from_raw_os_error(nix::libc::EBUSY),
            )));
        }
        match assessment.map_err(block_failure)? {
            Assessment::NotBlank(what) => Err(Failure::refused(
                codes::NOT_BLANK,
                format!("{device} is not blank ({what}): refusing to format it"),
            )),
            Assessment::Filesystem(p) if p.fstype() != Some(want.as_str()) => {
                Err(Failure::refused(
                    codes::FS_MISMATCH,
                    format!(
                        "{device} already holds a filesystem of type {} ({want} was asked): refusing to reformat it",
                        p.fstype().unwrap_or("unknown")
                    ),
                ))
            }
            Assessment::Filesystem(p)
                if rec
                    .fs
                    .as_ref()
                    .and_then(|f| f.uuid.as_deref())
                    .is_some_and(|u| Some(u) != p.uuid()) =>
            {
                Err(Failure::new(
                    codes::IDENTITY_MISMATCH,
                    format!(
                        "{device} holds {} UUID={}, but the record names {}: the device is not the disk the record was made for",
                        p.fstype().unwrap_or("?"),
                        p.uuid().unwrap_or("?"),
                        named.unwrap_or_default()
                    ),
                ))
            }
            Assessment::Filesystem(probe) => {
                // Keep `formatted` from an earlier run of this tool in the
                // same flow (a rerun after a crash).
                let formatted = rec
                    .fs
                    .as_ref()
                    .is_some_and(|f| f.formatted && f.uuid.as_deref() == probe.uuid());
                rec.fs = Some(fs_of(&probe, formatted));
                let grow = if self.options.grow {
                    let fs_size = filesystem::size(path, want)
                        .map_err(|e| Failure::new(codes::GROW_FAILED, format!("{device}: {e}")))?;
                    (dev.size > fs_size + GROW_SLACK).then_some(Grow { dev, fs_size })
                } else {
                    None
                };
                Ok(Plan::HasFs {
                    device,
                    probe,
                    grow,
                })
            }
            Assessment::Blank if named.is_some() => Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!(
                    "the record says {device} holds {}, but it now reads blank: the device changed between steps; not formatting it",
                    named.unwrap_or_default()
                ),
            )),
            Assessment::Blank => Ok(Plan::Format { dev, held }),
        }
    }

    /// The plan for a device the kernel has mounted: its superblock, read
    /// in-process, names the filesystem; the mount says its type.
    fn mounted(
        &self,
        rec: &mut Record,
        device: String,
        dev: Device,
        m: &mount::Entry,
    ) -> Result<Plan, Failure> {
        let want = self.options.fstype;
        if m.fstype != want.as_str() {
            return Err(Failure::refused(
                codes::FS_MISMATCH,
                format!(
                    "{device} is mounted on {} as {} ({want} was asked): refusing to reformat it",
                    m.target.display(),
                    m.fstype
                ),
            ));
        }
        let sb = blockdev::read_superblock(&dev.real)
            .map_err(block_failure)?
            .ok_or_else(|| {
                Failure::new(
                    codes::PROBE_FAILED,
                    format!(
                        "{device} is mounted as {want}, but its superblock does not read as one"
                    ),
                )
            })?;
        let probe = Probe::from_superblock(&sb);
        if let Some(u) = rec.fs.as_ref().and_then(|f| f.uuid.as_deref())
            && u != sb.uuid
        {
            return Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!(
                    "{device} holds {want} UUID={}, but the record names UUID={u}: the device is not the disk the record was made for",
                    sb.uuid
                ),
            ));
        }
        let formatted = rec
            .fs
            .as_ref()
            .is_some_and(|f| f.formatted && f.uuid.as_deref() == Some(sb.uuid.as_str()));
        rec.fs = Some(fs_of(&probe, formatted));
        let grow = if self.options.grow {
            let fs_size = filesystem::size(&dev.real, want)
                .map_err(|e| Failure::new(codes::GROW_FAILED, format!("{device}: {e}")))?;
            (dev.size > fs_size + GROW_SLACK).then_some(Grow { dev, fs_size })
        } else {
            None
        };
        Ok(Plan::HasFs {
            device,
            probe,
            grow,
        })
    }

    /// What applying `plan` would do (`--check`).
    fn describe(&self, plan: &Plan) -> Outcome {
        let want = self.options.fstype;
        match plan {
            Plan::Pending(what) => Outcome::changed(State::Formatted, what.clone()),
            Plan::HasFs {
                device,
                probe,
                grow: None,
            } => Outcome::unchanged(
                State::HasFs,
                format!(
                    "{device} already holds {want} (UUID={})",
                    probe.uuid().unwrap_or("?")
                ),
            ),
            Plan::HasFs { grow: Some(g), .. } => {
                Outcome::changed(State::HasFs, format!("would grow the {}", g.what(want)))
            }
            Plan::Format { dev, .. } => Outcome::changed(
                State::Formatted,
                format!(
                    "would format blank {} as {want} (label {})",
                    dev.path.display(),
                    self.options.label
                ),
            ),
        }
    }

    /// Does what `plan` says.
    fn apply(&self, rec: &mut Record, plan: Plan) -> StepResult {
        match plan {
            Plan::Format { dev, held } => self.format(rec, &dev, held),
            Plan::HasFs { grow: Some(g), .. } => {
                self.grow(&g)?;
                Ok(Outcome::changed(
                    State::HasFs,
                    format!("grew the {}", g.what(self.options.fstype)),
                ))
            }
            plan => Ok(self.describe(&plan)),
        }
    }

    /// Formats the blank device `dev`, whose blank check ran while `held`
    /// was held: the exclusive open is let go right before mkfs (which opens
    /// the device exclusively itself), the device lock right after.
    fn format(&self, rec: &mut Record, dev: &Device, held: Held) -> StepResult {
        let want = self.options.fstype;
        let device = dev.path.display().to_string();
        // The resolved node, never a link that could be re-pointed.
        let node = dev.real.clone();
        let uuid = filesystem::new_uuid()
            .map_err(|e| Failure::new(codes::MKFS_FAILED, format!("choosing a UUID: {e}")))?;
        seed::mark_fresh(&uuid).map_err(|e| {
            Failure::new(
                codes::RUN_STATE,
                format!("writing /run/appscale-persist/fresh/{uuid}: {e}; nothing was formatted"),
            )
        })?;
        let Held { _lock, exclusive } = held;
        drop(exclusive);
        let made = filesystem::mkfs(
            &node,
            want,
            &self.options.label,
            &uuid,
            &self.options.mkfs_options,
        )
        .map_err(|e| Failure::new(codes::MKFS_FAILED, e.to_string()))
        .and_then(|()| {
            same_device(dev, "while mkfs ran").map_err(|f| Failure {
                message: format!(
                    "{}: mkfs ran on whatever the node was then; look at both devices before anything else",
                    f.message
                ),
                ..f
            })
        });
        drop(_lock);
        if let Err(f) = made {
            seed::clear_fresh(&uuid);
            return Err(f);
        }
        // mkfs said it made it; the superblock must say so too.
        let sb = blockdev::read_superblock(&node)
            .map_err(block_failure)?
            .filter(|sb| sb.fstype == want.as_str() && sb.uuid == uuid)
            .ok_or_else(|| {
                Failure::new(
                    codes::MKFS_FAILED,
                    format!("{device}: no {want} filesystem with UUID {uuid} found after mkfs"),
                )
            })?;
        rec.fs = Some(fs_of(&Probe::from_superblock(&sb), true));
        Ok(Outcome::changed(
            State::Formatted,
            format!(
                "formatted blank {device} as {want} (UUID={uuid}, label {})",
                self.options.label
            ),
        ))
    }

    /// Grows the filesystem to fill its device: online when it is mounted,
    /// else offline (ext4) or through a temporary mount (XFS grows only
    /// online).
    fn grow(&self, g: &Grow) -> Result<(), Failure> {
        let fstype = self.options.fstype;
        let path = g.dev.path.as_path();
        let failed = |e: &dyn std::fmt::Display| {
            Failure::new(codes::GROW_FAILED, format!("{}: {e}", path.display()))
        };
        let mounted = mount::read_table()?
            .by_device(g.dev.major, g.dev.minor)
            .first()
            .map(|m| m.target.clone());
        if mounted.is_none() {
            discover::wait_unheld(&g.dev)?;
        }
        match (fstype, mounted) {
            (_, Some(at)) => filesystem::grow(path, fstype, Some(&at)).map_err(|e| failed(&e)),
            (FsType::Ext4, None) => filesystem::grow(path, fstype, None).map_err(|e| failed(&e)),
            (FsType::Xfs, None) => {
                let tmp = TempMount::new(path, g.dev.major, g.dev.minor, fstype.as_str())
                    .map_err(|e| failed(&e))?;
                filesystem::grow(path, fstype, Some(tmp.path())).map_err(|e| failed(&e))?;
                tmp.finish().map_err(|e| failed(&e))
            }
        }
    }
}
