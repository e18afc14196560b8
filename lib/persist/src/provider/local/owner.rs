//! Whose a local image is: the ownership EBS tags and Compute Engine labels
//! give a cloud disk, for an image file.
//!
//! Beside `<name>.img` lies `<name>.owner.json` ([`Owner`]): the deployment
//! (and node) the image was made for. It is written, atomically, before the
//! image is placed, so an image made by this version is never without one.
//! Every step that acts on an image (create, attach, detach, snapshot,
//! restore) checks it first ([`Local::claim`]): another deployment's image
//! is `other-deployment`, another node's `other-node`, and nothing is done.
//!
//! **Images made before owner files** (none beside them) are adopted, as a
//! cloud disk made by hand is: the first deployment whose run acts on one
//! writes its owner file, says so on stderr, and marks the record
//! `adopted`. On a machine where several deployments kept images in one
//! state directory before this version, run each deployment's `scripts/up`
//! (or `disk-attach`) once, each with its own AppScalefile, before sharing
//! disk names across them.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Local, write_json};
use crate::codes;
use crate::log;
use crate::record::Record;
use crate::snapshot::Stamp;
use crate::step::Failure;

/// What `<name>.owner.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The deployment the image belongs to.
    pub deployment: String,
    /// The node it was made for, when the record named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The tool that wrote this (`disk-create`, or the one that adopted the
    /// image).
    pub tool: String,
    /// When, RFC 3339.
    pub time: String,
    /// The image was found without an owner file and adopted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

/// The owner file of `image` (`<name>.img` → `<name>.owner.json`).
pub fn owner_path(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".img").unwrap_or(&name);
    image.with_file_name(format!("{stem}.owner.json"))
}

/// Reads `image`'s owner file: `None` when there is none. One that is a
/// symbolic link, not a regular file, or not an owner record is an error:
/// nobody can say whose the image is.
pub fn read(image: &Path) -> Result<Option<Owner>, Failure> {
    let path = owner_path(image);
    let bad = |why: String| {
        Failure::new(
            codes::UNSAFE_IMAGE,
            format!(
                "{}: {why}: whose {} is cannot be told; look at it, and remove it if it is not ours",
                path.display(),
                image.display()
            ),
        )
    };
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(bad("is a symbolic link".into()));
        }
        Err(e) => {
            return Err(Failure::new(
                codes::STATE_DIR,
                format!("{}: {e}", path.display()),
            ));
        }
    };
    let mut text = String::new();
    f.metadata()
        .ok()
        .filter(|m| m.is_file())
        .ok_or_else(|| bad("is not a regular file".into()))?;
    f.read_to_string(&mut text)
        .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| bad(format!("not an owner record ({e})")))
}

impl Local {
    /// The deployment a record's image belongs to: `--deployment`, else the
    /// record's own, else the shared default (as for cloud disks).
    pub(super) fn deployment_of(&self, rec: &Record) -> String {
        self.deployment
            .clone()
            .or_else(|| rec.deployment.clone().filter(|d| !d.is_empty()))
            .unwrap_or_else(|| crate::record::DEFAULT_DEPLOYMENT.to_string())
    }

    /// The owner a new image of `rec` gets.
    pub(super) fn new_owner(&self, rec: &Record) -> Owner {
        Owner {
            deployment: self.deployment_of(rec),
            node: rec.node.clone(),
            tool: log::tool().to_string(),
            time: Stamp::now().rfc3339(),
            adopted: false,
        }
    }

    /// Writes `image`'s owner file (before the image is placed).
    pub(super) fn write_owner(&self, image: &Path, owner: &Owner) -> Result<(), Failure> {
        let path = owner_path(image);
        write_json(&path, owner)
            .map_err(|e| Failure::new(codes::CREATE_FAILED, format!("{}: {e}", path.display())))
    }

    /// Checks that `image`'s owner file, if there is one, names the
    /// record's deployment (and node), and names the deployment in the
    /// record; `false` when there is none.
    pub(super) fn owned(&self, rec: &mut Record, image: &Path) -> Result<bool, Failure> {
        let want = self.deployment_of(rec);
        rec.deployment = Some(want.clone());
        match read(image)? {
            Some(o) if o.deployment != want => Err(Failure::new(
                codes::OTHER_DEPLOYMENT,
                format!(
                    "{} belongs to deployment {} ({}), not {want}: never used by another deployment. Give this disk another name, or pass --deployment if this is that deployment",
                    image.display(),
                    o.deployment,
                    owner_path(image).display()
                ),
            )),
            Some(Owner { node: Some(n), .. }) if rec.node.as_deref().is_some_and(|r| r != n) => {
                Err(Failure::new(
                    codes::OTHER_NODE,
                    format!(
                        "{} is node {n}'s disk in deployment {want}, not {}'s: leaving it alone",
                        image.display(),
                        rec.node.as_deref().unwrap_or("?")
                    ),
                ))
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// Checks that the existing `image` is the record's deployment's (and
    /// node's) ([`Local::owned`]). An image with no owner file (made before
    /// them) is adopted: its owner file is written (not with `check`), the
    /// record marked `adopted`.
    pub(super) fn claim(&self, rec: &mut Record, image: &Path, check: bool) -> Result<(), Failure> {
        if self.owned(rec, image)? {
            return Ok(());
        }
        rec.adopted = true;
        if check {
            return Ok(());
        }
        let owner = Owner {
            adopted: true,
            ..self.new_owner(rec)
        };
        self.write_owner(image, &owner)?;
        log::warn(format_args!(
            "{}: {} had no owner file (made before this version): adopted by deployment {} ({} written)",
            rec.label(),
            image.display(),
            owner.deployment,
            owner_path(image).display()
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_file_sits_beside_the_image() {
        assert_eq!(
            owner_path(Path::new("/s/data-1.img")),
            Path::new("/s/data-1.owner.json")
        );
        assert_eq!(
            owner_path(Path::new("/s/a.b.img")),
            Path::new("/s/a.b.owner.json")
        );
    }
}
