//! `disk-restore`: a new filesystem filled from an archive, exactly as the
//! first mount fills a new disk from `/opt/appscale` ([`crate::seed::fill`]):
//! only a filesystem this node's disk-ensure-fs just made (its fresh mark)
//! is ever filled; the archive is restored into a staging directory, which
//! is renamed once complete and only then moved into place, so a fill cut
//! short is redone (a partial staging directory, on a filesystem still
//! fresh), finished (a complete one), or reported (`seed-marker`, on a
//! filesystem no longer fresh), and never taken for a finished one or mixed
//! with other data. Any filesystem type takes any archive (ext4's onto
//! XFS). Then the root directory's owner, mode and time are set as
//! archived, and the files that had holes get them back (restic 0.14
//! writes them whole).
//!
//! Also the restore drill of `disk-archive --verify` ([`drill`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use super::repo::{self, Access, Opened, RepoArgs};
use super::restic::Repository;
use super::tags::{
    self, DESCRIBED_FILE, Described, Kind, Listed, MANIFEST_FILE, Manifest, archive_of,
    archives_of, short,
};
use super::{ledger, tree};
use crate::codes;
use crate::discover::{self, DEVICE_WAIT};
use crate::lock::NodeLock;
use crate::mount::TempMount;
use crate::progress::Progress;
use crate::record::{Record, State};
use crate::seed::{self, Seeded};
use crate::step::{Ctx, Failure, Outcome, Step, StepResult, one_by_one};
use crate::steps::mount::open_device;

/// `disk-restore`'s own options.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Where the archives are, and how to reach them.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Act on this device alone instead of reading records on stdin.
    #[arg(long, value_name = "PATH", help_heading = "Restore")]
    pub device: Option<String>,
    /// The archive to fill each disk from: `latest` (the newest archive of
    /// the record's node), an archive id (8 or more characters of it), or
    /// `set:NAME` (the record's node's archive in that set).
    #[arg(
        long,
        value_name = "ID|latest|set:NAME",
        default_value = "latest",
        help_heading = "Restore"
    )]
    pub from: String,
    /// Take the archives of this node instead of the record's own (the
    /// node ids of another layout: one record only).
    #[arg(long, value_name = "ID", help_heading = "Restore")]
    pub from_node: Option<String>,
    /// Read every restored file back and check it against the archive
    /// before the fill is put in place.
    #[arg(long, help_heading = "Restore")]
    pub verify: bool,
}

impl RestoreArgs {
    /// The record `--device` describes.
    pub fn single(&self) -> Option<Record> {
        self.device.as_ref().map(|d| Record {
            device: Some(d.clone()),
            ..Record::default()
        })
    }

    /// Checks the whole input before anything is done.
    pub fn check_records(&self, records: &[Record]) -> Result<(), String> {
        let todo: Vec<&Record> = records.iter().filter(|r| r.error.is_none()).collect();
        if todo.is_empty() {
            return Ok(());
        }
        if self.from_node.is_some() && todo.len() > 1 {
            return Err(format!(
                "--from-node takes one record, and the input holds {}: plan one node (appscalefile-lint --plan --node ID)",
                todo.len()
            ));
        }
        self.repo.one_deployment(
            &todo,
            "pass --deployment to name the one whose archives to restore",
        )
    }

    /// The step.
    pub fn step(self) -> RestoreStep {
        RestoreStep { args: self }
    }
}

/// The `disk-restore` step.
pub struct RestoreStep {
    args: RestoreArgs,
}

impl Step for RestoreStep {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)> {
        let Some(first) = records.first() else {
            return Vec::new();
        };
        let deployment = self.args.repo.deployment_of(first);
        let prepared = (|| {
            let repo = self
                .args
                .repo
                .repository()
                .map_err(|e| Failure::new(codes::NO_REPOSITORY, e))?;
            let opened = repo::open(&repo, &deployment, Access::Read, cx.check)?;
            let lock = NodeLock::take(cx.check)?;
            let sparse = super::restic::version().map(|v| v >= (0, 15))?;
            Ok::<_, Failure>((repo, opened, lock, sparse))
        })();
        let (repo, opened, _lock, sparse) = match prepared {
            Ok(p) => p,
            Err(f) => return one_by_one(records, |_| Err(f.clone())),
        };
        let fill = Fill {
            args: &self.args,
            repo: &repo,
            opened: &opened,
            deployment: &deployment,
            sparse,
            check: cx.check,
        };
        one_by_one(records, |r| fill.one(r))
    }
}

struct Fill<'a> {
    args: &'a RestoreArgs,
    repo: &'a Repository,
    opened: &'a Opened,
    deployment: &'a str,
    /// restic writes holes itself (`restore --sparse`, 0.15 and later).
    sparse: bool,
    check: bool,
}

