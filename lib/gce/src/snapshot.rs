//! `disk-snapshot` on Compute Engine: plan, send, wait, finish, prune; and
//! the snapshot `disk-create --from-snapshot` makes a disk from.
//!
//! * **plan**: the records' disks are looked up as for the other
//!   operations ([`disk::find_disks`]: another deployment's disk is never
//!   touched); the snapshots of each deployment are listed
//!   (`snapshots.list` filtered on the deployment label, and checked again
//!   here: the filter is the server's business, the labels are ours).
//! * **send**: `disks.createSnapshot`, labelled like the disks are (the
//!   deployment and node, [`owner::labels`]) and with the disk, the time and
//!   the tool, at most `--concurrency` at once, each with a `requestId`,
//!   stored in `--snapshot-location` when given. A disk snapshotted too
//!   recently (`RESOURCE_OPERATION_RATE_EXCEEDED`: about once per 10
//!   minutes) fails `snapshot-too-soon`: try later.
//! * **wait**: every zone operation under the run's deadline; then, with
//!   `--wait` or retention, each new snapshot until `READY` (`snapshots.get`,
//!   under `--wait-timeout`: one still being made then is left, with
//!   `snapshot-pending`), else its state read once; a snapshot this run made
//!   that ends `FAILED` is deleted again, so a failure leaves nothing behind.
//! * **finish**: retention over the snapshots of the same disk (the
//!   record's `disk` in its zone: the snapshot's `sourceDisk`, or labels
//!   [`LABEL_DISK`] and [`LABEL_ZONE`], see [`Snap::is_of`]) and deployment
//!   only, never the new one, by the shared rule (only READY snapshots
//!   count, one being made is never deleted, a FAILED one is); `snapshots.delete`
//!   for each pruned, its global operation waited for
//!   (`snapshots.getOperation`) under a deadline of its own (as long as
//!   --timeout, started after the wait for READY) before it is reported.
//!
//! Snapshot names are global to the project: `<disk>-<time>-<hash>`, the
//! hash of the project, zone and deployment keeping two disks of one name
//! apart. The filesystem cannot be frozen from here (a disk mounted on an
//! instance): a snapshot needs `--no-freeze` (crash-consistent; the record
//! says `not-frozen`), as on EC2.

use std::collections::HashMap;

use appscale_persist::codes;
use appscale_persist::record::{Record, RestoredFrom, Snapshot, State};
use appscale_persist::snapshot::{Candidate, Marks, Pruned, SnapshotArgs, Stamp};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{
    ApiError, Deadline, Unfinished, call_each, list_into, poll_until_with, prune_all,
};
use google_cloud_compute_v1::model::{Operation, Snapshot as GceSnapshot};

use crate::api::{
    Api, Location, api_error, bounded, call, idempotent, is_not_found, request_id, wait_operation,
};
use crate::disk;
use crate::owner::{self, LABEL_DEPLOYMENT, label_value};
use crate::{POLL, Run, Target};

/// The disk (the record's `disk`) a snapshot was taken of.
pub const LABEL_DISK: &str = "appscale-persist-disk";
/// When it was taken: `YYYYMMDD-HHMMSS-mmm` in UTC (label values allow no
/// `:` or capitals), see [`time_label`].
pub const LABEL_TIME: &str = "appscale-persist-time";
/// The tool that took it.
pub const LABEL_TOOL: &str = "appscale-persist-tool";
/// The zone of the disk a snapshot was taken of (the snapshot itself is
/// global to the project: two disks of one name in two zones are told
/// apart by this, and by the snapshot's `sourceDisk`).
pub const LABEL_ZONE: &str = "appscale-persist-zone";
/// On a disk made from a snapshot: the snapshot's name.
pub const LABEL_RESTORED_FROM: &str = "appscale-persist-restored-from";

/// The longest name Compute Engine takes for a disk or a snapshot.
const MAX_NAME: usize = 63;

