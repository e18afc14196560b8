//! What this node remembers of its disks' archives, for `disk-status`
//! (whose metrics let an operator alert on an archive that stopped): the
//! last archive of each disk (when, how big, where) and the last restore
//! drill that matched it. One small JSON file per disk, named by its key
//! ([`key`]), in `/var/lib/appscale-persist/archives`
//! unless `APPSCALE_PERSIST_ARCHIVE_LEDGER` says otherwise; written
//! through a temporary file and renamed, so a reader never sees half.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The key naming a disk's ledger entry, and its archive's locks, view and
/// scratch copies ([`super::capture`]): a hash of its deployment, provider
/// and name.
pub fn key(deployment: &str, provider: crate::record::ProviderKind, disk: &str) -> String {
    let text = format!("{deployment}\0{provider}\0{disk}");
    format!("{:016x}", crate::hash::fnv1a64(0, text.as_bytes()))
}

/// Where the ledger is unless the environment says otherwise.
pub(crate) const DEFAULT_DIR: &str = "/var/lib/appscale-persist/archives";

/// The environment variable that moves the ledger.
pub(crate) const DIR_ENV: &str = "APPSCALE_PERSIST_ARCHIVE_LEDGER";

/// One disk's entry (the wire type of a record's `status.archive`, beside
/// the record).
pub use crate::record::status::ArchivePart as Entry;

/// The ledger's directory.
pub fn dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

fn path_of(key: &str) -> PathBuf {
    dir().join(format!("{key}.json"))
}

/// The entry of the disk `key` (empty when there is none, or it cannot be
/// read: the ledger is a report, never a reason to fail).
pub fn read(key: &str) -> Entry {
    read_at(&path_of(key))
}

fn read_at(path: &Path) -> Entry {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The archive the filesystem `uuid` was filled from by disk-restore, if
/// it was, on this node.
pub(crate) fn restored_into(uuid: &str) -> Option<String> {
    read_at(&path_of(&restored_key(uuid))).last_id
}

/// Notes that the filesystem `uuid` was filled from the archive `id`.
pub(crate) fn note_restored(uuid: &str, id: &str, repository: &str) -> std::io::Result<()> {
    update(&restored_key(uuid), |e| {
        e.last_id = Some(id.to_string());
        e.repository = Some(repository.to_string());
    })
}

/// The ledger's name for a filesystem filled by a restore (a UUID names a
/// file: hex digits and dashes; anything else is hashed).
fn restored_key(uuid: &str) -> String {
    if !uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        format!("restored-{uuid}")
    } else {
        format!("restored-{:016x}", crate::hash::fnv1a64(0, uuid.as_bytes()))
    }
}

/// Changes the entry of the disk `key` with `f`, and writes it back.
pub(crate) fn update(key: &str, f: impl FnOnce(&mut Entry)) -> std::io::Result<()> {
    let path = path_of(key);
    let d = dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)?;
    let mut e = read_at(&path);
    f(&mut e);
    let tmp = d.join(format!(".{key}.{}.tmp", std::process::id()));
    let done = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&e).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    let _ = std::fs::remove_file(&tmp);
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ProviderKind;

    #[test]
    fn keys_tell_disks_apart() {
        let a = key("d", ProviderKind::Local, "data-1");
        assert_eq!(a.len(), 16);
        assert_ne!(a, key("e", ProviderKind::Local, "data-1"));
        assert_ne!(a, key("d", ProviderKind::Ec2, "data-1"));
    }
}
