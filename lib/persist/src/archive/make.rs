//! `disk-archive`: each record's disk archived at one moment into a restic
//! repository, old archives pruned; or, as asked, the disks' archives
//! listed (`--list`), a set's manifest written (`--seal`), the repository
//! checked and each disk's newest archive restored in a drill and compared
//! (`--verify`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::capture::{self, Source, View};
use super::repo::{self, Access, Opened, RepoArgs, restic_time};
use super::restic::{BackupOptions, Repository};
use super::tags::{
    self, Described, Kind, Labels, Listed, Manifest, Member, archive_of, archives_of, short,
};
use super::{ledger, tree};
use crate::codes;
use crate::progress::Progress;
use crate::provider::local::Local;
use crate::record::{Archive, ProviderKind, Record, State};
use crate::snapshot::{Candidate, Retention, Stamp, parse_duration};
use crate::step::{Ctx, Failure, Outcome, Step, StepResult, one_by_one};

/// `disk-archive`'s own options.
#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    /// Where the archives are, and how to reach them.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Act on this disk alone instead of reading records on stdin (a local
    /// image's name, or a static device's path).
    #[arg(long, value_name = "DISK", help_heading = "Disk")]
    pub disk: Option<String>,
    /// The node of a disk given with --disk.
    #[arg(long, value_name = "ID", help_heading = "Disk")]
    pub node: Option<String>,
    /// Provider for records that name none.
    #[arg(long, value_name = "KIND", value_parser = parse_kind, help_heading = "Disk")]
    pub provider: Option<ProviderKind>,
    /// Directory of local disk images [default: $APPSCALE_PERSIST_STATE_DIR
    /// or /var/lib/appscale-persist/disks].
    #[arg(long, value_name = "DIR", help_heading = "Disk")]
    pub state_dir: Option<PathBuf>,
    /// How a cloud disk's scratch copy is made (disk-scratch).
    #[command(flatten)]
    pub cloud: super::scratch::CloudArgs,

    /// Create the repository if there is none (and mark it as the
    /// deployment's); with --list, create it and list.
    #[arg(long, help_heading = "Archive")]
    pub init: bool,
    /// After archiving, keep only the N newest archives of each disk (the
    /// new one counts, and is never deleted), deleting the others from the
    /// repository and reporting them.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Archive"
    )]
    pub keep: Option<u32>,
    /// After archiving, keep the archives of each disk made within
    /// DURATION (30m, 12h, 7d, 4w); with --keep, one either rule keeps is
    /// kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Archive")]
    pub keep_within: Option<Duration>,
    /// The longest a mounted filesystem stays frozen for its capture.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        help_heading = "Archive"
    )]
    pub freeze_timeout: u64,
    /// Archive the disks as one set: all frozen together, all or nothing,
    /// each archive tagged with NAME (pipe the records into `disk-archive
    /// --seal NAME` for the set's manifest).
    #[arg(long, value_name = "NAME", help_heading = "Archive")]
    pub set: Option<String>,
    /// Freeze at this moment (RFC 3339, or seconds since the epoch): the
    /// set's agreed moment, when each node archives its own disk.
    #[arg(long, value_name = "TIME", value_parser = parse_at, requires = "set", help_heading = "Archive")]
    pub at: Option<Stamp>,
    /// Hold every freeze until this many seconds after --at (or after the
    /// capture), so the nodes of a set are all frozen at one moment
    /// together, whatever their clocks' skew.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0,
        help_heading = "Archive"
    )]
    pub hold: u64,

    /// List each disk's archives (newest first), one record each, instead
    /// of archiving.
    #[arg(long, help_heading = "Other modes", conflicts_with_all = ["keep", "keep_within", "set", "seal", "verify"])]
    pub list: bool,
    /// Write the manifest of the set NAME from the records on stdin (each
    /// carrying the `archive` disk-archive --set NAME gave it), instead of
    /// archiving. Refused when any record failed: a set is all or nothing.
    #[arg(long, value_name = "NAME", help_heading = "Other modes", conflicts_with_all = ["init", "keep", "keep_within", "set", "verify"])]
    pub seal: Option<String>,
    /// Check the repository (`restic check`, reading back --read-data of
    /// it), then restore each disk's newest archive into a scratch
    /// directory under --drill-dir and compare the tree with the archive;
    /// changes nothing else.
    #[arg(long, help_heading = "Other modes", conflicts_with_all = ["init", "keep", "keep_within", "set"])]
    pub verify: bool,
    /// How much of the repository's data --verify reads back (`5%`,
    /// `1/10`; `0` for its structure alone).
    #[arg(
        long,
        value_name = "SUBSET",
        default_value = "5%",
        help_heading = "Other modes"
    )]
    pub read_data: String,
    /// Where --verify's restore drills happen (removed after).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/tmp",
        help_heading = "Other modes"
    )]
    pub drill_dir: PathBuf,
}

