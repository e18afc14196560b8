//! A disk at one moment, read-only: what an archive is made from.
//!
//! An archive never reads files while they are being written. Each disk of
//! a run is captured, then read from a **view**: the capture attached
//! read-only and mounted read-only in a directory of this run's.
//!
//! * A local image ([`Source::Local`]) is captured as the local snapshots
//!   are: its mounted filesystem flushed and frozen, the image copied
//!   (a reflink where the filesystem can, else a sparse copy:
//!   [`crate::files::copy_image`]), thawed. The copy is a scratch image in
//!   `<state dir>/archive-scratch/`, bound to a read-only loop device.
//! * A static device not mounted anywhere ([`Source::Static`]) is its own
//!   moment: it is mounted read-only under the node lock, held for the
//!   whole archive so that nothing mounts it meanwhile. A mounted one
//!   cannot be captured (`snapshot-unsupported`).
//! * A cloud disk ([`Source::Cloud`]) is captured by its provider: the
//!   filesystem frozen here while the provider's snapshot is started, a
//!   scratch disk made from that snapshot, attached here and mounted
//!   read-only ([`super::scratch`]).
//!
//! Every disk of one run is frozen together: all freezes are taken, then
//! every capture, then all are thawed (no sooner than `--at` plus
//! `--hold`, so that the nodes of a set, each archiving its own disk at
//! the agreed moment, are frozen at one moment together). A freeze lasts
//! at most `--freeze-timeout`, and is released on every path: errors, a
//! signal, a second signal ([`crate::freeze`]), and the death of this
//! process by SIGKILL, through a **thaw sentinel**: a child that thaws the
//! filesystem when this process is gone while it is frozen. A marker
//! written before each freeze lets the next run thaw it should the
//! sentinel be gone too.
//!
//! What a run leaves behind when killed (a scratch image, its loop device,
//! the view's mount) is named by the disk's key ([`key`]) and removed by
//! the next run of the same disk, which holds the disk's own lock
//! ([`crate::lock::NodeLock::take_file`]) and so knows that no other run
//! is using them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::blockdev::{self, Device};
use crate::codes;
use crate::freeze::Frozen;
use crate::lock::NodeLock;
use crate::log;
use crate::loopdev;
use crate::mount::{self, Table};
use crate::provider::ScratchPhase;
use crate::provider::local::Local;
use crate::record::{Fs, ProviderKind, Record};
use crate::run::{Cmd, Started};
use crate::snapshot::Stamp;
use crate::step::Failure;

/// This run's directories and locks, one set per disk: `<key>.lock`,
/// `<key>.frozen` (a freeze in progress), and `<key>/` (the view).
pub(crate) const RUN_DIR: &str = "/run/appscale-persist/archive";

/// The hidden argument that makes a tool the thaw sentinel.
pub(crate) const SENTINEL_ARG: &str = "--appscale-persist-thaw-sentinel";

/// What the parent writes to its sentinel once it has thawed.
const THAWED: &[u8] = b"thawed\n";

/// How a disk's moment is captured.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local image.
    Local {
        /// The image.
        image: PathBuf,
    },
    /// A static device.
    Static {
        /// The device.
        device: PathBuf,
    },
    /// A cloud disk, captured by its provider ([`super::scratch`]).
    Cloud,
}

/// What the run asked of captures.
#[derive(Debug, Clone)]
pub struct Options {
    /// Local images' directory.
    pub state_dir: PathBuf,
    /// The longest a filesystem stays frozen.
    pub freeze_timeout: Duration,
    /// Freeze at this moment (a set's agreed moment), not at once.
    pub at: Option<Stamp>,
    /// Keep every freeze until at least `at` plus this long.
    pub hold: Duration,
    /// Any record's failure fails them all (a set is all or nothing).
    pub all_or_nothing: bool,
    /// `disk-scratch`'s arguments, for cloud disks
    /// ([`super::scratch::CloudArgs::argv`]).
    pub scratch_args: Vec<String>,
}

