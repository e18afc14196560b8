//! `disk-ensure-fs`: format a device only if it is truly blank.
//!
//! The decision is [`crate::blockdev::assess`]'s; this step only acts on it:
//! a wanted filesystem already there is `has-fs` (unchanged), another
//! filesystem or any other data is a refusal, and a blank device is assessed
//! once more under an exclusive open right before `mkfs`.

use std::path::Path;

use crate::blockdev::{self, Assessment, BlockError, Probe};
use crate::filesystem::{self, FsType};
use crate::mount::{self, TempMount};
use crate::provider::discover::{self, DEVICE_WAIT};
use crate::record::{Fs, Record, State};
use crate::tool::{Ctx, Failure, Outcome, Step, StepResult, one_by_one};

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
        one_by_one(records, |r| self.one(r, cx))
    }
}

fn block_failure(e: BlockError) -> Failure {
    let code = match &e {
        BlockError::Missing(_) => "no-such-device",
        BlockError::NotBlock(_) => "not-a-block-device",
        BlockError::NoMedia(_) => "no-media",
        BlockError::Busy(..) => "device-busy",
        BlockError::Io(..) => "device-unreadable",
        BlockError::Tool(_) => "probe-failed",
    };
    Failure::new(code, format!("{e}; not formatting"))
}

fn fs_of(p: &Probe, formatted: bool) -> Fs {
    Fs {
        fstype: p.fstype().unwrap_or_default().to_string(),
        uuid: p.uuid().map(str::to_string),
        label: p.label().map(str::to_string),
        formatted,
    }
}

impl EnsureFs {
    fn one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let want = self.options.fstype;
        if !(cx.check && rec.is_check()) {
            discover::fill_device(rec, DEVICE_WAIT)?;
        }
        let Some(device) = rec.device.clone() else {
            if cx.check && rec.is_check() {
                return Ok(Outcome::changed(
                    State::Formatted,
                    format!("would format the disk as {want} once it is attached"),
                ));
            }
            return Err(Failure::new(
                "no-device",
                "the record has no `device`: run disk-attach first, or pass --device",
            ));
        };
        let path = Path::new(&device);
        match blockdev::assess(path) {
            Err(BlockError::Missing(_) | BlockError::NoMedia(_)) if cx.check && rec.is_check() => {
                Ok(Outcome::changed(
                    State::Formatted,
                    format!("would format {device} as {want} once it is attached"),
                ))
            }
            Err(e) => Err(block_failure(e)),
            Ok(Assessment::NotBlank(what)) => Err(Failure::refused(
                "not-blank",
                format!("{device} is not blank ({what}): refusing to format it"),
            )),
            Ok(Assessment::Filesystem(p)) if p.fstype() != Some(want.as_str()) => {
                Err(Failure::refused(
                    "fs-mismatch",
                    format!(
                        "{device} already holds a filesystem of type {} ({want} was asked): refusing to reformat it",
                        p.fstype().unwrap_or("unknown")
                    ),
                ))
            }
            Ok(Assessment::Filesystem(p)) => {
                // Keep `formatted` from an earlier run of this tool in the
                // same flow (a rerun after a crash), so `--seed` still knows.
                let formatted = rec
                    .fs
                    .as_ref()
                    .is_some_and(|f| f.formatted && f.uuid.as_deref() == p.uuid());
                rec.fs = Some(fs_of(&p, formatted));
                let mut outcome = Outcome::unchanged(
                    State::HasFs,
                    format!(
                        "{device} already holds {want} (UUID={})",
                        p.uuid().unwrap_or("?")
                    ),
                );
                if self.options.grow
                    && let Some(grown) = self.grow(path, want, cx)?
                {
                    outcome = Outcome::changed(State::HasFs, grown);
                }
                Ok(outcome)
            }
            Ok(Assessment::Blank) if cx.check => Ok(Outcome::changed(
                State::Formatted,
                format!(
                    "would format blank {device} as {want} (label {})",
                    self.options.label
                ),
            )),
            Ok(Assessment::Blank) => self.format(rec, path, want),
        }
    }

    fn format(&self, rec: &mut Record, path: &Path, want: FsType) -> StepResult {
        let device = path.display().to_string();
        // Once more, holding the device exclusively: nothing may have
        // mounted, claimed or written it since the first look.
        let (again, exclusive) = blockdev::assess_exclusive(path).map_err(block_failure)?;
        if again != Assessment::Blank {
            return Err(Failure::refused(
                "not-blank",
                format!("{device} changed while being checked ({again:?}): refusing to format it"),
            ));
        }
        drop(exclusive);
        filesystem::mkfs(path, want, &self.options.label, &self.options.mkfs_options)
            .map_err(|e| Failure::new("mkfs-failed", e.to_string()))?;
        let probe = blockdev::probe(path)
            .map_err(block_failure)?
            .filter(|p| p.fstype() == Some(want.as_str()))
            .ok_or_else(|| {
                Failure::new(
                    "mkfs-failed",
                    format!("{device}: no {want} filesystem found after mkfs"),
                )
            })?;
        rec.fs = Some(fs_of(&probe, true));
        Ok(Outcome::changed(
            State::Formatted,
            format!(
                "formatted blank {device} as {want} (UUID={}, label {})",
                probe.uuid().unwrap_or("?"),
                self.options.label
            ),
        ))
    }

    /// Grows the filesystem when its device is larger; returns what was done.
    fn grow(&self, path: &Path, fstype: FsType, cx: Ctx) -> Result<Option<String>, Failure> {
        let failed = |e: &dyn std::fmt::Display| {
            Failure::new("grow-failed", format!("{}: {e}", path.display()))
        };
        let dev = blockdev::Device::open(path).map_err(block_failure)?;
        let fs_size = filesystem::size(path, fstype).map_err(|e| failed(&e))?;
        if dev.size <= fs_size + GROW_SLACK {
            return Ok(None);
        }
        let what = format!(
            "{} filesystem from {} MiB to fill {} MiB",
            fstype,
            fs_size >> 20,
            dev.size >> 20
        );
        if cx.check {
            return Ok(Some(format!("would grow the {what}")));
        }
        let table = mount::Table::read().map_err(|e| failed(&e))?;
        let mounted = table
            .by_device(dev.major, dev.minor)
            .first()
            .map(|m| m.target.clone());
        match (fstype, mounted) {
            (_, Some(at)) => filesystem::grow(path, fstype, Some(&at)).map_err(|e| failed(&e))?,
            (FsType::Ext4, None) => filesystem::grow(path, fstype, None).map_err(|e| failed(&e))?,
            (FsType::Xfs, None) => {
                let tmp = TempMount::new(path, dev.major, dev.minor, fstype.as_str())
                    .map_err(|e| failed(&e))?;
                filesystem::grow(path, fstype, Some(tmp.path())).map_err(|e| failed(&e))?;
                tmp.finish().map_err(|e| failed(&e))?;
            }
        }
        Ok(Some(format!("grew the {what}")))
    }
}
