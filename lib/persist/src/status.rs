//! `disk-status`: every disk of a deployment, cloud side and node side, in
//! one look; and what is wrong with it, each problem with a stable code and
//! a one-line fix. Nothing here changes anything.
//!
//! * The cloud part ([`CloudPart`]) is what the disk's provider says
//!   ([`Provider::describe`], one batched call per provider for all the
//!   records it holds): the providers are opened by the caller (an
//!   [`Opener`]), so this crate links no cloud SDK.
//! * The node part ([`NodePart`]) is read on this machine, from the same
//!   modules the node tools act with: the device ([`discover::find_here`],
//!   [`discover::verify_claimed_device`]), the filesystem
//!   ([`blockdev::read_superblock`], else `blkid -p`), the mount table
//!   ([`mount::Table`]), the fstab ([`Fstab`]) and the holders
//!   ([`mount::holders`]).
//! * [`Problem`]s carry codes from [`crate::codes`]; [`fix`] gives each its
//!   one-line fix.
//!
//! The outputs: the records with a `status` key (NDJSON), a table
//! ([`table`]) and node_exporter textfile-collector metrics
//! ([`prometheus`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::blockdev::{self, Device};
use crate::codes;
use crate::discover;
use crate::fstab::{self, Fstab};
use crate::log;
use crate::mount;
use crate::provider::{DiskStatus, Provider};
pub use crate::record::status::{CloudPart, FstabPart, NodeFs, NodePart, Problem, Status};
use crate::record::{DEFAULT_MOUNTPOINT, ProviderKind, Record};
use crate::step::{Exit, Failure};
use crate::steps::provision::Opener;

/// The archive part of a record, when this node has archived its disk.
fn archive_part(r: &Record) -> Option<crate::archive::ledger::Entry> {
    let deployment = r
        .deployment
        .as_deref()
        .filter(|d| !d.is_empty())
        .unwrap_or(crate::record::DEFAULT_DEPLOYMENT);
    let key = crate::archive::ledger::key(
        deployment,
        r.provider.unwrap_or(ProviderKind::Local),
        r.disk.as_deref()?,
    );
    let e = crate::archive::ledger::read(&key);
    (e.last_time.is_some() || e.verified_time.is_some()).then_some(e)
}

impl Problem {
    /// A problem with code `code`, and the fix [`fix`] gives for it.
    pub fn new(code: codes::Code, message: impl Into<String>) -> Problem {
        Problem {
            code: code.to_string(),
            message: message.into(),
            fix: fix(&code).to_string(),
        }
    }
}

impl From<Failure> for Problem {
    fn from(f: Failure) -> Problem {
        Problem::new(f.code, f.message)
    }
}

/// The one-line fix for a problem's code.
pub fn fix(code: &codes::Code) -> &'static str {
    match *code {
        codes::NO_SUCH_DISK => "run disk-create (scripts/up), or check the disk's name and zone",
        codes::NOT_ATTACHED => "run disk-attach (scripts/up)",
        codes::ATTACHED_ELSEWHERE => {
            "detach it from that instance (disk-unmount there, then disk-detach)"
        }
        codes::ZONE_MISMATCH => "use a disk in the instance's zone (or fix the record's zone)",
        codes::OTHER_DEPLOYMENT | codes::OTHER_NODE => {
            "give this disk another name, or run with that deployment's name (--deployment)"
        }
        codes::DEVICE_NOT_FOUND => {
            "check the disk is attached to this instance (disk-attach --self); look in /dev/disk/by-id"
        }
        codes::IDENTITY_MISMATCH | codes::IDENTITY_UNCONFIRMED => {
            "the device is not (or not surely) the record's disk: find where the disk really is; a stale record is the usual cause"
        }
        codes::NO_FILESYSTEM => "run disk-ensure-fs",
        codes::MOUNTED_ELSEWHERE => "unmount it there, then run disk-mount",
        codes::NOT_MOUNTED => "run disk-mount",
        codes::NO_FSTAB_ENTRY => "rerun disk-mount without --no-fstab",
        codes::FSTAB_MISMATCH => {
            "remove the stale fstab line (disk-unmount removes ours), then rerun disk-mount"
        }
        codes::FSTAB_STALE => "attach the disk again, or remove the line (disk-unmount)",
        codes::DISK_FULL => {
            "free space, or grow the disk (a bigger --size; disk-ensure-fs grows the filesystem)"
        }
        codes::NEEDS_FSCK => "unmount it, run `fsck -f` on the device, mount it again",
        codes::FROZEN => {
            "a freeze left by a disk-snapshot that died is thawed by the next disk-mount, disk-unmount or disk-snapshot here; any other: `fsfreeze -u MOUNTPOINT` once its holder is done"
        }
        codes::NO_CREDENTIALS => "give the cloud API credentials",
        codes::UNREACHABLE => "check the endpoint (--endpoint-url) and the network",
        _ => "see the message; docs/protocol.md lists every code",
    }
}