/// A snapshot of ours, as `snapshots.list` or `snapshots.get` gives it.
#[derive(Debug, Clone)]
pub struct Snap {
    /// Its name (the id disk-create --from-snapshot takes).
    pub name: String,
    /// The disk label.
    pub disk: String,
    /// The zone and name of the disk it was taken of, from its
    /// `sourceDisk` (`.../projects/P/zones/Z/disks/NAME`), when it says
    /// one.
    pub source: Option<(String, String)>,
    /// The zone label.
    pub zone: String,
    /// The deployment label.
    pub deployment: String,
    /// When it was taken (the time label), ms since the epoch; 0 when
    /// unlabelled.
    pub ms: u64,
    /// The disk's size, bytes.
    pub size: u64,
    /// `completed` (READY), `pending` (CREATING, UPLOADING), `error`
    /// (FAILED), `deleting`.
    pub state: String,
}

impl Snap {
    fn record(&self) -> Snapshot {
        Snapshot::listed(&self.name, Stamp(self.ms).rfc3339(), self.size, &self.state)
    }
}

/// The snapshot as [`Snap`], when this toolkit took it: every label
/// disk-snapshot puts on one ([`Marks::ours`], and the zone's). Any other
/// snapshot, even one labelled with the deployment, is not ours, and is
/// never counted, pruned or restored from.
fn snap_of(s: GceSnapshot) -> Option<Snap> {
    let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let (disk, time, tool) = (label(LABEL_DISK), label(LABEL_TIME), label(LABEL_TOOL));
    let marks = Marks {
        deployment: s.labels.get(LABEL_DEPLOYMENT).map(String::as_str),
        disk: Some(&disk),
        time: ms_of_label(&time).map(Stamp),
        tool: Some(&tool),
    };
    if !marks.ours() || label(LABEL_ZONE).is_empty() {
        return None;
    }
    let state = state_of(&s);
    Some(Snap {
        name: s.name.clone()?,
        disk: label(LABEL_DISK),
        source: s.source_disk.as_deref().and_then(source_of),
        zone: label(LABEL_ZONE),
        deployment: label(LABEL_DEPLOYMENT),
        ms: ms_of_label(&time).unwrap_or(0),
        size: (s.disk_size_gb.unwrap_or(0).max(0) as u64) << 30,
        state: state.to_string(),
    })
}

/// A snapshot's status in the words the records use: `completed`,
/// `pending`, `error`, `deleting` or `unknown`.
pub fn state_of(s: &GceSnapshot) -> &'static str {
    match s.status.as_ref().and_then(|st| st.name()) {
        Some("READY") => "completed",
        Some("CREATING") | Some("UPLOADING") => "pending",
        Some("FAILED") => "error",
        Some("DELETING") => "deleting",
        _ => "unknown",
    }
}

/// The zone and disk name a `sourceDisk` URL (or partial URL) names:
/// `.../zones/Z/disks/NAME`.
fn source_of(url: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = url.trim_end_matches('/').split('/').collect();
    let n = parts.len();
    if n < 4 || parts[n - 4] != "zones" || parts[n - 2] != "disks" {
        return None;
    }
    Some((parts[n - 3].to_string(), parts[n - 1].to_string()))
}

impl Snap {
    /// Whether this is a snapshot of `t`'s disk: of that disk name in that
    /// zone. `sourceDisk` decides when Compute Engine says it (every
    /// snapshot taken of a disk has one); else the disk and zone labels,
    /// both of which must be there. The deployment was checked when listed.
    fn is_of(&self, t: &Target) -> bool {
        match &self.source {
            Some((zone, disk)) => *zone == t.location.zone && *disk == t.disk,
            None => self.disk == label_value(&t.disk) && self.zone == label_value(&t.location.zone),
        }
    }
}

/// A moment as the time label writes it: `20261127-023512-123`.
pub fn time_label(t: Stamp) -> String {
    let c = t.compact(); // 20261127T023512.123Z
    format!("{}-{}-{}", &c[0..8], &c[9..15], &c[16..19])
}

/// The moment a time label ([`time_label`]) says, ms since the epoch.
pub fn ms_of_label(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 19 || b[8] != b'-' || b[15] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)? as i64, num(4..6)?, num(6..8)?);
    let (h, mi, sec, ms) = (num(9..11)?, num(11..13)?, num(13..15)?, num(16..19)?);
    Stamp::from_civil(y, mo, d, h, mi, sec, ms).map(|t| t.0)
}

