//! A tree of files as archives need it beyond what restic keeps: its
//! survey ([`survey`]: sizes, the files with holes, the root directory's
//! owner and mode), holes made again after a restore ([`punch_holes`]),
//! and a restored tree held against an archive's listing ([`compare`]).

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::restic::Entry;
use super::tags::DirMeta;

/// What [`survey`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// Bytes of all regular files, holes included (hard links once).
    pub apparent: u64,
    /// Regular files with holes, from the root (no leading `/`).
    pub sparse: Vec<PathBuf>,
    /// The root directory.
    pub root: DirMeta,
}

/// The owner, mode and modification time of `meta`.
pub fn dir_meta(meta: &std::fs::Metadata) -> DirMeta {
    DirMeta {
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    }
}

/// Walks the tree at `root` (one filesystem, symlinks not followed).
pub fn survey(root: &Path) -> std::io::Result<Survey> {
    let top = std::fs::symlink_metadata(root)?;
    let mut out = Survey {
        root: dir_meta(&top),
        ..Survey::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel))? {
            let e = e?;
            let path = rel.join(e.file_name());
            let m = e.metadata()?;
            if m.dev() != top.dev() {
                continue;
            }
            if m.is_dir() {
                todo.push(path);
            } else if m.is_file() {
                if m.nlink() > 1 && !seen.insert(m.ino()) {
                    continue;
                }
                out.apparent += m.len();
                // Allocated less than its whole blocks: it has holes.
                if m.blocks() * 512 < m.len() / 4096 * 4096 {
                    out.sparse.push(path);
                }
            }
        }
    }
    out.sparse.sort();
    Ok(out)
}

/// Gives back the holes of the file at `path`: every 4 KiB block of zeros
/// is deallocated (`FALLOC_FL_PUNCH_HOLE`), its content unchanged; its
/// access and modification times are kept.
pub fn punch_holes(path: &Path) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 4096;
    let f = File::options().read(true).write(true).open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Ok(());
    }
    let len = m.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut run: Option<u64> = None;
    let mut at = 0u64;
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    let punch = |from: u64, to: u64| -> std::io::Result<()> {
        if to > from {
            fallocate(&f, flags, from as i64, (to - from) as i64)?;
        }
        Ok(())
    };
    while at < len {
        let n = f.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        for (i, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
            let off = at + i as u64 * BLOCK;
            let whole = block.len() as u64 == BLOCK;
            if whole && block.iter().all(|&b| b == 0) {
                run.get_or_insert(off);
            } else if let Some(start) = run.take() {
                punch(start, off)?;
            }
        }
        at += n as u64;
    }
    if let Some(start) = run {
        punch(start, at / BLOCK * BLOCK)?;
    }
    // Punching changed the modification time: give it back.
    let times = [
        nix::sys::time::TimeSpec::new(m.atime(), m.atime_nsec()),
        nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec()),
    ];
    nix::sys::stat::futimens(&f, &times[0], &times[1]).map_err(std::io::Error::from)?;
    Ok(())
}

/// Sets `dir`'s owner, mode and modification time to `meta`'s.
pub fn apply_dir_meta(dir: &Path, meta: &DirMeta) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(meta.uid), Some(meta.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(meta.mode))?;
    let mtime = nix::sys::time::TimeSpec::new(meta.mtime, meta.mtime_nsec);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dir,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}

/// Go's `os.FileMode` bits (what restic lists) as Unix permission bits.
fn unix_mode(go: u32) -> u32 {
    let mut m = go & 0o777;
    if go & (1 << 23) != 0 {
        m |= 0o4000;
    }
    if go & (1 << 22) != 0 {
        m |= 0o2000;
    }
    if go & (1 << 20) != 0 {
        m |= 0o1000;
    }
    m
}

