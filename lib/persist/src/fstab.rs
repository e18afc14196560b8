//! Our entries in `/etc/fstab`, and the one way to write that file.
//!
//! An entry is ours when its options hold [`MARK`] (`x-appscale-persist`;
//! mount(8) ignores `x-` options). Only our entries are ever changed or
//! removed; a foreign entry for the same mountpoint or filesystem is a
//! conflict reported to the operator, not overwritten.
//!
//! Changes are made line by line to the text as it is when written
//! ([`add`], [`remove`]), never to a copy read earlier, and the caller holds
//! the node lock ([`crate::lock`]) around them, so two runs editing one
//! fstab both keep their lines. Every line we do not own is kept byte for
//! byte (its line ending included). `disk-mount` adds its line only once the
//! mount has succeeded, so there is never a line to take back.
//!
//! Every write is atomic: the new text goes to a temporary file in the same
//! directory, is fsynced, keeps the old file's mode and owner, and is renamed
//! over the old one; then the directory is fsynced. Before replacing, the old
//! text is saved the same way as `<fstab>.appscale-persist.bak`. A reader
//! (systemd, mount -a, a crash) sees the old file or the new one, never half.

use crate::codes;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The option that marks an entry as ours.
pub const MARK: &str = "x-appscale-persist";

/// The default fstab.
pub const DEFAULT_PATH: &str = "/etc/fstab";

/// One fstab entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What to mount (`UUID=...`).
    pub spec: String,
    /// Where (unescaped).
    pub file: String,
    /// Filesystem type.
    pub vfstype: String,
    /// Options, comma-separated.
    pub options: String,
    /// dump frequency.
    pub freq: u32,
    /// fsck pass (0: never, 2: after the root filesystem).
    pub passno: u32,
}

impl Entry {
    /// The entry for a filesystem of ours: by UUID, with `nofail` so boot
    /// goes on without the disk, a bounded device wait, and [`MARK`].
    pub fn ours(
        uuid: &str,
        mountpoint: &str,
        fstype: &str,
        mount_options: &str,
        device_timeout_secs: u32,
    ) -> Entry {
        let mut opts: Vec<&str> = mount_options
            .split(',')
            .filter(|o| !o.is_empty() && *o != MARK)
            .collect();
        let timeout = format!("x-systemd.device-timeout={device_timeout_secs}s");
        if !opts.contains(&"nofail") {
            opts.push("nofail");
        }
        if !opts
            .iter()
            .any(|o| o.starts_with("x-systemd.device-timeout="))
        {
            opts.push(&timeout);
        }
        opts.push(MARK);
        Entry {
            spec: format!("UUID={uuid}"),
            file: mountpoint.to_string(),
            vfstype: fstype.to_string(),
            options: opts.join(","),
            freq: 0,
            passno: if fstype.starts_with("ext") { 2 } else { 0 },
        }
    }

    /// Whether this entry carries [`MARK`].
    pub fn is_ours(&self) -> bool {
        self.options.split(',').any(|o| o == MARK)
    }

    /// The line, with fields escaped.
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            escape(&self.spec),
            escape(&self.file),
            escape(&self.vfstype),
            escape(&self.options),
            self.freq,
            self.passno
        )
    }

    /// Parses a line; `None` for comments, blank and malformed lines.
    pub fn parse(line: &str) -> Option<Entry> {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() < 2 {
            return None;
        }
        Some(Entry {
            spec: crate::mount::unescape(f[0]),
            file: crate::mount::unescape(f[1]),
            vfstype: f
                .get(2)
                .map(|s| crate::mount::unescape(s))
                .unwrap_or_default(),
            options: f
                .get(3)
                .map(|s| crate::mount::unescape(s))
                .unwrap_or_else(|| "defaults".into()),
            freq: f.get(4).and_then(|s| s.parse().ok()).unwrap_or(0),
            passno: f.get(5).and_then(|s| s.parse().ok()).unwrap_or(0),
        })
    }
}

/// Escapes the characters fstab fields cannot hold (space, tab, newline,
/// backslash, `#`) as octal, as `getmntent(3)` reads them.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            '#' => out.push_str("\\043"),
            c => out.push(c),
        }
    }
    out
}