/// How the node part is read.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Mountpoint for records that name none.
    pub mountpoint: Option<String>,
    /// The fstab to look in; `None`: not looked at.
    pub fstab: Option<PathBuf>,
    /// A filesystem used more than this many percent is a problem.
    pub full_percent: u8,
    /// Name the processes holding each mount.
    pub holders: bool,
    /// Directory of local disk images.
    pub state_dir: Option<PathBuf>,
}

/// How a run of disk-status looks.
pub struct Options {
    /// Provider for records that name none.
    pub default_provider: Option<ProviderKind>,
    /// Zone for records that name none.
    pub zone: Option<String>,
    /// The deployment every cloud disk must belong to (`--deployment`),
    /// over the records' own.
    pub deployment: Option<String>,
    /// Running on the node (`--self`): cloud records get a node part too.
    pub on_node: bool,
    /// How the node part is read.
    pub node: NodeOptions,
}

/// The node as one run reads it, once: the mount table and the fstab.
pub struct NodeView {
    table: mount::Table,
    fstab: Option<Fstab>,
}

impl NodeView {
    /// Reads the mount table and `fstab` (when given).
    pub fn read(fstab: Option<&Path>) -> Result<NodeView, Failure> {
        let table = mount::read_table()?;
        let fstab = fstab.map(Fstab::load).transpose()?;
        Ok(NodeView { table, fstab })
    }
}

