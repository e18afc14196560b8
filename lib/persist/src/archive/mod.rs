//! Off-site archives: each disk's files, at one moment, in a restic
//! repository (S3 or an S3-compatible store, Google Cloud Storage, a
//! directory), restorable onto a new disk of any provider (docs/archive.md).
//!
//! * [`restic`]: the engine, run as a subprocess; [`repo`]: which
//!   repository, reached how, and whose it is.
//! * [`tags`]: what the repository's snapshots say of themselves.
//! * [`capture`]: a disk at one moment, mounted read-only (frozen, copied,
//!   thawed; a thaw sentinel for SIGKILL); [`scratch`]: a cloud disk's
//!   copy, made by `disk-scratch`.
//! * [`make`]: `disk-archive` (archive, retention, list, seal a set,
//!   verify); [`fill`]: `disk-restore` (a new filesystem filled by the
//!   seed's rules).
//! * [`tree`]: what restic does not keep of a tree (holes, the root's
//!   owner), and a restored tree compared with its archive;
//!   [`ledger`]: what the node remembers for `disk-status`.

use crate::blockdev::{self, Device, Probe};
use crate::codes;
use crate::step::Failure;

/// The filesystem on `dev` (`blkid -p`); `no-filesystem`, with `then` said,
/// when it holds none.
pub(crate) fn filesystem_on(dev: &Device, then: &str) -> Result<Probe, Failure> {
    blockdev::probe(&dev.path)
        .map_err(|e| Failure::new(codes::PROBE_FAILED, e.to_string()))?
        .filter(|p| p.usage() == Some("filesystem"))
        .ok_or_else(|| {
            Failure::new(
                codes::NO_FILESYSTEM,
                format!("{} holds no filesystem: {then}", dev.path.display()),
            )
        })
}

pub mod capture;
pub mod fill;
pub mod ledger;
pub mod make;
pub(crate) mod repo;
pub(crate) mod restic;
pub(crate) mod scratch;
pub(crate) mod tags;
pub(crate) mod tree;