fn parse_kind(s: &str) -> Result<ProviderKind, String> {
    ProviderKind::parse(s).ok_or_else(|| "one of ec2, euca, gce, local, static".to_string())
}

/// `--at`: RFC 3339, or seconds since the epoch.
fn parse_at(s: &str) -> Result<Stamp, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Stamp(secs * 1000));
    }
    tags::parse_time(s)
        .map(Stamp)
        .ok_or_else(|| format!("`{s}` is not a time (RFC 3339, or seconds since the epoch)"))
}

impl ArchiveArgs {
    /// The record `--disk` describes.
    pub fn single(&self) -> Option<Record> {
        self.disk.as_ref().map(|d| Record {
            disk: Some(d.clone()),
            node: self.node.clone(),
            provider: self.provider,
            ..Record::default()
        })
    }

    /// Checks the whole input before anything is done: one repository is
    /// one deployment's; the repository can be used; a seal has no failed
    /// member.
    pub fn check_records(&self, records: &[Record]) -> Result<(), String> {
        if let Some(set) = &self.seal
            && let Some(bad) = records.iter().find(|r| r.error.is_some())
        {
            return Err(format!(
                "{} failed, so the set {set} is not sealed (a set is all or nothing): archive the set again",
                bad.label()
            ));
        }
        let todo: Vec<&Record> = records.iter().filter(|r| r.error.is_none()).collect();
        if todo.is_empty() {
            return Ok(());
        }
        self.repo
            .one_deployment(&todo, "archive each deployment into its own")
    }

    /// The step.
    pub fn step(self) -> ArchiveStep {
        ArchiveStep { args: self }
    }

    fn retention(&self) -> Retention {
        Retention {
            keep: self.keep.map(|n| n as usize),
            keep_within: self.keep_within,
        }
    }
}

/// The `disk-archive` step.
pub struct ArchiveStep {
    args: ArchiveArgs,
}

impl Step for ArchiveStep {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)> {
        for r in records.iter_mut() {
            if r.provider.is_none() {
                r.provider = self.args.provider;
            }
        }
        let Some(first) = records.first() else {
            return Vec::new();
        };
        let deployment = self.args.repo.deployment_of(first);
        let fail_all = |records: &mut [Record], f: Failure| -> Vec<(StepResult, Duration)> {
            one_by_one(records, |_| Err(f.clone()))
        };
        let repo = match self.args.repo.repository() {
            Ok(r) => r,
            Err(e) => return fail_all(records, Failure::new(codes::NO_REPOSITORY, e)),
        };
        let access = if self.args.init {
            Access::Create
        } else if self.args.list || self.args.verify {
            Access::Read
        } else {
            Access::Write
        };
        let opened = match repo::open(&repo, &deployment, access, cx.check) {
            Ok(o) => o,
            Err(f) => return fail_all(records, f),
        };
        let run = Run {
            args: &self.args,
            repo: &repo,
            deployment: &deployment,
            opened: &opened,
            check: cx.check,
        };
        if self.args.list {
            one_by_one(records, |r| run.list(r))
        } else if let Some(set) = &self.args.seal {
            run.seal(records, set)
        } else if self.args.verify {
            run.verify(records)
        } else {
            run.archive(records)
        }
    }
}

/// What every record of a run shares.
struct Run<'a> {
    args: &'a ArchiveArgs,
    repo: &'a Repository,
    deployment: &'a str,
    opened: &'a Opened,
    check: bool,
}