/// Why fstab could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum FstabError {
    /// An entry we do not own already claims the mountpoint or filesystem.
    #[error("{path}:{line}: an entry not managed by appscale-persist already {what}: `{text}`")]
    Conflict {
        /// The fstab.
        path: PathBuf,
        /// 1-based line of the foreign entry.
        line: usize,
        /// What it claims.
        what: String,
        /// The line.
        text: String,
    },
    /// Reading or writing failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl FstabError {
    /// The record error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            FstabError::Conflict { .. } => codes::FSTAB_CONFLICT,
            FstabError::Io(..) => codes::FSTAB,
        }
    }
}

impl From<FstabError> for crate::step::Failure {
    fn from(e: FstabError) -> Self {
        crate::step::Failure::new(e.code(), e.to_string())
    }
}

/// An fstab as text, as read from disk.
#[derive(Debug, Clone)]
pub struct Fstab {
    /// Where it lives.
    pub path: PathBuf,
    /// Its text; empty when the file does not exist.
    pub text: String,
    /// Whether the file existed.
    pub existed: bool,
}

impl Fstab {
    /// Reads `path`; a missing file is an empty fstab. A symlink is
    /// followed, so that writes go to the file it names rather than replace
    /// the link; a dangling one is an error.
    pub fn load(path: &Path) -> Result<Fstab, FstabError> {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let path = &if is_link {
            std::fs::canonicalize(path).map_err(|e| FstabError::Io(path.to_path_buf(), e))?
        } else {
            path.to_path_buf()
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Fstab {
                path: path.to_path_buf(),
                text,
                existed: true,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Fstab {
                path: path.to_path_buf(),
                text: String::new(),
                existed: false,
            }),
            Err(e) => Err(FstabError::Io(path.to_path_buf(), e)),
        }
    }

    /// The text with `entry` in it: our entries for the same mountpoint or
    /// filesystem are replaced, everything else is kept byte for byte.
    /// `None` when the text already holds exactly this entry.
    pub fn with_entry(&self, entry: &Entry) -> Result<Option<String>, FstabError> {
        Ok(self.plan_entry(entry)?.map(|c| c.text))
    }

    fn plan_entry(&self, entry: &Entry) -> Result<Option<Planned>, FstabError> {
        let mut kept: Vec<&str> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let mut present = false;
        for (i, raw) in self.text.split_inclusive('\n').enumerate() {
            let line = raw.trim_end_matches(['\n', '\r']);
            match Entry::parse(line) {
                Some(e) if e.file == entry.file || e.spec == entry.spec => {
                    if !e.is_ours() {
                        let what = if e.file == entry.file {
                            format!("mounts something at {}", entry.file)
                        } else {
                            format!("mounts {}", entry.spec)
                        };
                        return Err(FstabError::Conflict {
                            path: self.path.clone(),
                            line: i + 1,
                            what,
                            text: line.to_string(),
                        });
                    }
                    if e == *entry && !present {
                        present = true;
                        kept.push(raw);
                    } else {
                        // Any other entry of ours for this mountpoint or
                        // filesystem is stale: it goes.
                        removed.push(line.to_string());
                    }
                }
                _ => kept.push(raw),
            }
        }
        if present && removed.is_empty() {
            return Ok(None);
        }
        let mut text: String = kept.concat();
        let added = (!present).then(|| entry.to_line());
        if let Some(line) = &added {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
        }
        Ok(Some(Planned {
            text,
            added,
            removed,
        }))
    }

    /// The text without our entry for `mountpoint` (and, when `uuid` is
    /// given, for that filesystem only); `None` if there is none.
    pub fn without_entry(&self, mountpoint: &str, uuid: Option<&str>) -> Option<String> {
        self.without(|e| is_ours_for(e, mountpoint, uuid))
            .map(|(text, _)| text)
    }

