//! A static disk on this node: the block device path the record names as
//! its disk, checked. The `static` provider ([`crate::provider::static_disk`])
//! and the node-side tools both take it from here.

use std::path::{Component, Path, PathBuf};

use super::disk_of;
use crate::blockdev::Device;
use crate::codes::{self, Code};
use crate::failure::Failure;
use crate::record::Record;

/// The record's device path, normalised (`//` and a trailing `/` go), and
/// checked: absolute, under `/dev`, no `.` or `..`.
pub fn device_path(rec: &Record) -> Result<PathBuf, Failure> {
    let path = disk_of(rec)?;
    let p = Path::new(path);
    let bad = || {
        Failure::new(
            codes::BAD_DISK_NAME,
            format!(
                "`{}`: a static disk is a plain device path under /dev (no `.` or `..`)",
                crate::log::escape_controls(path)
            ),
        )
    };
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad());
    }
    let clean: PathBuf = p.components().collect();
    if !clean.starts_with("/dev") || clean == Path::new("/dev") {
        return Err(bad());
    }
    Ok(clean)
}

/// The record's device ([`device_path`]), opened; a device that cannot be
/// opened fails with `missing`, the code its caller means by that (the
/// provider: `no-such-disk`; a check of the record's `device`:
/// `identity-mismatch`).
pub fn device(rec: &Record, missing: Code) -> Result<Device, Failure> {
    Device::open(&device_path(rec)?).map_err(|e| Failure::new(missing, e.to_string()))
}
