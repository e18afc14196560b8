//! `disk-mount`: mount a record's filesystem at its mountpoint, idempotently,
//! with an fstab entry that is taken back if the mount fails.
//!
//! A run takes the node lock ([`crate::lock`]) once and reads the mount
//! table and the fstab once; then its records are worked on concurrently,
//! except records whose mountpoints nest: a parent is mounted before the
//! records inside it, which fail `parent-not-mounted` when it fails.
//! For each, the device is checked to be the record's disk and to hold the
//! record's filesystem, the mountpoint to be free (or already ours, and
//! with nothing mounted inside it that the mount would hide) and claimed by
//! no other record of the run; then `fsck -a` runs (unless this
//! node just made the filesystem and its superblock still says clean), the
//! mountpoint is seeded if it may be ([`crate::seed`]) and the filesystem is
//! mounted. Only when every record is done are the fstab lines added, in
//! one atomic rewrite of the file as it is then, so that a run stopped at
//! any point leaves no line that would mount a half-made disk at boot. A
//! failure, or a signal ([`crate::interrupt`]), unmounts whatever this run
//! mounted and removes the directories it made; a record whose fstab line
//! cannot be written is unmounted again.

use crate::codes;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::blockdev::{self, Device, Probe};
use crate::discover::verify_claimed_device;
use crate::discover::{self, DEVICE_WAIT};
use crate::files;
use crate::filesystem::{self, FsType, Fsck};
use crate::fstab::{self, Applied, Fstab};
use crate::lock::NodeLock;
use crate::log;
use crate::mount;
use crate::record::{Fs, Record, State};
use crate::seed::{self, Seeded};
use crate::step::{Ctx, Diff, Failure, Outcome, Step, StepResult, in_waves};

/// Options for [`Mount`].
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Mountpoint for records that name none.
    pub mountpoint: Option<String>,
    /// Mount options (`noatime`).
    pub options: String,
    /// The fstab to keep our entry in; `None` leaves fstab alone.
    pub fstab: Option<PathBuf>,
    /// `x-systemd.device-timeout` for the fstab entry, in seconds.
    pub device_timeout: u32,
    /// Copy what the mountpoint holds onto a new, empty filesystem first.
    pub seed: bool,
    /// Run `fsck -a` on ext4 before a read-write mount.
    pub fsck: bool,
}

/// The `disk-mount` step.
#[derive(Debug)]
pub struct Mount {
    /// Its options.
    pub options: MountOptions,
}

impl Step for Mount {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)> {
        let shared = match self.look(cx) {
            Ok(s) => s,
            Err(f) => {
                return records
                    .iter()
                    .map(|_| (Err(f.clone()), Duration::ZERO))
                    .collect();
            }
        };
        let taken = Claims::default();
        let lines: Vec<Mutex<Option<FstabLine>>> =
            records.iter().map(|_| Mutex::new(None)).collect();
        // Nested mountpoints: parents first, and a child only once its
        // parent is mounted (mounted after, the parent would hide it).
        let mps: Vec<Option<PathBuf>> = records
            .iter()
            .map(|r| planned_mountpoint(r, self.options.mountpoint.as_deref()))
            .collect();
        let parents = mount::nesting_parents(&mps);
        let mounted: Vec<Mutex<bool>> = records.iter().map(|_| Mutex::new(false)).collect();
        let mut results = in_waves(records, &mount::nesting_waves(&mps), |i, r| {
            let failed = parents[i]
                .iter()
                .find(|&&j| !*mounted[j].lock().unwrap_or_else(|e| e.into_inner()));
            if let (Some(&j), Some(mp)) = (failed, &mps[i]) {
                return Err(Failure::new(
                    codes::PARENT_NOT_MOUNTED,
                    format!(
                        "{} is inside {}, which another record of this run mounts, and that record failed: not mounting it (the parent's mount, made later, would hide it)",
                        mp.display(),
                        mps[j].as_deref().unwrap_or(Path::new("?")).display()
                    ),
                ));
            }
            let (outcome, line) = self.one(r, cx, &shared, &taken)?;
            *lines[i].lock().unwrap_or_else(|e| e.into_inner()) = line;
            *mounted[i].lock().unwrap_or_else(|e| e.into_inner()) = true;
            Ok(outcome)
        });
        let lines: Vec<Option<FstabLine>> = lines
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        if let Some(path) = &self.options.fstab
            && !cx.check
        {
            self.write_fstab(path, &mut results, lines);
        }
        drop(shared);
        results
    }
}