impl Fill<'_> {
    /// The archive the record is to be filled from.
    fn archive_for(&self, rec: &Record) -> Result<&Listed, Failure> {
        let listed = &self.opened.listed;
        let mut who = rec.clone();
        if let Some(n) = &self.args.from_node {
            who.node = Some(n.clone());
        }
        let label = match (&who.node, &who.disk) {
            (Some(n), _) => format!("node {n}"),
            (None, Some(d)) => format!("disk {d}"),
            (None, None) => "this record".into(),
        };
        let from = self.args.from.as_str();
        if from == "latest" {
            return archives_of(listed, self.deployment, &who)
                .into_iter()
                .last()
                .ok_or_else(|| {
                    Failure::new(
                        codes::NO_SUCH_ARCHIVE,
                        format!(
                            "{} has no archive of {label} (deployment {}): list them with disk-archive --list",
                            self.repo.location, self.deployment
                        ),
                    )
                });
        }
        if let Some(set) = from.strip_prefix("set:") {
            let manifest = self.manifest(set)?;
            let node = who.node.clone().unwrap_or_default();
            let member = manifest
                .members
                .iter()
                .find(|m| m.node == node)
                .ok_or_else(|| {
                    Failure::new(
                        codes::NO_SUCH_ARCHIVE,
                        format!("the set {set} has no archive of {label}"),
                    )
                })?;
            return listed
                .iter()
                .find(|l| l.is(Kind::Archive) && tags::same_id(&l.snap.id, &member.archive))
                .ok_or_else(|| {
                    Failure::new(
                        codes::NO_SUCH_ARCHIVE,
                        format!(
                            "the set {set} names the archive {} of {label}, which is no longer in {} (deleted by retention?)",
                            short(&member.archive),
                            self.repo.location
                        ),
                    )
                });
        }
        if from.len() < 8 || !from.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Failure::new(
                codes::NO_SUCH_ARCHIVE,
                format!(
                    "`{}` is not an archive: give `latest`, `set:NAME`, or an archive id (8 or more hex digits)",
                    crate::log::escape_controls(from)
                ),
            ));
        }
        let found: Vec<&Listed> = listed
            .iter()
            .filter(|l| l.is(Kind::Archive) && l.snap.id.starts_with(from))
            .collect();
        let l = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(Failure::new(
                    codes::NO_SUCH_ARCHIVE,
                    format!("{} holds no archive {from}", self.repo.location),
                ));
            }
            _ => {
                return Err(Failure::new(
                    codes::NO_SUCH_ARCHIVE,
                    format!("{from} names several archives: give more of the id"),
                ));
            }
        };
        if l.labels.deployment.as_deref() != Some(self.deployment) {
            return Err(Failure::new(
                codes::OTHER_DEPLOYMENT,
                format!(
                    "archive {from} is of deployment {}, not {}",
                    l.labels.deployment.as_deref().unwrap_or("?"),
                    self.deployment
                ),
            ));
        }
        let theirs = l.labels.node.clone();
        if who.node.is_some() && theirs != who.node {
            return Err(Failure::new(
                codes::NO_SUCH_ARCHIVE,
                format!(
                    "archive {from} is of node {}'s disk, not of {label}: give each record its own node's archive (or --from-node)",
                    theirs.as_deref().unwrap_or("?")
                ),
            ));
        }
        Ok(l)
    }

    /// The newest manifest of the set `set`.
    fn manifest(&self, set: &str) -> Result<Manifest, Failure> {
        let l = self
            .opened
            .listed
            .iter()
            .rfind(|l| {
                l.is(Kind::Manifest)
                    && l.labels.set.as_deref() == Some(set)
                    && l.labels.deployment.as_deref() == Some(self.deployment)
            })
            .ok_or_else(|| {
                Failure::new(
                    codes::NO_SUCH_ARCHIVE,
                    format!(
                        "{} holds no sealed set {set} of deployment {}",
                        self.repo.location, self.deployment
                    ),
                )
            })?;
        let text = self.repo.dump(&l.snap.id, MANIFEST_FILE)?;
        serde_json::from_str(&text).map_err(|e| {
            Failure::new(
                codes::NO_SUCH_ARCHIVE,
                format!("the manifest of set {set} cannot be read: {e}"),
            )
        })
    }

    /// The description of `archive`: from its tags when it has no file
    /// with holes (most do not), else read from the repository; a plain
    /// default for an archive made by hand.
    fn described(&self, archive: &Listed) -> Result<Described, Failure> {
        let l = &archive.labels;
        let from_tags = l.root.as_deref().and_then(tags::DirMeta::from_tag);
        if let (Some(root), Some(0)) = (from_tags, l.sparse) {
            return Ok(Described {
                archive: archive.snap.id.clone(),
                fs: crate::record::Fs {
                    fstype: l.fs.clone().unwrap_or_default(),
                    ..crate::record::Fs::default()
                },
                apparent: l.bytes.unwrap_or(0),
                root,
                ..Described::default()
            });
        }
        let Some(d) = self.opened.listed.iter().find(|d| {
            d.is(Kind::Described)
                && match (&d.labels.link, &l.link) {
                    (Some(a), Some(b)) => a == b,
                    _ => d
                        .labels
                        .archive
                        .as_deref()
                        .is_some_and(|a| tags::same_id(a, &archive.snap.id)),
                }
        }) else {
            return Ok(Described {
                archive: archive.snap.id.clone(),
                root: from_tags.unwrap_or(tags::DirMeta {
                    mode: 0o755,
                    ..tags::DirMeta::default()
                }),
                ..Described::default()
            });
        };
        let text = self.repo.dump(&d.snap.id, DESCRIBED_FILE)?;
        serde_json::from_str(&text).map_err(|e| {
            Failure::new(
                codes::RESTORE_FAILED,
                format!(
                    "the description of archive {} cannot be read: {e}",
                    short(&archive.snap.id)
                ),
            )
        })
    }

    fn one(&self, rec: &mut Record) -> StepResult {
        let state = rec.state.unwrap_or(State::HasFs);
        if self.check && rec.is_check() && rec.device.is_none() {
            let a = self.archive_for(rec)?;
            return Ok(Outcome::changed(
                state,
                format!(
                    "would fill the new filesystem from archive {}",
                    short(&a.snap.id)
                ),
            ));
        }
        discover::fill_device(rec, DEVICE_WAIT)?;
        let device = rec.device.clone().ok_or_else(|| {
            Failure::new(
                codes::NO_DEVICE,
                "the record has no `device`: run disk-attach and disk-ensure-fs first, or pass --device",
            )
        })?;
        let dev = open_device(&device)?;
        discover::verify_claimed_device(rec, &dev)?;
        let probe = super::filesystem_on(&dev, "run disk-ensure-fs first")?;
        let fstype = probe.fstype().unwrap_or_default().to_string();
        let uuid = probe.uuid().unwrap_or_default().to_string();
        if let Some(fs) = &rec.fs
            && fs.uuid.as_deref().is_some_and(|u| u != uuid)
        {
            return Err(Failure::new(
                codes::IDENTITY_MISMATCH,
                format!(
                    "{device} holds the filesystem UUID={uuid}, but the record names UUID={}: not filling a disk that may not be this node's",
                    fs.uuid.as_deref().unwrap_or("?")
                ),
            ));
        }
        let archive = self.archive_for(rec)?;
        let id = archive.snap.id.clone();
        let mut result = archive_of(archive, &self.repo.location, "restored");
        // Filled by an earlier run: done.
        if let Some(done) = ledger::restored_into(&uuid) {
            if done == id {
                rec.archive = Some(result);
                return Ok(Outcome::unchanged(
                    state,
                    format!("{device} was filled from archive {} already", short(&id)),
                ));
            }
            return Err(Failure::new(
                codes::NOT_FRESH,
                format!(
                    "{device} was filled from archive {} already: not filling it from {} too (make a new disk for another archive)",
                    short(&done),
                    short(&id)
                ),
            ));
        }
        let fresh = seed::is_fresh(&uuid);
        if !self.check {
            // A killed run's temporary mount of this filesystem.
            let table = crate::mount::read_table()?;
            crate::mount::reap_stale_temp_mounts(&table, dev.major, dev.minor);
        }
        if self.check {
            result.state = "planned".into();
            rec.archive = Some(result);
            return if fresh {
                Ok(Outcome::changed(
                    state,
                    format!("would fill {device} ({fstype}) from archive {}", short(&id)),
                ))
            } else {
                Err(not_fresh(&device, &fstype))
            };
        }
        if !fresh {
            // Only what an earlier fill left can be reported here; nothing
            // is ever written onto it.
            return match seed::fill(&dev, &fstype, false, "restoring", |_| Ok(())) {
                Err(e) => Err(e.into()),
                Ok(_) => Err(not_fresh(&device, &fstype)),
            };
        }
        let described = self.described(archive)?;
        let what = format!("restoring archive {} onto {device}", short(&id));
        let filled = seed::fill(&dev, &fstype, true, &what, |staging| {
            self.restore_into(&id, &described, staging, rec)
        });
        let how = match filled {
            Ok(Seeded::Copied(n)) => format!(
                "filled {device} ({fstype}) from archive {} ({n} entries)",
                short(&id)
            ),
            Ok(Seeded::Finished(n)) => format!(
                "finished filling {device} from archive {} (an interrupted fill's {n} entries moved into place)",
                short(&id)
            ),
            Ok(Seeded::Nothing) => return Err(not_fresh(&device, &fstype)),
            Err(e) => {
                let f: Failure = e.into();
                return Err(match crate::interrupt::interrupted() {
                    Some(sig) => crate::interrupt::failure(sig),
                    None if f.code == codes::SEED_FAILED => {
                        Failure::new(codes::RESTORE_FAILED, f.message)
                    }
                    None => f,
                });
            }
        };
        // The root directory, as archived (restic keeps what is in it).
        let root = TempMount::new(&dev.path, dev.major, dev.minor, &fstype)
            .map_err(|e| Failure::new(codes::RESTORE_FAILED, e.to_string()))?;
        let applied = tree::apply_dir_meta(root.path(), &described.root);
        root.finish()
            .map_err(|e| Failure::new(codes::RESTORE_FAILED, e.to_string()))?;
        applied.map_err(|e| {
            Failure::new(
                codes::RESTORE_FAILED,
                format!("setting the root directory's owner and mode: {e}"),
            )
        })?;
        ledger::note_restored(&uuid, &id, &self.repo.location).map_err(|e| {
            Failure::new(
                codes::RESTORE_FAILED,
                format!("{}: {e}", ledger::dir().display()),
            )
        })?;
        result.state = "restored".into();
        rec.archive = Some(result);
        Ok(Outcome::changed(state, how))
    }

    /// Restores the archive `id` into `staging` (on the new filesystem),
    /// showing progress, and gives its sparse files their holes back.
    fn restore_into(
        &self,
        id: &str,
        described: &Described,
        staging: &Path,
        rec: &Record,
    ) -> Result<(), String> {
        let need = if self.sparse {
            described.used.max(described.apparent / 64)
        } else {
            described.apparent
        };
        let free = available(staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        if need > free {
            return Err(format!(
                "the new filesystem has {} MiB free, and the archive's files take {} MiB (holes written out: restic {} restores them whole, then they are given back): make the disk bigger (disk-create --size)",
                free >> 20,
                need >> 20,
                if self.sparse { "" } else { "0.14" }
            ));
        }
        let done = AtomicBool::new(false);
        let progress = Progress::start(format!("MiB of {} restored", rec.label()), need >> 20);
        std::thread::scope(|s| {
            s.spawn(|| {
                let start = available(staging).unwrap_or(0);
                while !done.load(Ordering::Relaxed) {
                    let now = available(staging).unwrap_or(start);
                    progress.set_done(start.saturating_sub(now) >> 20);
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
            let r = self
                .repo
                .restore(id, staging, self.sparse, self.args.verify)
                .map_err(|f| f.message);
            done.store(true, Ordering::Relaxed);
            r
        })?;
        if !self.sparse {
            for p in &described.sparse {
                let path = staging.join(tags::decode_path(p));
                tree::punch_holes(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok(())
    }
}

fn not_fresh(device: &str, fstype: &str) -> Failure {
    Failure::new(
        codes::NOT_FRESH,
        format!(
            "{device} holds a {fstype} filesystem that this node's disk-ensure-fs did not just make (or that was mounted since): a restore fills only a new, blank disk, and this one may hold data; nothing was written. Restore onto a new disk (scripts/restore-archive makes one)"
        ),
    )
}

/// Bytes free for root on the filesystem holding `path`.
fn available(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.blocks_free() as u64 * st.fragment_size() as u64)
}

/// Restores `archive` into a scratch directory under `dir`, reading every
/// file back (`restic restore --verify`), compares the tree with the
/// archive's listing, and removes the directory; an error
/// (`verify-failed`) names what differs.
pub fn drill(repo: &Repository, archive: &Listed, dir: &Path) -> Result<(), Failure> {
    let target: PathBuf = dir.join(format!(
        "appscale-persist-drill-{}-{}",
        short(&archive.snap.id),
        std::process::id()
    ));
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&target)
        })
        .map_err(|e| Failure::new(codes::VERIFY_FAILED, format!("{}: {e}", target.display())))?;
    let _gone = Gone(target.clone());
    repo.restore(&archive.snap.id, &target, false, true)
        .map_err(|f| Failure::new(codes::VERIFY_FAILED, f.message))?;
    let entries = repo.ls(&archive.snap.id)?;
    let diffs = tree::compare(&target, &entries)
        .map_err(|e| Failure::new(codes::VERIFY_FAILED, format!("{}: {e}", target.display())))?;
    if !diffs.is_empty() {
        let n = diffs.len();
        let some: Vec<String> = diffs.into_iter().take(5).collect();
        return Err(Failure::new(
            codes::VERIFY_FAILED,
            crate::log::escape_controls(&format!(
                "the restore drill of archive {} differs from the archive in {n} place(s): {}",
                short(&archive.snap.id),
                some.join("; ")
            )),
        ));
    }
    Ok(())
}
