//! The `local` provider, the embedded default: a disk is a sparse image file
//! in a state directory, attached as a loop device.
//!
//! The state directory is `/var/lib/appscale-persist/disks` unless
//! `--state-dir` or `APPSCALE_PERSIST_STATE_DIR` says otherwise. Whoever can
//! write it decides what gets formatted and mounted, so it must be owned by
//! root (the user running the tools) and writable by nobody else; it is
//! created `0700`.
//!
//! Create, attach and detach hold the node lock ([`crate::lock`]) from their
//! first look to their last act, so two runs cannot make or bind one image
//! twice. An image is created under a temporary name and moved into place
//! with `RENAME_NOREPLACE`: an existing image is never replaced, and a crash
//! never leaves a half-made image under the disk's name. Images are opened
//! without following symlinks and must be regular files, and the loop
//! device is bound to the very file opened. The record's `disk_id` is the
//! image's path, so the node-side tools can check a loop device against it.
//! `--check` creates nothing: no directory, no lock file.
//!
//! Each image has an owner, its deployment and node, in
//! `<name>.owner.json` beside it ([`owner`]), checked before any step acts
//! on it, as the clouds' tags and labels are.

pub(crate) mod owner;
pub(crate) mod snapshots;

use crate::codes;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{DiskStatus, Provider, Size, disk_of};
use crate::blockdev::refuse_if_in_use;
pub use crate::discover::local::{DEFAULT_STATE_DIR, STATE_DIR_ENV, check_name, verify_device};
use crate::lock::NodeLock;
use crate::loopdev::{self, Loop};
use crate::record::{ProviderKind, Record, State};
use crate::snapshot::SnapshotArgs;
use crate::step::{Ctx, Failure, Outcome, StepResult};

/// The environment variable that keeps snapshots apart from the images
/// (on another filesystem, say) unless `--snapshot-dir` says where.
pub(crate) const SNAPSHOT_DIR_ENV: &str = "APPSCALE_PERSIST_SNAPSHOT_DIR";

/// The size of a new image unless told otherwise.
pub const DEFAULT_SIZE: Size = Size(10 << 30);

/// The local provider.
#[derive(Debug, Clone)]
pub struct Local {
    dir: PathBuf,
    size: Size,
    size_given: bool,
    grow: bool,
    snap: SnapshotArgs,
    from_snapshot: Option<String>,
    deployment: Option<String>,
    snapshot_dir: Option<PathBuf>,
}

impl Local {
    /// A provider over images in `dir`; `size` is for new images, and when
    /// given, an existing image of another size is an error.
    pub fn new(dir: PathBuf, size: Option<Size>) -> Local {
        Local {
            dir,
            size: size.unwrap_or(DEFAULT_SIZE),
            size_given: size.is_some(),
            grow: false,
            snap: SnapshotArgs::default(),
            from_snapshot: None,
            deployment: None,
            snapshot_dir: None,
        }
    }

    /// The same provider, keeping snapshots in `dir` (when given) rather
    /// than `<state dir>/snapshots`: on another filesystem, a copy never
    /// takes the room the live images may still claim.
    pub fn snapshots_in(self, dir: Option<PathBuf>) -> Local {
        Local {
            snapshot_dir: dir,
            ..self
        }
    }

    /// The snapshot directory from the flag, else the environment; `None`:
    /// `<state dir>/snapshots`.
    pub fn snapshot_dir(flag: Option<PathBuf>) -> Option<PathBuf> {
        flag.or_else(|| std::env::var_os(SNAPSHOT_DIR_ENV).map(PathBuf::from))
    }

    /// The same provider, for `deployment` (`--deployment`) over what the
    /// records say: the owner new images get, and existing ones must have.
    pub fn for_deployment(self, deployment: Option<String>) -> Local {
        Local { deployment, ..self }
    }

    /// The same provider, taking (or listing) snapshots as `snap` says.
    pub fn with_snapshots(self, snap: SnapshotArgs) -> Local {
        Local { snap, ..self }
    }

    /// The same provider, making new disks from the snapshot `id` (or
    /// `latest`, the record's disk's newest) instead of blank.
    pub fn from_snapshot(self, id: Option<String>) -> Local {
        Local {
            from_snapshot: id,
            ..self
        }
    }

    /// With `grow`, an image found smaller than the size given is extended
    /// to it, and the loop device bound to it (if any) refreshed to the new
    /// size; an image is never shrunk.
    pub fn growing(mut self, grow: bool) -> Local {
        self.grow = grow;
        self
    }