/// `base` + `suffix` as a Compute Engine name (at most 63 characters):
/// `base` shortened, with a hash of the whole of it, when too long.
fn fit_name(base: &str, suffix: &str) -> String {
    if base.len() + suffix.len() <= MAX_NAME {
        return format!("{base}{suffix}");
    }
    let h = appscale_persist::hash::fnv1a64(0, base.as_bytes()) as u32;
    let keep = MAX_NAME.saturating_sub(suffix.len() + 9);
    let short: String = base.chars().take(keep).collect();
    format!("{}-{h:08x}{suffix}", short.trim_end_matches('-'))
}

/// The name of the snapshot of `t`'s disk taken at `t`.
fn snapshot_name(t: &Target, at: Stamp) -> String {
    let whose = format!(
        "{}/{}/{}",
        t.location.project, t.location.zone, t.deployment
    );
    let h = appscale_persist::hash::fnv1a64(0, whose.as_bytes()) as u16;
    fit_name(&t.disk, &format!("-{}-{h:04x}", time_label(at)))
}

/// The name of the disk made from `snap` for a record of disk `disk`.
pub fn restored_name(disk: &str, snap: &Snap) -> String {
    fit_name(disk, &format!("-restored-{}", time_label(Stamp(snap.ms))))
}

impl Api {
    /// The project's snapshots labelled for `deployment` (one
    /// `snapshots.list` a page, filtered on the label), newest first.
    pub async fn snapshots(&self, project: &str, deployment: &str) -> Result<Vec<Snap>, ApiError> {
        let want = label_value(deployment);
        let filter = format!("(labels.{LABEL_DEPLOYMENT} = \"{want}\")");
        let what = format!("snapshots.list {filter}");
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = self
                .snapshots
                .list()
                .set_project(project)
                .set_filter(&filter)
                .set_max_results(crate::api::MAX_RESULTS);
            if let Some(t) = token.take() {
                list = list.set_page_token(t);
            }
            let page = call(&what, list.send()).await?;
            all.extend(
                page.items
                    .into_iter()
                    .filter_map(snap_of)
                    .filter(|s| s.deployment == want),
            );
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        all.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| b.name.cmp(&a.name)));
        Ok(all)
    }

    /// The snapshot `name`, or `None` when there is none.
    pub async fn snapshot(&self, project: &str, name: &str) -> Result<Option<Snap>, ApiError> {
        Ok(self
            .snapshot_of_anyone(project, name)
            .await?
            .and_then(snap_of))
    }

    /// The snapshot `name` as Compute Engine gives it, whoever made it:
    /// for one whose own marks say it is ours in another way (a scratch
    /// snapshot's owner label, [`crate::scratch`]), which
    /// [`Api::snapshot`] would not take for disk-snapshot's.
    pub async fn snapshot_of_anyone(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<GceSnapshot>, ApiError> {
        let what = format!("snapshots.get {name}");
        let get = self
            .snapshots
            .get()
            .set_project(project)
            .set_snapshot(name)
            .send();
        match bounded(&what, get).await? {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api_error(&what, e)),
        }
    }

    /// Starts `disks.createSnapshot` of `disk` as `name`, with `labels`,
    /// stored in `location` when given (`storageLocations`; else Compute
    /// Engine's default, the multi-region nearest the disk).
    async fn create_snapshot(
        &self,
        at: &Location,
        disk: &str,
        name: &str,
        labels: Vec<(String, String)>,
        location: Option<&str>,
    ) -> Result<Operation, ApiError> {
        let what = format!("disks.createSnapshot {disk} as {name} in {}", at.zone);
        let body = GceSnapshot::new()
            .set_name(name)
            .set_labels(labels)
            .set_storage_locations(location)
            .set_description(format!("appscale-persist: disk-snapshot of {disk}"));
        let create = self
            .disks
            .create_snapshot()
            .set_project(&at.project)
            .set_zone(&at.zone)
            .set_disk(disk)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        call(&what, create).await
    }

    /// Deletes the snapshot `name` and waits for its global operation under
    /// `deadline`; one already gone is deleted.
    pub async fn delete_snapshot(
        &self,
        project: &str,
        name: &str,
        deadline: &Deadline,
    ) -> Result<(), Failure> {
        let what = format!("snapshots.delete {name}");
        let delete = self
            .snapshots
            .delete()
            .set_project(project)
            .set_snapshot(name)
            .set_request_id(request_id())
            .with_options(idempotent())
            .send();
        let op = match bounded(&what, delete).await? {
            Ok(op) => op,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(api_error(&what, e).into()),
        };
        self.wait_global(project, op, deadline).await
    }

    /// Waits for the global operation `op` (one `snapshots.getOperation` a
    /// poll, with backoff) under `deadline`; an operation that ends with an
    /// error is a failure with its error code.
    async fn wait_global(
        &self,
        project: &str,
        op: Operation,
        deadline: &Deadline,
    ) -> Result<(), Failure> {
        let progress = deadline.progress(
            format!("operation {} to finish", op.name.as_deref().unwrap_or("?")),
            1,
        );
        wait_operation(op, "globalOperations.get", deadline, &progress, |name| {
            self.snapshots
                .get_operation()
                .set_project(project)
                .set_operation(name)
                .send()
        })
        .await
    }

    /// The snapshot `name` as its finished operation left it (READY, or
    /// still CREATING or UPLOADING: `pending`), without waiting.
    async fn started_snapshot(&self, project: &str, name: &str) -> Result<Snap, Failure> {
        match self.snapshot(project, name).await {
            Ok(Some(s)) if s.state == "pending" || s.state == "completed" => Ok(s),
            Ok(Some(s)) => Err(Failure::new(
                codes::SNAPSHOT_FAILED,
                format!("snapshot {name} is {}", s.state),
            )),
            Ok(None) => Err(Failure::new(
                codes::SNAPSHOT_FAILED,
                format!("snapshot {name} disappeared"),
            )),
            Err(e) => Err(e.failure),
        }
    }

    /// Waits until the snapshot `name` is READY ([`poll_until_with`] under
    /// `deadline`, --wait-timeout); at the deadline it is left to complete
    /// (`snapshot-pending`).
    async fn wait_snapshot(
        &self,
        project: &str,
        name: &str,
        deadline: &Deadline,
    ) -> Result<Snap, Failure> {
        let progress = deadline.progress(format!("snapshot {name} to be ready"), 1);
        let waited = poll_until_with(&progress, deadline.schedule(POLL), || async {
            Ok(match self.snapshot(project, name).await? {
                Some(s) if s.state == "pending" => Poll::Pending,
                Some(s) if s.state == "completed" => Poll::Ready(s),
                Some(s) => Poll::Failed(Failure::new(
                    codes::SNAPSHOT_FAILED,
                    format!("snapshot {name} is {}", s.state),
                )),
                None => Poll::Failed(Failure::new(
                    codes::SNAPSHOT_FAILED,
                    format!("snapshot {name} disappeared"),
                )),
            })
        })
        .await;
        waited.map_err(|u| match u {
            Unfinished::TimedOut { .. } => Failure::new(
                codes::SNAPSHOT_PENDING,
                format!(
                    "snapshot {name} was not ready within {}s (--wait-timeout); it is left to complete, nothing was pruned",
                    deadline.timeout().as_secs()
                ),
            ),
            u => u.into_failure(format!("snapshot {name} was not ready"), deadline),
        })
    }
}

