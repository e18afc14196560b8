//! `disk-mount`: mount a record's filesystem at its mountpoint, idempotently,
//! with an fstab entry that is taken back if the mount fails.
//!
//! Each record is handled under the node lock ([`crate::lock`]): the device
//! is checked to be the record's disk and to hold the record's filesystem,
//! the mountpoint to be free (or already ours), then the fstab line is added
//! to the file as it is now, `fsck -a` runs, the mountpoint is seeded if it
//! may be ([`crate::seed`]), and the filesystem is mounted. Any failure after
//! the fstab line was added unmounts whatever this run mounted and removes
//! that line, and only that line ([`fstab::Applied::undo`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blockdev::{self, Device};
use crate::filesystem::{self, FsType, Fsck};
use crate::fstab::{self, Applied, Fstab};
use crate::lock::NodeLock;
use crate::log;
use crate::mount::{self, MountError};
use crate::provider::discover::{self, DEVICE_WAIT};
use crate::provider::verify_claimed_device;
use crate::record::{Fs, Record, State};
use crate::seed::{self, Seeded};
use crate::step::{Ctx, Diff, Failure, Outcome, Step, StepResult, one_by_one};

/// Options for [`Mount`].
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Mountpoint for records that name none.
    pub mountpoint: Option<String>,
    /// Mount options (`noatime`).
    pub options: String,
    /// The fstab to keep our entry in; `None` leaves fstab alone.
    pub fstab: Option<PathBuf>,
    /// `x-systemd.device-timeout` for the fstab entry, in seconds.
    pub device_timeout: u32,
    /// Copy what the mountpoint holds onto a new, empty filesystem first.
    pub seed: bool,
    /// Run `fsck -a` on ext4 before a read-write mount.
    pub fsck: bool,
}

/// The `disk-mount` step.
#[derive(Debug)]
pub struct Mount {
    /// Its options.
    pub options: MountOptions,
}

impl Step for Mount {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)> {
        one_by_one(records, |r| self.one(r, cx))
    }
}

/// The record's mountpoint (or the flag's, or the default), checked.
pub fn resolve_mountpoint(rec: &mut Record, flag: Option<&str>) -> Result<PathBuf, Failure> {
    if rec.mountpoint.is_none() {
        rec.mountpoint = flag.map(str::to_string);
    }
    let mp = mount::check_mountpoint(rec.mountpoint())
        .map_err(|e| Failure::new("bad-mountpoint", e.to_string()))?;
    rec.mountpoint = Some(mp.display().to_string());
    Ok(mp)
}

/// Opens the record's device, mapping errors to failures.
pub fn open_device(device: &str) -> Result<Device, Failure> {
    Device::open(Path::new(device)).map_err(|e| {
        let code = match e {
            blockdev::BlockError::Missing(_) => "no-such-device",
            blockdev::BlockError::NoMedia(_) => "no-media",
            _ => "device-unusable",
        };
        Failure::new(code, e.to_string())
    })
}

/// How many entries a directory holds (0 when it cannot be read).
pub fn entries_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

impl Mount {
    fn entry(&self, uuid: &str, mp: &Path, fstype: &str) -> fstab::Entry {
        fstab::Entry::ours(
            uuid,
            &mp.display().to_string(),
            fstype,
            &self.options.options,
            self.options.device_timeout,
        )
    }

    /// What adding our entry would change, for `--check`.
    fn would_add(&self, entry: &fstab::Entry) -> Result<Option<Diff>, Failure> {
        let Some(path) = &self.options.fstab else {
            return Ok(None);
        };
        let tab = Fstab::load(path)?;
        Ok(tab.with_entry(entry)?.map(|after| Diff {
            path: tab.path.display().to_string(),
            before: tab.text.clone(),
            after,
        }))
    }

