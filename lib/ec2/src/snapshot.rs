//! `disk-snapshot` on EC2: plan, freeze and send, wait, prune.
//!
//! * **plan**: the records' volumes are looked up as for the other
//!   operations ([`volume::find_volumes`]: another deployment's volume is
//!   never touched); the snapshots of each deployment are listed in one
//!   DescribeSnapshots (owner `self`, tagged with the deployment). A
//!   volume's filesystem is looked for on this node only when the volume
//!   is attached to this instance (its id from IMDS), with the attach name
//!   DescribeVolumes gives ([`freeze::find_mounted`]: the volume's NVMe
//!   link or attach name, its serial and size, the mount table; a device
//!   proven the volume's by its serial or the record's filesystem UUID):
//!   mounted here, it is frozen; attached here but not mounted, or not
//!   attached at all, it needs no freeze; attached to another instance (or
//!   this one unknown), not found here, or not provably the volume's, it
//!   cannot be frozen, and the record fails `freeze-failed` unless
//!   `--no-freeze`. The node lock ([`NodeLock`]) is held from the first
//!   look through the last thaw whenever something is frozen.
//! * **freeze and send**: for each record, at most `--concurrency` at once:
//!   flush and freeze ([`Frozen`]), CreateSnapshot (tagged with the
//!   deployment, node, disk, time and tool), thaw as soon as it returns:
//!   its point in time is fixed then. The call is abandoned, and the
//!   filesystem thawed, at `--freeze-timeout` or on a signal.
//! * **wait** (`--wait`, or retention): every new snapshot until
//!   `completed`, in one poll loop (one DescribeSnapshots for all still
//!   pending, whatever their deployment) under `--wait-timeout`, with its
//!   progress (n of m complete) on stderr. A snapshot still pending then is
//!   left.
//! * **prune**: retention over the snapshots of the same disk (the record's
//!   `disk`) and deployment only, never the new one, and only once the new
//!   one is complete; the DeleteSnapshot calls of all records at most
//!   `--concurrency` at once, every failure reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use appscale_persist::codes;
use appscale_persist::freeze::{self, Frozen, Here};
use appscale_persist::lock::NodeLock;
use appscale_persist::provider::disk_of;
use appscale_persist::record::{Record, Snapshot, State};
use appscale_persist::snapshot::{Candidate, Marks, Pruned, SnapshotArgs, Stamp};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{
    ApiError, Deadline, Fault, Unfinished, call_each, list_into, poll_until_with, prune_all,
};
use aws_sdk_ec2::types::{
    Filter, ResourceType, SnapshotState, Tag, TagSpecification, VolumeAttachmentState,
};

use crate::api::{Api, MAX_IDS, api_error, too_soon};
use crate::owner::{TAG_DEPLOYMENT, TAG_NODE};
use crate::{POLL, Run, trace, volume};

/// The disk (the record's `disk`) a snapshot was taken of.
pub const TAG_DISK: &str = "appscale-persist:disk";
/// When it was taken (RFC 3339).
pub const TAG_TIME: &str = "appscale-persist:time";
/// The tool that took it.
pub const TAG_TOOL: &str = "appscale-persist:tool";

/// An image (AMI) uses the snapshot, so it cannot be deleted
/// (`InvalidSnapshot.InUse`): set when a DeleteSnapshot was refused so,
/// and from then on retention neither counts nor deletes it.
pub const TAG_IN_USE: &str = "appscale-persist:used-by-image";

/// Every snapshot's description starts so, followed by the JSON of whose
/// it is (deployment, node, disk, time): on Eucalyptus, whose
/// CreateSnapshot takes no tags, a snapshot left untagged is found by it
/// and tagged ([`crate::pending`]).
pub const DESCRIPTION_PREFIX: &str = "appscale-persist ";

/// The AWS error code of a CreateSnapshot of a volume snapshotted
/// seconds ago.
const RATE_EXCEEDED: &str = "SnapshotCreationPerVolumeRateExceeded";

/// The AWS error code of a DeleteSnapshot of a snapshot an image uses.
const IN_USE: &str = "InvalidSnapshot.InUse";

/// A snapshot of ours, as DescribeSnapshots gives it.
#[derive(Debug, Clone)]
pub struct Snap {
    /// `snap-...`.
    pub id: String,
    /// The disk tag.
    pub disk: String,
    /// Start time, ms since the epoch.
    pub ms: u64,
    /// Volume size, bytes.
    pub size: u64,
    /// `pending`, `completed`, `error`, ...
    pub state: String,
    /// An image uses it ([`TAG_IN_USE`]): kept, and not counted.
    pub in_use: bool,
}

impl Snap {
    fn record(&self) -> Snapshot {
        Snapshot::listed(&self.id, Stamp(self.ms).rfc3339(), self.size, &self.state)
    }

    /// What retention weighs it as; none for one an image uses.
    fn candidate(self) -> Option<Candidate> {
        (!self.in_use).then(|| Candidate::new(self.id, self.ms, self.state))
    }
}

