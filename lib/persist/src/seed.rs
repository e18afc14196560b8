//! Seeding: copying what a mountpoint already holds onto a new, empty
//! filesystem before mounting it there, so that the first `up` does not hide
//! an image's `/opt/appscale`; and doing so without ever deleting anything.
//! A restore from an archive fills a new filesystem by the same rules
//! ([`fill`]).
//!
//! The rules (docs/safety.md):
//!
//! * Only a filesystem this flow formatted is seeded: `disk-ensure-fs`
//!   writes a *fresh* mark for the UUID it gives a new filesystem
//!   ([`mark_fresh`], in `/run`, before `mkfs` runs), and `disk-mount`
//!   clears it once the filesystem is mounted. A filesystem made by anyone
//!   else, or mounted before, is never seeded; a record's `fs.formatted` is
//!   not enough (it is the record's word).
//! * The copy goes into a staging directory on the new filesystem
//!   ([`STAGING`]); only when it is complete is that renamed to [`STAGED`],
//!   and its entries are then moved to the top of the filesystem one by one,
//!   never replacing anything there. A copy interrupted mid-way is redone
//!   after removing its staging directory, and nothing else; one interrupted
//!   while moving is finished (on a fresh filesystem only).
//! * A staging directory, or the marker of older versions
//!   ([`LEGACY_MARKER`]), on a filesystem that holds anything else is an
//!   error naming it: the disk is never wiped to start over.

use crate::codes;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blockdev::Device;
use crate::files;
use crate::mount::TempMount;
use crate::run::Cmd;

/// Where a copy in progress goes, at the top of the new filesystem.
pub const STAGING: &str = ".appscale-persist-seed.partial";

/// What a complete copy is renamed to, before its entries are moved up.
pub const STAGED: &str = ".appscale-persist-seed.done";

/// The marker older versions left at the top of a filesystem while copying.
pub const LEGACY_MARKER: &str = ".appscale-persist-seeding";

/// Where the fresh marks live: one empty file per filesystem UUID.
const FRESH_DIR: &str = "/run/appscale-persist/fresh";

/// How long a copy may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);

fn fresh_path(uuid: &str) -> Option<PathBuf> {
    // A UUID names a file: hex digits and dashes only.
    (!uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| Path::new(FRESH_DIR).join(uuid))
}

/// Marks the filesystem `uuid` as made by this node and not yet mounted.
pub fn mark_fresh(uuid: &str) -> std::io::Result<()> {
    let path = fresh_path(uuid)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a UUID"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(FRESH_DIR)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
}

/// Whether the filesystem `uuid` was made by this node and not mounted since.
pub fn is_fresh(uuid: &str) -> bool {
    fresh_path(uuid).is_some_and(|p| p.exists())
}

/// Forgets the fresh mark of `uuid` (it has been mounted, or mkfs failed).
pub fn clear_fresh(uuid: &str) {
    if let Some(p) = fresh_path(uuid) {
        let _ = std::fs::remove_file(p);
    }
}

/// Why a seed did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A staging directory or old marker sits beside other data.
    #[error(
        "the filesystem holds {marker}, left by an interrupted seed, beside other data ({others}): not mounting it, and deleting nothing; look at the disk, then remove {marker} by hand if the copy is not wanted"
    )]
    LeftoverMarker {
        /// The marker's name.
        marker: String,
        /// Some of the other entries, for the message.
        others: String,
    },
    /// A finished copy could not be moved up: the name is taken.
    #[error(
        "{name} is both in the finished copy {STAGED} and at the top of the filesystem: not replacing it; move one of them by hand"
    )]
    Conflict {
        /// The entry's name.
        name: String,
    },
    /// Copying or moving failed.
    #[error("{0}")]
    Failed(String),
}

impl SeedError {
    /// The record error code for this failure.
    pub fn code(&self) -> codes::Code {
        match self {
            SeedError::LeftoverMarker { .. } => codes::SEED_MARKER,
            SeedError::Conflict { .. } => codes::SEED_CONFLICT,
            SeedError::Failed(_) => codes::SEED_FAILED,
        }
    }
}

impl From<SeedError> for crate::step::Failure {
    fn from(e: SeedError) -> Self {
        crate::step::Failure::new(e.code(), e.to_string())
    }
}

/// The seed marker at the top of the directory `root` (a mounted
/// filesystem), if one is there: a staging directory or the old marker.
pub fn leftover_at(root: &Path) -> Option<&'static str> {
    [STAGING, STAGED, LEGACY_MARKER]
        .into_iter()
        .find(|m| root.join(m).symlink_metadata().is_ok())
}

/// What [`seed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeded {
    /// Copied this many entries from the mountpoint.
    Copied(usize),
    /// Finished moving a copy an earlier run completed.
    Finished(usize),
    /// Nothing: the filesystem holds data, or may not be seeded.
    Nothing,
}