    fn one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let mp = resolve_mountpoint(rec, self.options.mountpoint.as_deref())?;
        let pending = cx.check && rec.is_check();
        if !pending {
            discover::fill_device(rec, DEVICE_WAIT)?;
        }
        let Some(device) = rec.device.clone() else {
            if pending {
                return Ok(Outcome::changed(
                    State::Mounted,
                    format!("would mount the new filesystem on {}", mp.display()),
                ));
            }
            return Err(Failure::new(
                "no-device",
                "the record has no `device`: run disk-attach first, or pass --device",
            ));
        };
        let _lock = NodeLock::take(cx.check)?;
        let dev = match open_device(&device) {
            Err(_) if pending => {
                return Ok(Outcome::changed(
                    State::Mounted,
                    format!("would mount {device} on {} once it exists", mp.display()),
                ));
            }
            r => r?,
        };
        verify_claimed_device(rec, &dev)?;
        let probe =
            blockdev::probe(&dev.path).map_err(|e| Failure::new("probe-failed", e.to_string()))?;
        let Some(probe) = probe.filter(|p| p.usage() == Some("filesystem")) else {
            if pending {
                return Ok(Outcome::changed(
                    State::Mounted,
                    format!("would mount {device} on {} once formatted", mp.display()),
                ));
            }
            return Err(Failure::new(
                "no-filesystem",
                format!("{device} holds no filesystem: run disk-ensure-fs first"),
            ));
        };
        let fstype = probe.fstype().unwrap_or_default().to_string();
        let uuid = probe.uuid().unwrap_or_default().to_string();
        // Identity: the device must hold the filesystem the record names.
        if let Some(fs) = &rec.fs {
            if fs.uuid.as_deref().is_some_and(|u| u != uuid)
                || (!fs.fstype.is_empty() && fs.fstype != fstype)
            {
                return Err(Failure::new(
                    "identity-mismatch",
                    format!(
                        "{device} holds {fstype} UUID={uuid}, but the record names {} UUID={}: not mounting a disk that may not be this node's",
                        fs.fstype,
                        fs.uuid.as_deref().unwrap_or("?")
                    ),
                ));
            }
        } else {
            rec.fs = Some(Fs {
                fstype: fstype.clone(),
                uuid: Some(uuid.clone()),
                label: probe.label().map(str::to_string),
                formatted: false,
            });
        }

        if !cx.check {
            mount::reap_stale_temp_mounts(dev.major, dev.minor);
        }
        let table = mount::Table::read().map_err(|e| Failure::new("mount-table", e.to_string()))?;
        let here = table.at(&mp).cloned();
        let ours_here = here
            .as_ref()
            .is_some_and(|e| (e.major, e.minor) == (dev.major, dev.minor));
        if let (Some(e), false) = (&here, ours_here) {
            return Err(Failure::new(
                "mountpoint-busy",
                format!(
                    "{} already has {} ({}) mounted on it",
                    mp.display(),
                    e.source,
                    e.fstype
                ),
            ));
        }
        if !ours_here && let Some(e) = table.by_device(dev.major, dev.minor).first() {
            return Err(Failure::new(
                "mounted-elsewhere",
                format!(
                    "{device} is already mounted on {}; unmount it there first",
                    e.target.display()
                ),
            ));
        }
        let entry = self.entry(&uuid, &mp, &fstype);

        if cx.check {
            let diff = self.would_add(&entry)?;
            let mut what = vec![if ours_here {
                format!("{device} is already mounted on {}", mp.display())
            } else {
                format!(
                    "would mount {device} ({fstype} UUID={uuid}) on {}",
                    mp.display()
                )
            }];
            if let Some(d) = &diff {
                what.push(format!("would add its entry to {}", d.path));
            }
            let held = entries_in(&mp);
            if !ours_here && held > 0 {
                if self.options.seed {
                    what.push(format!(
                        "copy what {} holds onto it if this flow formatted it and it is empty",
                        mp.display()
                    ));
                } else {
                    what.push(format!(
                        "it would hide the {held} entries {} holds",
                        mp.display()
                    ));
                }
            }
            let mut o = if ours_here && diff.is_none() {
                Outcome::unchanged(State::Mounted, what.join(", "))
            } else {
                Outcome::changed(State::Mounted, what.join(", "))
            };
            o.diff = diff;
            return Ok(o);
        }

        if ours_here {
            seed::clear_fresh(&uuid);
            let applied = self.add_entry(&entry)?;
            let mut outcome = Outcome::unchanged(
                State::Mounted,
                format!("{device} is already mounted on {}", mp.display()),
            );
            if let Some(a) = applied.filter(Applied::changed) {
                outcome = Outcome::changed(
                    State::Mounted,
                    format!(
                        "{device} is already mounted on {}; added its entry to {}",
                        mp.display(),
                        a.path.display()
                    ),
                );
                outcome.diff = Some(diff_of(&a));
            }
            return Ok(outcome);
        }

