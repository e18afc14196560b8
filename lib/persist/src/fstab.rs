//! Our entries in `/etc/fstab`, and the one way to write that file.
//!
//! An entry is ours when its options hold [`MARK`] (`x-appscale-persist`;
//! mount(8) ignores `x-` options). Only our entries are ever changed or
//! removed; a foreign entry for the same mountpoint or filesystem is a
//! conflict reported to the operator, not overwritten.
//!
//! "The same" is judged as libmount judges it, by what an entry resolves
//! to, not by its text ([`Filesystem::named_by`], [`same_target`]): a
//! foreign `/dev/loop0` or `/dev/disk/by-uuid/...` for our device, `UUID=`
//! with the UUID in upper case, `LABEL=` with our label, a mountpoint with a
//! trailing slash, all name ours, and are conflicts.
//!
//! The file is read and written as bytes: every line we do not own is kept
//! byte for byte, whatever its encoding (a Latin-1 comment) and its line
//! ending (CRLF). Changes are made line by line to the file as it is when
//! written ([`add`], [`remove`]), never to a copy read earlier, and the
//! caller holds the node lock ([`crate::lock`]) around them, so two runs
//! editing one fstab both keep their lines. `disk-mount` adds its line only
//! once the mount has succeeded, so there is never a line to take back.
//!
//! Every write is atomic: the new text goes to a temporary file in the same
//! directory, is fsynced, keeps the old file's mode and owner, and is renamed
//! over the old one; then the directory is fsynced. Before replacing, the old
//! text is saved the same way as `<fstab>.appscale-persist.bak`. A reader
//! (systemd, mount -a, a crash) sees the old file or the new one, never half.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::codes;
use crate::failure::Failure;

/// The option that marks an entry as ours.
pub(crate) const MARK: &str = "x-appscale-persist";

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

/// What a filesystem of ours is known by, to recognise an entry that names
/// it however it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// Its UUID.
    pub uuid: String,
    /// Its label, when it has one.
    pub label: Option<String>,
    /// The device holding it (major, minor), when known.
    pub device: Option<(u64, u64)>,
}

impl Filesystem {
    /// Whether an entry's `spec` names this filesystem, as libmount would
    /// resolve it: `UUID=` (any case), `LABEL=`, or a path (`/dev/loop0`, a
    /// `/dev/disk/by-*` link) leading to its device. Tags it cannot have
    /// (`PARTUUID=`, `PARTLABEL=`: our disks are whole-disk filesystems) and
    /// other sources (`tmpfs`, `server:/export`) do not.
    pub fn named_by(&self, spec: &str) -> bool {
        let unquote = |v: &str| v.trim_matches('"').to_string();
        if let Some(v) = spec.strip_prefix("UUID=") {
            return unquote(v).eq_ignore_ascii_case(&self.uuid);
        }
        if let Some(v) = spec.strip_prefix("LABEL=") {
            return self.label.as_deref() == Some(unquote(v).as_str());
        }
        if !spec.starts_with('/') {
            return false;
        }
        let Some((major, minor)) = self.device else {
            return false;
        };
        std::fs::metadata(spec).is_ok_and(|m| {
            std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type())
                && nix::sys::stat::major(m.rdev()) == major
                && nix::sys::stat::minor(m.rdev()) == minor
        })
    }
}

/// Whether two mountpoints are the same, as libmount compares them: after
/// unescaping (done by [`Entry::parse`]), without repeated or trailing
/// slashes and `.` components, and by the directory they resolve to when
/// both exist.
pub(crate) fn same_target(a: &str, b: &str) -> bool {
    fn plain(p: &str) -> PathBuf {
        Path::new(p)
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    }
    let (pa, pb) = (plain(a), plain(b));
    if pa == pb {
        return true;
    }
    match (std::fs::canonicalize(&pa), std::fs::canonicalize(&pb)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
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
    pub fn code(&self) -> codes::Code {
        match self {
            FstabError::Conflict { .. } => codes::FSTAB_CONFLICT,
            FstabError::Io(..) => codes::FSTAB,
        }
    }
}

impl From<FstabError> for Failure {
    fn from(e: FstabError) -> Self {
        Failure::new(e.code(), e.to_string())
    }
}

/// One line of an fstab: its bytes as read (line ending included), and the
/// entry on it, if any.
struct Line<'a> {
    raw: &'a [u8],
    entry: Option<Entry>,
}