/// The tags of a snapshot of `disk` of `deployment`'s `node`, taken at
/// `time`.
pub fn snapshot_tags(
    deployment: &str,
    node: &str,
    disk: &str,
    time: &str,
) -> Vec<(String, String)> {
    [
        ("Name", format!("{disk}@{time}")),
        (TAG_DEPLOYMENT, deployment.to_string()),
        (TAG_NODE, node.to_string()),
        (TAG_DISK, disk.to_string()),
        (TAG_TIME, time.to_string()),
        (TAG_TOOL, appscale_persist::snapshot::TOOL.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The description of a snapshot of `p`, taken at `time`.
fn description(p: &Disk, time: &str) -> String {
    let whose = serde_json::json!({
        "deployment": p.deployment, "node": p.node, "disk": p.disk, "time": time,
    });
    format!("{DESCRIPTION_PREFIX}{whose}")
}

/// The tags a description made by [`description`] says, if it is one.
pub fn tags_of_description(d: &str) -> Option<Vec<(String, String)>> {
    let whose: serde_json::Value =
        serde_json::from_str(d.strip_prefix(DESCRIPTION_PREFIX)?).ok()?;
    let field = |k: &str| whose[k].as_str().map(str::to_string);
    Some(snapshot_tags(
        &field("deployment")?,
        &field("node").unwrap_or_default(),
        &field("disk")?,
        &field("time")?,
    ))
}

/// The snapshot as [`Snap`], when this toolkit took it: every tag
/// disk-snapshot puts on one ([`Marks::ours`]). Any other snapshot, even
/// one tagged with the deployment, is not ours, and is never counted,
/// pruned or restored from.
fn snap_of(s: &aws_sdk_ec2::types::Snapshot) -> Option<Snap> {
    let tag = |k: &str| {
        s.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    let (deployment, disk, time, tool) = (
        tag(TAG_DEPLOYMENT),
        tag(TAG_DISK),
        tag(TAG_TIME),
        tag(TAG_TOOL),
    );
    let marks = Marks {
        deployment: deployment.as_deref(),
        disk: disk.as_deref(),
        time: time.as_deref().and_then(Stamp::parse_rfc3339),
        tool: tool.as_deref(),
    };
    if !marks.ours() {
        return None;
    }
    Some(Snap {
        id: s.snapshot_id()?.to_string(),
        disk: tag(TAG_DISK).unwrap_or_default(),
        ms: s
            .start_time()
            .and_then(|t| t.to_millis().ok())
            .map_or(0, |m| m.max(0) as u64),
        size: (s.volume_size().unwrap_or(0).max(0) as u64) << 30,
        state: s
            .state()
            .map_or("unknown", SnapshotState::as_str)
            .to_string(),
        in_use: tag(TAG_IN_USE).is_some(),
    })
}

impl Api {
    /// This account's snapshots tagged for `deployment`, newest first, every
    /// page followed (EC2 pages DescribeSnapshots: a partial list would
    /// make retention and `--from-snapshot latest` wrong). On Eucalyptus,
    /// the deployment's snapshots left untagged are tagged first
    /// ([`Api::tag_untagged_snapshots`]; with `check`, only said).
    pub async fn snapshots(&self, deployment: &str, check: bool) -> Result<Vec<Snap>, ApiError> {
        if self.kind == appscale_persist::record::ProviderKind::Euca {
            self.tag_untagged_snapshots(deployment, check).await?;
        }
        trace(format_args!(
            "DescribeSnapshots {TAG_DEPLOYMENT}={deployment}"
        ));
        let mine = Filter::builder()
            .name(format!("tag:{TAG_DEPLOYMENT}"))
            .values(deployment)
            .build();
        let found = self.describe_snapshots(vec![mine], &[]).await?;
        let mut all: Vec<Snap> = found.iter().filter_map(snap_of).collect();
        all.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| b.id.cmp(&a.id)));
        Ok(all)
    }

    /// This account's snapshots `ids`, whatever their deployment.
    async fn snapshots_by_id(&self, ids: &[String]) -> Result<Vec<Snap>, ApiError> {
        trace(format_args!("DescribeSnapshots {}", ids.join(" ")));
        let found = self.describe_snapshots(Vec::new(), ids).await?;
        Ok(found.iter().filter_map(snap_of).collect())
    }

    /// This account's snapshots matching `filters` (or named by `ids`, at
    /// most [`MAX_IDS`] a call), every page followed: by filters, pages of
    /// up to [`MAX_IDS`] (EC2 refuses MaxResults beside ids).
    pub(crate) async fn describe_snapshots(
        &self,
        filters: Vec<Filter>,
        ids: &[String],
    ) -> Result<Vec<aws_sdk_ec2::types::Snapshot>, ApiError> {
        let by_id: Vec<Option<Vec<String>>> = if ids.is_empty() {
            vec![None]
        } else {
            ids.chunks(MAX_IDS).map(|c| Some(c.to_vec())).collect()
        };
        let mut out = Vec::new();
        for ids in by_id {
            let page_size = ids.is_none().then_some(MAX_IDS as i32);
            let mut token = None;
            loop {
                let page = self
                    .client
                    .describe_snapshots()
                    .owner_ids("self")
                    .set_filters((!filters.is_empty()).then(|| filters.clone()))
                    .set_snapshot_ids(ids.clone())
                    .set_max_results(page_size)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeSnapshots", e))?;
                out.extend(page.snapshots().iter().cloned());
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// CreateSnapshot of `p`'s volume, tagged (on Eucalyptus, whose
    /// CreateSnapshot takes no tags, by a CreateTags right after; its
    /// description says whose it is meanwhile); the snapshot as started.
    /// EC2 refusing it because the volume was snapshotted seconds ago is
    /// `snapshot-too-soon`.
    async fn create_snapshot(&self, p: &Disk, time: &str) -> Result<Snap, ApiError> {
        trace(format_args!(
            "CreateSnapshot {} {TAG_DISK}={}",
            p.vol, p.disk
        ));
        let tags = snapshot_tags(&p.deployment, &p.node, &p.disk, time);
        let euca = self.kind == appscale_persist::record::ProviderKind::Euca;
        let spec = (!euca).then(|| {
            let mut spec = TagSpecification::builder().resource_type(ResourceType::Snapshot);
            for (k, v) in &tags {
                spec = spec.tags(Tag::builder().key(k).value(v).build());
            }
            spec.build()
        });
        let out = self
            .client
            .create_snapshot()
            .volume_id(&p.vol)
            .description(description(p, time))
            .set_tag_specifications(spec.map(|s| vec![s]))
            .send()
            .await
            .map_err(|e| {
                too_soon(
                    api_error(&format!("CreateSnapshot {}", p.vol), e),
                    RATE_EXCEEDED,
                    codes::SNAPSHOT_TOO_SOON,
                    "EC2 takes a volume's snapshots some seconds apart; nothing was taken, and nothing is wrong with the volume: run disk-snapshot again later",
                )
            })?;
        let id = out.snapshot_id().map(str::to_string).ok_or_else(|| {
            let f = Failure::new(codes::API_ERROR, "CreateSnapshot returned no snapshot id");
            ApiError::new(Fault::ServerError, f)
        })?;
        if euca {
            self.tag(&id, &tags).await?;
        }
        Ok(Snap {
            id,
            disk: p.disk.clone(),
            ms: out
                .start_time()
                .and_then(|t| t.to_millis().ok())
                .map_or_else(|| Stamp::now().0, |m| m.max(0) as u64),
            size: out
                .volume_size()
                .map_or(p.size, |g| (g.max(0) as u64) << 30),
            state: out
                .state()
                .map_or("pending", SnapshotState::as_str)
                .to_string(),
            in_use: false,
        })
    }

    /// DeleteSnapshot; whether it was deleted. One an image uses
    /// (`InvalidSnapshot.InUse`) is kept: it is tagged [`TAG_IN_USE`] and
    /// said once (a warning), and from then on retention leaves it out.
    async fn delete_snapshot(&self, id: &str) -> Result<bool, ApiError> {
        trace(format_args!("DeleteSnapshot {id}"));
        let e = match self.client.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => return Ok(true),
            Err(e) => api_error(&format!("DeleteSnapshot {id}"), e),
        };
        if e.failure.code != IN_USE {
            return Err(e);
        }
        self.tag(id, &[(TAG_IN_USE.to_string(), "yes".to_string())])
            .await?;
        appscale_persist::log::warn(format_args!(
            "{} [{IN_USE}]: an image (AMI) uses snapshot {id}, so it is kept; retention no longer counts it (tag {TAG_IN_USE}). Deregister the image to let it go",
            e.failure.message
        ));
        Ok(false)
    }
}

/// How a snapshot is made consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Consistency {
    /// The filesystem is mounted here, at this mountpoint, from this device
    /// (major, minor): frozen.
    Freeze(PathBuf, (u64, u64)),
    /// Nothing to freeze: the volume is not attached, or its filesystem is
    /// not mounted (on this node, where it is attached).
    NotMounted,
    /// `--no-freeze`: crash-consistent.
    NotFrozen,
}

impl Consistency {
    /// `snapshot.freeze`.
    fn label(&self) -> &'static str {
        match self {
            Consistency::Freeze(..) => "frozen",
            Consistency::NotMounted => "not-mounted",
            Consistency::NotFrozen => "not-frozen",
        }
    }

    /// For messages.
    fn describe(&self) -> String {
        match self {
            Consistency::Freeze(m, _) => format!("{} frozen meanwhile", m.display()),
            Consistency::NotMounted => "not mounted: no freeze needed".into(),
            Consistency::NotFrozen => "NOT frozen (--no-freeze)".into(),
        }
    }
}

/// A record's volume, as the plan names it.
#[derive(Debug, Clone)]
struct Disk {
    vol: String,
    disk: String,
    deployment: String,
    node: String,
    size: u64,
}

/// What disk-snapshot does for one record, decided before any call.
#[derive(Debug, Clone)]
enum Plan {
    /// `--list`: list the volume's snapshots.
    List(Disk),
    /// Take a snapshot of the volume, made consistent so.
    Take(Disk, Consistency),
}

impl Plan {
    /// The record's volume.
    fn disk(&self) -> &Disk {
        match self {
            Plan::List(d) | Plan::Take(d, _) => d,
        }
    }

    /// How the snapshot is made consistent (`--list`: nothing is taken).
    fn consistency(&self) -> &Consistency {
        match self {
            Plan::List(_) => &Consistency::NotMounted,
            Plan::Take(_, c) => c,
        }
    }
}

/// This machine's instance id (IMDS), or why it is not known: only a
/// volume attached to it can be looked for here.
type ThisId = Result<String, Failure>;

/// The instances a volume is attached to (not detached), each with the
/// attach name DescribeVolumes gives.
type Attached = [(String, String)];

/// How the snapshot of `r`'s volume (attached as `attached`: instance and
/// device name) is made consistent. Its filesystem is looked for on this
/// machine ([`freeze::find_mounted`]) only when the volume is attached to
/// this instance (`this`): every instance's first data volume has the same
/// attach name, so a device found here by that name alone may be another
/// instance's volume's namesake. `lock` is taken (once, and kept) before
/// the first look: the node lock, held from the look until the thaw.
fn consistency(
    run: &Run,
    r: &Record,
    attached: &Attached,
    this: Option<&ThisId>,
    lock: &mut Option<Result<NodeLock, Failure>>,
    no_freeze: bool,
) -> Result<Consistency, Failure> {
    if attached.is_empty() {
        // Not attached to any instance: mounted nowhere.
        return Ok(Consistency::NotMounted);
    }
    let elsewhere = |why: String| not_here(r, attached, &why, no_freeze);
    let me = match this {
        Some(Ok(me)) => me,
        Some(Err(f)) => {
            return elsewhere(format!(
                "but this machine's instance could not be learnt from the metadata service ({}), so the volume is not provably on this node",
                f.message
            ));
        }
        None => return elsewhere("but this machine's instance is not known".into()),
    };
    let Some((_, dev)) = attached.iter().find(|(i, _)| i == me) else {
        return elsewhere(format!(
            "not to this instance ({me}): it is not on this node"
        ));
    };
    // The attach name the API gives, never the record's (stale) one.
    let mut probe = r.clone();
    probe.provider = Some(run.cfg.kind);
    probe.attached_as = (!dev.is_empty()).then(|| dev.clone());
    if let Err(f) = lock
        .get_or_insert_with(|| freeze::node_lock(run.check))
        .as_ref()
    {
        return Err(f.clone());
    }
    match (freeze::find_mounted(&probe), no_freeze) {
        (
            Ok(Here::Mounted {
                mountpoint, dev, ..
            }),
            false,
        ) => Ok(Consistency::Freeze(mountpoint, dev)),
        (Ok(Here::Unmounted(_)), _) => Ok(Consistency::NotMounted),
        (_, true) => Ok(Consistency::NotFrozen),
        (Ok(Here::Absent), false) => elsewhere(format!(
            "this instance ({me}), but its device is not on this node"
        )),
        (Err(f), false) => Err(f),
    }
}

/// A volume attached where its filesystem cannot be frozen from here
/// (`why`): crash-consistent with `--no-freeze`, else `freeze-failed`.
fn not_here(
    r: &Record,
    attached: &Attached,
    why: &str,
    no_freeze: bool,
) -> Result<Consistency, Failure> {
    if no_freeze {
        return Ok(Consistency::NotFrozen);
    }
    let vol = r.disk_id().unwrap_or("?");
    let to = attached
        .iter()
        .map(|(i, d)| {
            if d.is_empty() {
                i.clone()
            } else {
                format!("{i} as {d}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(Failure::new(
        codes::FREEZE_FAILED,
        format!(
            "{vol} is attached to {to}, {why}, so its filesystem cannot be frozen from here: run disk-snapshot on that node, or pass --no-freeze (a crash-consistent snapshot, which the record notes); nothing taken"
        ),
    ))
}

/// The node lock, held from the look at the node through the thaw, and
/// only while something is to be frozen.
type Held = Option<Result<NodeLock, Failure>>;

/// Runs disk-snapshot over `records` (placed, or failed to be): plan,
/// then list (`--list`), describe (`--check`), or send, wait, prune and
/// finish.
pub async fn snapshot(
    run: &Run,
    args: &SnapshotArgs,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<StepResult> {
    let (mut plans, lock) = plan(run, args, records, placed).await;
    let listed = list_deployments(run, args, &plans).await;
    let each = records.iter_mut().zip(plans.iter());
    if args.list {
        return each.map(|(r, p)| list_one(r, p, &listed)).collect();
    }
    let now = Stamp::now();
    if run.check {
        return each
            .map(|(r, p)| describe(args, r, p, &listed, now))
            .collect();
    }
    let taken = send(run, args, &mut plans, now).await;
    // Every filesystem frozen is thawed by now.
    drop(lock);
    let waited = if args.waits() {
        wait_completed(run, args, &taken).await
    } else {
        HashMap::new()
    };
    let settled: Vec<Result<Vec<String>, Failure>> = records
        .iter_mut()
        .zip(&plans)
        .zip(&taken)
        .map(|((r, p), snap)| settle(args, r, p, snap.as_ref(), &waited, &listed, now))
        .collect();
    let pruned = prune(run, &settled).await;
    records
        .iter_mut()
        .zip(plans)
        .zip(settled)
        .zip(pruned)
        .map(|(((r, p), settled), pruned)| finish(r, p, settled, pruned))
        .collect()
}

/// The plan of every record, from its volume ([`volume::find_volumes`]),
/// and the node lock when something is to be frozen.
async fn plan(
    run: &Run,
    args: &SnapshotArgs,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> (Vec<Result<Plan, Failure>>, Held) {
    let found = volume::find_volumes(run, records, placed).await;
    // Which instance this is matters only for a volume attached somewhere.
    let attached_somewhere =
        !args.list && found.iter().flatten().any(|f| !attached(&f.vol).is_empty());
    let this: Option<ThisId> = attached_somewhere.then(|| crate::this_instance_id(&run.cfg));
    let mut lock: Held = None;
    let plans: Vec<Result<Plan, Failure>> = records
        .iter_mut()
        .zip(found)
        .map(|(r, f)| {
            let f = f?;
            volume::note(r, &f.vol);
            let on = attached(&f.vol);
            let take = match args.list {
                true => None,
                false => Some(consistency(
                    run,
                    r,
                    &on,
                    this.as_ref(),
                    &mut lock,
                    args.no_freeze,
                )?),
            };
            let disk = Disk {
                vol: volume::id(&f.vol).to_string(),
                disk: disk_of(r)?.to_string(),
                deployment: run.deployment_of(r),
                node: r.node.clone().unwrap_or_default(),
                size: (f.vol.size().unwrap_or(0).max(0) as u64) << 30,
            };
            Ok(match take {
                None => Plan::List(disk),
                Some(c) => Plan::Take(disk, c),
            })
        })
        .collect();
    let freezes = plans
        .iter()
        .flatten()
        .any(|p| matches!(p.consistency(), Consistency::Freeze(..)));
    (plans, lock.filter(|_| freezes))
}

/// The instances `v` is attached to (not detached), with their attach
/// names.
fn attached(v: &aws_sdk_ec2::types::Volume) -> Vec<(String, String)> {
    v.attachments()
        .iter()
        .filter(|a| a.state() != Some(&VolumeAttachmentState::Detached))
        .map(|a| {
            (
                a.instance_id().unwrap_or("?").to_string(),
                a.device().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The snapshots of each deployment, by deployment.
type Listed = HashMap<String, Result<Vec<Snap>, Failure>>;

/// The snapshots of each planned record's deployment, one call each.
async fn list_deployments(
    run: &Run,
    args: &SnapshotArgs,
    plans: &[Result<Plan, Failure>],
) -> Listed {
    let mut listed = Listed::new();
    for p in plans.iter().flatten() {
        let deployment = &p.disk().deployment;
        if !listed.contains_key(deployment) {
            let l = run
                .api
                .snapshots(deployment, run.check || args.list)
                .await
                .map_err(Failure::from);
            listed.insert(deployment.clone(), l);
        }
    }
    listed
}

/// The snapshots of `d`'s disk among its deployment's, newest first.
fn earlier(listed: &Listed, d: &Disk) -> Result<Vec<Snap>, Failure> {
    let all = listed[&d.deployment].as_ref().map_err(Clone::clone)?;
    Ok(all.iter().filter(|s| s.disk == d.disk).cloned().collect())
}

/// `--list`: the record's disk's snapshots, into `listed`.
fn list_one(r: &mut Record, p: &Result<Plan, Failure>, listed: &Listed) -> StepResult {
    let p = p.as_ref().map_err(Clone::clone)?;
    let snaps = earlier(listed, p.disk())?;
    list_into(r, snaps.iter().map(Snap::record).collect())
}

/// `--check`: what the record's plan would do, retention included (run
/// once the new snapshot is complete).
fn describe(
    args: &SnapshotArgs,
    r: &mut Record,
    p: &Result<Plan, Failure>,
    listed: &Listed,
    now: Stamp,
) -> StepResult {
    let p = p.as_ref().map_err(Clone::clone)?;
    let d = p.disk();
    let earlier = earlier(listed, d)?.into_iter().filter_map(Snap::candidate);
    let new = Candidate::new("(new)", now.0, "completed");
    let pruned = args.retention().after(earlier, new, now.0);
    let msg = format!(
        "would take a snapshot of {} ({}){}",
        d.vol,
        p.consistency().describe(),
        if pruned.is_empty() {
            String::new()
        } else {
            format!("; would prune {}", pruned.join(", "))
        }
    );
    r.snapshot = Some(Snapshot {
        id: String::new(),
        time: now.rfc3339(),
        size: d.size,
        state: "planned".into(),
        freeze: Some(p.consistency().label().into()),
        method: None,
        pruned,
    });
    Ok(Outcome::changed(r.state.unwrap_or(State::Created), msg))
}

/// Takes every planned snapshot, at most `--concurrency` at once
/// ([`take`]); a record whose snapshot was not taken fails.
async fn send(
    run: &Run,
    args: &SnapshotArgs,
    plans: &mut [Result<Plan, Failure>],
    now: Stamp,
) -> Vec<Option<Snap>> {
    let api = run.api.clone();
    let limit = Duration::from_secs(args.freeze_timeout);
    let time = now.rfc3339();
    let take_it = |p: &Plan| match p {
        Plan::Take(d, c) => Some((d.clone(), c.clone(), time.clone())),
        Plan::List(_) => None,
    };
    call_each(run.cfg.concurrency, plans, take_it, move |(d, c, time)| {
        take(api.clone(), d, c, time, limit)
    })
    .await
}

/// Retention's deletes of every record ([`prune_all`]): DeleteSnapshot,
/// at most `--concurrency` at once; one an image uses is kept.
async fn prune(run: &Run, settled: &[Result<Vec<String>, Failure>]) -> Vec<Pruned> {
    let chosen = settled
        .iter()
        .map(|s| s.as_ref().map_or_else(|_| Vec::new(), Clone::clone))
        .collect();
    let api = run.api.clone();
    prune_all(run.cfg.concurrency, chosen, move |_, id| {
        let api = api.clone();
        async move { api.delete_snapshot(&id).await.map_err(|e| e.failure) }
    })
    .await
}

/// The record's outcome: its snapshot taken, and what retention pruned;
/// `prune-failed` when an older snapshot could not be deleted.
fn finish(
    r: &mut Record,
    p: Result<Plan, Failure>,
    settled: Result<Vec<String>, Failure>,
    pruned: Pruned,
) -> StepResult {
    settled?;
    let p = p?;
    let snap = r
        .snapshot
        .as_mut()
        .expect("settled records carry their snapshot");
    snap.pruned = pruned.deleted;
    let msg = format!(
        "took snapshot {} of {} ({}), {}{}",
        snap.id,
        p.disk().vol,
        p.consistency().describe(),
        snap.state,
        if snap.pruned.is_empty() {
            String::new()
        } else {
            format!("; pruned {}", snap.pruned.join(", "))
        }
    );
    if !pruned.failed.is_empty() {
        let errors: Vec<String> = pruned
            .failed
            .iter()
            .map(|n| format!("{} [{}]", n.failure.message, n.failure.code))
            .collect();
        return Err(Failure::new(
            codes::PRUNE_FAILED,
            format!(
                "{msg}; could not prune {} older snapshot(s): {}",
                errors.len(),
                errors.join("; ")
            ),
        ));
    }
    Ok(Outcome::changed(r.state.unwrap_or(State::Created), msg))
}

/// The error code of a DescribeSnapshots naming an id EC2 does not know
/// (yet, right after CreateSnapshot).
const NOT_FOUND: &str = "InvalidSnapshot.NotFound";

/// How often a CreateSnapshot made while frozen checks for a signal and
/// the freeze deadline.
const FROZEN_CHECK: Duration = Duration::from_millis(100);

/// Takes one snapshot of `d`: freezes (when planned), CreateSnapshot, thaws
/// as soon as it returns (its point in time is fixed then). Frozen, the call
/// is abandoned at the freeze deadline or on a signal, and the filesystem
/// thawed: the guard is dropped on every path out of here.
async fn take(
    api: Arc<Api>,
    d: Disk,
    c: Consistency,
    time: String,
    limit: Duration,
) -> Result<Snap, Failure> {
    let frozen = match &c {
        Consistency::Freeze(m, dev) => Some(Frozen::take(m, *dev, limit)?),
        _ => None,
    };
    let mut create = std::pin::pin!(api.create_snapshot(&d, &time));
    let Some(guard) = &frozen else {
        return create.await.map_err(Failure::from);
    };
    let abandoned = |why: String| {
        format!(
            "{why}: CreateSnapshot of {} abandoned and {} thawed; a snapshot may have been started meanwhile (tagged {TAG_TIME}={time}), which `disk-snapshot --list` shows: it is not known to be consistent",
            d.vol,
            guard.mountpoint().display()
        )
    };
    let result = loop {
        match tokio::time::timeout(FROZEN_CHECK, create.as_mut()).await {
            Ok(r) => break r.map_err(Failure::from),
            Err(_) => {
                if let Some(sig) = appscale_persist::interrupt::interrupted() {
                    let f = appscale_persist::interrupt::failure(sig);
                    break Err(Failure::new(f.code, abandoned(format!("stopped by {sig}"))));
                }
                if Instant::now() >= guard.deadline() {
                    break Err(Failure::new(
                        codes::FREEZE_TIMEOUT,
                        abandoned(format!(
                            "no answer within the freeze's limit ({}s, --freeze-timeout)",
                            limit.as_secs()
                        )),
                    ));
                }
            }
        }
    };
    drop(frozen);
    result
}

/// A snapshot taken, as last seen while waiting, with its failure if it
/// did not complete.
#[derive(Debug, Clone)]
struct Seen {
    snap: Snap,
    failure: Option<Failure>,
}

/// The wait's shared state: what was last seen of each snapshot (by id),
/// and those still pending.
struct Waiting {
    seen: Mutex<HashMap<String, Seen>>,
    pending: Mutex<Vec<String>>,
    total: usize,
}

impl Waiting {
    fn start(taken: &[Option<Snap>]) -> Waiting {
        let taken = taken.iter().flatten();
        Waiting {
            seen: Mutex::new(
                taken
                    .clone()
                    .map(|s| {
                        (
                            s.id.clone(),
                            Seen {
                                snap: s.clone(),
                                failure: None,
                            },
                        )
                    })
                    .collect(),
            ),
            pending: Mutex::new(
                taken
                    .clone()
                    .filter(|s| s.state != "completed")
                    .map(|s| s.id.clone())
                    .collect(),
            ),
            total: taken.count(),
        }
    }

    /// The ids still pending.
    fn pending(&self) -> Vec<String> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes one poll's answer (`found`): a snapshot missing from it is
    /// still pending; one `completed` is done; any other state than
    /// `pending` fails it. How many are done.
    fn update(&self, found: &[Snap]) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|id| {
            let entry = seen.get_mut(id).expect("every pending snapshot is seen");
            let Some(s) = found.iter().find(|s| &s.id == id) else {
                return true;
            };
            entry.snap = s.clone();
            match s.state.as_str() {
                "pending" => true,
                "completed" => false,
                state => {
                    let why = format!("snapshot {id} is {state}");
                    entry.failure = Some(Failure::new(codes::SNAPSHOT_FAILED, why));
                    false
                }
            }
        });
        self.total - pending.len()
    }

    /// Fails every snapshot still pending with `f`; what was seen of each.
    fn end(self, f: Option<Failure>) -> HashMap<String, Seen> {
        let mut seen = self
            .seen
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let pending = self
            .pending
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        for id in pending.iter().filter(|_| f.is_some()) {
            if let Some(entry) = seen.get_mut(id) {
                entry.failure = f.clone();
            }
        }
        seen
    }
}

/// Waits until every snapshot taken is `completed` (or fails), all in one
/// poll loop under `--wait-timeout`: each poll is one DescribeSnapshots for
/// those still pending. A snapshot EC2 does not show yet (not found, or
/// missing from the answer: eventual consistency right after
/// CreateSnapshot) is still pending. The snapshots last seen, each with its
/// failure if it did not complete.
async fn wait_completed(
    run: &Run,
    args: &SnapshotArgs,
    taken: &[Option<Snap>],
) -> HashMap<String, Seen> {
    let waiting = Waiting::start(taken);
    if waiting.total == 0 {
        return waiting.end(None);
    }
    let deadline = Deadline::start(Duration::from_secs(args.wait_timeout));
    let progress = deadline.progress("snapshots to complete", waiting.total as u64);
    let round = || async {
        let ids = waiting.pending();
        // Right after CreateSnapshot, EC2 may not know the new ids yet
        // (eventual consistency): InvalidSnapshot.NotFound, or an id
        // missing from the answer, means not visible yet, so still pending
        // until the deadline; never a failure.
        let found = if ids.is_empty() {
            Vec::new()
        } else {
            match run.api.snapshots_by_id(&ids).await {
                Ok(found) => found,
                Err(e) if e.failure.code == NOT_FOUND => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        let done = waiting.update(&found);
        progress.set_done(done as u64);
        Ok::<_, ApiError>(if done == waiting.total {
            Poll::Ready(())
        } else {
            Poll::Pending
        })
    };
    let waited = poll_until_with(&progress, deadline.schedule(POLL), round).await;
    waiting.end(waited.err().map(|u| unfinished(u, &deadline)))
}

/// The failure of a snapshot still pending when the wait ended.
fn unfinished(u: Unfinished, deadline: &Deadline) -> Failure {
    match u {
        Unfinished::TimedOut { last_failure } => Failure::new(
            codes::SNAPSHOT_PENDING,
            format!(
                "the snapshot was started but not complete within {}s (--wait-timeout){}: it is left to complete, never deleted, and nothing older was pruned",
                deadline.timeout().as_secs(),
                last_failure.map_or(String::new(), |f| format!(
                    "; the last poll failed: {} [{}]",
                    f.message, f.code
                ))
            ),
        ),
        Unfinished::Failed(f) | Unfinished::Interrupted(f) => Failure::new(
            // Passed through: the poll's own code (an API's, or a signal's).
            f.code.clone(),
            format!(
                "{}; the snapshot was started and is left to complete, never deleted; nothing older was pruned",
                f.message
            ),
        ),
    }
}

/// Sets the record's `snapshot` (the one taken, as last seen) and says
/// which older snapshots retention deletes: none unless the new one is
/// complete, never the new one, only the same disk's of the same
/// deployment (`listed`).
fn settle(
    args: &SnapshotArgs,
    r: &mut Record,
    p: &Result<Plan, Failure>,
    taken: Option<&Snap>,
    waited: &HashMap<String, Seen>,
    listed: &Listed,
    now: Stamp,
) -> Result<Vec<String>, Failure> {
    let p = p.as_ref().map_err(Clone::clone)?;
    let taken = taken.ok_or_else(|| Failure::new(codes::INTERNAL, "no snapshot was sent"))?;
    let Seen { snap, failure } = waited.get(&taken.id).cloned().unwrap_or(Seen {
        snap: taken.clone(),
        failure: None,
    });
    let mut record = snap.record();
    record.freeze = Some(p.consistency().label().into());
    r.snapshot = Some(record);
    if let Some(f) = failure {
        return Err(f);
    }
    if !args.retention().is_set() {
        return Ok(Vec::new());
    }
    if snap.state != "completed" {
        return Err(Failure::new(
            codes::INTERNAL,
            format!("snapshot {} is {}: not pruning", snap.id, snap.state),
        ));
    }
    let earlier = earlier(listed, p.disk())?
        .into_iter()
        .filter_map(Snap::candidate);
    let new = Candidate::new(snap.id.clone(), snap.ms.max(now.0), snap.state.clone());
    Ok(args.retention().after(earlier, new, now.0))
}

/// `disk-create --from-snapshot`: refuses a record whose volume (the one
/// the snapshot was taken of) is still attached (`original-attached`:
/// nothing is made); finds each placed record's snapshot (`latest`: the
/// newest of its disk and deployment; an id: which must be of its disk),
/// then makes the record name the new volume,
/// `<disk>-restored-<time>`, with `restored_from` and the snapshot's size;
/// the old volume is left alone. A record whose snapshot is not found fails
/// `no-such-snapshot`.
pub async fn restore_names(
    run: &Run,
    from: &str,
    records: &mut [Record],
    placed: &mut [Result<(), Failure>],
) {
    let mut listed: HashMap<String, Result<Vec<Snap>, Failure>> = HashMap::new();
    // The volumes the snapshots were taken of: one still attached is never
    // restored beside (its copy would carry the same filesystem UUID).
    let originals = volume::find_volumes(run, records, placed.to_vec()).await;
    for ((r, placed), original) in records.iter_mut().zip(placed.iter_mut()).zip(originals) {
        if placed.is_err() {
            continue;
        }
        if let Ok(f) = original
            && let Some(a) = f
                .vol
                .attachments()
                .iter()
                .find(|a| a.state() != Some(&VolumeAttachmentState::Detached))
        {
            *placed = Err(Failure::new(
                codes::ORIGINAL_ATTACHED,
                format!(
                    "{} is still attached to {}: a volume restored from its snapshot holds a filesystem with the same UUID, which must never be attached beside it; take it down first (scripts/down: unmount and detach it), then restore. Nothing was made",
                    volume::what(&f.vol),
                    a.instance_id().unwrap_or("?")
                ),
            ));
            continue;
        }
        let deployment = run.deployment_of(r);
        if !listed.contains_key(&deployment) {
            let l = run
                .api
                .snapshots(&deployment, run.check)
                .await
                .map_err(Failure::from);
            listed.insert(deployment.clone(), l);
        }
        let found = (|| {
            let disk = disk_of(r)?.to_string();
            let all = listed[&deployment].as_ref().map_err(Clone::clone)?;
            let snap = all
                .iter()
                .filter(|s| s.state == "completed")
                .find(|s| s.disk == disk && (from == "latest" || s.id == from))
                .ok_or_else(|| {
                    Failure::new(
                        codes::NO_SUCH_SNAPSHOT,
                        match from {
                            "latest" => format!(
                                "{disk} has no completed snapshot of deployment {deployment}"
                            ),
                            id => format!(
                                "no completed snapshot {id} of {disk} in deployment {deployment}"
                            ),
                        },
                    )
                })?;
            Ok::<_, Failure>((disk, snap.clone()))
        })();
        match found {
            Ok((disk, snap)) => {
                r.disk = Some(format!("{disk}-restored-{}", Stamp(snap.ms).compact()));
                r.disk_id = None;
                r.size_bytes = Some(snap.size);
                r.restored_from = Some(appscale_persist::record::RestoredFrom {
                    snapshot: snap.id,
                    disk,
                });
            }
            Err(f) => *placed = Err(f),
        }
    }
}