pub use super::ledger::key;

/// A disk's moment, read-only, mounted at [`View::root`]; everything made
/// for it is taken back when dropped.
#[derive(Debug)]
pub struct View {
    /// Where the capture is mounted read-only.
    pub root: PathBuf,
    /// The moment.
    pub time: Stamp,
    /// `frozen` or `not-mounted`.
    pub freeze: &'static str,
    /// Its filesystem.
    pub fs: Fs,
    /// The filesystem's size, bytes.
    pub fs_size: u64,
    /// What to undo, last made first.
    undo: Undo,
}

/// What a view holds, taken back in [`Undo::release`].
#[derive(Debug, Default)]
struct Undo {
    /// The view's mount: the directory, and the device number.
    mounted: Option<(PathBuf, (u64, u64))>,
    /// The read-only loop device of a scratch image.
    looped: Option<PathBuf>,
    /// The scratch image.
    scratch: Option<PathBuf>,
    /// A cloud disk's scratch copy (the record `disk-scratch` gave back,
    /// and its arguments): dropped last.
    cloud: Option<(Record, Vec<String>)>,
    /// A device this run set read-only: set back once unmounted.
    read_only: Option<PathBuf>,
    /// Held for the whole archive: the node lock (a static device), and
    /// the disk's own lock.
    _locks: Vec<NodeLock>,
}