    /// The state directory from the flag, the environment, or the default.
    pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
        crate::discover::local::state_dir(flag)
    }

    /// The image of a record's disk.
    pub fn image(&self, rec: &Record) -> Result<PathBuf, Failure> {
        crate::discover::local::image_in(&self.dir, rec)
    }

    /// Checks the state directory (see the module docs) and, unless
    /// `check`, creates it; then takes the node lock, and removes what
    /// runs that were killed left (temporary files, snapshot copies never
    /// finished). In `--check` mode a missing directory is fine: nothing is
    /// created or removed.
    fn prepare(&self, check: bool) -> Result<NodeLock, Failure> {
        check_state_dir(&self.dir, !check)?;
        let lock = crate::freeze::node_lock(check)?;
        if !check {
            reap_temporaries(&self.dir);
            self.reap_snapshots();
        }
        Ok(lock)
    }

    /// The one loop device bound to `image`, verified; `None` when unbound
    /// ([`crate::discover::local::bound_loop`]).
    fn bound(&self, image: &Path) -> Result<Option<Loop>, Failure> {
        crate::discover::local::bound_loop(image)
    }

    fn create_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let image = self.image(rec)?;
        let _lock = self.prepare(cx.check)?;
        // Looked at under the lock: another run may have made it meanwhile.
        match std::fs::symlink_metadata(&image) {
            Ok(_) => {
                let meta = open_image(&image, false)?.metadata().map_err(|e| {
                    Failure::new(codes::STATE_DIR, format!("{}: {e}", image.display()))
                })?;
                self.claim(rec, &image, cx.check)?;
                note_image(rec, &image);
                if self.size_given && meta.len() != self.size.bytes() {
                    if self.grow && meta.len() < self.size.bytes() {
                        return self.grow_image(&image, Size(meta.len()), cx);
                    }
                    let how = if meta.len() < self.size.bytes() {
                        "pass --grow to grow it"
                    } else {
                        "an image is never shrunk"
                    };
                    return Err(Failure::new(
                        codes::SIZE_MISMATCH,
                        format!(
                            "{} exists with size {}, not {}: {how}, or pass --size {}",
                            image.display(),
                            Size(meta.len()),
                            self.size,
                            Size(meta.len()),
                        ),
                    ));
                }
                // Grown by a run stopped before its loop device was
                // refreshed: the device still shows the old size.
                if self.grow
                    && let Some(lo) = self.bound(&image)?
                    && loopdev::size(&lo).is_some_and(|n| n < meta.len())
                {
                    return self.refresh(&image, &lo, Size(meta.len()), cx);
                }
                Ok(Outcome::unchanged(
                    State::Created,
                    format!("image {} exists ({})", image.display(), Size(meta.len())),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // An owner file without its image: a create stopped before
                // placing it. Only its own deployment goes on.
                self.owned(rec, &image)?;
                if cx.check {
                    return Ok(Outcome::changed(
                        State::Created,
                        format!("would create image {} ({})", image.display(), self.size),
                    ));
                }
                self.write_owner(&image, &self.new_owner(rec))?;
                let made = self.make_image(&image)?;
                note_image(rec, &image);
                if !made {
                    return Ok(Outcome::unchanged(
                        State::Created,
                        format!(
                            "image {} was made meanwhile by another run",
                            image.display()
                        ),
                    ));
                }
                Ok(Outcome::changed(
                    State::Created,
                    format!("created sparse image {} ({})", image.display(), self.size),
                ))
            }
            Err(e) => Err(Failure::new(
                codes::STATE_DIR,
                format!("{}: {e}", image.display()),
            )),
        }
    }

    /// Creates the image under a temporary name, then moves it into place
    /// without ever replacing an existing file. `false` when an image
    /// appeared under the name meanwhile (it is kept; ours is removed).
    fn make_image(&self, image: &Path) -> Result<bool, Failure> {
        let fail = |e: &dyn std::fmt::Display| {
            Failure::new(codes::CREATE_FAILED, format!("{}: {e}", image.display()))
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(image.file_name().unwrap_or_default());
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = image.with_file_name(tmp_name);
        let made = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.set_len(self.size.bytes())?;
            f.sync_all()?;
            let placed = crate::files::rename_noreplace(&tmp, image)?;
            File::open(&self.dir)?.sync_all()?;
            Ok::<bool, std::io::Error>(placed)
        })();
        let _ = std::fs::remove_file(&tmp);
        made.map_err(|e| fail(&e))
    }

    /// Extends `image` (found with size `have`, under the node lock) to the
    /// size asked, then refreshes the loop device bound to it so that the
    /// kernel sees the new size; `disk-ensure-fs --grow` grows the
    /// filesystem after.
    fn grow_image(&self, image: &Path, have: Size, cx: Ctx) -> StepResult {
        let want = self.size;
        let bound = self.bound(image)?;
        let on = bound
            .as_ref()
            .map(|l| format!(" and refresh {}", l.device.display()))
            .unwrap_or_default();
        if cx.check {
            return Ok(Outcome::changed(
                State::Created,
                format!(
                    "would grow image {} from {have} to {want}{on}",
                    image.display()
                ),
            ));
        }
        let failed = |e: &dyn std::fmt::Display| {
            Failure::new(
                codes::RESIZE_FAILED,
                format!("growing {} to {want}: {e}", image.display()),
            )
        };
        let f = open_image(image, true)?;
        f.set_len(want.bytes()).map_err(|e| failed(&e))?;
        f.sync_all().map_err(|e| failed(&e))?;
        if let Some(lo) = &bound {
            loopdev::refresh_capacity(lo, want.bytes()).map_err(|e| failed(&e))?;
        }
        Ok(Outcome::changed(
            State::Created,
            format!(
                "grew image {} from {have} to {want}{}",
                image.display(),
                bound
                    .map(|l| format!(", {} refreshed", l.device.display()))
                    .unwrap_or_default()
            ),
        ))
    }

    /// Refreshes the loop device bound to `image`, which shows less than
    /// the image's `size` (an image grown by a run stopped before it
    /// refreshed the device).
    fn refresh(&self, image: &Path, lo: &Loop, size: Size, cx: Ctx) -> StepResult {
        if cx.check {
            return Ok(Outcome::changed(
                State::Created,
                format!(
                    "would refresh {} to the size of {} ({size})",
                    lo.device.display(),
                    image.display()
                ),
            ));
        }
        loopdev::refresh_capacity(lo, size.bytes()).map_err(|e| {
            Failure::new(
                codes::RESIZE_FAILED,
                format!("refreshing {}: {e}", lo.device.display()),
            )
        })?;
        Ok(Outcome::changed(
            State::Created,
            format!(
                "image {} is {size}: {} refreshed to it",
                image.display(),
                lo.device.display()
            ),
        ))
    }

    fn attach_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let image = self.image(rec)?;
        let _lock = self.prepare(cx.check)?;
        if std::fs::symlink_metadata(&image).is_err() {
            if cx.check && rec.is_check() {
                return Ok(Outcome::changed(
                    State::Attached,
                    format!("would attach {} once created", image.display()),
                ));
            }
            return Err(Failure::new(
                codes::NO_SUCH_DISK,
                format!("{} does not exist: run disk-create first", image.display()),
            ));
        }
        let file = open_image(&image, !cx.check)?;
        self.claim(rec, &image, cx.check)?;
        note_image(rec, &image);
        if let Some(lo) = self.bound(&image)? {
            rec.device = Some(lo.device.display().to_string());
            return Ok(Outcome::unchanged(
                State::Attached,
                format!("{} is attached as {}", image.display(), lo.device.display()),
            ));
        }
        if cx.check {
            return Ok(Outcome::changed(
                State::Attached,
                format!("would attach {} to a free loop device", image.display()),
            ));
        }
        let lo = loopdev::attach(&image, &file)
            .map_err(|e| Failure::new(codes::ATTACH_FAILED, e.to_string()))?;
        rec.device = Some(lo.device.display().to_string());
        Ok(Outcome::changed(
            State::Attached,
            format!("attached {} as {}", image.display(), lo.device.display()),
        ))
    }

    fn detach_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let image = self.image(rec)?;
        let _lock = self.prepare(cx.check)?;
        if std::fs::symlink_metadata(&image).is_err() {
            return Ok(Outcome::unchanged(
                State::Detached,
                format!("{} does not exist: nothing attached", image.display()),
            ));
        }
        open_image(&image, false)?;
        self.claim(rec, &image, cx.check)?;
        note_image(rec, &image);
        let Some(lo) = self.bound(&image)? else {
            return Ok(Outcome::unchanged(
                State::Detached,
                format!("{} is not attached", image.display()),
            ));
        };
        refuse_if_in_use(&lo.device)?;
        if cx.check {
            return Ok(Outcome::changed(
                State::Detached,
                format!(
                    "would detach {} from {}",
                    image.display(),
                    lo.device.display()
                ),
            ));
        }
        loopdev::detach(&lo).map_err(|e| Failure::new(codes::DETACH_FAILED, e.to_string()))?;
        rec.device = None;
        Ok(Outcome::changed(
            State::Detached,
            format!("detached {} from {}", image.display(), lo.device.display()),
        ))
    }
}

