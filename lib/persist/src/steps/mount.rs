//! `disk-mount`: mount a record's filesystem at its mountpoint, idempotently,
//! with an fstab entry that is rolled back if the mount fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blockdev::{self, Device};
use crate::filesystem::{self, FsType, Fsck};
use crate::fstab::{self, Fstab};
use crate::mount::{self, TempMount};
use crate::provider::discover::{self, DEVICE_WAIT};
use crate::record::{Fs, Record, State};
use crate::run::Cmd;
use crate::tool::{Ctx, Diff, Failure, Outcome, Step, StepResult, one_by_one};

/// Left on a new disk while `--seed` copies onto it; found on a later run,
/// it means the copy was interrupted and is redone.
pub const SEED_MARKER: &str = ".appscale-persist-seeding";

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
    /// Copy what the mountpoint holds onto an empty new filesystem first.
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

impl Mount {
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
        let dev = match open_device(&device) {
            Err(_) if pending => {
                return Ok(Outcome::changed(
                    State::Mounted,
                    format!("would mount {device} on {} once it exists", mp.display()),
                ));
            }
            r => r?,
        };
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

        mount::reap_stale_temp_mounts(dev.major, dev.minor);
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

        // The fstab entry we want, and the text with it.
        let fstab_change = match &self.options.fstab {
            None => None,
            Some(path) => {
                let tab = Fstab::load(path).map_err(|e| Failure::new("fstab", e.to_string()))?;
                let entry = fstab::Entry::ours(
                    &uuid,
                    &mp.display().to_string(),
                    &fstype,
                    &self.options.options,
                    self.options.device_timeout,
                );
                tab.with_entry(&entry)
                    .map_err(|e| Failure::new("fstab-conflict", e.to_string()))?
                    .map(|new| (tab, new))
            }
        };
        let diff = fstab_change.as_ref().map(|(tab, new)| Diff {
            path: tab.path.display().to_string(),
            before: tab.text.clone(),
            after: new.clone(),
        });

        if ours_here {
            let mut outcome = Outcome::unchanged(
                State::Mounted,
                format!("{device} is already mounted on {}", mp.display()),
            );
            if let Some((tab, new)) = &fstab_change {
                if !cx.check {
                    tab.replace(new)
                        .map_err(|e| Failure::new("fstab", e.to_string()))?;
                }
                outcome = Outcome::changed(
                    State::Mounted,
                    format!(
                        "{device} is already mounted on {}; {} its entry in {}",
                        mp.display(),
                        if cx.check { "would add" } else { "added" },
                        tab.path.display()
                    ),
                );
            }
            outcome.diff = diff;
            return Ok(outcome);
        }

        if cx.check {
            let mut what = vec![format!(
                "would mount {device} ({fstype} UUID={uuid}) on {}",
                mp.display()
            )];
            if let Some((tab, _)) = &fstab_change {
                what.push(format!("add it to {}", tab.path.display()));
            }
            if self.options.seed && dir_has_entries(&mp) {
                what.push(format!(
                    "copy what {} holds onto it if it is empty",
                    mp.display()
                ));
            }
            let mut o = Outcome::changed(State::Mounted, what.join(", "));
            o.diff = diff;
            return Ok(o);
        }