impl Undo {
    fn release(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Some((dir, (major, minor))) = self.mounted.take() {
            match mount::unmount(&dir, major, minor, false) {
                Ok(()) => {
                    let _ = std::fs::remove_dir(&dir);
                }
                Err(e) => errors.push(format!("unmounting {}: {e}", dir.display())),
            }
        }
        if errors.is_empty()
            && let Some(dev) = self.read_only.take()
            && let Err(e) = super::scratch::set_writable(&dev)
        {
            errors.push(e);
        }
        if let Some(dev) = self.looped.take()
            && let Err(e) = Cmd::new("losetup").arg("--detach").arg(&dev).run()
        {
            errors.push(e.to_string());
        }
        if let Some(img) = self.scratch.take()
            && let Err(e) = std::fs::remove_file(&img)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {e}", img.display()));
        }
        // Never while its view may still be mounted: the unmount failed.
        if errors.is_empty()
            && let Some((rec, args)) = self.cloud.take()
            && let Err(f) = super::scratch::run(ScratchPhase::Drop, &rec, &args)
        {
            errors.push(format!("deleting the scratch copy: {}", f.message));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl View {
    /// Unmounts the view, detaches and removes its scratch copy; says what
    /// could not be.
    pub fn finish(mut self) -> Result<(), Failure> {
        self.undo.release().map_err(|e| {
            Failure::new(
                codes::ARCHIVE_FAILED,
                format!("cleaning up after the archive: {e}"),
            )
        })
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::error(format_args!("cleaning up after the archive: {e}"));
        }
    }
}

/// The source of a record's disk.
pub fn source_of(rec: &Record, state_dir: &Path) -> Result<Source, Failure> {
    match rec.provider {
        Some(ProviderKind::Local) => Ok(Source::Local {
            image: Local::new(state_dir.to_path_buf(), None).image(rec)?,
        }),
        Some(ProviderKind::Static) => Ok(Source::Static {
            device: PathBuf::from(crate::provider::disk_of(rec)?),
        }),
        Some(_) => Ok(Source::Cloud),
        None => Err(Failure::new(
            codes::NO_PROVIDER,
            "the record names no `provider`: pass --provider",
        )),
    }
}

/// One disk on its way to a view.
struct Pending {
    key: String,
    source: Source,
    /// The record (a cloud disk's goes to disk-scratch, and comes back
    /// with its `scratch`).
    record: Record,
    /// The disk's lock (and, for a static device, the node lock).
    locks: Vec<NodeLock>,
    /// Where its filesystem is mounted, and the device number there.
    mounted: Option<(PathBuf, (u64, u64))>,
    /// The device captured from: the image's loop device, or the static
    /// device.
    device: Option<PathBuf>,
}

/// Captures every disk of `records` (with `keys` and `sources` from
/// [`key`] and [`source_of`]) at one moment, and returns a read-only view
/// of each, or why not. Cloud records are not captured here (see
/// [`super::scratch`]): their slot comes back `None`.
pub fn capture(
    records: &[Record],
    keys: &[String],
    sources: &[Source],
    opts: &Options,
) -> Vec<Option<Result<View, Failure>>> {
    let mut slots: Vec<Option<Result<Pending, Failure>>> = records
        .iter()
        .zip(keys)
        .zip(sources)
        .map(|((r, k), s)| Some(prepare(k, s.clone(), r)))
        .collect();
    if slots.iter().all(Option::is_none) {
        return slots.into_iter().map(|_| None).collect();
    }
    // A set's agreed moment: waited for before the node lock is taken, so
    // that nothing waits on it meanwhile.
    if let Some(at) = opts.at {
        wait_until(at);
    }
    // Under the node lock: nothing mounts, unmounts or detaches a disk
    // while it is looked at, frozen and copied.
    let node = match NodeLock::take(false) {
        Ok(l) => l,
        Err(e) => {
            let f = Failure::from(e);
            return slots
                .into_iter()
                .map(|s| s.map(|_| Err(f.clone())))
                .collect();
        }
    };
    for slot in slots.iter_mut().flatten() {
        if let Ok(p) = slot
            && let Err(f) = look(p)
        {
            *slot = Err(f);
        }
    }
    fail_all_if(&mut slots, opts.all_or_nothing);
    let copies = moment(&mut slots, opts, &node);
    // A static device is read from itself: nothing may mount it until the
    // archive is done.
    let mut node = Some(node);
    for slot in slots.iter_mut().flatten() {
        if let Ok(p) = slot
            && matches!(p.source, Source::Static { .. })
            && let Some(n) = node.take()
        {
            p.locks.push(n);
        }
    }
    drop(node);
    slots
        .into_iter()
        .zip(copies)
        .map(|(slot, copy)| {
            let slot = slot?;
            Some(match (slot, copy) {
                (Ok(p), Some(Ok((time, freeze, scratch)))) => {
                    open_view(p, time, freeze, scratch, &opts.scratch_args)
                }
                (Ok(p), Some(Err(f))) => {
                    abandon(&p, &opts.scratch_args);
                    Err(f)
                }
                (Ok(_), None) => Err(Failure::new(
                    codes::INTERNAL,
                    "a disk was neither captured nor failed",
                )),
                (Err(f), copy) => {
                    if let Some(Ok((_, _, Some(scratch)))) = copy {
                        let _ = std::fs::remove_file(scratch);
                    }
                    Err(f)
                }
            })
        })
        .collect()
}

/// Deletes a cloud disk's scratch snapshot made for a capture that will
/// not be archived (another disk of its set failed).
fn abandon(p: &Pending, args: &[String]) {
    if p.record.scratch.is_some()
        && let Err(f) = super::scratch::run(ScratchPhase::Drop, &p.record, args)
    {
        log::error(format_args!(
            "{}: deleting the scratch copy: {} (the next archive of the disk deletes it)",
            p.record.label(),
            f.message
        ));
    }
}

/// What the moment gave one disk: when, how it was kept, its scratch copy.
type Captured = Result<(Stamp, &'static str, Option<PathBuf>), Failure>;

/// Fails every slot when one failed and the run is all or nothing.
fn fail_all_if(slots: &mut [Option<Result<Pending, Failure>>], all: bool) {
    if !all {
        return;
    }
    let Some(first) = slots
        .iter()
        .flatten()
        .find_map(|s| s.as_ref().err())
        .cloned()
    else {
        return;
    };
    for slot in slots.iter_mut().flatten() {
        if slot.is_ok() {
            *slot = Err(Failure::new(
                first.code.clone(),
                format!(
                    "another disk of the set failed, so none is archived (a set is one moment, all or nothing): {}",
                    first.message
                ),
            ));
        }
    }
}

/// Takes the disk's lock and removes what a killed run left of it.
fn prepare(key: &str, source: Source, record: &Record) -> Result<Pending, Failure> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(RUN_DIR)
        .map_err(|e| Failure::new(codes::LOCK_FAILED, format!("{RUN_DIR}: {e}")))?;
    let lock = NodeLock::take_file(&Path::new(RUN_DIR).join(format!("{key}.lock")))?;
    reap(key, &source)?;
    Ok(Pending {
        key: key.to_string(),
        source,
        record: record.clone(),
        locks: vec![lock],
        mounted: None,
        device: None,
    })
}

/// The scratch image of a local disk.
fn scratch_image(image: &Path, key: &str) -> PathBuf {
    let dir = image
        .parent()
        .unwrap_or(Path::new("/"))
        .join("archive-scratch");
    dir.join(format!("{key}.img"))
}

/// Removes what a run of the disk `key` left when killed (the caller
/// holds the disk's lock: that run is gone): thaws a freeze it left,
/// unmounts its view, detaches and removes its scratch image.
fn reap(key: &str, source: &Source) -> Result<(), Failure> {
    let marker = Path::new(RUN_DIR).join(format!("{key}.frozen"));
    if let Ok(text) = std::fs::read_to_string(&marker) {
        if let Some((mp, dev)) = parse_marker(&text) {
            log::warn(format_args!(
                "thawing {}, left frozen by a run that was killed",
                mp.display()
            ));
            thaw_if_on(&mp, dev);
        }
        let _ = std::fs::remove_file(&marker);
    }
    let view = Path::new(RUN_DIR).join(key);
    if let Ok(table) = Table::read()
        && let Some(e) = table.at(&view).cloned()
    {
        log::warn(format_args!(
            "unmounting {}, left by a run that was killed",
            view.display()
        ));
        mount::unmount(&view, e.major, e.minor, false)?;
    }
    let _ = std::fs::remove_dir(&view);
    if let Source::Local { image } = source {
        let scratch = scratch_image(image, key);
        for lo in loopdev::bound_to(&scratch).unwrap_or_default() {
            let _ = Cmd::new("losetup").arg("--detach").arg(&lo.device).run();
        }
        match std::fs::remove_file(&scratch) {
            Ok(()) => log::warn(format_args!(
                "removed {}, left by a run that was killed",
                scratch.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::new(
                    codes::STATE_DIR,
                    format!("{}: {e}", scratch.display()),
                ));
            }
        }
        // A killed copy's temporary (`.KEY.img.PID.tmp`).
        if let Some(dir) = scratch.parent()
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            let prefix = format!(".{key}.img.");
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(())
}

/// Finds where the disk's filesystem is mounted (under the node lock).
fn look(p: &mut Pending) -> Result<(), Failure> {
    let table = mount::read_table()?;
    let device = match &p.source {
        Source::Local { image } => {
            if std::fs::symlink_metadata(image).is_err() {
                return Err(Failure::new(
                    codes::NO_SUCH_DISK,
                    format!("{} does not exist: nothing to archive", image.display()),
                ));
            }
            let loops = loopdev::bound_to(image)?;
            match loops.as_slice() {
                [] => None,
                [lo] => {
                    loopdev::verify(lo, image)?;
                    Some(lo.device.clone())
                }
                _ => {
                    return Err(Failure::new(
                        codes::ATTACHED_ELSEWHERE,
                        format!(
                            "{} is bound to several loop devices: detach the extra ones with `losetup -d`",
                            image.display()
                        ),
                    ));
                }
            }
        }
        Source::Static { device } => Some(device.clone()),
        Source::Cloud => {
            if p.record.disk_id.is_none() && p.record.attached_as.is_none() {
                return Err(Failure::new(
                    codes::NO_DEVICE,
                    "the record names no volume id (`disk_id`) to find the disk here by: pipe it through disk-attach --self first",
                ));
            }
            match crate::freeze::find_mounted(&p.record)? {
                crate::freeze::Here::Mounted {
                    dev, mountpoint, ..
                } => p.mounted = Some((mountpoint, dev)),
                crate::freeze::Here::Unmounted(_) => {}
                crate::freeze::Here::Absent => {
                    return Err(Failure::new(
                        codes::FREEZE_FAILED,
                        "the disk's device is not on this node, so its filesystem cannot be frozen here for its moment: run disk-archive on the disk's node",
                    ));
                }
            }
            None
        }
    };
    if let Some(d) = &device {
        let dev = Device::open(d)?;
        if let Some(e) = table.by_device(dev.major, dev.minor).first() {
            if matches!(p.source, Source::Static { .. }) {
                return Err(Failure::new(
                    codes::SNAPSHOT_UNSUPPORTED,
                    format!(
                        "{} is mounted on {}: a static device cannot be captured at one moment while mounted (there is no provider to snapshot it with); unmount it (scripts/down) and archive it then",
                        d.display(),
                        e.target.display()
                    ),
                ));
            }
            p.mounted = Some((e.target.clone(), (e.major, e.minor)));
        }
    }
    p.device = device;
    Ok(())
}

/// The moment: every mounted filesystem frozen (with its sentinel), every
/// disk copied, all thawed; under the node lock `_node`.
fn moment(
    slots: &mut [Option<Result<Pending, Failure>>],
    opts: &Options,
    _node: &NodeLock,
) -> Vec<Option<Captured>> {
    if let Some(sig) = crate::interrupt::interrupted() {
        return slots
            .iter()
            .map(|s| s.as_ref().map(|_| Err(crate::interrupt::failure(sig))))
            .collect();
    }
    let limit = opts.freeze_timeout;
    let mut frozen: Vec<Option<Freeze>> = Vec::new();
    for slot in slots.iter_mut() {
        frozen.push(match slot {
            Some(Ok(p)) => match &p.mounted {
                Some((mp, dev)) => match Freeze::take(&p.key, mp, *dev, limit) {
                    Ok(f) => Some(f),
                    Err(f) => {
                        *slot = Some(Err(f));
                        None
                    }
                },
                None => None,
            },
            _ => None,
        });
    }
    fail_all_if(slots, opts.all_or_nothing);
    let now = Stamp::now();
    let deadline = Instant::now() + limit;
    let mut cloud_back: Vec<(String, Record)> = Vec::new();
    let mut out: Vec<Option<Captured>> = slots
        .iter()
        .zip(&frozen)
        .map(|(slot, fr)| {
            let p = slot.as_ref()?.as_ref().ok()?;
            let freeze = if fr.is_some() {
                "frozen"
            } else {
                "not-mounted"
            };
            Some(match &p.source {
                Source::Local { image } => {
                    copy_scratch(image, &p.key, deadline).map(|s| (now, freeze, Some(s)))
                }
                Source::Cloud => {
                    match super::scratch::run(ScratchPhase::Snapshot, &p.record, &opts.scratch_args)
                    {
                        Ok(r) => {
                            let at = r
                                .scratch
                                .as_ref()
                                .and_then(|s| s.time.as_deref())
                                .and_then(super::tags::parse_time)
                                .map_or(now, Stamp);
                            cloud_back.push((p.key.clone(), r));
                            Ok((at, freeze, None))
                        }
                        Err(f) => Err(f),
                    }
                }
                _ => Ok((now, freeze, None)),
            })
        })
        .collect();
    for slot in slots.iter_mut().flatten() {
        if let Ok(p) = slot
            && let Some(i) = cloud_back.iter().position(|(k, _)| *k == p.key)
        {
            p.record = cloud_back.remove(i).1;
        }
    }
    // Held together until the agreed moment plus the hold.
    if let Some(at) = opts.at {
        wait_until(Stamp(at.0 + opts.hold.as_millis() as u64));
    } else if !opts.hold.is_zero() && frozen.iter().any(Option::is_some) {
        wait_until(Stamp(now.0 + opts.hold.as_millis() as u64));
    }
    for f in frozen.into_iter().flatten() {
        f.thaw();
    }
    // A set with one copy failed is no set.
    if opts.all_or_nothing
        && let Some(first) = out.iter().flatten().find_map(|c| c.as_ref().err()).cloned()
    {
        for c in out.iter_mut().flatten() {
            if let Ok((_, _, Some(s))) = c {
                let _ = std::fs::remove_file(s);
            }
            if c.is_ok() {
                *c = Err(Failure::new(
                    first.code.clone(),
                    format!(
                        "another disk of the set failed, so none is archived: {}",
                        first.message
                    ),
                ));
            }
        }
    }
    out
}

/// Sleeps until `at` (bounded by a day, and by a signal).
fn wait_until(at: Stamp) {
    let until = Instant::now() + Duration::from_millis(at.0.saturating_sub(Stamp::now().0));
    let until = until.min(Instant::now() + Duration::from_secs(86_400));
    while Instant::now() < until && crate::interrupt::interrupted().is_none() {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
}

/// Copies `image` to its scratch image as the local snapshots copy it (a
/// reflink where the filesystem can, else a sparse copy; through a
/// temporary name); `deadline` and a signal stop it.
fn copy_scratch(image: &Path, key: &str, deadline: Instant) -> Result<PathBuf, Failure> {
    let scratch = scratch_image(image, key);
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new(
            codes::SNAPSHOT_FAILED,
            format!(
                "copying {} to {}: {e} (nothing kept; the filesystem thawed)",
                image.display(),
                scratch.display()
            ),
        )
    };
    if let Some(dir) = scratch.parent() {
        crate::provider::local::check_state_dir(dir, true)?;
    }
    let from = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(image)
        .map_err(|e| fail(&e))?;
    let copied = crate::provider::local::snapshots::copy_new(&from, &scratch, || {
        if let Some(sig) = crate::interrupt::interrupted() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                sig.to_string(),
            ));
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the freeze's deadline passed (--freeze-timeout)",
            ));
        }
        Ok(())
    });
    match copied {
        Ok(Some(_)) => Ok(scratch),
        // The disk's lock is held and leftovers were removed: nothing can
        // have put one there.
        Ok(None) => Err(fail(&"a scratch copy appeared meanwhile")),
        Err(e) => Err(match (e.kind(), crate::interrupt::interrupted()) {
            (std::io::ErrorKind::Interrupted, Some(sig)) => crate::interrupt::failure(sig),
            (std::io::ErrorKind::TimedOut, _) => Failure::new(
                codes::FREEZE_TIMEOUT,
                format!(
                    "copying {} took longer than the freeze may last (--freeze-timeout): abandoned, the filesystem thawed",
                    image.display()
                ),
            ),
            _ => fail(&e),
        }),
    }
}

