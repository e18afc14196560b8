//! What the snapshots of a repository say of themselves: their restic tags
//! ([`Labels`]), and the small JSON files some of them hold ([`Mark`],
//! [`Described`], [`Manifest`]).
//!
//! Every snapshot the tools make carries the tag [`OURS`] and a
//! `kind=...`: an **archive** of a disk's files (tagged with its
//! deployment, node, disk, provider, filesystem type, freeze, and set),
//! the **description** of an archive (`archive=<id>`: what restic does not
//! keep, such as the root directory's owner and which files were sparse),
//! the repository's **mark** (the one deployment it belongs to), and a
//! set's **manifest** (each node's archive in the set). Tag values are
//! percent-encoded ([`encode`]): restic splits tags at commas, and names
//! may hold anything.
//!
//! Which archives are a record's ([`archives_of`]), the record's view of one
//! ([`archive_of`]) and an id as restic shows it ([`short`]) live here too:
//! both disk-archive (`make.rs`) and disk-restore (`fill.rs`) read them, and
//! `make.rs` also calls `fill.rs`'s restore drill.

use serde::{Deserialize, Serialize};

use super::restic::Snap;
use crate::record::{Archive, Record};
use crate::snapshot::Stamp;

/// The tag every snapshot the tools make carries.
pub const OURS: &str = "appscale-persist";

/// The file a repository's mark is stored as.
pub const MARK_FILE: &str = "appscale-persist-repository.json";

/// The file an archive's description is stored as.
pub const DESCRIBED_FILE: &str = "appscale-persist-archive.json";

/// The file a set's manifest is stored as.
pub const MANIFEST_FILE: &str = "appscale-persist-set.json";

/// What a snapshot of ours is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A disk's files.
    Archive,
    /// An archive's description ([`Described`]).
    Described,
    /// The repository's mark ([`Mark`]).
    Mark,
    /// A set's manifest ([`Manifest`]).
    Manifest,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Archive => "archive",
            Kind::Described => "described",
            Kind::Mark => "repository",
            Kind::Manifest => "manifest",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [Kind::Archive, Kind::Described, Kind::Mark, Kind::Manifest]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The tags of one snapshot of ours, read or to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// What it is.
    pub kind: Option<Kind>,
    /// The deployment.
    pub deployment: Option<String>,
    /// The node whose disk it is of.
    pub node: Option<String>,
    /// The disk.
    pub disk: Option<String>,
    /// The disk's provider (`local`, `ec2`, ...).
    pub provider: Option<String>,
    /// The filesystem's type.
    pub fs: Option<String>,
    /// How its moment was kept (`frozen`, `not-mounted`).
    pub freeze: Option<String>,
    /// The set it belongs to.
    pub set: Option<String>,
    /// The archive a description describes.
    pub archive: Option<String>,
    /// Pairs an archive and its description (written at once, before
    /// either id is known).
    pub link: Option<String>,
    /// An archive's root directory: `MODE:UID:GID:MTIME:NSEC` (octal mode).
    pub root: Option<String>,
    /// How many files of the archive have holes (its description lists
    /// them; none: the description need not be read).
    pub sparse: Option<u64>,
    /// Bytes of the archive's files, holes included.
    pub bytes: Option<u64>,
}

impl Labels {
    /// Labels of kind `kind`.
    pub fn of(kind: Kind) -> Labels {
        Labels {
            kind: Some(kind),
            ..Labels::default()
        }
    }

    /// The restic tags: [`OURS`], then `key=value` for each label set.
    pub fn to_tags(&self) -> Vec<String> {
        let mut out = vec![OURS.to_string()];
        let pairs = [
            ("kind", self.kind.map(|k| k.as_str().to_string())),
            ("deployment", self.deployment.clone()),
            ("node", self.node.clone()),
            ("disk", self.disk.clone()),
            ("provider", self.provider.clone()),
            ("fs", self.fs.clone()),
            ("freeze", self.freeze.clone()),
            ("set", self.set.clone()),
            ("archive", self.archive.clone()),
            ("link", self.link.clone()),
            ("root", self.root.clone()),
            ("sparse", self.sparse.map(|n| n.to_string())),
            ("bytes", self.bytes.map(|n| n.to_string())),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                out.push(format!("{k}={}", encode(&v)));
            }
        }
        out
    }

    /// The labels in `tags`; `None` unless they carry [`OURS`] and a kind.
    pub fn from_tags(tags: &[String]) -> Option<Labels> {
        if !tags.iter().any(|t| t == OURS) {
            return None;
        }
        let mut l = Labels::default();
        for t in tags {
            let Some((k, v)) = t.split_once('=') else {
                continue;
            };
            let v = decode(v);
            match k {
                "kind" => l.kind = Kind::parse(&v),
                "deployment" => l.deployment = Some(v),
                "node" => l.node = Some(v),
                "disk" => l.disk = Some(v),
                "provider" => l.provider = Some(v),
                "fs" => l.fs = Some(v),
                "freeze" => l.freeze = Some(v),
                "set" => l.set = Some(v),
                "archive" => l.archive = Some(v),
                "link" => l.link = Some(v),
                "root" => l.root = Some(v),
                "sparse" => l.sparse = v.parse().ok(),
                "bytes" => l.bytes = v.parse().ok(),
                _ => {}
            }
        }
        l.kind.is_some().then_some(l)
    }
}