/// What disk-snapshot does for one record (beside its [`Target`]), decided
/// before any call.
#[derive(Debug, Clone)]
enum Plan {
    /// `--list`: list the disk's snapshots.
    List,
    /// Take a snapshot of the disk (not frozen: `--no-freeze`).
    Take {
        /// The snapshot's name.
        name: String,
        /// The disk's size, bytes.
        size: u64,
    },
}

/// Each record's plan beside its target, or why it has none.
type Plans = Vec<Result<(Target, Plan), Failure>>;

/// A deployment's snapshots, as listed once for a run: by project and
/// deployment.
type Listed = HashMap<(String, String), Result<Vec<Snap>, Failure>>;

/// Lists the snapshots of each (project, deployment) of `targets`, once.
async fn list_all(run: &Run, targets: impl Iterator<Item = &Target>) -> Listed {
    let mut listed = Listed::new();
    for t in targets {
        let key = (t.location.project.clone(), t.deployment.clone());
        if let std::collections::hash_map::Entry::Vacant(e) = listed.entry(key) {
            let (project, deployment) = e.key();
            let l = run.api.snapshots(project, deployment).await;
            e.insert(l.map_err(Failure::from));
        }
    }
    listed
}

/// The snapshots of `t`'s disk (its name in its zone, [`Snap::is_of`]) and
/// deployment among `listed`, newest first: what --list lists, retention
/// chooses among and --from-snapshot restores from.
fn of_disk(listed: &Listed, t: &Target) -> Result<Vec<Snap>, Failure> {
    let key = (t.location.project.clone(), t.deployment.clone());
    let all = listed
        .get(&key)
        .ok_or_else(|| Failure::new(codes::INTERNAL, "snapshots not listed"))?
        .as_ref()
        .map_err(Clone::clone)?;
    Ok(all.iter().filter(|s| s.is_of(t)).cloned().collect())
}

