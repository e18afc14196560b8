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
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    Local, SNAPSHOT_DIR_ENV, check_name, check_state_dir, note_image, open_image, temporary,
    write_json,
};
use crate::codes;
use crate::files;
use crate::freeze::Frozen;
use crate::lock::NodeLock;
use crate::log;
use crate::mount::Table;
use crate::provider::Size;
use crate::record::{Record, RestoredFrom, Snapshot, State};
use crate::snapshot::{Candidate, Marks, NotPruned, Pruned, Stamp};
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

/// The filesystem on an image's loop device, as a snapshot finds it.
enum Live {
    /// Not bound, or bound and used by nothing: no freeze needed.
    Unmounted,
    /// Mounted at this mountpoint, from this device (major, minor).
    Mounted(PathBuf, (u64, u64)),
    /// Mounted nowhere, but alive (the device, and who holds it).
    Held(String, String),
}

impl Live {
    /// `snapshot.freeze`: `frozen`, `not-mounted` or `not-frozen`; a live
    /// filesystem that cannot be frozen is refused, unless `no_freeze`.
    fn consistency(&self, no_freeze: bool) -> Result<&'static str, Failure> {
        match (self, no_freeze) {
            (Live::Unmounted, _) => Ok("not-mounted"),
            (_, true) => Ok("not-frozen"),
            (Live::Mounted(..), false) => Ok("frozen"),
            (Live::Held(dev, who), false) => Err(Failure::new(
                codes::FREEZE_FAILED,
                format!(
                    "{dev} is mounted nowhere, but its filesystem is still alive (lazily unmounted and still in use, held by {who}): with no mountpoint it cannot be frozen, and a copy of it now would not be consistent; stop those processes and rerun, or pass --no-freeze (a crash-consistent snapshot); nothing taken"
                ),
            )),
        }
    }

    /// For messages.
    fn describe(&self, freeze: &str) -> String {
        match self {
            Live::Mounted(m, _) if freeze == "frozen" => {
                format!(", {} frozen meanwhile", m.display())
            }
            Live::Mounted(m, _) => format!(", {} NOT frozen (--no-freeze)", m.display()),
            Live::Held(dev, _) => format!(", {dev} in use, NOT frozen (--no-freeze)"),
            Live::Unmounted => String::new(),
        }
    }
}

/// Free space on a filesystem a copy goes to, against what the copy takes
/// and what the images there may still claim ([`Local::room`]).
struct Room {
    /// Where it was read.
    dir: PathBuf,
    /// What the copy takes.
    copy: u64,
    /// What the images there may still write.
    claimable: u64,
    /// What is free.
    free: u64,
}

/// Room kept beyond the copy and the images: metadata, directories.
const ROOM_MARGIN: u64 = 1 << 20;

/// Bytes as whole MiB, rounded up, for messages.
fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

impl Room {
    /// What the copy needs free.
    fn needed(&self) -> u64 {
        self.copy + self.claimable + ROOM_MARGIN
    }

    /// `needs N free on DIR (...), F free`.
    fn describe(&self) -> String {
        format!(
            "needs {} free on the filesystem of {} ({} for the copy, {} that the disk images there may still write), and {} is free",
            mib(self.needed()),
            self.dir.display(),
            mib(self.copy),
            mib(self.claimable),
            mib(self.free)
        )
    }

    /// `no-space` unless there is room for `what`.
    fn enough(&self, what: &str) -> Result<(), Failure> {
        if self.free >= self.needed() {
            return Ok(());
        }
        Err(Failure::new(
            codes::NO_SPACE,
            format!(
                "{what} {}: not taken, as it would use space a live disk may still claim (its writes would be lost at writeback). Free space there, or keep snapshots on another filesystem (--snapshot-dir, {SNAPSHOT_DIR_ENV})",
                self.describe()
            ),
        ))
    }
}
impl Meta {
    /// The deployment it was taken for: a snapshot taken before local
    /// disks had owners, of a record naming none, is the shared default's.
    fn deployment(&self) -> &str {
        self.deployment
            .as_deref()
            .unwrap_or(crate::record::DEFAULT_DEPLOYMENT)
    }