/// Whether two snapshot ids name the same snapshot: equal, or one the
/// other's prefix of at least 8 characters (restic's short ids).
pub fn same_id(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.len() >= 8 && long.starts_with(short)
}

/// A snapshot of ours, with its labels and its time in ms since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The snapshot.
    pub snap: Snap,
    /// Its labels.
    pub labels: Labels,
    /// Its time, ms since the Unix epoch (0 when unreadable).
    pub ms: u64,
}

impl Listed {
    /// The snapshots of ours among `snaps`, oldest first.
    pub fn all(snaps: Vec<Snap>) -> Vec<Listed> {
        let mut out: Vec<Listed> = snaps
            .into_iter()
            .filter_map(|snap| {
                let labels = Labels::from_tags(&snap.tags)?;
                let ms = parse_time(&snap.time).unwrap_or(0);
                Some(Listed { snap, labels, ms })
            })
            .collect();
        out.sort_by(|a, b| a.ms.cmp(&b.ms).then_with(|| a.snap.id.cmp(&b.snap.id)));
        out
    }

    /// Whether it is of kind `k`.
    pub fn is(&self, k: Kind) -> bool {
        self.labels.kind == Some(k)
    }
}

/// What a repository's mark says: the deployment it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The deployment.
    pub deployment: String,
    /// When it was marked, RFC 3339.
    pub created: String,
    /// The tool and version that marked it.
    pub tool: String,
}

/// A directory's owner, mode and modification time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMeta {
    /// Permission bits (and setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Its nanoseconds.
    pub mtime_nsec: i64,
}

impl DirMeta {
    /// As an archive's `root` tag says it: `MODE:UID:GID:MTIME:NSEC`.
    pub fn to_tag(self) -> String {
        format!(
            "{:o}:{}:{}:{}:{}",
            self.mode, self.uid, self.gid, self.mtime, self.mtime_nsec
        )
    }

    /// What a `root` tag says.
    pub fn from_tag(s: &str) -> Option<DirMeta> {
        let mut p = s.split(':');
        let meta = DirMeta {
            mode: u32::from_str_radix(p.next()?, 8).ok()?,
            uid: p.next()?.parse().ok()?,
            gid: p.next()?.parse().ok()?,
            mtime: p.next()?.parse().ok()?,
            mtime_nsec: p.next()?.parse().ok()?,
        };
        p.next().is_none().then_some(meta)
    }
}

/// What an archive's description says: what restic does not keep of a
/// disk, and what a restore needs to know before it starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Described {
    /// The archive (restic snapshot id).
    pub archive: String,
    /// The filesystem archived: type, UUID, label.
    pub fs: crate::record::Fs,
    /// The filesystem's size, bytes.
    pub fs_size: u64,
    /// Bytes in use on it when archived.
    pub used: u64,
    /// Bytes of all files (holes included): what a restore writes before
    /// it gives the holes back.
    pub apparent: u64,
    /// The root directory (restic archives what is in it, not itself).
    pub root: DirMeta,
    /// Files with holes, as [`encode_path`] writes their paths (from the
    /// root, no leading `/`): their holes are made again after a restore.
    #[serde(default)]
    pub sparse: Vec<String>,
}

/// One archive of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node.
    pub node: String,
    /// Its disk.
    pub disk: String,
    /// The archive.
    pub archive: String,
}

/// A set's manifest: the archives of a deployment's disks taken at one
/// moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The set's name.
    pub set: String,
    /// The deployment.
    pub deployment: String,
    /// The moment, RFC 3339.
    pub time: String,
    /// Each node's archive.
    pub members: Vec<Member>,
}

/// Whether a byte stands for itself in a tag value or an encoded path.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-@:+/".contains(&b)
}

