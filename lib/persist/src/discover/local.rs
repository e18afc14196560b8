//! A local disk on this node: its image (the record's `disk_id`, else
//! `<state dir>/<disk>.img`) and the loop device bound to it. The `local`
//! provider ([`crate::provider::local`]) makes and binds images by these
//! names; the node-side tools check a loop device against them.

use std::path::{Path, PathBuf};

use super::disk_of;
use crate::blockdev::Device;
use crate::codes;
use crate::failure::Failure;
use crate::loopdev::{self, Loop};
use crate::record::Record;

/// Where images live unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/appscale-persist/disks";

/// The environment variable that moves the state directory.
pub const STATE_DIR_ENV: &str = "APPSCALE_PERSIST_STATE_DIR";

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

/// The state directory from the flag, the environment, or the default.
pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(STATE_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The image of a record's disk in the state directory `dir`.
pub fn image_in(dir: &Path, rec: &Record) -> Result<PathBuf, Failure> {
    let name = disk_of(rec)?;
    check_name(name).map_err(|e| Failure::new(codes::BAD_DISK_NAME, format!("`{name}`: {e}")))?;
    Ok(dir.join(format!("{name}.img")))
}

/// The image of a record's disk: its `disk_id`, else its name in the state
/// directory ([`state_dir`] of `flag`).
pub fn image_of(rec: &Record, flag: Option<PathBuf>) -> Result<PathBuf, Failure> {
    match rec.disk_id.as_deref() {
        Some(p) => Ok(PathBuf::from(p)),
        None => image_in(&state_dir(flag), rec),
    }
}

/// The one loop device bound to the record's image ([`image_of`], the state
/// directory from `state_dir`), verified; `None` when there is none, or more
/// than one.
pub fn bound_device(rec: &Record, state_dir: Option<&Path>) -> Option<Device> {
    let image = image_of(rec, state_dir.map(Path::to_path_buf)).ok()?;
    let lo = bound_loop(&image).ok()??;
    Device::open(&lo.device).ok()
}

/// The one loop device bound to `image`, verified; `None` when unbound,
/// and a failure when it is bound to several: the lookup both
/// [`bound_device`] and the `local` provider make.
pub fn bound_loop(image: &Path) -> Result<Option<Loop>, Failure> {
    let mut loops = loopdev::bound_to(image)?;
    match loops.len() {
        0 => Ok(None),
        1 => {
            let lo = loops.remove(0);
            loopdev::verify(&lo, image)?;
            Ok(Some(lo))
        }
        _ => Err(Failure::new(
            codes::ATTACHED_ELSEWHERE,
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

/// Checks that the loop device `dev` a local record names is bound to the
/// record's image (its `disk_id`, else `<state dir>/<disk>.img`): by the
/// backing inode and by sysfs's backing file.
pub fn verify_device(rec: &Record, dev: &Device) -> Result<(), Failure> {
    let image = image_of(rec, None)?;
    let unconfirmed = |why: String| {
        Failure::new(
            codes::IDENTITY_UNCONFIRMED,
            format!(
                "cannot confirm that {} is the disk {}: {why}",
                dev.path.display(),
                image.display()
            ),
        )
    };
    if std::fs::symlink_metadata(&image).is_err() {
        return Err(unconfirmed(
            "the image does not exist here (give the record its `disk_id`, as disk-attach does, or the state directory in APPSCALE_PERSIST_STATE_DIR)".into(),
        ));
    }
    let loops = loopdev::bound_to(&image).map_err(|e| unconfirmed(e.to_string()))?;
    let name = dev.real.file_name().unwrap_or_default();
    match loops.iter().find(|l| l.device.file_name() == Some(name)) {
        Some(lo) => loopdev::verify(lo, &image).map_err(Failure::from),
        None => Err(Failure::new(
            codes::IDENTITY_MISMATCH,
            format!(
                "the record names {} for {}, but {} is bound to {}: not this disk",
                dev.path.display(),
                image.display(),
                dev.path.display(),
                loopdev::list()
                    .ok()
                    .and_then(|all| all.into_iter().find(|l| l.device.file_name() == Some(name)))
                    .map(|l| l.backing_file.display().to_string())
                    .unwrap_or_else(|| "nothing".into())
            ),
        )),
    }
}