/// Records the image's path as the record's `disk_id`.
fn note_image(rec: &mut Record, image: &Path) {
    rec.disk_id = Some(image.display().to_string());
}

/// Checks that the state directory is safe to trust: a directory (not a
/// symlink) owned by this user and writable by nobody else. A missing one
/// is created `0700` when `create`, else accepted (`--check`).
pub(crate) fn check_state_dir(dir: &Path, create: bool) -> Result<(), Failure> {
    let unsafe_dir = |why: String| {
        Failure::new(
            codes::STATE_DIR_UNSAFE,
            format!(
                "{}: {why}: whoever can write the state directory decides what is formatted and mounted; fix it (chown root, chmod 700) or choose another with --state-dir",
                dir.display()
            ),
        )
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(unsafe_dir("is a symbolic link".into())),
        Ok(m) if !m.is_dir() => Err(unsafe_dir("is not a directory".into())),
        Ok(m) if m.uid() != nix::unistd::geteuid().as_raw() => {
            Err(unsafe_dir(format!("is owned by uid {}", m.uid())))
        }
        Ok(m) if m.mode() & 0o022 != 0 => Err(unsafe_dir(format!(
            "is writable by group or others (mode {:o})",
            m.mode() & 0o7777
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if create {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        Failure::new(codes::STATE_DIR, format!("{}: {e}", dir.display()))
                    })?;
            }
            Ok(())
        }
        Err(e) => Err(Failure::new(
            codes::STATE_DIR,
            format!("{}: {e}", dir.display()),
        )),
    }
}