/// What every record of a run shares: the node lock, held for the whole
/// run, and the node as it was when the run started (the mount table, the
/// fstab), which each record is planned against.
struct Shared {
    _lock: NodeLock,
    table: mount::Table,
    fstab: Option<Fstab>,
}

/// The mountpoints and devices records of this run have claimed: a second
/// record for either is refused (two mounts stacked on one directory, one
/// device mounted twice).
#[derive(Default)]
struct Claims(Mutex<Claimed>);

/// What [`Claims`] holds: mountpoints, and devices by major:minor.
#[derive(Default)]
struct Claimed {
    mountpoints: Vec<PathBuf>,
    devices: Vec<(u64, u64)>,
}

impl Claims {
    fn claim(&self, mp: &Path, dev: &Device) -> Result<(), Failure> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.mountpoints.iter().any(|m| m == mp) {
            return Err(Failure::new(
                codes::MOUNTPOINT_BUSY,
                format!(
                    "another record of this run mounts a disk on {}",
                    mp.display()
                ),
            ));
        }
        if c.devices.contains(&(dev.major, dev.minor)) {
            return Err(Failure::new(
                codes::DUPLICATE_DISK,
                format!("another record of this run mounts {}", dev.path.display()),
            ));
        }
        c.mountpoints.push(mp.to_path_buf());
        c.devices.push((dev.major, dev.minor));
        Ok(())
    }
}

/// A record's fstab line, written with every other one in one transaction
/// once the records are done; and what to take back if it cannot be.
struct FstabLine {
    entry: fstab::Entry,
    known_as: fstab::Filesystem,
    /// Mounted by this run (unmounted again if the line cannot be written).
    mounted_now: Option<(PathBuf, Device, Vec<PathBuf>)>,
}

/// The record's mountpoint (or the flag's, or the default), checked.
pub(crate) fn resolve_mountpoint(rec: &mut Record, flag: Option<&str>) -> Result<PathBuf, Failure> {
    if rec.mountpoint.is_none() {
        rec.mountpoint = flag.map(str::to_string);
    }
    let mp = mount::check_mountpoint(rec.mountpoint())?;
    rec.mountpoint = Some(mp.display().to_string());
    Ok(mp)
}

/// The mountpoint a record will be mounted at (its own, else the flag's,
/// else the default), when it is a valid one: for ordering the run.
pub(crate) fn planned_mountpoint(rec: &Record, flag: Option<&str>) -> Option<PathBuf> {
    let mp = rec.mountpoint.as_deref().or(flag);
    mount::check_mountpoint(mp.unwrap_or(crate::record::DEFAULT_MOUNTPOINT)).ok()
}

/// Opens the record's device.
pub(crate) fn open_device(device: &str) -> Result<Device, Failure> {
    Ok(Device::open(Path::new(device))?)
}

/// How many entries a directory holds (0 when it cannot be read).
pub(crate) fn entries_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// What mounting one record takes, decided under the node lock before
/// anything is done; [`Mount::describe`] says it (`--check`),
/// [`Mount::apply`] does it.
struct Plan {
    /// The device as the record names it, for messages.
    device: String,
    dev: Device,
    mp: PathBuf,
    fstype: String,
    uuid: String,
    /// Our fstab entry, when an fstab is kept.
    entry: Option<fstab::Entry>,
    /// What the filesystem is known by, to recognise any entry naming it.
    known_as: fstab::Filesystem,
    /// The filesystem is already mounted at the mountpoint.
    mounted: bool,
    /// Entries the mountpoint holds (hidden by a mount, unless seeded).
    held: usize,
    /// Whether a seed may start: this flow formatted the filesystem.
    fresh: bool,
}

/// A record checked and ready to act on, or one that `--check` can only
/// describe because an earlier step would have made its disk.
enum Planned {
    Act(Box<Plan>),
    Pending(String),
}

impl Mount {
    /// Takes the node lock and reads the node once for the whole run.
    fn look(&self, cx: Ctx) -> Result<Shared, Failure> {
        let lock = crate::freeze::node_lock(cx.check)?;
        let table = mount::read_table()?;
        let fstab = match &self.options.fstab {
            Some(path) => Some(Fstab::load(path)?),
            None => None,
        };
        Ok(Shared {
            _lock: lock,
            table,
            fstab,
        })
    }