    /// The text without the lines whose entry matches `drop`, and those
    /// lines; `None` when no line matches. Other lines are kept byte for byte.
    fn without(&self, drop: impl Fn(&Entry) -> bool) -> Option<(String, Vec<String>)> {
        let mut removed = Vec::new();
        let kept: String = self
            .text
            .split_inclusive('\n')
            .filter(|raw| {
                let line = raw.trim_end_matches(['\n', '\r']);
                let gone = Entry::parse(line).is_some_and(|e| drop(&e));
                if gone {
                    removed.push(line.to_string());
                }
                !gone
            })
            .collect();
        (!removed.is_empty()).then_some((kept, removed))
    }

    /// The path of the backup kept of the previous text.
    pub fn backup_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".appscale-persist.bak");
        self.path.with_file_name(name)
    }

    /// Replaces the file's text with `new_text`, keeping a backup of the old.
    pub fn replace(&self, new_text: &str) -> Result<(), FstabError> {
        if self.existed {
            write_atomic(&self.backup_path(), self.text.as_bytes(), Some(&self.path))?;
        }
        write_atomic(
            &self.path,
            new_text.as_bytes(),
            self.existed.then_some(self.path.as_path()),
        )
    }
}

/// A change worked out on one text.
struct Planned {
    text: String,
    added: Option<String>,
    removed: Vec<String>,
}

/// What one change did to an fstab, so that exactly it can be undone and
/// shown as a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The fstab changed (its real path).
    pub path: PathBuf,
    /// The text before the change.
    pub before: String,
    /// The text after it.
    pub after: String,
    /// The line this change added, if any.
    pub added: Option<String>,
    /// Lines of ours this change removed.
    pub removed: Vec<String>,
}