/// Attaches the capture read-only and mounts it read-only at the view.
fn open_view(
    mut p: Pending,
    time: Stamp,
    freeze: &'static str,
    scratch: Option<PathBuf>,
    args: &[String],
) -> Result<View, Failure> {
    let mut undo = Undo::default();
    undo._locks = std::mem::take(&mut p.locks);
    undo.scratch = scratch.clone();
    if matches!(p.source, Source::Cloud) {
        // Dropped on every path from here (the Undo).
        undo.cloud = Some((p.record.clone(), args.to_vec()));
        let r = super::scratch::run(ScratchPhase::Attach, &p.record, args)?;
        undo.cloud = Some((r.clone(), args.to_vec()));
        let device = r
            .scratch
            .as_ref()
            .and_then(|s| s.device.clone())
            .map(PathBuf::from)
            .ok_or_else(|| {
                Failure::new(
                    codes::NO_DEVICE,
                    "disk-scratch found no device for the scratch disk",
                )
            })?;
        if super::scratch::set_read_only(&device)? {
            undo.read_only = Some(device.clone());
        }
        let (root, fs, fs_size) = mount_view(&p.key, &device, &mut undo)?;
        return Ok(View {
            root,
            time,
            freeze,
            fs,
            fs_size,
            undo,
        });
    }
    let device = match &scratch {
        Some(img) => {
            let out = Cmd::new("losetup")
                .args(["--find", "--show", "--read-only", "--nooverlap"])
                .arg(img)
                .run()
                .map_err(|e| Failure::new(codes::LOOP_FAILED, e.to_string()))?;
            let dev = PathBuf::from(out.stdout.trim());
            undo.looped = Some(dev.clone());
            dev
        }
        None => p
            .device
            .clone()
            .ok_or_else(|| Failure::new(codes::NO_DEVICE, "no device to archive from"))?,
    };
    let view = mount_view(&p.key, &device, &mut undo)?;
    Ok(View {
        root: view.0,
        time,
        freeze,
        fs: view.1,
        fs_size: view.2,
        undo,
    })
}