/// Seeds the filesystem on `dev` from the directory `mp` (see the module
/// docs); `may_start` says whether a new copy may begin (the filesystem is
/// fresh). Mounts the filesystem in a private temporary directory to do so.
pub fn seed(dev: &Device, fstype: &str, mp: &Path, may_start: bool) -> Result<Seeded, SeedError> {
    let from = format!("seeding from {}", mp.display());
    fill(dev, fstype, may_start, &from, |staging| {
        let mut src = mp.as_os_str().to_owned();
        src.push("/.");
        Cmd::new("cp")
            .args(["-a", "--"])
            .arg(&src)
            .arg(staging)
            .timeout(COPY_TIMEOUT)
            .run()
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// Fills the new filesystem on `dev` by the rules of the module docs, with
/// what `copy` puts into the staging directory it is given (the files of
/// a mountpoint for [`seed`]; an archive's, restored, for
/// `disk-restore`); `what` names it in messages. `may_start` says whether
/// a new copy may begin (the filesystem is fresh): without it, only a copy
/// an earlier run completed is moved into place.
pub fn fill(
    dev: &Device,
    fstype: &str,
    may_start: bool,
    what: &str,
    copy: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<Seeded, SeedError> {
    let fail = |e: &dyn std::fmt::Display| SeedError::Failed(format!("{what}: {e}"));
    let tmp = TempMount::new(&dev.path, dev.major, dev.minor, fstype).map_err(|e| fail(&e))?;
    let root = tmp.path().to_path_buf();
    let names: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| fail(&e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    let others: Vec<&String> = names
        .iter()
        .filter(|n| !["lost+found", STAGING, STAGED, LEGACY_MARKER].contains(&n.as_str()))
        .collect();
    let listed = || {
        let mut v: Vec<String> = others.iter().take(5).map(|s| s.to_string()).collect();
        if others.len() > 5 {
            v.push(format!("and {} more", others.len() - 5));
        }
        crate::log::escape_controls(&v.join(", "))
    };
    let result = if has(LEGACY_MARKER) {
        Err(SeedError::LeftoverMarker {
            marker: LEGACY_MARKER.into(),
            others: if others.is_empty() {
                "nothing else".into()
            } else {
                listed()
            },
        })
    } else if has(STAGED) && may_start {
        finish(&root).map(Seeded::Finished)
    } else if has(STAGED) {
        Err(SeedError::LeftoverMarker {
            marker: STAGED.into(),
            others: if others.is_empty() {
                "on a filesystem this node did not just format".into()
            } else {
                listed()
            },
        })
    } else if has(STAGING) && !others.is_empty() {
        Err(SeedError::LeftoverMarker {
            marker: STAGING.into(),
            others: listed(),
        })
    } else if !others.is_empty() {
        Ok(Seeded::Nothing)
    } else if has(STAGING) && !may_start {
        Err(SeedError::LeftoverMarker {
            marker: STAGING.into(),
            others: "on a filesystem this node did not just format".into(),
        })
    } else if !may_start {
        Ok(Seeded::Nothing)
    } else {
        copy_in(&root, what, copy).map(Seeded::Copied)
    };
    tmp.finish().map_err(|e| fail(&e))?;
    result
}

/// Has `copy` fill a fresh staging directory on `root`, then moves it up.
fn copy_in(
    root: &Path,
    what: &str,
    copy: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<usize, SeedError> {
    let fail = |e: &dyn std::fmt::Display| SeedError::Failed(format!("{what}: {e}"));
    let staging = root.join(STAGING);
    // Only our own interrupted copy is ever removed: the staging directory.
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| fail(&e))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| fail(&e))?;
    copy(&staging).map_err(|e| fail(&e))?;
    files::sync_fs(root).map_err(|e| fail(&e))?;
    std::fs::rename(&staging, root.join(STAGED)).map_err(|e| fail(&e))?;
    finish(root)
}

/// Moves the entries of a finished copy to the top, never replacing one.
fn finish(root: &Path) -> Result<usize, SeedError> {
    let staged = root.join(STAGED);
    let fail = |e: &dyn std::fmt::Display| {
        SeedError::Failed(format!("moving the copy out of {}: {e}", staged.display()))
    };
    let mut moved = 0;
    for e in std::fs::read_dir(&staged).map_err(|e| fail(&e))?.flatten() {
        let name = e.file_name();
        match files::rename_noreplace(&e.path(), &root.join(&name)) {
            // Where a hard link stood in for the rename, drop the old name.
            Ok(true) => {
                if e.path().symlink_metadata().is_ok() {
                    std::fs::remove_file(e.path())
                        .or_else(|_| std::fs::remove_dir(e.path()))
                        .map_err(|err| fail(&err))?;
                }
                moved += 1
            }
            Ok(false) => {
                return Err(SeedError::Conflict {
                    name: crate::log::escape_controls(&name.to_string_lossy()),
                });
            }
            Err(err) => return Err(fail(&err)),
        }
    }
    std::fs::remove_dir(&staged).map_err(|e| fail(&e))?;
    files::sync_fs(root).map_err(|e| fail(&e))?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_name_fresh_marks() {
        assert!(fresh_path("3f1c1a52-0a57-4b8e-9c41-1b2f0c3d4e5f").is_some());
        assert!(fresh_path("../../etc/passwd").is_none());
        assert!(fresh_path("").is_none());
    }
}
