//! The node part of disk-status: what this machine says of a record's
//! disk, read with the modules the node tools act with, one check at a
//! time. Each check adds what it found to the [`NodePart`] and its
//! [`Problem`]s: the device ([`absent`], [`identity`]), the filesystem
//! ([`check_filesystem`], [`check_uuid`]), the mount ([`check_mount`],
//! [`check_mounted`]) and the fstab ([`check_fstab`]).

use std::path::Path;

use crate::blockdev::{self, Device};
use crate::codes;
use crate::discover;
use crate::fstab::{self, Fstab};
use crate::mount;
use crate::record::status::{FstabPart, NodeFs, NodePart, Problem, Status};
use crate::record::{DEFAULT_MOUNTPOINT, ProviderKind, Record};
use crate::step::Failure;

use super::{NodeOptions, Options};

/// Fills the node part of each status whose disk is on this machine: local
/// and static disks, and cloud disks when running on the node (`--self`).
/// The mount table and fstab are read once for all.
pub(super) fn look(seen: &[Record], statuses: &mut [Status], opts: &Options) {
    let here: Vec<usize> = (0..seen.len())
        .filter(|&j| match seen[j].provider {
            None | Some(ProviderKind::Local | ProviderKind::Static) => true,
            Some(_) => opts.on_node,
        })
        .collect();
    if here.is_empty() {
        return;
    }
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
    let Some(dev) = discover::find_here(rec, opts.state_dir.as_deref()) else {
        absent(rec, &mp, at_mp.as_ref(), &mut part, &mut problems);
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
        .find(|e| fstab::same_target(&e.target.display().to_string(), &mp))
        .copied();
    let mounted = here.or(mounts.first().copied());
    let fs = check_filesystem(&dev, mounted.is_some(), &mut problems);
    check_uuid(rec, &dev, fs.as_ref(), &mut problems);
    part.fs = fs.clone();
    check_mount(&dev, &mp, here, mounted, fs.is_some(), &mut problems);
    if let Some(e) = mounted {
        check_mounted(&dev, e, opts, &mut part, &mut problems);
    }
    if let (Some(entries), Some(fs)) = (&entries, &fs) {
        let at = FstabAt {
            mp: &mp,
            entry: at_mp.as_ref(),
            mounted_here: here.is_some(),
        };
        check_fstab(&dev, fs, entries, &at, &mut part, &mut problems);
    }
    (part, problems)
}

/// No device for the record on this node (device-not-found); an fstab line
/// that still mounts something at its mountpoint is stale (fstab-stale).
fn absent(
    rec: &Record,
    mp: &str,
    at_mp: Option<&fstab::Entry>,
    part: &mut NodePart,
    problems: &mut Vec<Problem>,
) {
    let what = rec
        .disk_id()
        .or(rec.device.as_deref())
        .unwrap_or("the disk");
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
        part.fstab = Some(fstab_part(Some(e), false));
    }
}

/// The filesystem on `dev` (`mounted` or not), or the problem: none
/// (no-filesystem), not clean (needs-fsck), or it could not be read.
fn check_filesystem(dev: &Device, mounted: bool, problems: &mut Vec<Problem>) -> Option<NodeFs> {
    match filesystem(dev, mounted) {
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
    }
}

/// The filesystem's UUID against the record's (identity-mismatch).
fn check_uuid(rec: &Record, dev: &Device, fs: Option<&NodeFs>, problems: &mut Vec<Problem>) {
    if let (Some(want), Some(is)) = (
        rec.fs.as_ref().and_then(|f| f.uuid.as_deref()),
        fs.and_then(|f| f.uuid.as_deref()),
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
}

/// Where the disk is mounted: `here` (at `mp`), elsewhere
/// (mounted-elsewhere), or nowhere while it holds a filesystem
/// (not-mounted).
fn check_mount(
    dev: &Device,
    mp: &str,
    here: Option<&mount::Entry>,
    mounted: Option<&mount::Entry>,
    has_fs: bool,
    problems: &mut Vec<Problem>,
) {
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
        (None, None) if has_fs => problems.push(Problem::new(
            codes::NOT_MOUNTED,
            format!(
                "{} is not mounted (its mountpoint: {mp})",
                dev.path.display()
            ),
        )),
        (None, None) => {}
    }
}

/// The mount `e` of the disk: frozen, its options, how full (disk-full),
/// and who holds it (`--holders`).
fn check_mounted(
    dev: &Device,
    e: &mount::Entry,
    opts: &NodeOptions,
    part: &mut NodePart,
    problems: &mut Vec<Problem>,
) {
    if let Some(why) = crate::freeze::frozen(dev, e.is_rw()) {
        problems.push(Problem::new(
            codes::FROZEN,
            format!("{} is {why}: every writer on it hangs", e.target.display()),
        ));
    }
    part.mounted_at = Some(e.target.display().to_string());
    part.mount_options = Some(e.options.clone());
    if let Some((used, free, pct)) = usage(&e.target) {
        (part.used_bytes, part.free_bytes, part.used_percent) = (Some(used), Some(free), Some(pct));
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

/// The fstab at the record's mountpoint: `mp`, the `entry` mounting
/// something there, whether the disk is `mounted_here`.
struct FstabAt<'a> {
    mp: &'a str,
    entry: Option<&'a fstab::Entry>,
    mounted_here: bool,
}

/// The fstab's word on the disk whose filesystem is `fs`: an entry at its
/// mountpoint for another filesystem, or one mounting it elsewhere
/// (fstab-mismatch); none while it is mounted (no-fstab-entry).
fn check_fstab(
    dev: &Device,
    fs: &NodeFs,
    entries: &[fstab::Entry],
    at: &FstabAt<'_>,
    part: &mut NodePart,
    problems: &mut Vec<Problem>,
) {
    let Some(uuid) = fs.uuid.clone() else {
        return;
    };
    let known = fstab::Filesystem {
        uuid,
        label: fs.label.clone(),
        device: Some((dev.major, dev.minor)),
    };
    let mp = at.mp;
    let naming = entries.iter().find(|e| known.named_by(&e.spec));
    let matching = at.entry.is_some_and(|e| known.named_by(&e.spec));
    part.fstab = Some(fstab_part(at.entry.or(naming), matching));
    match (at.entry, naming) {
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
        (None, None) if at.mounted_here => problems.push(Problem::new(
            codes::NO_FSTAB_ENTRY,
            format!("{mp} is mounted, but no fstab entry mounts it at boot"),
        )),
        _ => {}
    }
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
