//! `disk-snapshot` on EC2: plan, send, wait, finish, prune.
//!
//! * **plan**: the records' volumes are looked up as for the other
//!   operations ([`volume::find_volumes`]: another deployment's volume is
//!   never touched); the snapshots of each deployment are listed in one
//!   DescribeSnapshots (owner `self`, tagged with the deployment).
//! * **send**: CreateSnapshot, tagged with the deployment, node, disk, time
//!   and tool, at most `--concurrency` at once.
//! * **wait**: every new snapshot until `completed`, in one poll loop (one
//!   DescribeSnapshots for all still pending) under the run's deadline.
//! * **finish**: retention over the snapshots of the same disk (the
//!   record's `disk`) and deployment only, never the new one; DeleteSnapshot
//!   for each pruned.
//!
//! The filesystem cannot be frozen from here: a snapshot of an EBS volume
//! needs `--no-freeze` (crash-consistent; the record says `not-frozen`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use appscale_persist::codes;
use appscale_persist::provider::disk_of;
use appscale_persist::record::{Record, Snapshot, State};
use appscale_persist::snapshot::{SnapshotArgs, Stamp};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{ApiError, Fault, call_each, poll_until_with};
use aws_sdk_ec2::types::{Filter, ResourceType, SnapshotState, Tag, TagSpecification};

use crate::api::{Api, api_error};
use crate::owner::{TAG_DEPLOYMENT, TAG_NODE};
use crate::{POLL, Run, trace, volume};

/// The disk (the record's `disk`) a snapshot was taken of.
pub const TAG_DISK: &str = "appscale-persist:disk";
/// When it was taken (RFC 3339).
pub const TAG_TIME: &str = "appscale-persist:time";
/// The tool that took it.
pub const TAG_TOOL: &str = "appscale-persist:tool";

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
}

impl Snap {
    fn record(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            time: Stamp(self.ms).rfc3339(),
            size: self.size,
            state: self.state.clone(),
            freeze: None,
            method: None,
            pruned: Vec::new(),
        }
    }
}

fn snap_of(s: &aws_sdk_ec2::types::Snapshot) -> Option<Snap> {
    let tag = |k: &str| {
        s.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
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
    })
}

impl Api {
    /// This account's snapshots tagged for `deployment` (and `ids`, when
    /// given), newest first.
    pub async fn snapshots(&self, deployment: &str, ids: &[String]) -> Result<Vec<Snap>, ApiError> {
        trace(format_args!(
            "DescribeSnapshots {TAG_DEPLOYMENT}={deployment} {}",
            ids.join(" ")
        ));
        let mut req = self.client.describe_snapshots().owner_ids("self").filters(
            Filter::builder()
                .name(format!("tag:{TAG_DEPLOYMENT}"))
                .values(deployment)
                .build(),
        );
        if !ids.is_empty() {
            req = req.set_snapshot_ids(Some(ids.to_vec()));
        }
        let out = req
            .send()
            .await
            .map_err(|e| api_error("DescribeSnapshots", e))?;
        let mut all: Vec<Snap> = out.snapshots().iter().filter_map(snap_of).collect();
        all.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| b.id.cmp(&a.id)));
        Ok(all)
    }

    /// CreateSnapshot of `p`'s volume, tagged; its id.
    async fn create_snapshot(&self, p: &Plan, time: &str) -> Result<String, ApiError> {
        trace(format_args!(
            "CreateSnapshot {} {TAG_DISK}={}",
            p.vol, p.disk
        ));
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(tag("Name", &format!("{}@{time}", p.disk)))
            .tags(tag(TAG_DEPLOYMENT, &p.deployment))
            .tags(tag(TAG_NODE, &p.node))
            .tags(tag(TAG_DISK, &p.disk))
            .tags(tag(TAG_TIME, time))
            .tags(tag(TAG_TOOL, "disk-snapshot"))
            .build();
        let out = self
            .client
            .create_snapshot()
            .volume_id(&p.vol)
            .description(format!("appscale-persist: {} of {}", p.disk, p.deployment))
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| api_error(&format!("CreateSnapshot {}", p.vol), e))?;
        out.snapshot_id().map(str::to_string).ok_or_else(|| {
            let f = Failure::new(codes::API_ERROR, "CreateSnapshot returned no snapshot id");
            ApiError::new(Fault::ServerError, f)
        })
    }

    /// DeleteSnapshot.
    async fn delete_snapshot(&self, id: &str) -> Result<(), ApiError> {
        trace(format_args!("DeleteSnapshot {id}"));
        self.client
            .delete_snapshot()
            .snapshot_id(id)
            .send()
            .await
            .map_err(|e| api_error(&format!("DeleteSnapshot {id}"), e))?;
        Ok(())
    }
}

