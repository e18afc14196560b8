//! Snapshots of local images, and images made from them.
//!
//! A snapshot of the disk `<disk>` is `<state dir>/snapshots/<id>.img`, a
//! copy of the image that shares its blocks where the filesystem can
//! (reflink), else a sparse copy ([`crate::files::copy_image`]), with
//! `<id>.json` beside it ([`Meta`]: disk, deployment, node, time, size).
//! The id is `<disk>@<time>` (`data-1@20261127T023512.123Z`). A mounted
//! image's filesystem is frozen for the copy alone ([`crate::freeze`]).
//! Every step holds the node lock, so no other run mounts, unmounts or
//! detaches the disk meanwhile.
//!
//! A restored disk (`disk-create --from-snapshot`) is a new image,
//! `<disk>-restored-<time>`, copied back the same way, with
//! `<name>.restored.json` beside it; the old image is never touched.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Local, check_name, note_image, open_image};
use crate::codes;
use crate::freeze::Frozen;
use crate::mount::Table;
use crate::provider::Size;
use crate::record::{Record, RestoredFrom, Snapshot, State};
use crate::snapshot::{Candidate, Stamp};
use crate::step::{Ctx, Failure, Outcome, StepResult};

/// What `<id>.json` holds about a local snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// `<disk>@<time>`.
    pub id: String,
    /// The disk it was taken of.
    pub disk: String,
    /// The record's deployment, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The record's node, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When, in ms since the Unix epoch.
    pub ms: u64,
    /// When, RFC 3339.
    pub time: String,
    /// The image's size in bytes.
    pub size: u64,
    /// `frozen`, `not-mounted` or `not-frozen`.
    pub freeze: String,
    /// `reflink` or `sparse`.
    pub method: String,
    /// The tool that took it.
    pub tool: String,
}

/// A mountpoint and the device (major, minor) mounted there.
type MountedAt = (PathBuf, (u64, u64));
impl Meta {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            freeze: Some(self.freeze.clone()),
            method: Some(self.method.clone()),
            ..Snapshot::listed(&self.id, self.time.clone(), self.size, "completed")
        }
    }
}

/// Checks a snapshot id (`<disk>@<time>`): no path can hide in it.
fn check_id(id: &str) -> Result<(), Failure> {
    let ok = id
        .split_once('@')
        .is_some_and(|(d, t)| check_name(d).is_ok() && check_name(t).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            codes::NO_SUCH_SNAPSHOT,
            format!(
                "`{}` is not a local snapshot id (<disk>@<time>)",
                crate::log::escape_controls(id)
            ),
        ))
    }
}

