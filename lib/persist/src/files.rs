//! File operations with the guarantees the rest of the crate relies on:
//! never replacing an existing name, and making a directory's changes
//! durable. (Atomic replacement of a file is [`crate::fstab::write_atomic`].)

use std::path::Path;

/// Renames `from` to `to` unless `to` exists: `renameat2(RENAME_NOREPLACE)`,
/// or a hard link (then `from` stays; the caller removes it) on a
/// filesystem without it. `Ok(false)` when `to` exists: nothing was replaced.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(Errno::EINVAL | Errno::ENOSYS) => match std::fs::hard_link(from, to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    }
}

/// Flushes the filesystem holding `dir` (`syncfs`).
pub fn sync_fs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    nix::unistd::syncfs(&f).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_name_is_never_replaced() {
        let dir = std::env::temp_dir().join(format!("noreplace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), "new").unwrap();
        std::fs::write(dir.join("b"), "old").unwrap();
        assert!(!rename_noreplace(&dir.join("a"), &dir.join("b")).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "old");
        assert!(rename_noreplace(&dir.join("a"), &dir.join("c")).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