/// What disk-snapshot does for one record, decided before any call.
#[derive(Debug, Clone)]
pub struct Plan {
    vol: String,
    disk: String,
    deployment: String,
    node: String,
    size: u64,
}

/// Runs disk-snapshot over `records` (placed, or failed to be).
pub async fn snapshot(
    run: &Run,
    args: &SnapshotArgs,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<StepResult> {
    let found = volume::find_volumes(run, records, placed).await;
    let mut plans: Vec<Result<Plan, Failure>> = records
        .iter_mut()
        .zip(found)
        .map(|(r, f)| {
            let f = f?;
            volume::note(r, &f.vol);
            if !args.no_freeze && !args.list {
                return Err(Failure::new(
                    codes::FREEZE_FAILED,
                    "the filesystem of an EBS volume cannot be frozen from here: pass --no-freeze (a crash-consistent snapshot, which the record notes); nothing taken",
                ));
            }
            Ok(Plan {
                vol: volume::id(&f.vol).to_string(),
                disk: disk_of(r)?.to_string(),
                deployment: run.deployment_of(r),
                node: r.node.clone().unwrap_or_default(),
                size: (f.vol.size().unwrap_or(0).max(0) as u64) << 30,
            })
        })
        .collect();
    // The deployments' snapshots, one call each.
    let mut listed: HashMap<String, Result<Vec<Snap>, Failure>> = HashMap::new();
    for p in plans.iter().flatten() {
        if !listed.contains_key(&p.deployment) {
            let l = run
                .api
                .snapshots(&p.deployment, &[])
                .await
                .map_err(Failure::from);
            listed.insert(p.deployment.clone(), l);
        }
    }
    let earlier = |p: &Plan| -> Result<Vec<Snap>, Failure> {
        let all = listed[&p.deployment].as_ref().map_err(Clone::clone)?;
        Ok(all.iter().filter(|s| s.disk == p.disk).cloned().collect())
    };
    if args.list {
        return records
            .iter_mut()
            .zip(plans)
            .map(|(r, p)| {
                let snaps = earlier(&p?)?;
                r.listed = snaps.iter().map(Snap::record).collect();
                Ok(Outcome::unchanged(
                    r.state.unwrap_or(State::Created),
                    format!("{} snapshot(s)", snaps.len()),
                ))
            })
            .collect();
    }
    let now = Stamp::now();
    let time = now.rfc3339();
    if run.check {
        return records
            .iter_mut()
            .zip(plans)
            .map(|(r, p)| {
                let p = p?;
                let mut snaps: Vec<(String, u64)> =
                    earlier(&p)?.into_iter().map(|s| (s.id, s.ms)).collect();
                snaps.push(("(new)".into(), now.0));
                let pruned: Vec<String> = args
                    .retention()
                    .prune(&snaps, "(new)", now.0)
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                let msg = format!(
                    "would take a snapshot of {}{}",
                    p.vol,
                    if pruned.is_empty() {
                        String::new()
                    } else {
                        format!("; would prune {}", pruned.join(", "))
                    }
                );
                r.snapshot = Some(Snapshot {
                    id: String::new(),
                    time: time.clone(),
                    size: p.size,
                    state: "planned".into(),
                    freeze: Some("not-frozen".into()),
                    method: None,
                    pruned,
                });
                Ok(Outcome::changed(r.state.unwrap_or(State::Created), msg))
            })
            .collect();
    }
    let api = run.api.clone();
    let sent = call_each(
        run.cfg.concurrency,
        &mut plans,
        |p| Some((p.clone(), time.clone())),
        move |(p, time): (Plan, String)| {
            let api = api.clone();
            async move { api.create_snapshot(&p, &time).await.map_err(Failure::from) }
        },
    )
    .await;
    let done = wait_completed(run, &plans, &sent).await;
    let mut out = Vec::new();
    for ((r, p), id) in records.iter_mut().zip(plans).zip(sent) {
        out.push(finish(run, args, r, p, id, &done, &earlier, now).await);
    }
    out
}

/// Waits until every new snapshot is `completed` (or `error`).
async fn wait_completed(
    run: &Run,
    plans: &[Result<Plan, Failure>],
    sent: &[Option<String>],
) -> HashMap<String, Result<Snap, Failure>> {
    let mut by_deployment: HashMap<String, Vec<String>> = HashMap::new();
    for (p, id) in plans.iter().zip(sent) {
        if let (Ok(p), Some(id)) = (p, id) {
            by_deployment
                .entry(p.deployment.clone())
                .or_default()
                .push(id.clone());
        }
    }
    let done = Mutex::new(HashMap::new());
    for (deployment, ids) in by_deployment {
        let progress = run
            .deadline
            .progress("snapshots to complete", ids.len() as u64);
        let pending = Mutex::new(ids);
        let round = || async {
            let ids = pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let found = run.api.snapshots(&deployment, &ids).await?;
            let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
            let mut done = done.lock().unwrap_or_else(PoisonError::into_inner);
            let before = pending.len();
            pending.retain(|id| match found.iter().find(|s| &s.id == id) {
                Some(s) if s.state == "pending" => true,
                Some(s) if s.state == "completed" => {
                    done.insert(id.clone(), Ok(s.clone()));
                    false
                }
                other => {
                    let why =
                        other.map_or("disappeared".to_string(), |s| format!("is {}", s.state));
                    done.insert(
                        id.clone(),
                        Err(Failure::new(
                            codes::SNAPSHOT_FAILED,
                            format!("snapshot {id} {why}"),
                        )),
                    );
                    false
                }
            });
            progress.inc((before - pending.len()) as u64);
            Ok::<_, ApiError>(if pending.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            })
        };
        if let Err(u) = poll_until_with(&progress, run.deadline.schedule(POLL), round).await {
            let f = u.into_failure("the snapshot was not completed", &run.deadline);
            let mut done = done.lock().unwrap_or_else(PoisonError::into_inner);
            for id in pending.into_inner().unwrap_or_else(PoisonError::into_inner) {
                done.insert(id, Err(f.clone()));
            }
        }
    }
    done.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// The record's outcome: its snapshot, then retention.
#[allow(clippy::too_many_arguments)]
async fn finish(
    run: &Run,
    args: &SnapshotArgs,
    r: &mut Record,
    p: Result<Plan, Failure>,
    id: Option<String>,
    done: &HashMap<String, Result<Snap, Failure>>,
    earlier: &impl Fn(&Plan) -> Result<Vec<Snap>, Failure>,
    now: Stamp,
) -> StepResult {
    let p = p?;
    let id = id.ok_or_else(|| Failure::new(codes::INTERNAL, "no snapshot was sent"))?;
    let snap = done.get(&id).cloned().unwrap_or_else(|| {
        Err(Failure::new(
            codes::INTERNAL,
            "the snapshot was not waited for",
        ))
    })?;
    let mut record = snap.record();
    record.freeze = Some("not-frozen".into());
    let mut all: Vec<(String, u64)> = earlier(&p)?.into_iter().map(|s| (s.id, s.ms)).collect();
    all.push((snap.id.clone(), snap.ms.max(now.0)));
    let prune: Vec<String> = args
        .retention()
        .prune(&all, &snap.id, now.0)
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut failed = None;
    for old in prune {
        match run.api.delete_snapshot(&old).await {
            Ok(()) => record.pruned.push(old),
            Err(e) => failed = Some(Failure::new(codes::PRUNE_FAILED, e.failure.message)),
        }
    }
    let msg = format!(
        "took snapshot {} of {} (not frozen){}",
        snap.id,
        p.vol,
        if record.pruned.is_empty() {
            String::new()
        } else {
            format!("; pruned {}", record.pruned.join(", "))
        }
    );
    r.snapshot = Some(record);
    if let Some(f) = failed {
        return Err(f);
    }
    Ok(Outcome::changed(r.state.unwrap_or(State::Created), msg))
}

/// `disk-create --from-snapshot`: finds each placed record's snapshot
/// (`latest`: the newest of its disk and deployment; an id: which must be of
/// its disk), then makes the record name the new volume,
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
    for (r, placed) in records.iter_mut().zip(placed.iter_mut()) {
        if placed.is_err() {
            continue;
        }
        let deployment = run.deployment_of(r);
        if !listed.contains_key(&deployment) {
            let l = run
                .api
                .snapshots(&deployment, &[])
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