/// An fstab as read from disk, byte for byte.
#[derive(Debug, Clone)]
pub(crate) struct Fstab {
    /// Where it lives.
    pub path: PathBuf,
    /// Its bytes; empty when the file does not exist.
    pub bytes: Vec<u8>,
    /// Whether the file existed.
    pub existed: bool,
}

/// A change worked out on one text.
struct Planned {
    bytes: Vec<u8>,
    added: Option<String>,
    removed: Vec<String>,
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
        match std::fs::read(path) {
            Ok(bytes) => Ok(Fstab {
                path: path.to_path_buf(),
                bytes,
                existed: true,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Fstab {
                path: path.to_path_buf(),
                bytes: Vec::new(),
                existed: false,
            }),
            Err(e) => Err(FstabError::Io(path.to_path_buf(), e)),
        }
    }

    /// The text, for messages and diffs (bytes that are not UTF-8 shown as
    /// U+FFFD; the file itself is never rewritten from this).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Every line, with the entry on it.
    fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.bytes.split_inclusive(|&b| b == b'\n').map(|raw| {
            let text = String::from_utf8_lossy(raw);
            Line {
                raw,
                entry: Entry::parse(text.trim_end_matches(['\n', '\r'])),
            }
        })
    }

    /// Every line that is not blank or a comment, with its 1-based number,
    /// its text, and the entry on it (`None`: a line mount(8) and libmount
    /// ignore as malformed).
    pub fn numbered(&self) -> Vec<(usize, String, Option<Entry>)> {
        self.lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let text = String::from_utf8_lossy(l.raw);
                let text = text.trim_end_matches(['\n', '\r']).to_string();
                let t = text.trim();
                (!t.is_empty() && !t.starts_with('#')).then(|| (i + 1, text.clone(), l.entry))
            })
            .collect()
    }

    /// Every entry, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.lines().filter_map(|l| l.entry).collect()
    }

    /// The bytes with `entry` for the filesystem `fs` in them: our entries
    /// for the same mountpoint or filesystem are replaced, everything else is
    /// kept byte for byte; a foreign one is a [`FstabError::Conflict`].
    /// `None` when the file already holds exactly this entry.
    pub fn with_entry(
        &self,
        entry: &Entry,
        fs: &Filesystem,
    ) -> Result<Option<Vec<u8>>, FstabError> {
        Ok(self.plan_entry(entry, fs)?.map(|c| c.bytes))
    }

    fn plan_entry(&self, entry: &Entry, fs: &Filesystem) -> Result<Option<Planned>, FstabError> {
        let mut kept: Vec<u8> = Vec::with_capacity(self.bytes.len() + 128);
        let mut removed: Vec<String> = Vec::new();
        let mut present = false;
        for (i, line) in self.lines().enumerate() {
            let Some(e) = &line.entry else {
                kept.extend_from_slice(line.raw);
                continue;
            };
            let same_place = same_target(&e.file, &entry.file);
            let same_fs = fs.named_by(&e.spec);
            if !(same_place || same_fs) {
                kept.extend_from_slice(line.raw);
                continue;
            }
            if !e.is_ours() {
                let what = if same_place {
                    format!("mounts something at {}", entry.file)
                } else {
                    format!("mounts this filesystem (UUID={})", fs.uuid)
                };
                return Err(FstabError::Conflict {
                    path: self.path.clone(),
                    line: i + 1,
                    what,
                    text: String::from_utf8_lossy(line.raw).trim_end().to_string(),
                });
            }
            if e == entry && !present {
                present = true;
                kept.extend_from_slice(line.raw);
            } else {
                // Any other entry of ours for this mountpoint or filesystem
                // is stale: it goes.
                removed.push(e.to_line());
            }
        }
        if present && removed.is_empty() {
            return Ok(None);
        }
        let added = (!present).then(|| entry.to_line());
        if let Some(line) = &added {
            if !kept.is_empty() && !kept.ends_with(b"\n") {
                kept.push(b'\n');
            }
            kept.extend_from_slice(line.as_bytes());
            kept.push(b'\n');
        }
        Ok(Some(Planned {
            bytes: kept,
            added,
            removed,
        }))
    }

    /// The bytes without our entry for `mountpoint` (and, when `uuid` is
    /// given, for that filesystem only); `None` if there is none.
    pub fn without_entry(&self, mountpoint: &str, uuid: Option<&str>) -> Option<Vec<u8>> {
        self.without(|e| is_ours_for(e, mountpoint, uuid))
            .map(|(bytes, _)| bytes)
    }

    /// The bytes without the lines whose entry matches `drop`, and those
    /// lines; `None` when no line matches. Other lines are kept byte for byte.
    fn without(&self, drop: impl Fn(&Entry) -> bool) -> Option<(Vec<u8>, Vec<String>)> {
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.bytes.len());
        for line in self.lines() {
            match &line.entry {
                Some(e) if drop(e) => removed.push(e.to_line()),
                _ => kept.extend_from_slice(line.raw),
            }
        }
        (!removed.is_empty()).then_some((kept, removed))
    }

    /// The path of the backup kept of the previous text.
    pub fn backup_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".appscale-persist.bak");
        self.path.with_file_name(name)
    }

    /// Replaces the file's bytes with `new`, keeping a backup of the old.
    pub fn replace(&self, new: &[u8]) -> Result<(), FstabError> {
        if self.existed {
            write_atomic(&self.backup_path(), &self.bytes, Some(&self.path))?;
        }
        write_atomic(&self.path, new, self.existed.then_some(self.path.as_path()))
    }
}