/// Mounts the filesystem on `device` read-only at the view of `key`.
fn mount_view(key: &str, device: &Path, undo: &mut Undo) -> Result<(PathBuf, Fs, u64), Failure> {
    let dev = Device::open(device)?;
    let probe = super::filesystem_on(&dev, "nothing to archive")?;
    let fstype = probe.fstype().unwrap_or_default().to_string();
    crate::filesystem::FsType::parse(&fstype)
        .map_err(|e| Failure::new(codes::ARCHIVE_FAILED, e))?;
    let fs = Fs {
        fstype: fstype.clone(),
        uuid: probe.uuid().map(str::to_string),
        label: probe.label().map(str::to_string),
        formatted: false,
    };
    let root = Path::new(RUN_DIR).join(key);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| Failure::new(codes::STATE_DIR, format!("{}: {e}", root.display())))?;
    // The live filesystem may be mounted with the same UUID: XFS refuses
    // that unless told (`nouuid`).
    let mut options = String::from("ro,nodev,nosuid,noexec");
    if fstype == "xfs" {
        options.push_str(",nouuid");
    }
    mount::mount(&dev.real, (dev.major, dev.minor), &root, &fstype, &options).map_err(|e| {
        Failure::new(
            codes::ARCHIVE_FAILED,
            format!(
                "mounting the capture of {} read-only: {e} (a filesystem that needs its journal replayed cannot be: mount it once with disk-mount, or fsck it, then archive)",
                device.display()
            ),
        )
    })?;
    undo.mounted = Some((root.clone(), (dev.major, dev.minor)));
    let size = blockdev::device_size(&dev.real).unwrap_or(0);
    Ok((root, fs, size))
}