    fn one(
        &self,
        rec: &mut Record,
        cx: Ctx,
        shared: &Shared,
        taken: &Claims,
    ) -> Result<(Outcome, Option<FstabLine>), Failure> {
        let mp = resolve_mountpoint(rec, self.options.mountpoint.as_deref())?;
        let pending = cx.check && rec.is_check();
        if !pending {
            discover::fill_device(rec, DEVICE_WAIT)?;
        }
        match self.plan(rec, mp, pending, cx, shared, taken)? {
            Planned::Pending(what) => Ok((Outcome::changed(State::Mounted, what), None)),
            Planned::Act(plan) if cx.check => Ok((self.describe(&plan, shared)?, None)),
            Planned::Act(plan) => self.apply(rec, *plan),
        }
    }

    /// Writes the fstab lines of every record that got one, in one
    /// transaction; a record whose line cannot be written fails, and what
    /// this run mounted for it is unmounted again.
    fn write_fstab(
        &self,
        path: &Path,
        results: &mut [(StepResult, Duration)],
        lines: Vec<Option<FstabLine>>,
    ) {
        let todo: Vec<(usize, FstabLine)> = lines
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, l?)))
            .filter(|(i, _)| results[*i].0.is_ok())
            .collect();
        if todo.is_empty() {
            return;
        }
        // Parents before children: a mountpoint's line before those of the
        // mountpoints inside it, as `mount -a` mounts in file order.
        let mut todo = todo;
        todo.sort_by_key(|(_, l)| Path::new(&l.entry.file).components().count());
        let entries: Vec<(&fstab::Entry, &fstab::Filesystem)> =
            todo.iter().map(|(_, l)| (&l.entry, &l.known_as)).collect();
        match fstab::add_all(path, &entries) {
            Err(e) => {
                let f = Failure::from(e);
                for (i, line) in todo {
                    results[i].0 = Err(take_back(f.clone(), line));
                }
            }
            Ok((applied, each)) => {
                // The whole change, shown once.
                let mut diff = applied.changed().then(|| diff_of(&applied));
                for ((i, line), r) in todo.into_iter().zip(each) {
                    match (r, &mut results[i].0) {
                        (Ok(true), Ok(o)) => {
                            o.changed = true;
                            o.message
                                .push_str(&format!(", entry added to {}", applied.path.display()));
                            if let Some(d) = diff.take() {
                                o.diff = Some(d);
                            }
                        }
                        (Ok(_), _) => {}
                        (Err(e), slot) => *slot = Err(take_back(e.into(), line)),
                    }
                }
            }
        }
    }

    /// Checks the record against the node: the device is the record's disk
    /// and holds the record's filesystem; the mountpoint is free or already
    /// ours; the device is mounted nowhere else. Changes nothing (but fills
    /// in the record's `fs` when it named none).
    fn plan(
        &self,
        rec: &mut Record,
        mp: PathBuf,
        pending: bool,
        cx: Ctx,
        shared: &Shared,
        taken: &Claims,
    ) -> Result<Planned, Failure> {
        let Some(device) = rec.device.clone() else {
            if pending {
                return Ok(Planned::Pending(format!(
                    "would mount the new filesystem on {}",
                    mp.display()
                )));
            }
            return Err(Failure::new(
                codes::NO_DEVICE,
                "the record has no `device`: run disk-attach first, or pass --device",
            ));
        };
        let dev = match open_device(&device) {
            Err(_) if pending => {
                return Ok(Planned::Pending(format!(
                    "would mount {device} on {} once it exists",
                    mp.display()
                )));
            }
            r => r?,
        };
        verify_claimed_device(rec, &dev)?;
        taken.claim(&mp, &dev)?;
        let table = &shared.table;
        let here = table.at(&mp);
        let mounted = here.is_some_and(|e| (e.major, e.minor) == (dev.major, dev.minor));
        let probe = self.probe(&dev, mounted)?;
        let Some(probe) = probe.filter(|p| p.usage() == Some("filesystem")) else {
            if pending {
                return Ok(Planned::Pending(format!(
                    "would mount {device} on {} once formatted",
                    mp.display()
                )));
            }
            return Err(Failure::new(
                codes::NO_FILESYSTEM,
                format!("{device} holds no filesystem: run disk-ensure-fs first"),
            ));
        };
        let fstype = probe.fstype().unwrap_or_default().to_string();
        let uuid = probe.uuid().unwrap_or_default().to_string();
        // Identity: the device must hold the filesystem the record names.
        if let Some(fs) = &rec.fs {
            if fs.uuid.as_deref().is_some_and(|u| u != uuid)
                || (!fs.fstype.is_empty() && fs.fstype != fstype)
            {
                return Err(Failure::new(
                    codes::IDENTITY_MISMATCH,
                    format!(
                        "{device} holds {fstype} UUID={uuid}, but the record names {} UUID={}: not mounting a disk that may not be this node's",
                        fs.fstype,
                        fs.uuid.as_deref().unwrap_or("?")
                    ),
                ));
            }
        } else {
            rec.fs = Some(Fs {
                fstype: fstype.clone(),
                uuid: Some(uuid.clone()),
                label: probe.label().map(str::to_string),
                formatted: false,
            });
        }
        if !cx.check {
            mount::reap_stale_temp_mounts(table, dev.major, dev.minor);
        }
        if let (Some(e), false) = (here, mounted) {
            return Err(Failure::new(
                codes::MOUNTPOINT_BUSY,
                format!(
                    "{} already has {} ({}) mounted on it",
                    mp.display(),
                    e.source,
                    e.fstype
                ),
            ));
        }
        if !mounted
            && let Some(e) = table
                .entries
                .iter()
                .find(|e| e.target != mp && e.target.starts_with(&mp))
        {
            return Err(Failure::new(
                codes::MOUNTPOINT_BUSY,
                format!(
                    "{} ({}) is mounted inside {}: mounting over it would hide it; unmount it first (a run mounts parents before children)",
                    e.target.display(),
                    e.source,
                    mp.display()
                ),
            ));
        }
        if !mounted && let Some(e) = table.by_device(dev.major, dev.minor).first() {
            return Err(Failure::new(
                codes::MOUNTED_ELSEWHERE,
                format!(
                    "{device} is already mounted on {}; unmount it there first",
                    e.target.display()
                ),
            ));
        }
        // Only this node's own mark says the filesystem is new: a record's
        // `fs.formatted` is its word, and words are not trusted.
        let fresh = seed::is_fresh(&uuid);
        let entry = self.options.fstab.as_ref().map(|_| {
            fstab::Entry::ours(
                &uuid,
                &mp.display().to_string(),
                &fstype,
                &self.options.options,
                self.options.device_timeout,
            )
        });
        let known_as = fstab::Filesystem {
            uuid: uuid.clone(),
            label: probe.label().map(str::to_string),
            device: Some((dev.major, dev.minor)),
        };
        // A foreign entry for this mountpoint or filesystem is found now,
        // before anything is mounted (the line itself is written last).
        if let (Some(tab), Some(entry)) = (&shared.fstab, &entry) {
            tab.with_entry(entry, &known_as)?;
        }
        Ok(Planned::Act(Box::new(Plan {
            held: if mounted { 0 } else { entries_in(&mp) },
            known_as,
            device,
            dev,
            mp,
            fstype,
            uuid,
            entry,
            mounted,
            fresh,
        })))
    }

    /// The filesystem on `dev`: read in-process from its superblock when it
    /// is already known to be one (mounted here, or just made by this node,
    /// which is how the blank check let it be made), else probed by
    /// `blkid -p`, which also sees any other signature on it.
    fn probe(&self, dev: &Device, mounted: bool) -> Result<Option<Probe>, Failure> {
        if let Some(sb) = blockdev::read_superblock(&dev.real)?
            && (mounted || seed::is_fresh(&sb.uuid))
        {
            return Ok(Some(Probe::from_superblock(&sb)));
        }
        blockdev::probe(&dev.path).map_err(|e| Failure::new(codes::PROBE_FAILED, e.to_string()))
    }

    /// What applying `plan` would do (`--check`); reads, never writes.
    fn describe(&self, plan: &Plan, shared: &Shared) -> StepResult {
        let (device, mp) = (&plan.device, plan.mp.display());
        let diff = match (&shared.fstab, &plan.entry) {
            (Some(tab), Some(entry)) => tab.with_entry(entry, &plan.known_as)?.map(|after| Diff {
                path: tab.path.display().to_string(),
                before: tab.text(),
                after: String::from_utf8_lossy(&after).into_owned(),
            }),
            _ => None,
        };
        let mut what = vec![if plan.mounted {
            format!("{device} is already mounted on {mp}")
        } else {
            format!(
                "would mount {device} ({} UUID={}) on {mp}",
                plan.fstype, plan.uuid
            )
        }];
        if let Some(d) = &diff {
            what.push(format!("would add its entry to {}", d.path));
        }
        if plan.held > 0 {
            if self.options.seed && plan.fresh {
                what.push(format!(
                    "would copy the {} entries {mp} holds onto it if it is empty",
                    plan.held
                ));
            } else {
                what.push(format!("would hide the {} entries {mp} holds", plan.held));
            }
        }
        let mut o = if plan.mounted && diff.is_none() {
            Outcome::unchanged(State::Mounted, what.join(", "))
        } else {
            Outcome::changed(State::Mounted, what.join(", "))
        };
        o.diff = diff;
        Ok(o)
    }

    /// Does what `plan` says: (unless mounted) fsck, the seed and the mount;
    /// a failure takes back what this run did. The fstab line is returned,
    /// for the run's one fstab transaction once every record is done.
    fn apply(&self, rec: &Record, plan: Plan) -> Result<(Outcome, Option<FstabLine>), Failure> {
        let Plan {
            device,
            dev,
            mp,
            fstype,
            uuid,
            entry,
            known_as,
            mounted,
            held,
            fresh,
        } = plan;
        if mounted {
            if let Some(marker) = seed::leftover_at(&mp) {
                return Err(seed::SeedError::LeftoverMarker {
                    marker: marker.into(),
                    others: format!("mounted on {}", mp.display()),
                }
                .into());
            }
            seed::clear_fresh(&uuid);
            let line = entry.map(|entry| FstabLine {
                entry,
                known_as,
                mounted_now: None,
            });
            return Ok((
                Outcome::unchanged(
                    State::Mounted,
                    format!("{device} is already mounted on {}", mp.display()),
                ),
                line,
            ));
        }
        let before = mount::read_table()?;
        // Made without following a link planted meanwhile; taken back on
        // failure with the rest.
        let created = files::create_dir_all_nofollow(&mp).map_err(|e| {
            Failure::new(
                codes::BAD_MOUNTPOINT,
                format!("creating {}: {e}", mp.display()),
            )
        })?;
        // From here on, any failure takes back what this run did.
        let undo = |f: Failure| -> Failure { undo(f, &before, &dev, &created) };
        // A resize2fs or mkfs a stopped run left running finishes first.
        discover::wait_unheld(&dev).map_err(undo)?;
        let mut notes = Vec::new();
        // A filesystem this node just made, and left clean, has nothing for
        // fsck to find; anything done to it since shows in its superblock.
        let untouched = fresh
            && blockdev::read_superblock(&dev.real)
                .map_err(|e| undo(e.into()))?
                .is_some_and(|sb| sb.clean && sb.uuid == uuid);
        if !untouched && let Some(note) = self.fsck(&dev, &device, &fstype).map_err(undo)? {
            notes.push(note);
        }
        let mut seeded = false;
        if self.options.seed && held > 0 {
            match seed::seed(&dev, &fstype, &mp, fresh) {
                Ok(Seeded::Copied(n)) => {
                    seeded = true;
                    notes.push(format!("seeded it with {n} entries from {}", mp.display()));
                }
                Ok(Seeded::Finished(n)) => {
                    seeded = true;
                    notes.push(format!(
                        "finished an interrupted seed ({n} entries moved into place)"
                    ));
                }
                Ok(Seeded::Nothing) => {}
                Err(e) => return Err(undo(e.into())),
            }
        }
        if let Some(sig) = crate::interrupt::interrupted() {
            return Err(undo(crate::interrupt::failure(sig)));
        }
        if let Err(e) = mount::mount(
            &dev.real,
            (dev.major, dev.minor),
            &mp,
            &fstype,
            &self.options.options,
        ) {
            return Err(undo(e.into()));
        }
        // A copy cut short (a seed's, or disk-restore's fill) is never
        // taken for a finished one: its staging directory at the top
        // says so; the filesystem is not left mounted with it.
        if !seeded && let Some(marker) = seed::leftover_at(&mp) {
            return Err(undo(
                seed::SeedError::LeftoverMarker {
                    marker: marker.into(),
                    others: "a copy onto it (a seed, or disk-restore) was cut short: rerun the flow that was filling it (scripts/restore-archive, scripts/up)".into(),
                }
                .into(),
            ));
        }
        seed::clear_fresh(&uuid);
        if held > 0 && !seeded {
            log::warn(format_args!(
                "{}: mounting over {} hides {held} entries it holds (they stay there, under the mount; unmount to see them)",
                rec.label(),
                mp.display()
            ));
        }
        let mut message = format!(
            "mounted {device} ({fstype} UUID={uuid}) on {}",
            mp.display()
        );
        for n in notes {
            message.push_str(", ");
            message.push_str(&n);
        }
        // The fstab line last, once every record is done: a run stopped at
        // any point before leaves no line that would mount a half-made disk
        // at boot.
        let line = entry.map(|entry| FstabLine {
            entry,
            known_as,
            mounted_now: Some((mp, dev, created)),
        });
        Ok((Outcome::changed(State::Mounted, message), line))
    }

    /// `fsck -a` before a read-write mount of ext4 (unless `--no-fsck`);
    /// returns a note when it fixed something.
    fn fsck(&self, dev: &Device, device: &str, fstype: &str) -> Result<Option<String>, Failure> {
        let read_only = self.options.options.split(',').any(|o| o == "ro");
        if !self.options.fsck || read_only || fstype != "ext4" {
            return Ok(None);
        }
        match filesystem::fsck(&dev.real, FsType::Ext4) {
            Ok(Fsck::Clean { fixed: true }) => Ok(Some("fsck fixed errors".to_string())),
            Ok(Fsck::Clean { fixed: false }) => Ok(None),
            Ok(Fsck::Uncorrected { code, output }) => Err(Failure::new(
                codes::FSCK_FAILED,
                format!(
                    "fsck.ext4 -a {device} left errors uncorrected (exit {code}), not mounting: {output}"
                ),
            )),
            Ok(Fsck::Interrupted { how }) => Err(Failure::new(
                codes::FSCK_INTERRUPTED,
                format!(
                    "fsck.ext4 -a {device} was {how}: it may have stopped half-way through a repair; not mounting. Run `fsck.ext4 -f {device}` by hand, then this step again"
                ),
            )),
            Err(e) => Err(Failure::new(codes::FSCK_FAILED, e.to_string())),
        }
    }
}