impl Run<'_> {
    fn list(&self, rec: &mut Record) -> StepResult {
        let mut mine: Vec<Archive> = archives_of(&self.opened.listed, self.deployment, rec)
            .into_iter()
            .map(|l| archive_of(l, &self.repo.location, "completed"))
            .collect();
        mine.reverse();
        let n = mine.len();
        rec.listed_archives = mine;
        Ok(Outcome::unchanged(
            rec.state.unwrap_or(State::Created),
            format!("{n} archive(s) in {}", self.repo.location),
        ))
    }

    /// Archives every record, their disks captured at one moment.
    fn archive(&self, records: &mut [Record]) -> Vec<(StepResult, Duration)> {
        let state_dir = Local::state_dir(self.args.state_dir.clone());
        let mut keys = Vec::new();
        let mut sources = Vec::new();
        let mut early: Vec<Option<Failure>> = Vec::new();
        for r in records.iter() {
            let disk = r.disk.clone().unwrap_or_default();
            keys.push(capture::key(
                self.deployment,
                r.provider.unwrap_or(ProviderKind::Local),
                &disk,
            ));
            match capture::source_of(r, &state_dir) {
                Ok(s) => {
                    sources.push(s);
                    early.push(None);
                }
                Err(f) => {
                    sources.push(Source::Cloud);
                    early.push(Some(f));
                }
            }
        }
        if self.check {
            return one_by_one(records, |r| self.plan(r));
        }
        if self.args.set.is_some()
            && let Some(f) = early.iter().flatten().next().cloned()
        {
            return one_by_one(records, |_| Err(f.clone()));
        }
        let opts = capture::Options {
            state_dir,
            freeze_timeout: Duration::from_secs(self.args.freeze_timeout),
            at: self.args.at,
            hold: Duration::from_secs(self.args.hold),
            all_or_nothing: self.args.set.is_some(),
            scratch_args: self
                .args
                .cloud
                .argv(self.args.repo.appscalefile.as_deref(), self.deployment),
        };
        let mut views = capture::capture(records, &keys, &sources, &opts).into_iter();
        let mut early = early.into_iter();
        let mut keys = keys.into_iter();
        one_by_one(records, |r| {
            let (view, early, key) = (views.next().flatten(), early.next().flatten(), keys.next());
            if let Some(f) = early {
                return Err(f);
            }
            match view {
                Some(v) => self.archive_one(r, v?, key.as_deref().unwrap_or_default()),
                None => Err(Failure::new(codes::INTERNAL, "a disk was not captured")),
            }
        })
    }

    /// `--check`: what archiving would do.
    fn plan(&self, rec: &mut Record) -> StepResult {
        let mine = archives_of(&self.opened.listed, self.deployment, rec);
        let now = Stamp::now();
        let prune = self.pruned(&mine, "(new)", now);
        rec.archive = Some(Archive {
            id: String::new(),
            time: now.rfc3339(),
            repository: self.repo.location.clone(),
            state: "planned".into(),
            node: rec.node.clone(),
            disk: rec.disk.clone(),
            set: self.args.set.clone(),
            pruned: prune.clone(),
            ..Archive::default()
        });
        let made = if self.opened.made {
            " (would create the repository)"
        } else {
            ""
        };
        let would = if prune.is_empty() {
            String::new()
        } else {
            format!("; would delete {}", prune.join(", "))
        };
        Ok(Outcome::changed(
            rec.state.unwrap_or(State::Created),
            format!("would archive into {}{made}{would}", self.repo.location),
        ))
    }

    /// The ids retention deletes among `mine` once `taken` is made at `now`.
    fn pruned(&self, mine: &[&Listed], taken: &str, now: Stamp) -> Vec<String> {
        let mut cands: Vec<Candidate> = mine
            .iter()
            .map(|l| Candidate::new(l.snap.id.clone(), l.ms, "completed"))
            .collect();
        cands.push(Candidate::new(taken, now.0, "completed"));
        self.args
            .retention()
            .prune(&cands, taken, now.0)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Archives one disk from its view.
    fn archive_one(&self, rec: &mut Record, view: View, key: &str) -> StepResult {
        let state = rec.state.unwrap_or(State::Created);
        let mine = archives_of(&self.opened.listed, self.deployment, rec);
        let parent = mine.last().map(|l| l.snap.id.clone());
        let time = Stamp(view.time.0 / 1000 * 1000);
        let survey = tree::survey(&view.root).map_err(|e| {
            Failure::new(
                codes::ARCHIVE_FAILED,
                format!("reading {}: {e}", view.root.display()),
            )
        })?;
        // The archive and its description are written at once, paired by a
        // link made now.
        let link = format!(
            "{:016x}",
            crate::hash::fnv1a64(
                Stamp::now().0,
                format!("{key}/{}", std::process::id()).as_bytes()
            )
        );
        let labels = Labels {
            deployment: Some(self.deployment.to_string()),
            node: rec.node.clone(),
            disk: rec.disk.clone(),
            provider: rec.provider.map(|p| p.as_str().to_string()),
            fs: Some(view.fs.fstype.clone()),
            freeze: Some(view.freeze.to_string()),
            set: self.args.set.clone(),
            link: Some(link.clone()),
            root: Some(survey.root.to_tag()),
            sparse: Some(survey.sparse.len() as u64),
            bytes: Some(survey.apparent),
            ..Labels::of(Kind::Archive)
        };
        let host = rec.node.clone().unwrap_or_else(|| tags::OURS.to_string());
        let opts = BackupOptions {
            tags: labels.to_tags(),
            host: host.clone(),
            time: restic_time(time),
            parent,
            // The filesystem's own, not the data's.
            excludes: vec![format!("{}/lost+found", view.root.display())],
        };
        // What restic does not keep, beside it: without it the archive is
        // not kept either, and the other way round.
        let described = Described {
            archive: String::new(),
            fs: view.fs.clone(),
            fs_size: view.fs_size,
            used: 0,
            apparent: survey.apparent,
            root: survey.root,
            sparse: survey.sparse.iter().map(|p| tags::encode_path(p)).collect(),
        };
        let body = serde_json::to_vec_pretty(&described)
            .map_err(|e| Failure::new(codes::INTERNAL, e.to_string()))?;
        let dlabels = Labels {
            deployment: labels.deployment.clone(),
            node: labels.node.clone(),
            disk: labels.disk.clone(),
            link: Some(link.clone()),
            ..Labels::of(Kind::Described)
        };
        let dopts = BackupOptions {
            tags: dlabels.to_tags(),
            host,
            time: opts.time.clone(),
            ..BackupOptions::default()
        };
        let progress = Progress::start(format!("MiB of {} archived", rec.label()), 0);
        let (summary, desc) = std::thread::scope(|s| {
            let desc = s.spawn(|| self.repo.backup_bytes(tags::DESCRIBED_FILE, &body, &dopts));
            let summary = self.repo.backup(&view.root, &opts, &progress);
            (summary, desc.join())
        });
        drop(progress);
        let desc = desc.unwrap_or_else(|_| {
            Err(Failure::new(
                codes::INTERNAL,
                "writing the description panicked",
            ))
        });
        let summary = match (summary, desc) {
            (Ok(s), Ok(_)) => s,
            (Ok(s), Err(f)) => {
                let _ = self
                    .repo
                    .forget(std::slice::from_ref(&s.snapshot_id), false);
                return Err(Failure::new(
                    codes::ARCHIVE_FAILED,
                    format!(
                        "{} (the archive {} was deleted again)",
                        f.message, s.snapshot_id
                    ),
                ));
            }
            (Err(f), Ok(d)) => {
                let _ = self.repo.forget(std::slice::from_ref(&d), false);
                return Err(f);
            }
            (Err(f), Err(_)) => return Err(f),
        };
        let id = summary.snapshot_id.clone();
        view.finish()?;
        let mut archive = Archive {
            id: id.clone(),
            time: time.rfc3339(),
            repository: self.repo.location.clone(),
            state: "completed".into(),
            node: rec.node.clone(),
            disk: rec.disk.clone(),
            fs: labels.fs.clone(),
            size: Some(summary.total_bytes_processed),
            files: Some(summary.total_files_processed),
            added: Some(summary.data_added),
            freeze: labels.freeze.clone(),
            set: self.args.set.clone(),
            ..Archive::default()
        };
        let _ = ledger::update(key, |e| {
            e.repository = Some(self.repo.location.clone());
            e.last_id = Some(id.clone());
            e.last_time = Some(archive.time.clone());
            e.last_size = archive.size;
            e.last_added = archive.added;
        });
        // Retention: older archives of this disk, and their descriptions.
        let prune = self.pruned(&mine, &id, Stamp::now());
        let mut message = format!(
            "archived into {} as {} ({} files, {} bytes, {} added){}",
            self.repo.location,
            short(&id),
            summary.total_files_processed,
            summary.total_bytes_processed,
            summary.data_added,
            match archive.freeze.as_deref() {
                Some("frozen") => ", frozen for its capture",
                _ => "",
            }
        );
        let result = if prune.is_empty() {
            Ok(())
        } else {
            let mut ids = prune.clone();
            let links: Vec<&str> = mine
                .iter()
                .filter(|l| prune.iter().any(|p| tags::same_id(p, &l.snap.id)))
                .filter_map(|l| l.labels.link.as_deref())
                .collect();
            ids.extend(
                self.opened
                    .listed
                    .iter()
                    .filter(|l| l.is(Kind::Described))
                    .filter(|l| {
                        // A killed run's description: its archive was never made.
                        let orphan = l.labels.node == rec.node
                            && l.labels.deployment.as_deref() == Some(self.deployment)
                            && l.labels.link.as_deref().is_some_and(|k| {
                                !self.opened.listed.iter().any(|a| {
                                    a.is(Kind::Archive) && a.labels.link.as_deref() == Some(k)
                                }) && k != link
                            });
                        orphan
                            || l.labels.link.as_deref().is_some_and(|k| links.contains(&k))
                            || l.labels
                                .archive
                                .as_ref()
                                .is_some_and(|a| prune.iter().any(|p| tags::same_id(a, p)))
                    })
                    .map(|l| l.snap.id.clone()),
            );
            self.repo.forget(&ids, true).map(|()| {
                archive.pruned = prune.clone();
                message.push_str(&format!(
                    "; deleted {}",
                    prune
                        .iter()
                        .map(|p| short(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            })
        };
        rec.archive = Some(archive);
        result.map(|()| Outcome::changed(state, message))
    }

    /// Writes the set's manifest, naming each record's archive.
    fn seal(&self, records: &mut [Record], set: &str) -> Vec<(StepResult, Duration)> {
        let mut members = Vec::new();
        let mut problem = None;
        for r in records.iter() {
            let found = r.archive.as_ref().and_then(|a| {
                self.opened
                    .listed
                    .iter()
                    .find(|l| l.is(Kind::Archive) && tags::same_id(&l.snap.id, &a.id))
            });
            match found {
                Some(l)
                    if l.labels.set.as_deref() == Some(set)
                        && l.labels.deployment.as_deref() == Some(self.deployment) =>
                {
                    members.push(Member {
                        node: l.labels.node.clone().unwrap_or_default(),
                        disk: l.labels.disk.clone().unwrap_or_default(),
                        archive: l.snap.id.clone(),
                    })
                }
                Some(l) => {
                    problem.get_or_insert(format!(
                        "{}: its archive {} is not of the set {set} of deployment {}",
                        r.label(),
                        short(&l.snap.id),
                        self.deployment
                    ));
                }
                None => {
                    problem.get_or_insert(format!(
                        "{}: no archive of it in {} (pipe in the records disk-archive --set {set} wrote)",
                        r.label(),
                        self.repo.location
                    ));
                }
            }
        }
        if let Some(p) = problem {
            let f = Failure::new(
                codes::NO_SUCH_ARCHIVE,
                format!("{p}; the set is not sealed"),
            );
            return one_by_one(records, |_| Err(f.clone()));
        }
        let now = Stamp::now();
        let manifest = Manifest {
            set: set.to_string(),
            deployment: self.deployment.to_string(),
            time: now.rfc3339(),
            members,
        };
        if self.check {
            return one_by_one(records, |r| {
                Ok(Outcome::changed(
                    r.state.unwrap_or(State::Created),
                    format!("would seal set {set} ({} archives)", manifest.members.len()),
                ))
            });
        }
        let written = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Failure::new(codes::INTERNAL, e.to_string()))
            .and_then(|body| {
                let labels = Labels {
                    deployment: Some(self.deployment.to_string()),
                    set: Some(set.to_string()),
                    ..Labels::of(Kind::Manifest)
                };
                self.repo.backup_bytes(
                    tags::MANIFEST_FILE,
                    &body,
                    &BackupOptions {
                        tags: labels.to_tags(),
                        host: tags::OURS.to_string(),
                        time: restic_time(now),
                        ..BackupOptions::default()
                    },
                )
            });
        let n = manifest.members.len();
        one_by_one(records, |r| match &written {
            Ok(id) => Ok(Outcome::changed(
                r.state.unwrap_or(State::Created),
                format!("sealed set {set}: {n} archives, manifest {}", short(id)),
            )),
            Err(f) => Err(f.clone()),
        })
    }

    /// Checks the repository, then drills each record's newest archive.
    fn verify(&self, records: &mut [Record]) -> Vec<(StepResult, Duration)> {
        let subset = (self.args.read_data != "0").then_some(self.args.read_data.as_str());
        let checked = if self.check {
            Ok(String::new())
        } else {
            self.repo.check(subset)
        };
        one_by_one(records, |r| {
            if let Err(f) = &checked {
                return Err(f.clone());
            }
            let mine = archives_of(&self.opened.listed, self.deployment, r);
            let newest = mine.last().ok_or_else(|| {
                Failure::new(
                    codes::NO_SUCH_ARCHIVE,
                    format!(
                        "{} has no archive in {} to verify",
                        r.label(),
                        self.repo.location
                    ),
                )
            })?;
            let state = r.state.unwrap_or(State::Created);
            if self.check {
                r.archive = Some(archive_of(newest, &self.repo.location, "planned"));
                return Ok(Outcome::unchanged(
                    state,
                    format!(
                        "would check {} and restore {} into a drill under {}",
                        self.repo.location,
                        short(&newest.snap.id),
                        self.args.drill_dir.display()
                    ),
                ));
            }
            super::fill::drill(self.repo, newest, &self.args.drill_dir)?;
            let now = Stamp::now().rfc3339();
            let mut a = archive_of(newest, &self.repo.location, "verified");
            a.verified = Some(now.clone());
            let key = capture::key(
                self.deployment,
                r.provider.unwrap_or(ProviderKind::Local),
                r.disk.as_deref().unwrap_or_default(),
            );
            let _ = ledger::update(&key, |e| {
                e.verified_time = Some(now.clone());
                e.verified_id = Some(newest.snap.id.clone());
            });
            r.archive = Some(a);
            Ok(Outcome::unchanged(
                state,
                format!(
                    "{} checked ({}); archive {} restored in a drill and matched",
                    self.repo.location,
                    subset.map_or("structure".to_string(), |s| format!(
                        "{s} of the data read back"
                    )),
                    short(&newest.snap.id)
                ),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_rfc3339_or_epoch_seconds() {
        assert_eq!(parse_at("1795746912").unwrap(), Stamp(1_795_746_912_000));
        assert_eq!(
            parse_at("2026-11-27T02:35:12Z").unwrap(),
            Stamp(1_795_746_912_000)
        );
        assert!(parse_at("soon").is_err());
    }

    #[test]
    fn archives_are_matched_by_deployment_and_node() {
        let snap = |id: &str, tags: &[&str]| super::super::restic::Snap {
            id: id.into(),
            time: "2026-11-27T02:35:12Z".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let listed = Listed::all(vec![
            snap(
                "a",
                &[
                    "appscale-persist",
                    "kind=archive",
                    "deployment=d",
                    "node=n1",
                    "disk=x",
                ],
            ),
            snap(
                "b",
                &[
                    "appscale-persist",
                    "kind=archive",
                    "deployment=d",
                    "node=n2",
                    "disk=x",
                ],
            ),
            snap(
                "c",
                &[
                    "appscale-persist",
                    "kind=archive",
                    "deployment=e",
                    "node=n1",
                    "disk=x",
                ],
            ),
            snap(
                "m",
                &["appscale-persist", "kind=repository", "deployment=d"],
            ),
        ]);
        let rec = Record {
            node: Some("n1".into()),
            disk: Some("other-name".into()),
            ..Record::default()
        };
        let ids: Vec<&str> = archives_of(&listed, "d", &rec)
            .iter()
            .map(|l| l.snap.id.as_str())
            .collect();
        assert_eq!(ids, ["a"]);
    }
}