/// Opens an image without following a symlink at its name, and checks it
/// is a regular file.
fn open_image(image: &Path, write: bool) -> Result<File, Failure> {
    let refuse = |why: String| {
        Failure::new(
            codes::UNSAFE_IMAGE,
            format!("{}: {why}: not using it as a disk image", image.display()),
        )
    };
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(image)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => refuse("is a symbolic link".into()),
            _ => Failure::new(codes::STATE_DIR, format!("{}: {e}", image.display())),
        })?;
    let meta = f
        .metadata()
        .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", image.display())))?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    Ok(f)
}

/// A temporary name beside `path` for this process:
/// `.<name>.<pid>.tmp`.
fn temporary(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `value` as JSON to `path` through a temporary file, flushed, then
/// renamed into place; the directory is flushed after, so the name is
/// there after a crash too.
fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let tmp = temporary(path);
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    let done = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    done
}

/// Removes the temporary files (`.<name>.<pid>.tmp`, [`temporary`]) in
/// `dir` of runs that were killed (their process is gone): half-made
/// images, copies and metadata. Called under the node lock.
fn reap_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = n
            .strip_prefix('.')
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|r| r.rsplit_once('.'))
            .and_then(|(_, p)| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !crate::run::running(p)) && e.file_type().is_ok_and(|t| t.is_file())
        {
            crate::log::warn(format_args!(
                "removing {}, left by a run that was stopped",
                e.path().display()
            ));
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Provider for Local {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        records
            .iter_mut()
            .map(|r| match &self.from_snapshot {
                Some(id) => self.restore_one(r, id, cx),
                None => self.create_one(r, cx),
            })
            .collect()
    }

    fn snapshot(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        records
            .iter_mut()
            .map(|r| {
                if self.snap.list {
                    self.list_one(r)
                } else {
                    self.snapshot_one(r, cx)
                }
            })
            .collect()
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        records
            .iter()
            .map(|r| {
                let image = self.image(r)?;
                if std::fs::symlink_metadata(&image).is_err() {
                    return Err(Failure::new(
                        codes::NO_SUCH_DISK,
                        format!("{} does not exist", image.display()),
                    ));
                }
                let meta = open_image(&image, false)?.metadata().map_err(|e| {
                    Failure::new(codes::STATE_DIR, format!("{}: {e}", image.display()))
                })?;
                let mut rec = r.clone();
                self.claim(&mut rec, &image, true)?;
                let loops = loopdev::bound_to(&image)?;
                Ok(DiskStatus {
                    id: image.display().to_string(),
                    zone: None,
                    size: Some(meta.len()),
                    deployment: owner::read(&image)?.map(|o| o.deployment),
                    attached_to: loops
                        .iter()
                        .map(|l| l.device.display().to_string())
                        .collect(),
                    ..DiskStatus::default()
                })
            })
            .collect()
    }

    fn attach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        records.iter_mut().map(|r| self.attach_one(r, cx)).collect()
    }

    fn detach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        records.iter_mut().map(|r| self.detach_one(r, cx)).collect()
    }
}