/// Fills each record's `status` (records carrying an error pass through
/// untouched): the cloud part from one `describe` per provider, the node
/// part where the disk is on this machine. Returns the exit code: `Ok` when
/// every disk is healthy, `Failed` when any record has a problem or an
/// error.
pub fn run(records: &mut [Record], opts: &Options, open: &mut Opener) -> Exit {
    let todo: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].error.is_none())
        .collect();
    let mut statuses: Vec<Status> = todo.iter().map(|_| Status::default()).collect();
    // Cloud part: one describe per provider.
    let mut groups: Vec<(ProviderKind, Vec<usize>)> = Vec::new();
    for (j, &i) in todo.iter().enumerate() {
        if let Some(kind) = records[i].provider.or(opts.default_provider) {
            match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, idx)) => idx.push(j),
                None => groups.push((kind, vec![j])),
            }
        }
    }
    // A copy of each record that the cloud's answer fills in (the volume
    // id behind a Name tag, the device name), for finding it on the node.
    let mut seen: Vec<Record> = todo
        .iter()
        .map(|&i| {
            let mut r = records[i].clone();
            r.provider = r.provider.or(opts.default_provider);
            if opts.deployment.is_some() && r.provider.is_some_and(ProviderKind::is_cloud) {
                r.deployment.clone_from(&opts.deployment);
            }
            r
        })
        .collect();
    for (kind, idx) in groups {
        let batch: Vec<Record> = idx.iter().map(|&j| seen[j].clone()).collect();
        let found: Vec<Result<DiskStatus, Failure>> = match open(kind) {
            Ok(mut p) => describe(p.as_mut(), &batch),
            Err(f) => batch.iter().map(|_| Err(f.clone())).collect(),
        };
        for (j, f) in idx.into_iter().zip(found) {
            if let Ok(ds) = &f {
                learn(&mut seen[j], ds);
            }
            let zone = seen[j].zone.clone().or_else(|| opts.zone.clone());
            let (part, problems) = cloud_part(kind, f, zone.as_deref());
            statuses[j].cloud = Some(part);
            statuses[j].problems.extend(problems);
        }
    }
    // Node part.
    let here: Vec<usize> = (0..todo.len())
        .filter(|&j| match seen[j].provider {
            None | Some(ProviderKind::Local | ProviderKind::Static) => true,
            Some(_) => opts.on_node,
        })
        .collect();
    if !here.is_empty() {
        match NodeView::read(opts.node.fstab.as_deref()) {
            Ok(view) => {
                for j in here {
                    let (part, problems) = node_part(&seen[j], &opts.node, &view);
                    statuses[j].node = Some(part);
                    statuses[j].problems.extend(problems);
                }
            }
            Err(f) => {
                for j in here {
                    statuses[j].problems.push(f.clone().into());
                }
            }
        }
    }
    for (j, s) in statuses.iter_mut().enumerate() {
        s.archive = archive_part(&seen[j]);
    }
    for (i, s) in todo.into_iter().zip(statuses) {
        records[i].status = Some(s);
    }
    exit_code(records)
}