/// A freeze of one filesystem, with its marker and sentinel.
struct Freeze {
    frozen: Option<Frozen>,
    sentinel: Option<Started>,
    marker: PathBuf,
}

impl Freeze {
    /// Writes the marker, starts the sentinel, then freezes.
    fn take(key: &str, mp: &Path, dev: (u64, u64), limit: Duration) -> Result<Freeze, Failure> {
        let marker = Path::new(RUN_DIR).join(format!("{key}.frozen"));
        let text = format!(
            "{}:{}\n{}\n",
            dev.0,
            dev.1,
            crate::archive::tags::encode_path(mp)
        );
        write_file(&marker, text.as_bytes()).map_err(|e| {
            Failure::new(
                codes::FREEZE_FAILED,
                format!("{}: {e}; nothing frozen", marker.display()),
            )
        })?;
        let sentinel = start_sentinel(&marker);
        if sentinel.is_none() {
            log::warn(format_args!(
                "no thaw sentinel could be started for {}: should this run be killed while it is frozen, the next archive of the disk thaws it (or `fsfreeze -u {}`)",
                mp.display(),
                mp.display()
            ));
        }
        match Frozen::take(mp, dev, limit) {
            Ok(frozen) => Ok(Freeze {
                frozen: Some(frozen),
                sentinel,
                marker,
            }),
            Err(f) => {
                if let Some(s) = sentinel {
                    s.finish(THAWED);
                }
                let _ = std::fs::remove_file(&marker);
                Err(f)
            }
        }
    }