    /// Whether `disk-snapshot` took it ([`Marks::ours`]): metadata written
    /// by another tool, or by hand, is never listed, counted, deleted or
    /// restored from.
    fn ours(&self) -> bool {
        let marks = Marks {
            deployment: Some(self.deployment()),
            disk: Some(&self.disk),
            time: Stamp::parse_rfc3339(&self.time).filter(|t| t.0 == self.ms),
            tool: Some(&self.tool),
        };
        marks.ours() && self.id == format!("{}@{}", self.disk, Stamp(self.ms).compact())
    }

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

/// A snapshot of one record's image, planned ([`Local::plan_take`]): what
/// the copy takes, how the disk is held still, and what retention then
/// deletes. The node lock is held for as long as it lives.
struct Take {
    _lock: NodeLock,
    image: PathBuf,
    disk: String,
    file: File,
    /// The image's length, bytes.
    size: u64,
    live: Live,
    /// `snapshot.freeze`.
    freeze: &'static str,
    now: Stamp,
    id: String,
    /// What retention deletes once the snapshot is there.
    prune: Vec<String>,
    /// Where snapshots live.
    dir: PathBuf,
    room: Room,
}

impl Take {
    /// The record's `snapshot` as planned, `pruned` what retention chose.
    fn planned(&self, pruned: Vec<String>) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            time: self.now.rfc3339(),
            size: self.size,
            state: "planned".into(),
            freeze: Some(self.freeze.into()),
            method: None,
            pruned,
        }
    }

    /// `--check`: what the snapshot would be, and whether it has room.
    fn describe(&self, rec: &mut Record, state: State) -> StepResult {
        rec.snapshot = Some(self.planned(self.prune.clone()));
        let would = if self.prune.is_empty() {
            String::new()
        } else {
            format!("; would prune {}", self.prune.join(", "))
        };
        self.room
            .enough(&format!("a snapshot of {}", self.image.display()))?;
        Ok(Outcome::changed(
            state,
            format!(
                "would take snapshot {} of {} ({}){}{would}; it {}",
                self.id,
                self.image.display(),
                Size(self.size),
                self.live.describe(self.freeze),
                self.room.describe()
            ),
        ))
    }

    /// The copy, with the disk held still (frozen, or, unmounted, under
    /// the node lock) for at most `freeze_timeout` seconds, then its
    /// metadata: from then on it is listed. How it was copied.
    fn copy(&self, rec: &Record, freeze_timeout: u64) -> Result<files::CopyMethod, Failure> {
        self.room
            .enough(&format!("a snapshot of {}", self.image.display()))?;
        log::info(format_args!(
            "{}: snapshot {} {}",
            rec.label(),
            self.id,
            self.room.describe()
        ));
        let target = self.dir.join(format!("{}.img", self.id));
        let limit = Duration::from_secs(freeze_timeout);
        let frozen = match &self.live {
            Live::Mounted(m, dev) if self.freeze == "frozen" => Some(Frozen::take(m, *dev, limit)?),
            _ => None,
        };
        let deadline = Instant::now() + limit;
        let copied = copy_new(&self.file, &target, || stop_check(Some(deadline)));
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
            Err(e) => return Err(copy_failure(e, &self.image, limit, self.freeze == "frozen")),
        };
        self.write_meta(rec, &method, &target)?;
        Ok(method)
    }

    /// Writes `<id>.json`; without it, the copy `target` is removed.
    fn write_meta(
        &self,
        rec: &Record,
        method: &files::CopyMethod,
        target: &Path,
    ) -> Result<(), Failure> {
        let meta = Meta {
            id: self.id.clone(),
            disk: self.disk.clone(),
            deployment: rec.deployment.clone(),
            node: rec.node.clone(),
            ms: self.now.0,
            time: self.now.rfc3339(),
            size: self.size,
            freeze: self.freeze.into(),
            method: method.as_str().into(),
            tool: crate::snapshot::TOOL.into(),
        };
        if let Err(e) = write_json(&self.dir.join(format!("{}.json", self.id)), &meta) {
            let _ = std::fs::remove_file(target);
            return Err(Failure::new(
                codes::SNAPSHOT_FAILED,
                format!("{}: {e}", self.dir.display()),
            ));
        }
        Ok(())
    }

    /// The record's outcome: its snapshot, complete, and what retention
    /// pruned; a delete that failed fails the record.
    fn finish(
        self,
        rec: &mut Record,
        state: State,
        method: files::CopyMethod,
        mut pruned: Pruned,
    ) -> StepResult {
        let mut snap = self.planned(pruned.deleted);
        snap.state = "completed".into();
        snap.method = Some(method.as_str().into());
        let pruned_text = if snap.pruned.is_empty() {
            String::new()
        } else {
            format!("; pruned {}", snap.pruned.join(", "))
        };
        rec.snapshot = Some(snap);
        if let Some(n) = pruned.failed.pop() {
            return Err(n.failure);
        }
        Ok(Outcome::changed(
            state,
            format!(
                "took snapshot {} of {} ({}, {}){}{pruned_text}",
                self.id,
                self.image.display(),
                Size(self.size),
                method.as_str(),
                self.live.describe(self.freeze)
            ),
        ))
    }
}