/// [`Exit::Failed`] when any record carries an error or a problem.
pub fn exit_code(records: &[Record]) -> Exit {
    let bad =
        |r: &Record| r.error.is_some() || r.status.as_ref().is_some_and(|s| !s.problems.is_empty());
    if records.iter().any(bad) {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

/// One `describe` for the batch, kept to one answer per record.
fn describe(p: &mut dyn Provider, batch: &[Record]) -> Vec<Result<DiskStatus, Failure>> {
    let mut found = p.describe(batch);
    found.resize_with(batch.len(), || {
        Err(Failure::new(
            codes::INTERNAL,
            "the provider gave too few answers",
        ))
    });
    found
}

/// What the cloud's answer teaches the node part: the provider's id and
/// the device name.
fn learn(r: &mut Record, ds: &DiskStatus) {
    if r.provider.is_some_and(ProviderKind::is_cloud) && r.disk_id.is_none() {
        r.disk_id = Some(ds.id.clone());
    }
    if r.attached_as.is_none() {
        r.attached_as = ds.attached_as.clone();
    }
    if r.size_bytes.is_none() && r.provider.is_some_and(ProviderKind::is_cloud) {
        r.size_bytes = ds.size;
    }
}

/// The cloud part of a provider's answer, and its problems: missing, not
/// attached, attached elsewhere, in another zone than `zone`; or whatever
/// the provider's failure says (another deployment's, unreachable).
pub fn cloud_part(
    kind: ProviderKind,
    found: Result<DiskStatus, Failure>,
    zone: Option<&str>,
) -> (CloudPart, Vec<Problem>) {
    let ds = match found {
        Ok(ds) => ds,
        Err(f) => {
            let missing = [
                codes::NO_SUCH_DISK.as_str(),
                "InvalidVolume.NotFound",
                "NOT_FOUND",
            ]
            .contains(&f.code.as_str());
            let theirs = [codes::OTHER_DEPLOYMENT, codes::OTHER_NODE].contains(&f.code);
            let exists = if missing {
                Some(false)
            } else if theirs {
                Some(true)
            } else {
                None
            };
            let problem = if missing {
                Problem::new(codes::NO_SUCH_DISK, f.message)
            } else {
                f.into()
            };
            let part = CloudPart {
                exists,
                ..CloudPart::default()
            };
            return (part, vec![problem]);
        }
    };
    let mut problems = Vec::new();
    match &ds.instance {
        _ if kind == ProviderKind::Static => {}
        _ if ds.attached_to.is_empty() => problems.push(Problem::new(
            codes::NOT_ATTACHED,
            format!("{} is attached to nothing", ds.id),
        )),
        Some(i) if !ds.attached_to.contains(i) => problems.push(Problem::new(
            codes::ATTACHED_ELSEWHERE,
            format!(
                "{} is attached to {}, not to {i}",
                ds.id,
                ds.attached_to.join(", ")
            ),
        )),
        _ => {}
    }
    if let (Some(want), Some(is)) = (zone, ds.zone.as_deref())
        && want != is
    {
        problems.push(Problem::new(
            codes::ZONE_MISMATCH,
            format!("{} is in zone {is}, the record's is {want}", ds.id),
        ));
    }
    let part = CloudPart {
        exists: Some(true),
        id: Some(ds.id),
        size_bytes: ds.size,
        disk_type: ds.disk_type,
        zone: ds.zone,
        encrypted: ds.encrypted,
        state: ds.state,
        attached_to: ds.attached_to,
        attached_as: ds.attached_as,
        deployment: ds.deployment,
        node: ds.node,
        created: ds.created,
    };
    (part, problems)
}

/// How `dev` was confirmed to be the record's disk, or the problem that it
/// is not.
fn identity(rec: &Record, dev: &Device) -> Result<String, Failure> {
    if rec.device.is_some() {
        discover::verify_claimed_device(rec, dev)?;
    }
    let disk = rec.disk_id().unwrap_or("?");
    Ok(match rec.provider {
        _ if rec.disk.is_none() && rec.disk_id.is_none() => {
            "named by the record (no disk to check it against)".to_string()
        }
        Some(ProviderKind::Local) => format!("the loop device bound to the image of {disk}"),
        Some(ProviderKind::Static) => "the record's own device path".to_string(),
        Some(_) => {
            let link = discover::candidates(rec, &discover::dev_root())
                .into_iter()
                .find(|c| {
                    Device::open(c).is_ok_and(|d| (d.major, d.minor) == (dev.major, dev.minor))
                });
            let name = dev
                .real
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let serial = name.map(|n| discover::serial_of(&n)).unwrap_or_default();
            match (link, serial.is_empty()) {
                (Some(l), true) => format!("link {}", l.display()),
                (Some(l), false) => format!("link {}, serial {serial}", l.display()),
                (None, _) => "named by the record".to_string(),
            }
        }
        None => "named by the record".to_string(),
    })
}

/// The filesystem on `dev`: its superblock read in-process (ext4, XFS),
/// else `blkid -p`; and whether it needs fsck (`mounted`: only errors the
/// superblock records count, as a mounted ext4 always has a journal in use).
fn filesystem(dev: &Device, mounted: bool) -> Result<Option<(NodeFs, bool)>, Failure> {
    if let Some(sb) = blockdev::read_superblock(&dev.real)? {
        let needs_fsck = if mounted { sb.errors } else { !sb.clean };
        let fs = NodeFs {
            fstype: sb.fstype.to_string(),
            uuid: Some(sb.uuid),
            label: sb.label,
            clean: Some(!needs_fsck),
        };
        return Ok(Some((fs, needs_fsck)));
    }
    let probe =
        blockdev::probe(&dev.path).map_err(|e| Failure::new(codes::PROBE_FAILED, e.to_string()))?;
    Ok(probe.filter(|p| p.usage() == Some("filesystem")).map(|p| {
        let fs = NodeFs {
            fstype: p.fstype().unwrap_or_default().to_string(),
            uuid: p.uuid().map(str::to_string),
            label: p.label().map(str::to_string),
            clean: None,
        };
        (fs, false)
    }))
}

/// Used and free bytes, and the percentage used (as `df` rounds it), of the
/// filesystem mounted at `target`.
fn usage(target: &Path) -> Option<(u64, u64, u8)> {
    let st = nix::sys::statvfs::statvfs(target).ok()?;
    let frag = st.fragment_size() as u64;
    let used = (st.blocks() as u64).saturating_sub(st.blocks_free() as u64) * frag;
    let avail = st.blocks_available() as u64 * frag;
    let total = used + avail;
    let pct = if total == 0 {
        0
    } else {
        (used * 100).div_ceil(total) as u8
    };
    Some((used, avail, pct))
}

/// The node part of a record, and its problems.
pub fn node_part(rec: &Record, opts: &NodeOptions, view: &NodeView) -> (NodePart, Vec<Problem>) {
    let mut part = NodePart::default();
    let mut problems = Vec::new();
    let mp = rec
        .mountpoint
        .clone()
        .or_else(|| opts.mountpoint.clone())
        .unwrap_or_else(|| DEFAULT_MOUNTPOINT.to_string());
    let entries = view.fstab.as_ref().map(Fstab::entries);
    let at_mp = entries
        .iter()
        .flatten()
        .find(|e| fstab::same_target(&e.file, &mp))
        .cloned();
    let what = rec
        .disk_id()
        .or(rec.device.as_deref())
        .unwrap_or("the disk");
    let Some(dev) = discover::find_here(rec, opts.state_dir.as_deref()) else {
        problems.push(Problem::new(
            codes::DEVICE_NOT_FOUND,
            format!("no device for {what} on this node"),
        ));
        if let Some(e) = at_mp {
            problems.push(Problem::new(
                codes::FSTAB_STALE,
                format!(
                    "fstab mounts {} at {mp}, but {what} is not on this node",
                    e.spec
                ),
            ));
            part.fstab = Some(fstab_part(Some(&e), false));
        }
        return (part, problems);
    };
    part.device = Some(dev.path.display().to_string());
    part.size_bytes = Some(dev.size);
    match identity(rec, &dev) {
        Ok(how) => part.identity = Some(how),
        // Not this disk: what is on that device is another disk's business.
        Err(f) => {
            problems.push(f.into());
            return (part, problems);
        }
    }
    let mounts = view.table.by_device(dev.major, dev.minor);
    let here = mounts
        .iter()
        .find(|e| fstab::same_target(&e.target.display().to_string(), &mp));
    let mounted = here.or(mounts.first()).copied();
    let fs = match filesystem(&dev, mounted.is_some()) {
        Ok(Some((fs, needs_fsck))) => {
            if needs_fsck {
                problems.push(Problem::new(
                    codes::NEEDS_FSCK,
                    format!(
                        "the {} filesystem on {} is not clean",
                        fs.fstype,
                        dev.path.display()
                    ),
                ));
            }
            Some(fs)
        }
        Ok(None) => {
            problems.push(Problem::new(
                codes::NO_FILESYSTEM,
                format!("{} holds no filesystem", dev.path.display()),
            ));
            None
        }
        Err(f) => {
            problems.push(f.into());
            None
        }
    };
    if let (Some(want), Some(is)) = (
        rec.fs.as_ref().and_then(|f| f.uuid.as_deref()),
        fs.as_ref().and_then(|f| f.uuid.as_deref()),
    ) && !want.eq_ignore_ascii_case(is)
    {
        problems.push(Problem::new(
            codes::IDENTITY_MISMATCH,
            format!(
                "{} holds the filesystem UUID={is}, the record names UUID={want}",
                dev.path.display()
            ),
        ));
    }
    part.fs = fs.clone();
    match (here, mounted) {
        (Some(_), _) => {}
        (None, Some(e)) => problems.push(Problem::new(
            codes::MOUNTED_ELSEWHERE,
            format!(
                "{} is mounted on {}, not on {mp}",
                dev.path.display(),
                e.target.display()
            ),
        )),
        (None, None) if fs.is_some() => problems.push(Problem::new(
            codes::NOT_MOUNTED,
            format!(
                "{} is not mounted (its mountpoint: {mp})",
                dev.path.display()
            ),
        )),
        (None, None) => {}
    }
    if let Some(e) = mounted {
        if let Some(why) = crate::freeze::frozen(&dev, e.is_rw()) {
            problems.push(Problem::new(
                codes::FROZEN,
                format!("{} is {why}: every writer on it hangs", e.target.display()),
            ));
        }
        part.mounted_at = Some(e.target.display().to_string());
        part.mount_options = Some(e.options.clone());
        if let Some((used, free, pct)) = usage(&e.target) {
            (part.used_bytes, part.free_bytes, part.used_percent) =
                (Some(used), Some(free), Some(pct));
            if pct > opts.full_percent {
                problems.push(Problem::new(
                    codes::DISK_FULL,
                    format!(
                        "{} is {pct}% full (threshold {}%)",
                        e.target.display(),
                        opts.full_percent
                    ),
                ));
            }
        }
        if opts.holders {
            part.holders = Some(
                mount::holders(dev.major, dev.minor)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            );
        }
    }
    if let (Some(entries), Some(uuid)) = (&entries, fs.as_ref().and_then(|f| f.uuid.clone())) {
        let known = fstab::Filesystem {
            uuid,
            label: fs.as_ref().and_then(|f| f.label.clone()),
            device: Some((dev.major, dev.minor)),
        };
        let naming = entries.iter().find(|e| known.named_by(&e.spec));
        let matching = at_mp.as_ref().is_some_and(|e| known.named_by(&e.spec));
        let entry = at_mp.as_ref().or(naming);
        part.fstab = Some(fstab_part(entry, matching));
        match (&at_mp, naming) {
            (Some(e), _) if !matching => problems.push(Problem::new(
                codes::FSTAB_MISMATCH,
                format!(
                    "fstab mounts {} at {mp}, but the disk's filesystem is UUID={}",
                    e.spec, known.uuid
                ),
            )),
            (None, Some(e)) => problems.push(Problem::new(
                codes::FSTAB_MISMATCH,
                format!(
                    "fstab mounts the disk's filesystem at {}, not at {mp}",
                    e.file
                ),
            )),
            (None, None) if here.is_some() => problems.push(Problem::new(
                codes::NO_FSTAB_ENTRY,
                format!("{mp} is mounted, but no fstab entry mounts it at boot"),
            )),
            _ => {}
        }
    }
    (part, problems)
}

/// What an fstab entry (if any) says.
fn fstab_part(entry: Option<&fstab::Entry>, matching: bool) -> FstabPart {
    FstabPart {
        present: entry.is_some(),
        matching,
        nofail: entry.is_some_and(|e| e.options.split(',').any(|o| o == "nofail")),
        line: entry.map(fstab::Entry::to_line),
    }
}

/// A size for the table: `10G`, `512M`, `-`.
fn human(bytes: Option<u64>) -> String {
    let Some(b) = bytes else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v >= 10.0 || u == 0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// The table's header.
pub const TABLE_HEADER: [&str; 10] = [
    "NODE",
    "DISK",
    "CLOUD",
    "ATTACHED TO",
    "DEVICE",
    "FS",
    "MOUNTED",
    "FSTAB",
    "USED",
    "PROBLEMS",
];

/// One table row per record.
pub fn table_rows(records: &[Record]) -> Vec<[String; 10]> {
    records.iter().map(row).collect()
}

fn row(r: &Record) -> [String; 10] {
    let dash = || "-".to_string();
    let s = r.status.clone().unwrap_or_default();
    let cloud = match &s.cloud {
        None => dash(),
        Some(c) => match c.exists {
            Some(false) => "missing".into(),
            None => "?".into(),
            Some(true) => c.state.clone().unwrap_or_else(|| "exists".into()),
        },
    };
    let attached = s
        .cloud
        .as_ref()
        .map(|c| c.attached_to.join(","))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(dash);
    let n = s.node.clone().unwrap_or_default();
    let fs = n.fs.as_ref().map(|f| f.fstype.clone()).unwrap_or_else(dash);
    let fstab = match &n.fstab {
        None => dash(),
        Some(f) if !f.present => "none".into(),
        Some(f) if !f.matching => "other".into(),
        Some(f) if f.nofail => "ok".into(),
        Some(_) => "ok (no nofail)".into(),
    };
    let used = match (n.used_bytes, n.used_percent) {
        (Some(u), Some(p)) => format!("{} {p}%", human(Some(u))),
        _ => dash(),
    };
    let mut problems: Vec<String> = s.problems.iter().map(|p| p.code.clone()).collect();
    if let Some(e) = &r.error {
        problems.push(format!("error: {}", e.code));
    }
    let cells = [
        r.node.clone().unwrap_or_else(dash),
        r.disk
            .clone()
            .or_else(|| r.device.clone())
            .unwrap_or_else(dash),
        cloud,
        attached,
        n.device.unwrap_or_else(dash),
        fs,
        n.mounted_at.unwrap_or_else(dash),
        fstab,
        used,
        if problems.is_empty() {
            "ok".into()
        } else {
            problems.join(",")
        },
    ];
    cells.map(|c| log::escape_controls(&c))
}

/// The records as a table, one line each, then one line per problem with
/// its fix.
pub fn table(records: &[Record]) -> String {
    let mut rows = vec![TABLE_HEADER.map(str::to_string)];
    rows.extend(table_rows(records));
    let mut widths = [0usize; 10];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for r in records {
        for p in r.status.iter().flat_map(|s| &s.problems) {
            out.push_str(&log::escape_controls(&format!(
                "{}: [{}] {}; fix: {}",
                r.label(),
                p.code,
                p.message,
                p.fix
            )));
            out.push('\n');
        }
        if let Some(e) = &r.error {
            out.push_str(&log::escape_controls(&format!(
                "{}: [{}] {} (from {})",
                r.label(),
                e.code,
                e.message,
                e.tool
            )));
            out.push('\n');
        }
    }
    out
}

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "appscale_persist_disk";

/// A label value, escaped as the text exposition format wants.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The records as node_exporter textfile-collector metrics (Prometheus
/// text exposition format 0.0.4): per disk, size, used and free bytes,
/// whether it is mounted and attached, whether it is healthy, and one
/// `problem` series per problem code it has.
pub fn prometheus(records: &[Record]) -> String {
    type Metric = (&'static str, &'static str, fn(&Record) -> Option<f64>);
    let status = |r: &Record| r.status.clone().unwrap_or_default();
    let metrics: [Metric; 9] = [
        (
            "size_bytes",
            "Size of the disk in bytes (the cloud's word, else the device's).",
            |r| {
                let s = r.status.as_ref()?;
                s.cloud
                    .as_ref()
                    .and_then(|c| c.size_bytes)
                    .or(s.node.as_ref().and_then(|n| n.size_bytes))
                    .map(|b| b as f64)
            },
        ),
        (
            "used_bytes",
            "Bytes used on the disk's filesystem, when mounted.",
            |r| {
                r.status
                    .as_ref()?
                    .node
                    .as_ref()?
                    .used_bytes
                    .map(|b| b as f64)
            },
        ),
        (
            "free_bytes",
            "Bytes free on the disk's filesystem, when mounted.",
            |r| {
                r.status
                    .as_ref()?
                    .node
                    .as_ref()?
                    .free_bytes
                    .map(|b| b as f64)
            },
        ),
        (
            "mounted",
            "1 when the disk's filesystem is mounted at its mountpoint.",
            |r| {
                let n = r.status.as_ref()?.node.as_ref()?;
                Some(f64::from(u8::from(
                    n.mounted_at.as_deref() == Some(r.mountpoint()),
                )))
            },
        ),
        (
            "attached",
            "1 when the cloud says the disk is attached.",
            |r| {
                let c = r.status.as_ref()?.cloud.as_ref()?;
                Some(f64::from(u8::from(!c.attached_to.is_empty())))
            },
        ),
        (
            "archive_last_timestamp_seconds",
            "When the moment of the disk's last archive was (disk-archive), seconds since the epoch.",
            |r| {
                let a = r.status.as_ref()?.archive.as_ref()?;
                archive_time(&a.last_time)
            },
        ),
        (
            "archive_last_size_bytes",
            "Bytes of files in the disk's last archive.",
            |r| {
                r.status
                    .as_ref()?
                    .archive
                    .as_ref()?
                    .last_size
                    .map(|b| b as f64)
            },
        ),
        (
            "archive_verified_timestamp_seconds",
            "When a restore drill (disk-archive --verify) last matched an archive of the disk, seconds since the epoch.",
            |r| {
                let a = r.status.as_ref()?.archive.as_ref()?;
                archive_time(&a.verified_time)
            },
        ),
        (
            "healthy",
            "1 when no problem was found with the disk.",
            |r| {
                let bad =
                    r.error.is_some() || r.status.as_ref().is_some_and(|s| !s.problems.is_empty());
                Some(f64::from(u8::from(!bad)))
            },
        ),
    ];
    let labels = |r: &Record| {
        format!(
            "node=\"{}\",disk=\"{}\",mountpoint=\"{}\"",
            label_value(r.node.as_deref().unwrap_or("")),
            label_value(r.disk.as_deref().or(r.device.as_deref()).unwrap_or("")),
            label_value(r.mountpoint())
        )
    };
    let mut out = String::new();
    for (name, help, value) in metrics {
        out.push_str(&format!(
            "# HELP {METRIC_PREFIX}_{name} {help}\n# TYPE {METRIC_PREFIX}_{name} gauge\n"
        ));
        for r in records {
            if let Some(v) = value(r) {
                out.push_str(&format!("{METRIC_PREFIX}_{name}{{{}}} {v}\n", labels(r)));
            }
        }
    }
    out.push_str(&format!(
        "# HELP {METRIC_PREFIX}_problem 1 for each problem the disk has, by code.\n# TYPE {METRIC_PREFIX}_problem gauge\n"
    ));
    for r in records {
        let mut seen = BTreeSet::new();
        let codes = status(r)
            .problems
            .into_iter()
            .map(|p| p.code)
            .chain(r.error.iter().map(|e| e.code.clone()));
        for code in codes {
            if seen.insert(code.clone()) {
                out.push_str(&format!(
                    "{METRIC_PREFIX}_problem{{{},code=\"{}\"}} 1\n",
                    labels(r),
                    label_value(&code)
                ));
            }
        }
    }
    out
}

/// An RFC 3339 time as seconds since the epoch.
fn archive_time(t: &Option<String>) -> Option<f64> {
    t.as_deref()
        .and_then(crate::archive::tags::parse_time)
        .map(|ms| ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_code_has_a_fix_of_its_own() {
        for code in [
            codes::NOT_MOUNTED,
            codes::NO_FSTAB_ENTRY,
            codes::FSTAB_MISMATCH,
            codes::FSTAB_STALE,
            codes::DISK_FULL,
            codes::NEEDS_FSCK,
            codes::NO_SUCH_DISK,
            codes::ATTACHED_ELSEWHERE,
            codes::DEVICE_NOT_FOUND,
        ] {
            assert!(!fix(&code).starts_with("see the message"), "{code}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(human(Some(10 << 30)), "10G");
        assert_eq!(human(Some(1536 << 20)), "1.5G");
    }
}