    /// Thaws; then tells the sentinel and removes the marker.
    fn thaw(mut self) {
        drop(self.frozen.take());
        if let Some(s) = self.sentinel.take() {
            s.finish(THAWED);
        }
        let _ = std::fs::remove_file(&self.marker);
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        if self.frozen.is_some() {
            drop(self.frozen.take());
            if let Some(s) = self.sentinel.take() {
                s.finish(THAWED);
            }
            let _ = std::fs::remove_file(&self.marker);
        }
    }
}

/// Writes `bytes` to a new file at `path` (replacing one), flushed.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()
}

/// `major:minor` and the mountpoint, from a marker.
fn parse_marker(text: &str) -> Option<(PathBuf, (u64, u64))> {
    let mut lines = text.lines();
    let (a, b) = lines.next()?.split_once(':')?;
    let dev = (a.parse().ok()?, b.parse().ok()?);
    Some((crate::archive::tags::decode_path(lines.next()?), dev))
}

/// Thaws the filesystem at `mp` if it is still the device `dev` (a
/// filesystem not frozen is left as it is).
fn thaw_if_on(mp: &Path, dev: (u64, u64)) {
    let Ok(dir) = File::open(mp) else { return };
    let Ok(st) = nix::sys::stat::fstat(&dir) else {
        return;
    };
    if (
        nix::sys::stat::major(st.st_dev),
        nix::sys::stat::minor(st.st_dev),
    ) != dev
    {
        return;
    }
    match Cmd::new("fsfreeze").arg("-u").arg(mp).output() {
        Ok(o) if o.success() => log::warn(format_args!("thawed {}", mp.display())),
        // Not frozen: nothing to do.
        _ => {}
    }
}