impl Applied {
    /// Whether the change changed anything.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// Puts our `entry` into the fstab at `path` as it is now (replacing stale
/// entries of ours for the same mountpoint or filesystem; a foreign one is
/// a [`FstabError::Conflict`]), and writes it atomically if that changes
/// anything. The caller holds the node lock.
pub fn add(path: &Path, entry: &Entry) -> Result<Applied, FstabError> {
    let tab = Fstab::load(path)?;
    match tab.plan_entry(entry)? {
        None => Ok(Applied {
            path: tab.path.clone(),
            before: tab.text.clone(),
            after: tab.text,
            ..Applied::default()
        }),
        Some(p) => {
            tab.replace(&p.text)?;
            Ok(Applied {
                path: tab.path.clone(),
                before: tab.text,
                after: p.text,
                added: p.added,
                removed: p.removed,
            })
        }
    }
}

/// Whether `e` is our entry for `mountpoint` (and the filesystem `uuid`,
/// when given).
fn is_ours_for(e: &Entry, mountpoint: &str, uuid: Option<&str>) -> bool {
    e.is_ours()
        && e.file == mountpoint
        && uuid.is_none_or(|u| e.spec.eq_ignore_ascii_case(&format!("UUID={u}")))
}

/// Removes our entry for `mountpoint` (and, when `uuid` is given, for that
/// filesystem only) from the fstab at `path` as it is now, if there is one
/// (atomically; nothing else is touched). The caller holds the node lock.
pub fn remove(path: &Path, mountpoint: &str, uuid: Option<&str>) -> Result<Applied, FstabError> {
    let tab = Fstab::load(path)?;
    match tab.without(|e| is_ours_for(e, mountpoint, uuid)) {
        None => Ok(Applied {
            path: tab.path.clone(),
            before: tab.text.clone(),
            after: tab.text,
            ..Applied::default()
        }),
        Some((text, removed)) => {
            tab.replace(&text)?;
            Ok(Applied {
                path: tab.path.clone(),
                before: tab.text,
                after: text,
                added: None,
                removed,
            })
        }
    }
}

/// Writes `data` to `path` atomically: temp file in the same directory,
/// fsync, mode and owner copied from `like` (if given), rename, fsync of the
/// directory.
pub fn write_atomic(path: &Path, data: &[u8], like: Option<&Path>) -> Result<(), FstabError> {
    let io = |e| FstabError::Io(path.to_path_buf(), e);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".appscale-persist.{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let meta = like.and_then(|l| std::fs::metadata(l).ok());
        let mode = meta
            .as_ref()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if let Some(m) = &meta {
            // Keep the owner; as non-root this may fail, which is fine for a
            // file we own anyway.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fstab(text: &str) -> Fstab {
        Fstab {
            path: PathBuf::from("/x/fstab"),
            text: text.to_string(),
            existed: true,
        }
    }

    #[test]
    fn our_entry_is_by_uuid_nofail_bounded_and_marked() {
        let e = Entry::ours("abcd", "/opt/app scale", "ext4", "noatime", 30);
        assert_eq!(
            e.to_line(),
            "UUID=abcd /opt/app\\040scale ext4 noatime,nofail,x-systemd.device-timeout=30s,x-appscale-persist 0 2"
        );
        assert_eq!(Entry::parse(&e.to_line()).unwrap(), e);
    }

    #[test]
    fn a_symlinked_fstab_is_written_through_its_link() {
        let dir = std::env::temp_dir().join(format!("fstab-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("real"), "# theirs\n").unwrap();
        std::os::unix::fs::symlink("real", dir.join("fstab")).unwrap();
        let tab = Fstab::load(&dir.join("fstab")).unwrap();
        tab.replace("# theirs\n# ours\n").unwrap();
        assert!(
            std::fs::symlink_metadata(dir.join("fstab"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("real")).unwrap(),
            "# theirs\n# ours\n"
        );
        std::os::unix::fs::symlink("gone", dir.join("dangling")).unwrap();
        assert!(Fstab::load(&dir.join("dangling")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn adding_twice_changes_nothing_the_second_time() {
        let e = Entry::ours("abcd", "/opt/appscale", "ext4", "noatime", 30);
        let base = "# static\nUUID=root / ext4 defaults 0 1\n";
        let once = fstab(base).with_entry(&e).unwrap().unwrap();
        assert!(once.starts_with(base));
        assert_eq!(fstab(&once).with_entry(&e).unwrap(), None);
        let removed = fstab(&once).without_entry("/opt/appscale", None).unwrap();
        assert_eq!(removed, base);
        assert_eq!(
            fstab(&once).without_entry("/opt/appscale", Some("other")),
            None
        );
        assert!(
            fstab(&once)
                .without_entry("/opt/appscale", Some("abcd"))
                .is_some()
        );
        assert_eq!(fstab(base).without_entry("/opt/appscale", None), None);
    }

    #[test]
    fn changes_touch_only_our_lines() {
        let dir = std::env::temp_dir().join(format!("fstab-lines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fstab");
        let stale = Entry::ours("old", "/a", "ext4", "noatime", 30);
        std::fs::write(&path, format!("# theirs\r\n{}\n", stale.to_line())).unwrap();
        let mine = Entry::ours("new", "/a", "ext4", "noatime", 30);
        let applied = add(&path, &mine).unwrap();
        assert_eq!(applied.removed, [stale.to_line()]);
        assert_eq!(applied.added, Some(mine.to_line()));
        let other = Entry::ours("other", "/b", "ext4", "noatime", 30);
        assert!(add(&path, &other).unwrap().changed());
        assert!(!add(&path, &other).unwrap().changed(), "already there");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# theirs\r\n{}\n{}\n", mine.to_line(), other.to_line()),
            "the CRLF line is kept as it was"
        );
        assert!(!remove(&path, "/b", Some("not-it")).unwrap().changed());
        let gone = remove(&path, "/b", Some("other")).unwrap();
        assert_eq!(gone.removed, [other.to_line()]);
        assert!(!remove(&path, "/b", None).unwrap().changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_entry_of_ours_is_replaced_and_a_foreign_one_refused() {
        let old = Entry::ours("old", "/opt/appscale", "ext4", "noatime", 30);
        let new = Entry::ours("new", "/opt/appscale", "ext4", "noatime", 30);
        let text = fstab(&format!("{}\n", old.to_line()))
            .with_entry(&new)
            .unwrap()
            .unwrap();
        assert_eq!(text, format!("{}\n", new.to_line()));
        let foreign = fstab("/dev/sdb1 /opt/appscale ext4 defaults 0 2\n");
        let err = foreign.with_entry(&new).unwrap_err().to_string();
        assert!(
            err.contains("/x/fstab:1") && err.contains("not managed by appscale-persist"),
            "{err}"
        );
    }
}