/// What one change did to an fstab, shown as a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The fstab changed (its real path).
    pub path: PathBuf,
    /// The text before the change (lossy UTF-8, for display).
    pub before: String,
    /// The text after it (lossy UTF-8, for display).
    pub after: String,
    /// The line this change added, if any.
    pub added: Option<String>,
    /// Lines of ours this change removed.
    pub removed: Vec<String>,
}

impl Applied {
    /// Whether the change changed anything.
    pub fn changed(&self) -> bool {
        self.added.is_some() || !self.removed.is_empty()
    }

    fn unchanged(tab: &Fstab) -> Applied {
        let text = tab.text();
        Applied {
            path: tab.path.clone(),
            before: text.clone(),
            after: text,
            ..Applied::default()
        }
    }
}

/// Puts our `entry` for the filesystem `fs` into the fstab at `path` as it
/// is now (replacing stale entries of ours for the same mountpoint or
/// filesystem; a foreign one is a [`FstabError::Conflict`]), and writes it
/// atomically if that changes anything. The caller holds the node lock.
pub fn add(path: &Path, entry: &Entry, fs: &Filesystem) -> Result<Applied, FstabError> {
    let tab = Fstab::load(path)?;
    match tab.plan_entry(entry, fs)? {
        None => Ok(Applied::unchanged(&tab)),
        Some(p) => {
            tab.replace(&p.bytes)?;
            Ok(Applied {
                path: tab.path.clone(),
                before: tab.text(),
                after: String::from_utf8_lossy(&p.bytes).into_owned(),
                added: p.added,
                removed: p.removed,
            })
        }
    }
}