/// The differences between the tree at `root` and an archive's listing
/// (`entries`, from `restic ls --json`): entries missing on either side,
/// and for each in both its type, size, mode, owner and modification time.
/// Names restic cannot write as JSON (not UTF-8) are compared as it writes
/// them (each bad byte a U+FFFD).
pub fn compare(root: &Path, entries: &[Entry]) -> std::io::Result<Vec<String>> {
    let mut want: std::collections::BTreeMap<String, &Entry> =
        entries.iter().map(|e| (e.path.clone(), e)).collect();
    let mut diffs = Vec::new();
    let mut todo = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = lossy(&e.file_name());
            let path = format!("{rel}/{name}");
            let m = e.metadata()?;
            if m.is_dir() {
                todo.push((e.path(), path.clone()));
            }
            let Some(w) = want.remove(&path) else {
                diffs.push(format!("{path}: restored, but not in the archive"));
                continue;
            };
            let kind = if m.is_dir() {
                "dir"
            } else if m.file_type().is_symlink() {
                "symlink"
            } else if m.is_file() {
                "file"
            } else {
                w.kind.as_str()
            };
            if kind != w.kind {
                diffs.push(format!("{path}: a {kind}, the archive has a {}", w.kind));
                continue;
            }
            if kind == "file" && m.len() != w.size {
                diffs.push(format!(
                    "{path}: {} bytes, the archive has {}",
                    m.len(),
                    w.size
                ));
            }
            let mode = m.permissions().mode() & 0o7777;
            if kind != "symlink" && mode != unix_mode(w.mode) {
                diffs.push(format!(
                    "{path}: mode {mode:o}, the archive has {:o}",
                    unix_mode(w.mode)
                ));
            }
            if (m.uid(), m.gid()) != (w.uid, w.gid) {
                diffs.push(format!(
                    "{path}: owner {}:{}, the archive has {}:{}",
                    m.uid(),
                    m.gid(),
                    w.uid,
                    w.gid
                ));
            }
            let have = m.mtime() as u64 * 1000 + m.mtime_nsec() as u64 / 1_000_000;
            if kind != "symlink" && super::tags::parse_time(&w.mtime).is_some_and(|t| t != have) {
                diffs.push(format!("{path}: modified at another time than archived"));
            }
        }
    }
    for path in want.keys() {
        diffs.push(format!("{path}: in the archive, not restored"));
    }
    diffs.sort();
    Ok(diffs)
}

/// A name as restic's JSON writes it: invalid UTF-8 bytes as U+FFFD each.
fn lossy(name: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    let mut bytes = name.as_bytes();
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..good]).unwrap_or_default());
                let bad = e.error_len().unwrap_or(bytes.len() - good);
                for _ in 0..bad {
                    out.push('\u{FFFD}');
                }
                bytes = &bytes[good + bad..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tree-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_survey_finds_holes_and_holes_come_back() {
        let d = dir("survey");
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/small"), b"abc").unwrap();
        let f = File::create(d.join("holes")).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"x", 4 << 20).unwrap();
        drop(f);
        let s = survey(&d).unwrap();
        assert_eq!(s.sparse, [PathBuf::from("holes")]);
        assert_eq!(s.apparent, (8 << 20) + 3);
        // A dense copy (as restic 0.14 restores), then its holes back.
        let dense = d.join("dense");
        std::fs::write(&dense, std::fs::read(d.join("holes")).unwrap()).unwrap();
        let before = std::fs::metadata(&dense).unwrap();
        assert!(before.blocks() * 512 >= 8 << 20);
        punch_holes(&dense).unwrap();
        let after = std::fs::metadata(&dense).unwrap();
        assert!(after.blocks() * 512 <= 64 << 10, "{}", after.blocks());
        assert_eq!(
            std::fs::read(&dense).unwrap(),
            std::fs::read(d.join("holes")).unwrap()
        );
        assert_eq!(after.mtime_nsec(), before.mtime_nsec());
        assert_eq!(after.mtime(), before.mtime());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_bytes_read_as_restic_writes_them() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            lossy(std::ffi::OsStr::from_bytes(b"a\xff\xfeb")),
            "a\u{FFFD}\u{FFFD}b"
        );
        assert_eq!(unix_mode((1 << 23) | 0o751), 0o4751);
    }
}