/// Starts the thaw sentinel for the freeze `marker` describes: this very
/// program, run with [`SENTINEL_ARG`].
fn start_sentinel(marker: &Path) -> Option<Started> {
    let exe = std::env::current_exe().ok()?;
    Cmd::new(exe)
        .arg(SENTINEL_ARG)
        .arg(marker)
        .timeout(Duration::from_secs(10))
        .start()
        .ok()
}

/// The thaw sentinel's `main`, when the program was started as one
/// (`TOOL --appscale-persist-thaw-sentinel MARKER`): it waits until its
/// parent says it thawed (or closes stdin by dying), and in the second
/// case thaws the filesystem the marker names, and removes the marker.
/// `None` when the program was not started as a sentinel.
pub fn sentinel_main() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != SENTINEL_ARG {
        return None;
    }
    let marker = PathBuf::from(args.next()?);
    // Signals are the parent's business (a Ctrl-C reaches the whole
    // process group): the sentinel ends with its parent, not before.
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        // SAFETY: setting a signal's disposition to ignore runs no code.
        unsafe {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn);
        }
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(sig);
        let _ = set.thread_unblock();
    }
    let mut words = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut words);
    if words.starts_with(THAWED) {
        return Some(ExitCode::SUCCESS);
    }
    // The parent is gone, and said nothing: it may have died frozen.
    log::init("appscale-persist thaw sentinel", log::Level::Info);
    if let Ok(text) = std::fs::read_to_string(&marker)
        && let Some((mp, dev)) = parse_marker(&text)
    {
        thaw_if_on(&mp, dev);
        let _ = std::fs::remove_file(&marker);
    }
    Some(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_read_back() {
        let mp = Path::new("/mnt/a b");
        let text = format!("8:16\n{}\n", crate::archive::tags::encode_path(mp));
        assert_eq!(parse_marker(&text), Some((mp.to_path_buf(), (8, 16))));
        assert_eq!(parse_marker("junk"), None);
    }
}