/// Puts every one of `entries` (our entry, and the filesystem it is for)
/// into the fstab at `path` as it is now, in one transaction: the file is
/// read once, each entry applied to the text in turn (one with a foreign
/// conflict is left out, with its error), and written once, atomically, if
/// anything changed. Returns the whole change, and for each entry whether
/// it changed the text. The caller holds the node lock.
#[allow(clippy::type_complexity)]
pub(crate) fn add_all(
    path: &Path,
    entries: &[(&Entry, &Filesystem)],
) -> Result<(Applied, Vec<Result<bool, FstabError>>), FstabError> {
    let original = Fstab::load(path)?;
    let mut tab = original.clone();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut each = Vec::with_capacity(entries.len());
    for (entry, fs) in entries {
        match tab.plan_entry(entry, fs) {
            Err(e) => each.push(Err(e)),
            Ok(None) => each.push(Ok(false)),
            Ok(Some(p)) => {
                added.extend(p.added);
                removed.extend(p.removed);
                tab.bytes = p.bytes;
                each.push(Ok(true));
            }
        }
    }
    let added = added.first().cloned();
    Ok((commit(&original, &tab, added, removed)?, each))
}

/// Ends a transaction: writes `tab` over `original` (atomically) unless
/// nothing changed, and says what changed.
fn commit(
    original: &Fstab,
    tab: &Fstab,
    added: Option<String>,
    removed: Vec<String>,
) -> Result<Applied, FstabError> {
    if tab.bytes == original.bytes {
        return Ok(Applied::unchanged(original));
    }
    original.replace(&tab.bytes)?;
    Ok(Applied {
        path: original.path.clone(),
        before: original.text(),
        after: tab.text(),
        added,
        removed,
    })
}

/// Removes our entries for every one of `targets` (a mountpoint, and the
/// filesystem's UUID when known) from the fstab at `path` as it is now, in
/// one transaction (read once, written once if anything changed). Returns
/// the whole change, and for each target whether a line went.
pub(crate) fn remove_all(
    path: &Path,
    targets: &[(&str, Option<&str>)],
) -> Result<(Applied, Vec<bool>), FstabError> {
    let original = Fstab::load(path)?;
    let mut tab = original.clone();
    let mut removed = Vec::new();
    let mut each = Vec::with_capacity(targets.len());
    for (mountpoint, uuid) in targets {
        match tab.without(|e| is_ours_for(e, mountpoint, *uuid)) {
            None => each.push(false),
            Some((bytes, gone)) => {
                tab.bytes = bytes;
                removed.extend(gone);
                each.push(true);
            }
        }
    }
    Ok((commit(&original, &tab, None, removed)?, each))
}

/// Whether `e` is our entry for `mountpoint` (and the filesystem `uuid`,
/// when given).
fn is_ours_for(e: &Entry, mountpoint: &str, uuid: Option<&str>) -> bool {
    e.is_ours()
        && same_target(&e.file, mountpoint)
        && uuid.is_none_or(|u| {
            Filesystem {
                uuid: u.to_string(),
                ..Filesystem::default()
            }
            .named_by(&e.spec)
        })
}