impl Local {
    /// Where snapshots live: `--snapshot-dir` (or its variable), else
    /// `<state dir>/snapshots`.
    fn snapshots_dir(&self) -> PathBuf {
        self.snapshot_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("snapshots"))
    }

    /// Every local snapshot's metadata, newest first: only those
    /// `disk-snapshot` took ([`Meta::ours`]; unreadable files and any
    /// other metadata are skipped: they are not ours).
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
            .filter(|m| check_id(&m.id).is_ok() && m.ours())
            .collect();
        all.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| b.id.cmp(&a.id)));
        Ok(all)
    }

    /// The snapshots of the record's disk and deployment, newest first.
    fn snapshots_of(&self, rec: &Record, disk: &str) -> Result<Vec<Meta>, Failure> {
        let deployment = self.deployment_of(rec);
        Ok(self
            .all_snapshots()?
            .into_iter()
            .filter(|m| m.disk == disk && m.deployment() == deployment)
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

    /// Takes a snapshot of the record's image, then applies retention:
    /// plan, then describe (`--check`), or copy, prune and finish.
    pub(super) fn snapshot_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let state = rec.state.unwrap_or(State::Created);
        let take = self.plan_take(rec, cx.check)?;
        if cx.check {
            return take.describe(rec, state);
        }
        let method = take.copy(rec, self.snap.freeze_timeout)?;
        let pruned = self.prune(&take.prune);
        take.finish(rec, state, method, pruned)
    }

    /// The plan of a snapshot of the record's image, under the node lock:
    /// the image is there and ours, how it is held still, its id, what
    /// retention then deletes, and the room for the copy.
    fn plan_take(&self, rec: &mut Record, check: bool) -> Result<Take, Failure> {
        let image = self.image(rec)?;
        let disk = super::disk_of(rec)?.to_string();
        let lock = self.prepare(check)?;
        if std::fs::symlink_metadata(&image).is_err() {
            return Err(Failure::new(
                codes::NO_SUCH_DISK,
                format!("{} does not exist: nothing to snapshot", image.display()),
            ));
        }
        let file = open_image(&image, false)?;
        self.claim(rec, &image, check)?;
        note_image(rec, &image);
        let meta = file
            .metadata()
            .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", image.display())))?;
        let live = self.live(&image)?;
        let freeze = live.consistency(self.snap.no_freeze)?;
        let now = Stamp::now();
        let id = format!("{disk}@{}", now.compact());
        let prune = self.retained(rec, &disk, &id, now)?;
        let dir = self.snapshots_dir();
        check_state_dir(&dir, !check)?;
        // The copy takes what the image holds; every image there may still
        // claim the rest of its size (the image copied included).
        let room = self.room(&dir, files::allocated(&meta), 0)?;
        Ok(Take {
            _lock: lock,
            size: meta.len(),
            image,
            disk,
            file,
            live,
            freeze,
            now,
            id,
            prune,
            dir,
            room,
        })
    }

    /// Deletes what retention chose, every failure kept.
    fn prune(&self, chosen: &[String]) -> Pruned {
        let mut pruned = Pruned::default();
        for id in chosen {
            match self.delete(id) {
                Ok(()) => pruned.deleted.push(id.clone()),
                Err(failure) => pruned.failed.push(NotPruned {
                    id: id.clone(),
                    failure,
                }),
            }
        }
        pruned
    }

    /// What retention deletes once the snapshot `id`, taken `now`, is there:
    /// among the record's disk's and deployment's (a local snapshot is
    /// complete once its metadata is written: it is listed only then).
    fn retained(
        &self,
        rec: &Record,
        disk: &str,
        id: &str,
        now: Stamp,
    ) -> Result<Vec<String>, Failure> {
        let earlier = self
            .snapshots_of(rec, disk)?
            .into_iter()
            .map(|m| Candidate::new(m.id, m.ms, "completed"));
        let taken = Candidate::new(id, now.0, "completed");
        Ok(self.snap.retention().after(earlier, taken, now.0))
    }

    /// The room on the filesystem of `target` (a directory, or where it is
    /// to be made) for a copy holding `copy` bytes: what is free there,
    /// against the copy and what every image of the state directory on that
    /// filesystem may still write (its length less what it holds: a sparse
    /// image takes more as its disk fills), `claim` more for a new image.
    fn room(&self, target: &Path, copy: u64, claim: u64) -> Result<Room, Failure> {
        let at = target
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let (free, dev) = files::free_space(at)
            .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", at.display())))?;
        let images = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default();
        let claimable: u64 = images
            .iter()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".img") && !n.starts_with('.')
            })
            .filter_map(|e| std::fs::symlink_metadata(e.path()).ok())
            .filter(|m| m.is_file() && m.dev() == dev)
            .map(|m| m.len().saturating_sub(files::allocated(&m)))
            .sum();
        Ok(Room {
            dir: at.to_path_buf(),
            copy,
            claimable: claimable + claim,
            free,
        })
    }

    /// Removes what snapshots of runs that were killed left in the snapshot
    /// directory (under the node lock): partial copies (their temporary
    /// files), and images whose metadata was never written (a run stopped
    /// between placing the copy and writing `<id>.json`: such an image is
    /// never listed, so nothing else would ever remove it).
    pub(super) fn reap_snapshots(&self) {
        let dir = self.snapshots_dir();
        super::reap_temporaries(&dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".img") else {
                continue;
            };
            let ours = check_id(id).is_ok()
                && id
                    .split_once('@')
                    .is_some_and(|(_, t)| Stamp::parse_compact(t).is_some());
            if ours
                && e.file_type().is_ok_and(|t| t.is_file())
                && std::fs::symlink_metadata(dir.join(format!("{id}.json"))).is_err()
            {
                log::warn(format_args!(
                    "removing {}: a snapshot whose metadata was never written (its run was stopped)",
                    e.path().display()
                ));
                let _ = std::fs::remove_file(e.path());
            }
        }
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

    /// Whether the filesystem on the image's loop device is alive, and
    /// where: mounted (the mountpoint, and the device number found mounted
    /// there, which [`Frozen::take`] checks), or held though mounted
    /// nowhere (a lazy unmount still in use: it is written to, and no
    /// mountpoint is left to freeze it through).
    fn live(&self, image: &Path) -> Result<Live, Failure> {
        let Some(lo) = self.bound(image)? else {
            return Ok(Live::Unmounted);
        };
        let dev = crate::blockdev::Device::open(&lo.device)
            .map_err(|e| Failure::new(codes::NO_SUCH_DEVICE, e.to_string()))?;
        let table = Table::read().map_err(|e| Failure::new(codes::MOUNT_TABLE, e.to_string()))?;
        if let Some(e) = table.by_device(dev.major, dev.minor).first() {
            return Ok(Live::Mounted(e.target.clone(), (e.major, e.minor)));
        }
        match crate::blockdev::open_exclusive(&dev.real) {
            Ok(_) => Ok(Live::Unmounted),
            Err(crate::blockdev::BlockError::Busy(..)) => Ok(Live::Held(
                lo.device.display().to_string(),
                crate::mount::who_holds(dev.major, dev.minor),
            )),
            Err(e) => Err(e.into()),
        }
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
            let meta = self
                .all_snapshots()?
                .into_iter()
                .find(|m| m.id == from)
                .ok_or_else(|| {
                    Failure::new(codes::NO_SUCH_SNAPSHOT, format!("no local snapshot {from}"))
                })?;
            let want = self.deployment_of(rec);
            if meta.deployment() != want {
                return Err(Failure::new(
                    codes::OTHER_DEPLOYMENT,
                    format!(
                        "snapshot {from} belongs to deployment {}, not {want}: never restored by another deployment",
                        meta.deployment()
                    ),
                ));
            }
            meta
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
        // Its restored copy would carry the same filesystem UUID: never
        // beside the original on this node.
        let original = self.dir.join(format!("{}.img", meta.disk));
        if let Some(lo) = self.bound(&original)? {
            return Err(Failure::new(
                codes::ORIGINAL_ATTACHED,
                format!(
                    "{} (the disk snapshot {} was taken of) is still attached as {}: a disk restored from it holds a filesystem with the same UUID, which must never be attached beside it; take it down first (scripts/down: unmount and detach it), then restore. Nothing was made",
                    original.display(),
                    meta.id,
                    lo.device.display()
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
            self.claim(rec, &image, cx.check)?;
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
        let source = self.snapshots_dir().join(format!("{}.img", meta.id));
        let from_file = open_image(&source, false)?;
        let held = from_file
            .metadata()
            .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", source.display())))?;
        // The new image takes what the snapshot holds, and may claim the
        // rest of its size once attached and written to.
        let room = self.room(
            &self.dir,
            files::allocated(&held),
            held.len().saturating_sub(files::allocated(&held)),
        )?;
        room.enough(&format!("restoring {}", image.display()))?;
        if cx.check {
            return Ok(Outcome::changed(
                State::Created,
                format!(
                    "would restore {} from snapshot {} ({} kept); it {}",
                    image.display(),
                    meta.id,
                    meta.disk,
                    room.describe()
                ),
            ));
        }
        self.owned(rec, &image)?;
        let fail = |e: &dyn std::fmt::Display| {
            Failure::new(codes::CREATE_FAILED, format!("{}: {e}", image.display()))
        };
        self.write_owner(&image, &self.new_owner(rec))?;
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

/// The record's failure for a copy that did not finish (`frozen`: while
/// the filesystem was frozen; else under the node lock alone).
fn copy_failure(e: std::io::Error, image: &Path, limit: Duration, frozen: bool) -> Failure {
    match (e.kind(), crate::interrupt::interrupted()) {
        (std::io::ErrorKind::Interrupted, Some(sig)) => crate::interrupt::failure(sig),
        (std::io::ErrorKind::TimedOut, _) => Failure::new(
            codes::FREEZE_TIMEOUT,
            format!(
                "copying {} took longer than the disk may be held still ({}s, --freeze-timeout): abandoned, nothing kept, {}",
                image.display(),
                limit.as_secs(),
                if frozen {
                    "the filesystem thawed"
                } else {
                    "the node lock let go (other runs wait for it)"
                }
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