        std::fs::create_dir_all(&mp).map_err(|e| {
            Failure::new("bad-mountpoint", format!("creating {}: {e}", mp.display()))
        })?;
        let applied = self.add_entry(&entry)?;
        let before = table;
        // From here on, any failure takes back what this run did.
        let undo = |f: Failure| -> Failure { undo(f, &before, &dev, applied.as_ref()) };
        let read_only = self.options.options.split(',').any(|o| o == "ro");
        let mut notes = Vec::new();
        if self.options.fsck && !read_only && fstype == "ext4" {
            match filesystem::fsck(&dev.path, FsType::Ext4) {
                Ok(Fsck::Clean { fixed: true }) => notes.push("fsck fixed errors".to_string()),
                Ok(Fsck::Clean { fixed: false }) => {}
                Ok(Fsck::Uncorrected { code, output }) => {
                    return Err(undo(Failure::new(
                        "fsck-failed",
                        format!(
                            "fsck.ext4 -a {device} left errors uncorrected (exit {code}), not mounting: {output}"
                        ),
                    )));
                }
                Ok(Fsck::Interrupted { how }) => {
                    return Err(undo(Failure::new(
                        "fsck-interrupted",
                        format!(
                            "fsck.ext4 -a {device} was {how}: it may have stopped half-way through a repair; not mounting. Run `fsck.ext4 -f {device}` by hand, then this step again"
                        ),
                    )));
                }
                Err(e) => return Err(undo(Failure::new("fsck-failed", e.to_string()))),
            }
        }
        let held = entries_in(&mp);
        let mut seeded = false;
        if self.options.seed && held > 0 {
            let may_start = seed::is_fresh(&uuid)
                || rec
                    .fs
                    .as_ref()
                    .is_some_and(|f| f.formatted && f.uuid.as_deref() == Some(uuid.as_str()));
            match seed::seed(&dev, &fstype, &mp, may_start) {
                Ok(Seeded::Copied(n)) => {
                    seeded = true;
                    notes.push(format!("seeded it with {n} entries from {}", mp.display()));
                }
                Ok(Seeded::Finished(n)) => {
                    seeded = true;
                    notes.push(format!(
                        "finished an interrupted seed ({n} entries moved into place)"
                    ));
                }
                Ok(Seeded::Nothing) => {}
                Err(e) => return Err(undo(e.into())),
            }
        }
        if let Err(e) = mount::mount(
            &dev.path,
            (dev.major, dev.minor),
            &mp,
            &fstype,
            &self.options.options,
        ) {
            let code = match e {
                MountError::Table(_) => "mount-table",
                _ => "mount-failed",
            };
            return Err(undo(Failure::new(code, e.to_string())));
        }
        seed::clear_fresh(&uuid);
        if held > 0 && !seeded {
            log::warn(format_args!(
                "{}: mounting over {} hides {held} entries it holds (they stay there, under the mount; unmount to see them)",
                rec.label(),
                mp.display()
            ));
        }
        let mut message = format!(
            "mounted {device} ({fstype} UUID={uuid}) on {}",
            mp.display()
        );
        if let Some(a) = applied.as_ref().filter(|a| a.changed()) {
            message.push_str(&format!(", entry added to {}", a.path.display()));
        }
        for n in notes {
            message.push_str(", ");
            message.push_str(&n);
        }
        let mut o = Outcome::changed(State::Mounted, message);
        o.diff = applied.as_ref().filter(|a| a.changed()).map(diff_of);
        Ok(o)
    }

    /// Adds our entry to the fstab (when one is kept).
    fn add_entry(&self, entry: &fstab::Entry) -> Result<Option<Applied>, Failure> {
        match &self.options.fstab {
            None => Ok(None),
            Some(path) => Ok(Some(fstab::add(path, entry)?)),
        }
    }
}

fn diff_of(a: &Applied) -> Diff {
    Diff {
        path: a.path.display().to_string(),
        before: a.before.clone(),
        after: a.after.clone(),
    }
}

/// Takes back what a failed mount did: unmounts every mount of `dev` that
/// was not in `before`, and undoes the fstab change; says so in the
/// failure's message.
fn undo(f: Failure, before: &mount::Table, dev: &Device, applied: Option<&Applied>) -> Failure {
    let mut said = Vec::new();
    if let Ok(now) = mount::Table::read() {
        let old: Vec<&Path> = before
            .by_device(dev.major, dev.minor)
            .iter()
            .map(|e| e.target.as_path())
            .collect();
        for e in now.by_device(dev.major, dev.minor) {
            if old.contains(&e.target.as_path()) {
                continue;
            }
            match mount::unmount(&e.target, dev.major, dev.minor, false) {
                Ok(()) => said.push(format!("unmounted it from {}", e.target.display())),
                Err(err) => said.push(format!(
                    "unmounting it from {} also failed: {err}",
                    e.target.display()
                )),
            }
        }
    }
    if let Some(a) = applied.filter(|a| a.changed()) {
        match a.undo() {
            Ok(()) => said.push(format!("its entry removed from {}", a.path.display())),
            Err(e) => said.push(format!(
                "removing its entry from {} also failed: {e}",
                a.path.display()
            )),
        }
    }
    if said.is_empty() {
        return f;
    }
    Failure {
        message: format!("{} ({})", f.message, said.join("; ")),
        ..f
    }
}