/// Fails a record whose fstab line could not be written: what this run
/// mounted for it is unmounted, the directories it made removed.
fn take_back(f: Failure, line: FstabLine) -> Failure {
    let Some((mp, dev, created)) = line.mounted_now else {
        return f;
    };
    let said = match mount::unmount(&mp, dev.major, dev.minor, false) {
        Ok(()) => format!("unmounted it from {}", mp.display()),
        Err(e) => format!("unmounting it from {} also failed: {e}", mp.display()),
    };
    for d in created.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    Failure {
        message: format!("{} ({said})", f.message),
        ..f
    }
}

fn diff_of(a: &Applied) -> Diff {
    Diff {
        path: a.path.display().to_string(),
        before: a.before.clone(),
        after: a.after.clone(),
    }
}

/// Takes back what a failed mount did: unmounts every mount of `dev` that
/// was not in `before`, and removes the directories this run created (when
/// empty); says so in the failure's message. The fstab line is written
/// last, so there is none to take back.
fn undo(f: Failure, before: &mount::Table, dev: &Device, created: &[PathBuf]) -> Failure {
    let mut said = Vec::new();
    if let Ok(now) = mount::Table::read() {
        let old: Vec<&Path> = before
            .by_device(dev.major, dev.minor)
            .iter()
            .map(|e| e.target.as_path())
            .collect();
        for e in now.by_device(dev.major, dev.minor) {
            if old.contains(&e.target.as_path()) {
                continue;
            }
            match mount::unmount(&e.target, dev.major, dev.minor, false) {
                Ok(()) => said.push(format!("unmounted it from {}", e.target.display())),
                Err(err) => said.push(format!(
                    "unmounting it from {} also failed: {err}",
                    e.target.display()
                )),
            }
        }
    }
    for d in created.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    // Stopped by a signal: say so, whatever the step was doing.
    let f = match crate::interrupt::interrupted() {
        Some(sig) if f.code != codes::INTERRUPTED => Failure {
            code: codes::INTERRUPTED,
            message: format!("stopped by {sig}: {}", f.message),
            ..f
        },
        _ => f,
    };
    if said.is_empty() {
        return f;
    }
    Failure {
        message: format!("{} ({})", f.message, said.join("; ")),
        ..f
    }
}