/// A temporary name beside `path` for this process.
fn temporary(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Copies `from` into a new file `to` (never replacing one), through a
/// temporary name; `go_on` bounds the copy. `Ok(None)` when `to` appeared
/// meanwhile. (Also an archive's capture: [`crate::archive::capture`].)
pub(crate) fn copy_new(
    from: &File,
    to: &Path,
    go_on: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<Option<crate::files::CopyMethod>> {
    let tmp = temporary(to);
    let done = (|| {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        let method = crate::files::copy_image(from, &f, go_on)?;
        let placed = crate::files::rename_noreplace(&tmp, to)?;
        if let Some(dir) = to.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(placed.then_some(method))
    })();
    let _ = std::fs::remove_file(&tmp);
    done
}

/// Writes `value` as JSON to `path` through a temporary file.
fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = temporary(path);
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    let done = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    done
}

impl Local {
    fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// Every local snapshot's metadata, newest first (unreadable files are
    /// skipped: they are not ours).
    fn all_snapshots(&self) -> Result<Vec<Meta>, Failure> {
        let dir = self.snapshots_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Failure::new(
                    codes::STATE_DIR,
                    format!("{}: {e}", dir.display()),
                ));
            }
        };
        let mut all: Vec<Meta> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Meta>(&b).ok())
            .filter(|m| check_id(&m.id).is_ok())
            .collect();
        all.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| b.id.cmp(&a.id)));
        Ok(all)
    }

    /// The snapshots of the record's disk and deployment, newest first.
    fn snapshots_of(&self, rec: &Record, disk: &str) -> Result<Vec<Meta>, Failure> {
        Ok(self
            .all_snapshots()?
            .into_iter()
            .filter(|m| m.disk == disk && m.deployment == rec.deployment)
            .collect())
    }

    /// Lists the record's disk's snapshots (of its deployment) into
    /// `rec.listed`, newest first: the driver makes one record of each.
    pub(super) fn list_one(&self, rec: &mut Record) -> StepResult {
        let image = self.image(rec)?;
        let disk = super::disk_of(rec)?.to_string();
        let metas = self.snapshots_of(rec, &disk)?;
        note_image(rec, &image);
        rec.listed = metas.iter().map(Meta::snapshot).collect();
        Ok(Outcome::unchanged(
            rec.state.unwrap_or(State::Created),
            format!("{} snapshot(s) of {disk}", metas.len()),
        ))
    }

    /// Takes a snapshot of the record's image, then applies retention.
    pub(super) fn snapshot_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let image = self.image(rec)?;
        let disk = super::disk_of(rec)?.to_string();
        let state = rec.state.unwrap_or(State::Created);
        let _lock = self.prepare(cx.check)?;
        if std::fs::symlink_metadata(&image).is_err() {
            return Err(Failure::new(
                codes::NO_SUCH_DISK,
                format!("{} does not exist: nothing to snapshot", image.display()),
            ));
        }
        let file = open_image(&image, false)?;
        note_image(rec, &image);
        let size = file
            .metadata()
            .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", image.display())))?
            .len();
        let mounted = self.mounted_at(&image)?;
        let mountpoint = mounted.as_ref().map(|(m, _)| m.clone());
        let freeze = match (&mountpoint, self.snap.no_freeze) {
            (None, _) => "not-mounted",
            (Some(_), true) => "not-frozen",
            (Some(_), false) => "frozen",
        };
        let now = Stamp::now();
        let id = format!("{disk}@{}", now.compact());
        let retention = self.snap.retention();
        // A local snapshot is complete once its metadata is written (it is
        // listed only then).
        let mut earlier: Vec<Candidate> = self
            .snapshots_of(rec, &disk)?
            .into_iter()
            .map(|m| Candidate::new(m.id, m.ms, "completed"))
            .collect();
        earlier.push(Candidate::new(id.clone(), now.0, "completed"));
        let prune: Vec<String> = retention
            .prune(&earlier, &id, now.0)
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut snap = Snapshot {
            id: id.clone(),
            time: now.rfc3339(),
            size,
            state: "planned".into(),
            freeze: Some(freeze.into()),
            method: None,
            pruned: prune.clone(),
        };
        let how = match &mountpoint {
            Some(m) if freeze == "frozen" => format!(", {} frozen meanwhile", m.display()),
            Some(m) => format!(", {} NOT frozen (--no-freeze)", m.display()),
            None => String::new(),
        };
        let pruned_text = if prune.is_empty() {
            String::new()
        } else {
            format!("; pruned {}", prune.join(", "))
        };
        if cx.check {
            rec.snapshot = Some(snap);
            let would = if prune.is_empty() {
                String::new()
            } else {
                format!("; would prune {}", prune.join(", "))
            };
            return Ok(Outcome::changed(
                state,
                format!(
                    "would take snapshot {id} of {} ({}){how}{would}",
                    image.display(),
                    Size(size)
                ),
            ));
        }
        let dir = self.snapshots_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", dir.display())))?;
        let target = dir.join(format!("{id}.img"));
        let limit = Duration::from_secs(self.snap.freeze_timeout);
        let frozen = match &mounted {
            Some((m, dev)) if freeze == "frozen" => Some(Frozen::take(m, *dev, limit)?),
            _ => None,
        };
        let deadline = frozen.as_ref().map(Frozen::deadline);
        let copied = copy_new(&file, &target, || stop_check(deadline));
        // Thawed at once, whatever the copy did.
        drop(frozen);
        let method = match copied {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(Failure::new(
                    codes::SNAPSHOT_FAILED,
                    format!(
                        "{} appeared meanwhile: another run took it",
                        target.display()
                    ),
                ));
            }
            Err(e) => return Err(copy_failure(e, &image, limit)),
        };
        let meta = Meta {
            id: id.clone(),
            disk: disk.clone(),
            deployment: rec.deployment.clone(),
            node: rec.node.clone(),
            ms: now.0,
            time: now.rfc3339(),
            size,
            freeze: freeze.into(),
            method: method.as_str().into(),
            tool: crate::log::tool().into(),
        };
        if let Err(e) = write_json(&dir.join(format!("{id}.json")), &meta) {
            let _ = std::fs::remove_file(&target);
            return Err(Failure::new(
                codes::SNAPSHOT_FAILED,
                format!("{}: {e}", dir.display()),
            ));
        }
        snap.state = "completed".into();
        snap.method = Some(method.as_str().into());
        snap.pruned.clear();
        let mut failed = None;
        for old in &prune {
            match self.delete(old) {
                Ok(()) => snap.pruned.push(old.clone()),
                Err(f) => failed = Some(f),
            }
        }
        rec.snapshot = Some(snap);
        if let Some(f) = failed {
            return Err(f);
        }
        Ok(Outcome::changed(
            state,
            format!(
                "took snapshot {id} of {} ({}, {}){how}{pruned_text}",
                image.display(),
                Size(size),
                method.as_str()
            ),
        ))
    }

    /// Deletes a snapshot: its metadata first (so it is never listed half
    /// gone), then its image.
    fn delete(&self, id: &str) -> Result<(), Failure> {
        check_id(id)?;
        let dir = self.snapshots_dir();
        for ext in ["json", "img"] {
            let p = dir.join(format!("{id}.{ext}"));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Failure::new(
                        codes::PRUNE_FAILED,
                        format!("{}: {e}", p.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where the filesystem on the image's loop device is mounted, if it is:
    /// the mountpoint and the device number found mounted there
    /// ([`Frozen::take`] checks it).
    fn mounted_at(&self, image: &Path) -> Result<Option<MountedAt>, Failure> {
        let Some(lo) = self.bound(image)? else {
            return Ok(None);
        };
        let dev = crate::blockdev::Device::open(&lo.device)
            .map_err(|e| Failure::new(codes::NO_SUCH_DEVICE, e.to_string()))?;
        let table = Table::read().map_err(|e| Failure::new(codes::MOUNT_TABLE, e.to_string()))?;
        Ok(table
            .by_device(dev.major, dev.minor)
            .first()
            .map(|e| (e.target.clone(), (e.major, e.minor))))
    }

    /// Makes the record's disk from a snapshot (`--from-snapshot`): a new
    /// image, `<source disk>-restored-<time>`, which the record then names.
    pub(super) fn restore_one(&self, rec: &mut Record, from: &str, cx: Ctx) -> StepResult {
        let disk = super::disk_of(rec)?.to_string();
        let _lock = self.prepare(cx.check)?;
        let meta = if from == "latest" {
            self.snapshots_of(rec, &disk)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    Failure::new(
                        codes::NO_SUCH_SNAPSHOT,
                        format!("{disk} has no snapshot (of this deployment) to restore"),
                    )
                })?
        } else {
            check_id(from)?;
            self.all_snapshots()?
                .into_iter()
                .find(|m| m.id == from)
                .ok_or_else(|| {
                    Failure::new(codes::NO_SUCH_SNAPSHOT, format!("no local snapshot {from}"))
                })?
        };
        if meta.disk != disk {
            return Err(Failure::new(
                codes::NO_SUCH_SNAPSHOT,
                format!(
                    "snapshot {} is of disk {}, not {disk}: give each record its own disk's snapshot",
                    meta.id, meta.disk
                ),
            ));
        }
        let name = format!("{}-restored-{}", meta.disk, Stamp(meta.ms).compact());
        rec.disk = Some(name.clone());
        rec.restored_from = Some(RestoredFrom {
            snapshot: meta.id.clone(),
            disk: meta.disk.clone(),
        });
        let image = self.image(rec)?;
        if std::fs::symlink_metadata(&image).is_ok() {
            open_image(&image, false)?;
            note_image(rec, &image);
            return Ok(Outcome::unchanged(
                State::Created,
                format!(
                    "image {} was restored from {} already",
                    image.display(),
                    meta.id
                ),
            ));
        }
        if cx.check {
            return Ok(Outcome::changed(
                State::Created,
                format!(
                    "would restore {} from snapshot {} ({} kept)",
                    image.display(),
                    meta.id,
                    meta.disk
                ),
            ));
        }
        let source = self.snapshots_dir().join(format!("{}.img", meta.id));
        let from_file = open_image(&source, false)?;
        let fail = |e: &dyn std::fmt::Display| {
            Failure::new(codes::CREATE_FAILED, format!("{}: {e}", image.display()))
        };
        let method = copy_new(&from_file, &image, || stop_check(None)).map_err(|e| fail(&e))?;
        write_json(
            &self.dir.join(format!("{name}.restored.json")),
            rec.restored_from.as_ref().expect("set above"),
        )
        .map_err(|e| fail(&e))?;
        note_image(rec, &image);
        Ok(match method {
            None => Outcome::unchanged(
                State::Created,
                format!(
                    "image {} was restored meanwhile by another run",
                    image.display()
                ),
            ),
            Some(m) => Outcome::changed(
                State::Created,
                format!(
                    "restored {} from snapshot {} ({}); the old disk {} is kept",
                    image.display(),
                    meta.id,
                    m.as_str(),
                    meta.disk
                ),
            ),
        })
    }
}

/// Stops a copy once a signal asked the run to stop, or at `deadline`.
fn stop_check(deadline: Option<Instant>) -> std::io::Result<()> {
    if let Some(sig) = crate::interrupt::interrupted() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            sig.to_string(),
        ));
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "freeze deadline",
        ));
    }
    Ok(())
}

/// The record's failure for a copy that did not finish.
fn copy_failure(e: std::io::Error, image: &Path, limit: Duration) -> Failure {
    match (e.kind(), crate::interrupt::interrupted()) {
        (std::io::ErrorKind::Interrupted, Some(sig)) => crate::interrupt::failure(sig),
        (std::io::ErrorKind::TimedOut, _) => Failure::new(
            codes::FREEZE_TIMEOUT,
            format!(
                "copying {} took longer than the freeze may last ({}s, --freeze-timeout): abandoned, the filesystem thawed",
                image.display(),
                limit.as_secs()
            ),
        ),
        _ => Failure::new(
            codes::SNAPSHOT_FAILED,
            format!(
                "copying {}: {e} (nothing kept; the filesystem thawed)",
                image.display()
            ),
        ),
    }
}