        std::fs::create_dir_all(&mp).map_err(|e| {
            Failure::new("bad-mountpoint", format!("creating {}: {e}", mp.display()))
        })?;
        if let Some((tab, new)) = &fstab_change {
            tab.replace(new)
                .map_err(|e| Failure::new("fstab", e.to_string()))?;
        }
        // From here on, any failure puts the fstab back as it was.
        let rollback = |f: Failure| -> Failure {
            match &fstab_change {
                Some((tab, _)) => match tab.restore() {
                    Ok(()) => Failure {
                        message: format!("{} ({} restored)", f.message, tab.path.display()),
                        ..f
                    },
                    Err(e) => Failure {
                        message: format!(
                            "{}; restoring {} also failed: {e}",
                            f.message,
                            tab.path.display()
                        ),
                        ..f
                    },
                },
                None => f,
            }
        };
        let read_only = self.options.options.split(',').any(|o| o == "ro");
        let mut notes = Vec::new();
        if self.options.fsck && !read_only && fstype == "ext4" {
            match filesystem::fsck(&dev.path, FsType::Ext4) {
                Ok(Fsck::Clean { fixed: true }) => notes.push("fsck fixed errors".to_string()),
                Ok(Fsck::Clean { fixed: false }) => {}
                Ok(Fsck::Uncorrected { code, output }) => {
                    return Err(rollback(Failure::new(
                        "fsck-failed",
                        format!(
                            "fsck.ext4 -a {device} left errors uncorrected (exit {code}), not mounting: {output}"
                        ),
                    )));
                }
                Err(e) => return Err(rollback(Failure::new("fsck-failed", e.to_string()))),
            }
        }
        if self.options.seed && dir_has_entries(&mp) {
            match seed(&dev, &fstype, &mp) {
                Ok(Some(n)) => {
                    notes.push(format!("seeded it with {n} entries from {}", mp.display()))
                }
                Ok(None) => {}
                Err(f) => return Err(rollback(f)),
            }
        }
        if let Err(e) = mount::mount(&dev.path, &mp, &fstype, &self.options.options) {
            return Err(rollback(Failure::new("mount-failed", e.to_string())));
        }
        let now = mount::Table::read().map_err(|e| Failure::new("mount-table", e.to_string()))?;
        if now
            .at(&mp)
            .is_none_or(|e| (e.major, e.minor) != (dev.major, dev.minor))
        {
            return Err(Failure::new(
                "mount-failed",
                format!(
                    "mount reported success but {} does not show {device}",
                    mp.display()
                ),
            ));
        }
        let mut message = format!(
            "mounted {device} ({fstype} UUID={uuid}) on {}",
            mp.display()
        );
        if let Some((tab, _)) = &fstab_change {
            message.push_str(&format!(", entry added to {}", tab.path.display()));
        }
        for n in notes {
            message.push_str(", ");
            message.push_str(&n);
        }
        let mut o = Outcome::changed(State::Mounted, message);
        o.diff = diff;
        Ok(o)
    }
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// Copies the mountpoint's files onto the filesystem, if it is empty (only
/// `lost+found`) or an earlier copy was interrupted. Returns how many
/// entries were copied, or `None` when the filesystem already holds data.
fn seed(dev: &Device, fstype: &str, mp: &Path) -> Result<Option<usize>, Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new("seed-failed", format!("seeding from {}: {e}", mp.display()))
    };
    let tmp = TempMount::new(&dev.path, dev.major, dev.minor, fstype).map_err(|e| fail(&e))?;
    let root = tmp.path().to_path_buf();
    let names: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| fail(&e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let interrupted = names.iter().any(|n| n == SEED_MARKER);
    let empty = names.iter().all(|n| n == "lost+found");
    if !(empty || interrupted) {
        tmp.finish().map_err(|e| fail(&e))?;
        return Ok(None);
    }
    if interrupted {
        // Our own half-finished copy onto a disk that was empty: start over.
        for n in names
            .iter()
            .filter(|n| *n != "lost+found" && *n != SEED_MARKER)
        {
            let p = root.join(n);
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| fail(&e))?;
        }
    }
    let marker = root.join(SEED_MARKER);
    std::fs::write(&marker, b"appscale-persist: copy in progress\n").map_err(|e| fail(&e))?;
    let mut src = mp.as_os_str().to_owned();
    src.push("/.");
    Cmd::new("cp")
        .args(["-a", "--"])
        .arg(&src)
        .arg(&root)
        .timeout(Duration::from_secs(6 * 60 * 60))
        .run()
        .map_err(|e| fail(&e))?;
    std::fs::remove_file(&marker).map_err(|e| fail(&e))?;
    let copied = std::fs::read_dir(mp).map(|d| d.count()).unwrap_or(0);
    tmp.finish().map_err(|e| fail(&e))?;
    Ok(Some(copied))
}