/// `s` with every byte but letters, digits and `._-@:+/` written `%XX`, so
/// it is one restic tag value (no comma, no space, no `=`).
pub fn encode(s: &str) -> String {
    encode_bytes(s.as_bytes())
}

fn encode_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if plain(c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

fn decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The value [`encode`] wrote.
pub fn decode(s: &str) -> String {
    String::from_utf8_lossy(&decode_bytes(s)).into_owned()
}

/// A path of any bytes as text ([`encode`]'s form, `/` kept).
pub fn encode_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    encode_bytes(p.as_os_str().as_bytes())
}

/// The path [`encode_path`] wrote.
pub fn decode_path(s: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    std::path::PathBuf::from(std::ffi::OsString::from_vec(decode_bytes(s)))
}

/// Milliseconds since the epoch of an RFC 3339 time (`2026-11-27T02:35:12Z`,
/// fractions and offsets as restic writes them).
pub fn parse_time(s: &str) -> Option<u64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let clock_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(clock_end);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    let ms_frac: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let offset = match zone.as_bytes().first() {
        None | Some(b'Z' | b'z') => 0,
        Some(&sign) => {
            let (oh, om) = zone[1..].split_once(':')?;
            let o = oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60;
            if sign == b'-' { -o } else { o }
        }
    };
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs * 1000 + ms_frac).ok()
}

/// The archives of `rec`'s disk in `listed`, oldest first: of the
/// deployment, and of the record's node (or, naming none, of its disk).
pub(crate) fn archives_of<'a>(
    listed: &'a [Listed],
    deployment: &str,
    rec: &Record,
) -> Vec<&'a Listed> {
    listed
        .iter()
        .filter(|l| l.is(Kind::Archive))
        .filter(|l| l.labels.deployment.as_deref() == Some(deployment))
        .filter(|l| match &rec.node {
            Some(n) => l.labels.node.as_deref() == Some(n.as_str()),
            None => l.labels.node.is_none() && l.labels.disk == rec.disk,
        })
        .collect()
}

/// The record's view of an archive in the repository.
pub(crate) fn archive_of(l: &Listed, repository: &str, state: &str) -> Archive {
    Archive {
        id: l.snap.id.clone(),
        time: Stamp(l.ms).rfc3339(),
        repository: repository.to_string(),
        state: state.to_string(),
        node: l.labels.node.clone(),
        disk: l.labels.disk.clone(),
        fs: l.labels.fs.clone(),
        freeze: l.labels.freeze.clone(),
        set: l.labels.set.clone(),
        ..Archive::default()
    }
}

/// The first 8 characters of an id, as restic shows them.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Stamp;

    #[test]
    fn labels_survive_tags_whatever_the_names() {
        let l = Labels {
            kind: Some(Kind::Archive),
            deployment: Some("prod, eu".into()),
            node: Some("10.0.0.1".into()),
            disk: Some("data=1 %x".into()),
            set: Some("nightly".into()),
            ..Labels::default()
        };
        let tags = l.to_tags();
        assert!(
            tags.iter().all(|t| !t.contains(',') && !t.contains(' ')),
            "{tags:?}"
        );
        assert_eq!(Labels::from_tags(&tags), Some(l));
        assert_eq!(
            Labels::from_tags(&["kind=archive".into()]),
            None,
            "not ours"
        );
    }

    #[test]
    fn a_root_reads_back_from_its_tag() {
        let m = DirMeta {
            mode: 0o4751,
            uid: 1234,
            gid: 5678,
            mtime: 1_600_000_000,
            mtime_nsec: 123_456_789,
        };
        assert_eq!(m.to_tag(), "4751:1234:5678:1600000000:123456789");
        assert_eq!(DirMeta::from_tag(&m.to_tag()), Some(m));
        assert_eq!(DirMeta::from_tag("755:0:0"), None);
    }

    #[test]
    fn paths_of_any_bytes_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"a b/c\xff%d"));
        let e = encode_path(p);
        assert_eq!(e, "a%20b/c%FF%25d");
        assert_eq!(decode_path(&e), p);
    }

    #[test]
    fn times_read_back_as_written() {
        let t = Stamp(1_795_746_912_123);
        assert_eq!(parse_time(&t.rfc3339()), Some(t.0));
        assert_eq!(
            parse_time("2026-11-27T02:35:12.123456789Z"),
            Some(1_795_746_912_123)
        );
        assert_eq!(
            parse_time("2026-11-27T03:35:12.123+01:00"),
            Some(1_795_746_912_123)
        );
        assert_eq!(parse_time("2026-11-27T02:35:12Z"), Some(1_795_746_912_000));
        assert_eq!(parse_time("yesterday"), None);
    }
}