/// The labels of a snapshot of `t`'s disk taken at `at`.
fn labels(t: &Target, at: Stamp) -> Vec<(String, String)> {
    let mut l = owner::labels(&t.deployment, t.node.as_deref());
    l.push((LABEL_DISK.into(), label_value(&t.disk)));
    l.push((LABEL_ZONE.into(), label_value(&t.location.zone)));
    l.push((LABEL_TIME.into(), time_label(at)));
    l.push((LABEL_TOOL.into(), appscale_persist::snapshot::TOOL.into()));
    l
}

/// Runs disk-snapshot over the records' targets: plan, then list
/// (`--list`), describe (`--check`), or send, wait, prune and finish.
pub async fn snapshot(
    run: &Run,
    args: &SnapshotArgs,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<StepResult> {
    let now = Stamp::now();
    let (mut plans, listed) = plan(run, args, records, targets, now).await;
    let each = records.iter_mut().zip(plans.iter());
    if args.list {
        return each.map(|(r, p)| list_one(r, p, &listed)).collect();
    }
    if run.check {
        return each
            .map(|(r, p)| describe(args, r, p, &listed, now))
            .collect();
    }
    let sent = send(run, args, &mut plans, now).await;
    let ready = wait(run, args, &mut plans).await;
    let chosen: Vec<Vec<String>> = plans
        .iter()
        .zip(&ready)
        .map(|(p, ready)| match (p, ready) {
            (Ok((t, _)), Some(snap)) => {
                retained(args, &listed, t, &snap.name, now).unwrap_or_default()
            }
            _ => Vec::new(),
        })
        .collect();
    let pruned = prune(run, &plans, chosen).await;
    let mut out = Vec::new();
    for ((((r, p), ready), sent), pruned) in records
        .iter_mut()
        .zip(plans)
        .zip(ready)
        .zip(sent)
        .zip(pruned)
    {
        out.push(finish(run, r, p, ready, sent, pruned, &listed).await);
    }
    out
}

/// The plan of every record, from its disk ([`disk::find_disks`]), and the
/// snapshots of each deployment: one whose snapshots could not be listed
/// takes none (its retention could not be applied).
async fn plan(
    run: &Run,
    args: &SnapshotArgs,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
    now: Stamp,
) -> (Plans, Listed) {
    let found = disk::find_disks(run, &targets).await;
    let mut plans: Plans = records
        .iter_mut()
        .zip(targets)
        .zip(found)
        .map(|((r, t), found)| {
            let t = t?;
            let (d, _) = found?.ok_or_else(|| disk::no_such_disk(&t))?;
            disk::note(r, &d);
            if args.list {
                return Ok((t, Plan::List));
            }
            if !args.no_freeze {
                return Err(Failure::new(
                    codes::FREEZE_FAILED,
                    "the filesystem of a Compute Engine disk cannot be frozen from here: pass --no-freeze (a crash-consistent snapshot, which the record notes); nothing taken",
                ));
            }
            let name = snapshot_name(&t, now);
            let size = (d.size_gb.max(0) as u64) << 30;
            Ok((t, Plan::Take { name, size }))
        })
        .collect();
    let listed = list_all(run, plans.iter().flatten().map(|(t, _)| t)).await;
    for p in plans.iter_mut() {
        if let Some(Err(f)) = p.as_ref().ok().map(|(t, _)| of_disk(&listed, t)) {
            *p = Err(f);
        }
    }
    (plans, listed)
}

/// `--list`: the record's disk's snapshots, into `listed`.
fn list_one(r: &mut Record, p: &Result<(Target, Plan), Failure>, listed: &Listed) -> StepResult {
    let (t, _) = p.as_ref().map_err(Clone::clone)?;
    let snaps = of_disk(listed, t)?;
    list_into(r, snaps.iter().map(Snap::record).collect())
}

/// `--check`: what the record's plan would do, retention included.
fn describe(
    args: &SnapshotArgs,
    r: &mut Record,
    p: &Result<(Target, Plan), Failure>,
    listed: &Listed,
    now: Stamp,
) -> StepResult {
    let (t, p) = p.as_ref().map_err(Clone::clone)?;
    let Plan::Take { name, size } = p else {
        return Err(Failure::new(codes::INTERNAL, "nothing to describe"));
    };
    let pruned = retained(args, listed, t, name, now)?;
    let msg = format!(
        "would take snapshot {name} of disk {}{}",
        t.disk,
        if pruned.is_empty() {
            String::new()
        } else {
            format!("; would prune {}", pruned.join(", "))
        }
    );
    r.snapshot = Some(Snapshot {
        id: name.clone(),
        time: now.rfc3339(),
        size: *size,
        state: "planned".into(),
        freeze: Some("not-frozen".into()),
        method: None,
        pruned,
    });
    Ok(Outcome::changed(r.state.unwrap_or(State::Created), msg))
}

/// Where a snapshot was sent: its project and name.
#[derive(Debug, Clone)]
struct Sent {
    project: String,
    name: String,
}

/// The name of the snapshot a plan takes.
fn to_take(t: &Target, p: &Plan) -> Option<(Target, String)> {
    match p {
        Plan::Take { name, .. } => Some((t.clone(), name.clone())),
        Plan::List => None,
    }
}

/// `disks.createSnapshot` for every planned record, at most
/// `--concurrency` at once, then every zone operation waited for under the
/// run's deadline; what was sent, by record.
async fn send(run: &Run, args: &SnapshotArgs, plans: &mut Plans, now: Stamp) -> Vec<Option<Sent>> {
    let location = args.snapshot_location.clone();
    let ops = call_each(
        run.cfg.concurrency,
        plans,
        |(t, p)| to_take(t, p),
        |(t, name): (Target, String)| {
            let (api, location) = (run.api.clone(), location.clone());
            async move {
                let (at, labels) = (&t.location, labels(&t, now));
                let op = api
                    .create_snapshot(at, &t.disk, &name, labels, location.as_deref())
                    .await;
                op.map_err(|e| snapshot_failed(&name, e.failure))
            }
        },
    )
    .await;
    let sent = plans
        .iter()
        .zip(&ops)
        .map(|(p, op)| {
            let (t, p) = p.as_ref().ok().filter(|_| op.is_some())?;
            let (_, name) = to_take(t, p)?;
            let project = t.location.project.clone();
            Some(Sent { project, name })
        })
        .collect();
    run.wait_all(plans, ops).await;
    for p in plans.iter_mut() {
        if let Err(f) = p {
            too_soon(f);
        }
    }
    sent
}

/// The operations are done: each snapshot exists. With --wait (or
/// retention, which prunes nothing before the new one is READY), waits
/// for READY under --wait-timeout; else reads its state once.
async fn wait(run: &Run, args: &SnapshotArgs, plans: &mut Plans) -> Vec<Option<Snap>> {
    let waits = args.waits();
    let wait_deadline = Deadline::start(std::time::Duration::from_secs(args.wait_timeout));
    call_each(
        plans.len(),
        plans,
        |(t, p)| Some((t.location.project.clone(), to_take(t, p)?.1)),
        |(project, name): (String, String)| {
            let api = run.api.clone();
            async move {
                if waits {
                    api.wait_snapshot(&project, &name, &wait_deadline).await
                } else {
                    api.started_snapshot(&project, &name).await
                }
            }
        },
    )
    .await
}

/// Compute Engine's answer to a disk snapshotted too often: about once per
/// 10 minutes a disk, in bursts of at most 6 an hour
/// (snapshot-best-practices), else the operation fails so.
const RATE_EXCEEDED: &str = "RESOURCE_OPERATION_RATE_EXCEEDED";

/// `f`, when it is Compute Engine refusing a snapshot of a disk
/// snapshotted too recently, becomes `snapshot-too-soon`: nothing was
/// taken, and the same request later succeeds.
fn too_soon(f: &mut Failure) {
    if f.code == RATE_EXCEEDED || f.message.contains(RATE_EXCEEDED) {
        *f = Failure::new(
            codes::SNAPSHOT_TOO_SOON,
            format!(
                "{}: Compute Engine takes a snapshot of one disk about once per 10 minutes (bursts of up to 6 an hour); nothing was taken and nothing pruned: try later",
                f.message
            ),
        );
    }
}

/// A failed `disks.createSnapshot` of `name`: `snapshot-failed`, with the
/// cause in the message.
fn snapshot_failed(name: &str, f: Failure) -> Failure {
    Failure::new(
        codes::SNAPSHOT_FAILED,
        format!("snapshot {name} was not taken: {}: {}", f.code, f.message),
    )
}

/// The names retention deletes among the snapshots of `t`'s disk and
/// deployment once `taken` (at `now`, READY: retention waits for it) is
/// there.
fn retained(
    args: &SnapshotArgs,
    listed: &Listed,
    t: &Target,
    taken: &str,
    now: Stamp,
) -> Result<Vec<String>, Failure> {
    let earlier = of_disk(listed, t)?
        .into_iter()
        .map(|s| Candidate::new(s.name, s.ms, s.state));
    let taken = Candidate::new(taken, now.0, "completed");
    Ok(args.retention().after(earlier, taken, now.0))
}

/// Retention's deletes of every record ([`prune_all`]): `snapshots.delete`,
/// each global operation waited for, at most `--concurrency` at once.
/// Pruning comes after the wait for READY, which may have outlasted the
/// run's deadline: it gets a deadline of its own, as long (--timeout).
async fn prune(run: &Run, plans: &Plans, chosen: Vec<Vec<String>>) -> Vec<Pruned> {
    let deadline = Deadline::start(run.deadline.timeout());
    prune_all(run.cfg.concurrency, chosen, |i, name| {
        let api = run.api.clone();
        let project = plans[i]
            .as_ref()
            .map(|(t, _)| t.location.project.clone())
            .map_err(Clone::clone);
        async move {
            api.delete_snapshot(&project?, &name, &deadline).await?;
            Ok(true)
        }
    })
    .await
}

/// The record's outcome: its snapshot, then what retention pruned. A
/// snapshot this run sent that did not become READY is deleted again when
/// it failed (it is ours: its name is this run's), and nothing is pruned.
async fn finish(
    run: &Run,
    r: &mut Record,
    p: Result<(Target, Plan), Failure>,
    ready: Option<Snap>,
    sent: Option<Sent>,
    pruned: Pruned,
    listed: &Listed,
) -> StepResult {
    let (t, snap) = match (p, ready) {
        (Ok((t, _)), Some(snap)) => (t, snap),
        (Ok(_), None) => return Err(Failure::new(codes::INTERNAL, "no snapshot was waited for")),
        (Err(f), _) => match sent {
            Some(s) => return Err(clean_up(run, &s.project, &s.name, f).await),
            None => return Err(f),
        },
    };
    of_disk(listed, &t)?;
    let mut record = snap.record();
    record.freeze = Some("not-frozen".into());
    record.pruned = pruned.deleted;
    let msg = format!(
        "took snapshot {} of disk {} (not frozen){}{}",
        snap.name,
        t.disk,
        if snap.state == "pending" {
            "; still being made (use --wait to wait for it)"
        } else {
            ""
        },
        if record.pruned.is_empty() {
            String::new()
        } else {
            format!("; pruned {}", record.pruned.join(", "))
        }
    );
    r.snapshot = Some(record);
    if let Some(n) = pruned.failed.last() {
        return Err(Failure::new(
            codes::PRUNE_FAILED,
            format!(
                "snapshot {} was taken; pruning {} failed: {}",
                snap.name, n.id, n.failure.message
            ),
        ));
    }
    Ok(Outcome::changed(r.state.unwrap_or(State::Created), msg))
}

/// After a failed snapshot that was sent: the snapshot of this run's name,
/// if Compute Engine made one, is deleted when it ended `FAILED` (nothing
/// half-done is kept; it is ours, by its name); one still being made, or
/// made after all, is left and named in the failure.
async fn clean_up(run: &Run, project: &str, name: &str, f: Failure) -> Failure {
    let more = match run.api.snapshot(project, name).await {
        Ok(None) => return f,
        Ok(Some(s)) if s.state == "error" => {
            // A deadline of its own, as long as the run's (--timeout): the
            // failure may have come after a long wait.
            let deadline = Deadline::start(run.deadline.timeout());
            match run.api.delete_snapshot(project, name, &deadline).await {
                Ok(()) => format!("the failed snapshot {name} was deleted"),
                Err(e) => format!(
                    "deleting the failed snapshot {name} failed too: {}",
                    e.message
                ),
            }
        }
        Ok(Some(s)) => format!("snapshot {name} is {} and was left alone", s.state),
        Err(e) => format!(
            "whether snapshot {name} exists is unknown: {}",
            e.failure.message
        ),
    };
    Failure::new(f.code, format!("{}; {more}", f.message))
}

/// `disk-create --from-snapshot`: refuses a target whose disk (the one the
/// snapshot was taken of) is still attached (`original-attached`: nothing
/// is made); finds each target's snapshot (`latest`:
/// the newest completed one of its disk and deployment; a name: which must
/// be of its disk and deployment), then makes the record and its target
/// name the new disk, `<disk>-restored-<time>`, with `restored_from` and
/// the snapshot's size; the old disk is left alone. A record whose snapshot
/// is not found fails `no-such-snapshot`.
pub async fn restore_names(
    run: &Run,
    from: &str,
    records: &mut [Record],
    targets: &mut [Result<Target, Failure>],
) {
    let listed = list_all(run, targets.iter().flatten()).await;
    // The disks the snapshots were taken of: one still attached is never
    // restored beside (its copy would carry the same filesystem UUID).
    let originals = disk::find_disks(run, targets).await;
    for ((r, target), original) in records.iter_mut().zip(targets.iter_mut()).zip(originals) {
        if let (Ok(t), Ok(Some((d, _)))) = (&*target, &original)
            && !d.users.is_empty()
        {
            let f = Failure::new(
                codes::ORIGINAL_ATTACHED,
                format!(
                    "disk {} is still attached to {}: a disk restored from its snapshot holds a filesystem with the same UUID, which must never be attached beside it; take it down first (scripts/down: unmount and detach it), then restore. Nothing was made",
                    t.disk,
                    d.users.join(", ")
                ),
            );
            *target = Err(f);
            continue;
        }
        let Ok(t) = target else { continue };
        let found = of_disk(&listed, t).and_then(|snaps| {
            snaps
                .into_iter()
                .filter(|s| s.state == "completed")
                .find(|s| from == "latest" || s.name == from)
                .ok_or_else(|| {
                    Failure::new(
                        codes::NO_SUCH_SNAPSHOT,
                        match from {
                            "latest" => format!(
                                "disk {} has no completed snapshot of deployment {}",
                                t.disk, t.deployment
                            ),
                            name => format!(
                                "no completed snapshot {name} of disk {} in deployment {}",
                                t.disk, t.deployment
                            ),
                        },
                    )
                })
        });
        match found {
            Ok(snap) => {
                let new = restored_name(&t.disk, &snap);
                let disk = std::mem::replace(&mut t.disk, new);
                r.disk = Some(t.disk.clone());
                r.disk_id = None;
                r.size_bytes = Some(snap.size);
                t.restore = Some(Restore {
                    snapshot: snap.name.clone(),
                    size_gb: i64::try_from(snap.size >> 30).unwrap_or(i64::MAX),
                });
                r.restored_from = Some(RestoredFrom {
                    snapshot: snap.name,
                    disk,
                });
            }
            Err(f) => *target = Err(f),
        }
    }
}

/// The snapshot a new disk is made from.
#[derive(Debug, Clone)]
pub struct Restore {
    /// The snapshot's name.
    pub snapshot: String,
    /// Its disk's size, GB (GiB).
    pub size_gb: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_labels_read_back() {
        let t = Stamp(1_795_746_912_123);
        assert_eq!(time_label(t), "20261127-023512-123");
        assert_eq!(ms_of_label(&time_label(t)), Some(t.0));
        assert_eq!(
            ms_of_label(&time_label(Stamp(951_782_400_000))),
            Some(951_782_400_000)
        );
        assert_eq!(ms_of_label("2026-11-27"), None);
    }

    #[test]
    fn names_fit_compute_engine() {
        let long = "d".repeat(60);
        let n = fit_name(&long, "-20261127-023512-123-abcd");
        assert!(n.len() <= MAX_NAME, "{n}");
        assert_ne!(n, fit_name(&"d".repeat(61), "-20261127-023512-123-abcd"));
        assert_eq!(fit_name("data-0", "-x"), "data-0-x");
    }
}
