//! File operations with the guarantees the rest of the crate relies on:
//! never replacing an existing name, and making a directory's changes
//! durable. (Atomic replacement of a file is [`crate::fstab::write_atomic`].)

use std::path::Path;

/// Renames `from` to `to` unless `to` exists: `renameat2(RENAME_NOREPLACE)`,
/// or a hard link (then `from` stays; the caller removes it) on a
/// filesystem without it. `Ok(false)` when `to` exists: nothing was replaced.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(from)?, c(to)?);
    // renameat2 by its system call: the C libraries do not all wrap it
    // (musl does not), and nix offers it for glibc only.
    const RENAME_NOREPLACE: nix::libc::c_uint = 1;
    // SAFETY: two valid NUL-terminated paths and plain integer arguments.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_renameat2,
            nix::libc::AT_FDCWD,
            a.as_ptr(),
            nix::libc::AT_FDCWD,
            b.as_ptr(),
            RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(nix::libc::EEXIST) => Ok(false),
        Some(nix::libc::EINVAL | nix::libc::ENOSYS) => match std::fs::hard_link(from, to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        _ => Err(e),
    }
}

/// Creates the absolute directory `dir` and any missing parents, walking
/// from `/` one component at a time without following a symbolic link
/// (`openat` with `O_NOFOLLOW`), so a link planted on the way is refused
/// rather than followed. Returns the directories it created, outermost
/// first (for a caller that must take them back).
pub fn create_dir_all_nofollow(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, mkdirat};
    use std::os::fd::OwnedFd;
    use std::path::Component;
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut at: OwnedFd = openat(nix::fcntl::AT_FDCWD, "/", flags, Mode::empty())?;
    let mut here = std::path::PathBuf::from("/");
    let mut created = Vec::new();
    for c in dir.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        here.push(name);
        let next = match openat(&at, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => {
                match mkdirat(&at, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => created.push(here.clone()),
                    Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                openat(&at, name, flags, Mode::empty())?
            }
            Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
                return Err(std::io::Error::other(format!(
                    "{} is a symbolic link or not a directory",
                    here.display()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        at = next;
    }
    Ok(created)
}

/// The bytes a file holds on its filesystem (its allocated blocks): less
/// than its length when it is sparse.
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512)
}

/// What the filesystem holding `dir` has free for an unprivileged writer
/// (`statvfs` `f_bavail`: the blocks reserved for root are not counted
/// on), and its device number, to tell filesystems apart.
pub(crate) fn free_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let st = nix::sys::statvfs::statvfs(dir)?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    Ok((free, std::fs::metadata(dir)?.dev()))
}

/// Flushes the filesystem holding `dir` (`syncfs`).
pub(crate) fn sync_fs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    nix::unistd::syncfs(&f).map_err(std::io::Error::from)
}

/// How [`copy_image`] copied a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMethod {
    /// The copy shares the source's blocks (`FICLONE`): instant, and it takes
    /// no space until one of them is written.
    Reflink,
    /// The data ranges were copied (`SEEK_DATA`/`SEEK_HOLE`); holes stay holes.
    Sparse,
}

impl CopyMethod {
    /// `reflink` or `sparse`.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::Sparse => "sparse",
        }
    }
}

nix::ioctl_write_int!(
    /// `FICLONE`: make the destination share the source's blocks.
    ficlone,
    0x94,
    9
);

/// Copies the whole of `src` into the empty file `dst`: a reflink where the
/// filesystem can (`FICLONE`: both on one btrfs or XFS-with-reflink), else
/// a sparse copy of the data ranges only, so holes stay holes. `go_on` is
/// asked between chunks; when it gives an error, the copy stops with it
/// (a deadline, a signal). The copy is flushed (`fsync`) before returning.
pub(crate) fn copy_image(
    src: &std::fs::File,
    dst: &std::fs::File,
    mut go_on: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<CopyMethod> {
    use nix::unistd::{Whence, lseek};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    go_on()?;
    // SAFETY: two open descriptors; FICLONE reads the source's number.
    if unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as nix::libc::c_ulong) }.is_ok() {
        dst.sync_all()?;
        return Ok(CopyMethod::Reflink);
    }
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at: i64 = 0;
    while (at as u64) < len {
        let start = match lseek(src, at, Whence::SeekData) {
            Ok(o) => o,
            // No data after `at`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(src, start, Whence::SeekHole)?.min(len as i64);
        let mut pos = start;
        while pos < end {
            go_on()?;
            let want = ((end - pos) as usize).min(buf.len());
            let n = src.read_at(&mut buf[..want], pos as u64)?;
            if n == 0 {
                return Err(std::io::Error::other(
                    "the source shrank while being copied",
                ));
            }
            dst.write_all_at(&buf[..n], pos as u64)?;
            pos += n as i64;
        }
        at = end;
    }
    dst.sync_all()?;
    Ok(CopyMethod::Sparse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_the_data_and_the_holes() {
        use std::io::{Seek, SeekFrom, Write};
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut src = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("src"))
            .unwrap();
        src.set_len(64 << 20).unwrap();
        src.seek(SeekFrom::Start(8 << 20)).unwrap();
        src.write_all(&[7u8; 300_000]).unwrap();
        src.seek(SeekFrom::Start(60 << 20)).unwrap();
        src.write_all(b"tail").unwrap();
        src.sync_all().unwrap();
        let dst = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("dst"))
            .unwrap();
        copy_image(&src, &dst, || Ok(())).unwrap();
        assert_eq!(
            std::fs::read(dir.join("src")).unwrap(),
            std::fs::read(dir.join("dst")).unwrap()
        );
        let m = dst.metadata().unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(
            m.blocks() * 512 < 8 << 20,
            "holes kept: {} blocks",
            m.blocks()
        );
        let stop = std::fs::File::create(dir.join("stopped")).unwrap();
        let e = copy_image(&src, &stop, || Err(std::io::Error::other("deadline"))).unwrap_err();
        assert_eq!(e.to_string(), "deadline");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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

    #[test]
    fn directories_are_made_without_following_links() {
        let dir = std::env::temp_dir().join(format!("nofollow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let made = create_dir_all_nofollow(&dir.join("a/b")).unwrap();
        assert_eq!(made, [dir.join("a"), dir.join("a/b")]);
        assert!(
            create_dir_all_nofollow(&dir.join("a/b"))
                .unwrap()
                .is_empty()
        );
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        assert!(create_dir_all_nofollow(&dir.join("link/x")).is_err());
        assert!(!dir.join("real/x").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