/// Removes our entry for `mountpoint` (and, when `uuid` is given, for that
/// filesystem only) from the fstab at `path` as it is now, if there is one
/// (atomically; nothing else is touched). The caller holds the node lock.
pub fn remove(path: &Path, mountpoint: &str, uuid: Option<&str>) -> Result<Applied, FstabError> {
    let tab = Fstab::load(path)?;
    match tab.without(|e| is_ours_for(e, mountpoint, uuid)) {
        None => Ok(Applied::unchanged(&tab)),
        Some((bytes, removed)) => {
            tab.replace(&bytes)?;
            Ok(Applied {
                path: tab.path.clone(),
                before: tab.text(),
                after: String::from_utf8_lossy(&bytes).into_owned(),
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
            bytes: text.as_bytes().to_vec(),
            existed: true,
        }
    }

    fn fs(uuid: &str) -> Filesystem {
        Filesystem {
            uuid: uuid.into(),
            label: Some("appscale".into()),
            device: None,
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
        tab.replace(b"# theirs\n# ours\n").unwrap();
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
        let once = fstab(base).with_entry(&e, &fs("abcd")).unwrap().unwrap();
        assert!(once.starts_with(base.as_bytes()));
        let once = String::from_utf8(once).unwrap();
        assert_eq!(fstab(&once).with_entry(&e, &fs("abcd")).unwrap(), None);
        let removed = fstab(&once).without_entry("/opt/appscale", None).unwrap();
        assert_eq!(removed, base.as_bytes());
        assert_eq!(
            fstab(&once).without_entry("/opt/appscale", Some("other")),
            None
        );
        assert!(
            fstab(&once)
                .without_entry("/opt/appscale/", Some("ABCD"))
                .is_some()
        );
        assert_eq!(fstab(base).without_entry("/opt/appscale", None), None);
    }

    #[test]
    fn changes_touch_only_our_lines_byte_for_byte() {
        let dir = std::env::temp_dir().join(format!("fstab-lines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fstab");
        let stale = Entry::ours("old", "/a", "ext4", "noatime", 30);
        // CRLF, and a Latin-1 byte in a comment (not UTF-8).
        let mut base = b"# th\xe9irs\r\n".to_vec();
        base.extend_from_slice(format!("{}\n", stale.to_line()).as_bytes());
        std::fs::write(&path, &base).unwrap();
        let mine = Entry::ours("new", "/a", "ext4", "noatime", 30);
        let applied = add(&path, &mine, &fs("new")).unwrap();
        assert_eq!(applied.removed, [stale.to_line()]);
        assert_eq!(applied.added, Some(mine.to_line()));
        let other = Entry::ours("other", "/b", "ext4", "noatime", 30);
        assert!(add(&path, &other, &fs("other")).unwrap().changed());
        assert!(!add(&path, &other, &fs("other")).unwrap().changed());
        let mut want = b"# th\xe9irs\r\n".to_vec();
        want.extend_from_slice(format!("{}\n{}\n", mine.to_line(), other.to_line()).as_bytes());
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert!(!remove(&path, "/b", Some("not-it")).unwrap().changed());
        let gone = remove(&path, "/b", Some("other")).unwrap();
        assert_eq!(gone.removed, [other.to_line()]);
        assert!(!remove(&path, "/b", None).unwrap().changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_entry_for_our_place_or_filesystem_conflicts_however_written() {
        let ours = Entry::ours("abcd-ef", "/opt/appscale", "ext4", "noatime", 30);
        for foreign in [
            "/dev/sdb1 /opt/appscale ext4 defaults 0 2",
            "/dev/sdb1 /opt/appscale/ ext4 defaults 0 2",
            "/dev/sdb1 /opt//appscale ext4 defaults 0 2",
            "UUID=ABCD-EF /data ext4 defaults 0 2",
            "UUID=\"abcd-ef\" /data ext4 defaults 0 2",
            "LABEL=appscale /data ext4 defaults 0 2",
        ] {
            let err = fstab(&format!("# x\n{foreign}\n"))
                .with_entry(&ours, &fs("abcd-ef"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/x/fstab:2") && err.contains("not managed by appscale-persist"),
                "{foreign}: {err}"
            );
        }
        for unrelated in [
            "PARTUUID=abcd-ef /data ext4 defaults 0 2",
            "server:/export /opt/appscale-other nfs defaults 0 0",
            "tmpfs /tmp tmpfs defaults 0 0",
            "/swapfile none swap sw 0 0",
        ] {
            assert!(
                fstab(&format!("{unrelated}\n"))
                    .with_entry(&ours, &fs("abcd-ef"))
                    .is_ok(),
                "{unrelated}"
            );
        }
    }

    #[test]
    fn a_stale_entry_of_ours_is_replaced() {
        let old = Entry::ours("old", "/opt/appscale", "ext4", "noatime", 30);
        let new = Entry::ours("new", "/opt/appscale", "ext4", "noatime", 30);
        let bytes = fstab(&format!("{}\n", old.to_line()))
            .with_entry(&new, &fs("new"))
            .unwrap()
            .unwrap();
        assert_eq!(bytes, format!("{}\n", new.to_line()).as_bytes());
    }
}
