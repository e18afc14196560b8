//! The `local` provider, the embedded default: a disk is a sparse image file
//! in a state directory, attached as a loop device.
//!
//! The state directory is `/var/lib/appscale-persist/disks` unless
//! `--state-dir` or `APPSCALE_PERSIST_STATE_DIR` says otherwise. An image is
//! created under a temporary name and renamed into place, so a crash never
//! leaves a half-made image under the disk's name. Attach and detach hold a
//! lock on the state directory, so two runs cannot bind one image twice.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::{DiskStatus, Provider, Size, disk_of, refuse_if_in_use};
use crate::loopdev::{self, Loop};
use crate::record::{ProviderKind, Record, State};
use crate::tool::{Ctx, Failure, Outcome, StepResult};

/// Where images live unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/appscale-persist/disks";

/// The environment variable that moves the state directory.
pub const STATE_DIR_ENV: &str = "APPSCALE_PERSIST_STATE_DIR";

/// The size of a new image unless told otherwise.
pub const DEFAULT_SIZE: Size = Size(10 << 30);

/// Checks an image name: letters, digits, `.`, `_`, `-`; not starting with
/// `.` or `-`; at most 128 characters (it becomes `<name>.img`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("a local disk name is 1-128 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`".into())
    }
}

/// The local provider.
#[derive(Debug, Clone)]
pub struct Local {
    dir: PathBuf,
    size: Size,
    size_given: bool,
}

impl Local {
    /// A provider over images in `dir`; `size` is for new images, and when
    /// given, an existing image of another size is an error.
    pub fn new(dir: PathBuf, size: Option<Size>) -> Local {
        Local {
            dir,
            size: size.unwrap_or(DEFAULT_SIZE),
            size_given: size.is_some(),
        }
    }

    /// The state directory from the flag, the environment, or the default.
    pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os(STATE_DIR_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// The image of a record's disk.
    pub fn image(&self, rec: &Record) -> Result<PathBuf, Failure> {
        let name = disk_of(rec)?;
        check_name(name).map_err(|e| Failure::new("bad-disk-name", format!("`{name}`: {e}")))?;
        Ok(self.dir.join(format!("{name}.img")))
    }

    fn lock(&self) -> Result<Flock<File>, Failure> {
        let fail = |e: &dyn std::fmt::Display| {
            Failure::new("state-dir", format!("{}: {e}", self.dir.display()))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| fail(&e))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))
            .map_err(|e| fail(&e))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| fail(&e))
    }

    /// The one loop device bound to `image`, verified; `None` when unbound.
    fn bound(&self, image: &Path) -> Result<Option<Loop>, Failure> {
        let fail = |e: &dyn std::fmt::Display| Failure::new("loop-failed", e.to_string());
        let mut loops = loopdev::bound_to(image).map_err(|e| fail(&e))?;
        match loops.len() {
            0 => Ok(None),
            1 => {
                let lo = loops.remove(0);
                loopdev::verify(&lo, image)
                    .map_err(|e| Failure::new("identity-mismatch", e.to_string()))?;
                Ok(Some(lo))
            }
            _ => Err(Failure::new(
                "attached-elsewhere",
                format!(
                    "{} is bound to several loop devices ({}): detach the extra ones with `losetup -d`",
                    image.display(),
                    loops
                        .iter()
                        .map(|l| l.device.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    fn create_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let image = self.image(rec)?;
        match std::fs::metadata(&image) {
            Ok(meta) => {
                if self.size_given && meta.len() != self.size.bytes() {
                    return Err(Failure::new(
                        "size-mismatch",
                        format!(
                            "{} exists with size {}, not {}",
                            image.display(),
                            Size(meta.len()),
                            self.size
                        ),
                    ));
                }
                Ok(Outcome::unchanged(
                    State::Created,
                    format!("image {} exists ({})", image.display(), Size(meta.len())),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if cx.check {
                    return Ok(Outcome::changed(
                        State::Created,
                        format!("would create image {} ({})", image.display(), self.size),
                    ));
                }
                self.make_image(&image)?;
                Ok(Outcome::changed(
                    State::Created,
                    format!("created sparse image {} ({})", image.display(), self.size),
                ))
            }
            Err(e) => Err(Failure::new(
                "state-dir",
                format!("{}: {e}", image.display()),
            )),
        }
    }

    /// Creates the image under a temporary name, then renames it into place.
    fn make_image(&self, image: &Path) -> Result<(), Failure> {
        let _lock = self.lock()?;
        let fail = |e: &dyn std::fmt::Display| {
            Failure::new("create-failed", format!("{}: {e}", image.display()))
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(image.file_name().unwrap_or_default());
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = image.with_file_name(tmp_name);
        remove_stale_temporaries(image);
        let made = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_len(self.size.bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, image)?;
            File::open(&self.dir)?.sync_all()
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made.map_err(|e| fail(&e))
    }

    fn attach_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let image = self.image(rec)?;
        if !image.exists() {
            if cx.check && rec.is_check() {
                return Ok(Outcome::changed(
                    State::Attached,
                    format!("would attach {} once created", image.display()),
                ));
            }
            return Err(Failure::new(
                "no-such-disk",
                format!("{} does not exist: run disk-create first", image.display()),
            ));
        }
        let _lock = self.lock()?;
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
        let lo =
            loopdev::attach(&image).map_err(|e| Failure::new("attach-failed", e.to_string()))?;
        rec.device = Some(lo.device.display().to_string());
        Ok(Outcome::changed(
            State::Attached,
            format!("attached {} as {}", image.display(), lo.device.display()),
        ))
    }

    fn detach_one(&self, rec: &mut Record, cx: Ctx) -> StepResult {
        let image = self.image(rec)?;
        if !image.exists() {
            return Ok(Outcome::unchanged(
                State::Detached,
                format!("{} does not exist: nothing attached", image.display()),
            ));
        }
        let _lock = self.lock()?;
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
        loopdev::detach(&lo).map_err(|e| Failure::new("detach-failed", e.to_string()))?;
        Ok(Outcome::changed(
            State::Detached,
            format!("detached {} from {}", image.display(), lo.device.display()),
        ))
    }
}

/// Removes `.<name>.img.<pid>.tmp` files left by creates that were killed.
fn remove_stale_temporaries(image: &Path) {
    let (Some(dir), Some(name)) = (image.parent(), image.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = n
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Provider for Local {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult> {
        records.iter_mut().map(|r| self.create_one(r, cx)).collect()
    }

    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
        records
            .iter()
            .map(|r| {
                let image = self.image(r)?;
                let meta = std::fs::metadata(&image).map_err(|_| {
                    Failure::new(
                        "no-such-disk",
                        format!("{} does not exist", image.display()),
                    )
                })?;
                let loops = loopdev::bound_to(&image)
                    .map_err(|e| Failure::new("loop-failed", e.to_string()))?;
                Ok(DiskStatus {
                    id: image.display().to_string(),
                    zone: None,
                    size: Some(meta.len()),
                    attached_to: loops
                        .iter()
                        .map(|l| l.device.display().to_string())
                        .collect(),
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

    fn discover(&mut self, record: &Record) -> Result<PathBuf, Failure> {
        let image = self.image(record)?;
        self.bound(&image)?.map(|l| l.device).ok_or_else(|| {
            Failure::new(
                "not-attached",
                format!("{} is not attached", image.display()),
            )
        })
    }
}
