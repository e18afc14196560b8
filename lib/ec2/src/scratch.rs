//! `disk-scratch` on EC2: a scratch copy of an EBS volume at one moment,
//! for `disk-archive` on the volume's node (docs/archive.md).
//!
//! * **snapshot**: CreateSnapshot of the record's volume (found as
//!   disk-attach finds it: another deployment's is never touched); its
//!   point in time is fixed when the call returns, while the caller holds
//!   the filesystem frozen. Before it, whatever a killed run of the same
//!   owner left is deleted.
//! * **attach**: once the snapshot is `completed`, CreateVolume from it in
//!   this instance's zone, AttachVolume to this instance on a free device
//!   name, and its device found here by its NVMe link or attach name
//!   ([`discover::find`]). EBS attaches read-write only: the caller sets
//!   the device read-only before mounting it read-only.
//! * **drop**: the scratch volume detached (refused while its device is
//!   mounted here) and deleted, then its snapshot deleted.
//!
//! The snapshot and the volume are tagged [`TAG_SCRATCH`] with their owner:
//! this instance and the disk's archive key ([`ledger::key`]), which only
//! one run at a time holds (disk-archive's lock of the disk). Only what
//! carries this owner's tag, this deployment's tag, and this tool's, is
//! ever deleted; the volume is never tagged with a node, so no other tool
//! takes it for a node's disk.

use appscale_persist::archive::ledger;
use appscale_persist::codes;
use appscale_persist::discover;
use appscale_persist::provider::{ScratchPhase, disk_of};
use appscale_persist::record::{ProviderKind, Record, Scratch, State};
use appscale_persist::snapshot::Stamp;
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{ApiError, ThisInstance, attached_disk, poll_until_with};
use aws_sdk_ec2::types::{
    Filter, ResourceType, SnapshotState, Tag, TagSpecification, VolumeAttachmentState, VolumeState,
};

use crate::api::{Absent, api_error};
use crate::devices::{self, NameSpace};
use crate::owner::TAG_DEPLOYMENT;
use crate::snapshot::{TAG_DISK, TAG_TIME, TAG_TOOL};
use crate::{POLL, Run, trace, volume};

/// The tag that makes a snapshot or volume a scratch copy: its value is the
/// owner, `<instance>:<key>`.
pub const TAG_SCRATCH: &str = "appscale-persist:scratch";

/// The tool tag of scratch copies.
const TOOL: &str = "disk-archive";

/// The owner of a record's scratch copies made on `this` instance.
pub fn owner_of(this: &ThisInstance, deployment: &str, r: &Record) -> String {
    let kind = r.provider.unwrap_or(ProviderKind::Ec2);
    let key = ledger::key(deployment, kind, r.disk.as_deref().unwrap_or_default());
    format!("{}:{key}", this.instance)
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// Runs `phase` for each record, one after the other (a node archives its
/// own disk).
pub async fn scratch(
    run: &Run,
    this: &ThisInstance,
    phase: ScratchPhase,
    records: &mut [Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<StepResult> {
    // The volume snapshotted (the other phases act on the scratch copy).
    let found: Vec<Result<Option<String>, Failure>> = match phase {
        ScratchPhase::Snapshot => volume::find_volumes(run, records, placed)
            .await
            .into_iter()
            .map(|f| f.map(|f| Some(volume::id(&f.vol).to_string())))
            .collect(),
        _ => placed.into_iter().map(|p| p.map(|()| None)).collect(),
    };
    let mut out = Vec::new();
    for (r, f) in records.iter_mut().zip(found) {
        let deployment = run.deployment_of(r);
        let owner = owner_of(this, &deployment, r);
        let state = r.state.unwrap_or(State::Created);
        let result = match (phase, f) {
            (_, Err(f)) => Err(f),
            (ScratchPhase::Snapshot, Ok(vol)) => {
                snapshot(run, r, &deployment, &owner, &vol.unwrap_or_default()).await
            }
            (ScratchPhase::Attach, Ok(_)) => attach(run, this, r, &deployment, &owner).await,
            (ScratchPhase::Drop, Ok(_)) => drop_all(run, r, &deployment, &owner).await,
        };
        out.push(result.map(|message| Outcome {
            state,
            changed: !run.check,
            message,
            diff: None,
        }));
    }
    out
}

/// Deletes what a killed run of `owner` left, then starts the snapshot.
async fn snapshot(
    run: &Run,
    r: &mut Record,
    deployment: &str,
    owner: &str,
    vol: &str,
) -> Result<String, Failure> {
    if run.check {
        return Ok(format!("would snapshot {vol} for a scratch copy"));
    }
    let left = reap(run, deployment, owner, &[], &[]).await?;
    let disk = disk_of(r)?.to_string();
    let now = Stamp::now();
    let specs = TagSpecification::builder()
        .resource_type(ResourceType::Snapshot)
        .tags(tag("Name", &format!("{disk}-scratch")))
        .tags(tag(TAG_DEPLOYMENT, deployment))
        .tags(tag(TAG_DISK, &disk))
        .tags(tag(TAG_TIME, &now.rfc3339()))
        .tags(tag(TAG_TOOL, TOOL))
        .tags(tag(TAG_SCRATCH, owner))
        .build();
    trace(format_args!("CreateSnapshot {vol} {TAG_SCRATCH}={owner}"));
    let out = run
        .api
        .client
        .create_snapshot()
        .volume_id(vol)
        .description(format!(
            "appscale-persist scratch copy of {disk} for an archive"
        ))
        .tag_specifications(specs)
        .send()
        .await
        .map_err(|e| Failure::from(api_error(&format!("CreateSnapshot {vol}"), e)))?;
    let id = out.snapshot_id().unwrap_or_default().to_string();
    if id.is_empty() {
        return Err(Failure::new(
            codes::SNAPSHOT_FAILED,
            "CreateSnapshot returned no snapshot id",
        ));
    }
    let time = out
        .start_time()
        .and_then(|t| t.to_millis().ok())
        .map_or(now, |m| Stamp(m.max(0) as u64));
    r.scratch = Some(Scratch {
        owner: owner.to_string(),
        snapshot: Some(id.clone()),
        time: Some(time.rfc3339()),
        ..Scratch::default()
    });
    Ok(format!("took scratch snapshot {id} of {vol}{left}"))
}

/// Waits for the snapshot, makes a volume of it here, attaches it, finds
/// its device.
async fn attach(
    run: &Run,
    this: &ThisInstance,
    r: &mut Record,
    deployment: &str,
    owner: &str,
) -> Result<String, Failure> {
    let mut s = r
        .scratch
        .clone()
        .filter(|s| s.owner == owner)
        .ok_or_else(|| {
            Failure::new(
                codes::SNAPSHOT_FAILED,
                "the record carries no scratch snapshot of this node's: run --phase snapshot first",
            )
        })?;
    let snap = s.snapshot.clone().unwrap_or_default();
    if run.check {
        return Ok(format!(
            "would make a scratch volume of {snap} and attach it here"
        ));
    }
    let gib = wait_snapshot(run, &snap).await?;
    let disk = disk_of(r)?.to_string();
    let time = s.time.clone().unwrap_or_default();
    let specs = TagSpecification::builder()
        .resource_type(ResourceType::Volume)
        .tags(tag("Name", &format!("{disk}-scratch-{}", compact(&time))))
        .tags(tag(TAG_DEPLOYMENT, deployment))
        .tags(tag(TAG_DISK, &disk))
        .tags(tag(TAG_TOOL, TOOL))
        .tags(tag(TAG_SCRATCH, owner))
        .build();
    trace(format_args!(
        "CreateVolume from {snap} {TAG_SCRATCH}={owner}"
    ));
    let made = run
        .api
        .client
        .create_volume()
        .availability_zone(&this.zone)
        .snapshot_id(&snap)
        .size(i32::try_from(gib).unwrap_or(i32::MAX))
        .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
        .tag_specifications(specs)
        .send()
        .await
        .map_err(|e| Failure::from(api_error(&format!("CreateVolume from {snap}"), e)))?;
    let vol = made.volume_id().unwrap_or_default().to_string();
    s.disk = Some(vol.clone());
    r.scratch = Some(s.clone());
    let available = run
        .api
        .wait_volumes(
            "the scratch volume to be available",
            vec![vol.clone()],
            &run.deadline,
            Absent::NotYet,
            |v| match v.state() {
                Some(VolumeState::Available) => Poll::Ready(()),
                Some(VolumeState::Creating) | None => Poll::Pending,
                Some(other) => Poll::Failed(volume::wait_failed(volume::id(v), other.as_str())),
            },
        )
        .await;
    settled(
        available,
        &vol,
        &run.deadline,
        "the scratch volume to be available",
    )?;
    let info = run
        .api
        .instances(std::slice::from_ref(&this.instance))
        .await?
        .remove(&this.instance)
        .ok_or_else(|| {
            appscale_persist_cloudkit::failures::no_such_instance(&this.instance, None)
        })?;
    let space = if info.hvm {
        NameSpace::Hvm
    } else {
        NameSpace::Short
    };
    let name = devices::free_name(&info.devices, space).ok_or_else(|| {
        Failure::new(
            codes::NO_DEVICE_NAME,
            format!(
                "{} has no free device name for the scratch volume",
                this.instance
            ),
        )
    })?;
    run.api.attach(&vol, &this.instance, &name).await?;
    let attached = run
        .api
        .wait_volumes(
            "the scratch volume to be attached",
            vec![vol.clone()],
            &run.deadline,
            Absent::Gone,
            |v| match volume::attachment_to(v, &this.instance).map(|a| a.state()) {
                Some(Some(VolumeAttachmentState::Attached)) => Poll::Ready(()),
                _ => Poll::Pending,
            },
        )
        .await;
    settled(
        attached,
        &vol,
        &run.deadline,
        "the scratch volume to be attached",
    )?;
    let kind = r.provider.unwrap_or(ProviderKind::Ec2);
    let seen = attached_disk(kind, &vol, Some(&name), Some(gib << 30), &this.instance);
    let device = discover::find(&seen, discover::DEVICE_WAIT)?;
    s.device = Some(device.display().to_string());
    r.scratch = Some(s);
    Ok(format!(
        "made scratch volume {vol} of {snap}, attached here as {name} ({})",
        device.display()
    ))
}

/// `2026-11-27T02:35:12.123Z` as `20261127T023512Z`, for names.
fn compact(rfc3339: &str) -> String {
    rfc3339
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .filter(|c| *c != 'Z')
        .take(15)
        .collect::<String>()
        + "Z"
}

/// The outcome of a one-volume wait.
fn settled(
    mut done: std::collections::HashMap<String, Result<(), appscale_persist_cloudkit::Unfinished>>,
    vol: &str,
    deadline: &appscale_persist_cloudkit::Deadline,
    what: &str,
) -> Result<(), Failure> {
    match done.remove(vol) {
        Some(Ok(())) => Ok(()),
        Some(Err(u)) => Err(u.into_failure(what, deadline)),
        None => Err(Failure::new(
            codes::INTERNAL,
            format!("{vol}: not waited for"),
        )),
    }
}

/// Waits until the snapshot `id` is `completed`; its volume size in GiB.
async fn wait_snapshot(run: &Run, id: &str) -> Result<u64, Failure> {
    let progress = run.deadline.progress("the scratch snapshot to complete", 1);
    let round = || async {
        let out = run
            .api
            .client
            .describe_snapshots()
            .snapshot_ids(id)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            // Not visible yet (eventual consistency): still pending.
            Err(e) => {
                let e = api_error(&format!("DescribeSnapshots {id}"), e);
                if e.failure.code == "InvalidSnapshot.NotFound" {
                    return Ok(Poll::Pending);
                }
                return Err(e);
            }
        };
        let Some(s) = out.snapshots().first() else {
            return Ok::<_, ApiError>(Poll::Pending);
        };
        Ok(match s.state() {
            Some(SnapshotState::Completed) => {
                progress.set_done(1);
                Poll::Ready(s.volume_size().unwrap_or(1).max(1) as u64)
            }
            Some(SnapshotState::Error) => Poll::Failed(Failure::new(
                codes::SNAPSHOT_FAILED,
                format!("the scratch snapshot {id} failed"),
            )),
            _ => Poll::Pending,
        })
    };
    poll_until_with(&progress, run.deadline.schedule(POLL), round)
        .await
        .map_err(|u| u.into_failure("the scratch snapshot to complete", &run.deadline))
}

/// Detaches and deletes the record's scratch volume and snapshot, and
/// whatever else `owner` left.
async fn drop_all(
    run: &Run,
    r: &mut Record,
    deployment: &str,
    owner: &str,
) -> Result<String, Failure> {
    let s = r
        .scratch
        .clone()
        .filter(|s| s.owner == owner)
        .unwrap_or_default();
    if run.check {
        return Ok("would delete this node's scratch copies of the disk".into());
    }
    let vols: Vec<String> = s.disk.into_iter().collect();
    let snaps: Vec<String> = s.snapshot.into_iter().collect();
    let said = reap(run, deployment, owner, &vols, &snaps).await?;
    r.scratch = None;
    Ok(format!("deleted the scratch copies{said}"))
}

/// Deletes the scratch volumes and snapshots tagged for `owner` (and of
/// `deployment`, by this tool), `vols` and `snaps` among them: a volume
/// attached is detached first, unless its device is in use here. Says what
/// it deleted (`, deleted vol-..., snap-...`), or nothing.
async fn reap(
    run: &Run,
    deployment: &str,
    owner: &str,
    vols: &[String],
    snaps: &[String],
) -> Result<String, Failure> {
    let ours = |k: &str, v: &str| Filter::builder().name(format!("tag:{k}")).values(v).build();
    trace(format_args!("DescribeVolumes {TAG_SCRATCH}={owner}"));
    let listed = run
        .api
        .client
        .describe_volumes()
        .filters(ours(TAG_SCRATCH, owner))
        .filters(ours(TAG_DEPLOYMENT, deployment))
        .filters(ours(TAG_TOOL, TOOL))
        .send()
        .await
        .map_err(|e| Failure::from(api_error("DescribeVolumes (scratch)", e)))?;
    let mut deleted = Vec::new();
    let mut found: Vec<aws_sdk_ec2::types::Volume> = listed.volumes().to_vec();
    // One just made may not be listed yet: ask for it by id too.
    let missing: Vec<String> = vols
        .iter()
        .filter(|v| !found.iter().any(|f| f.volume_id() == Some(v.as_str())))
        .cloned()
        .collect();
    if !missing.is_empty() {
        for (_, v) in run.api.volumes_by_id(&missing).await? {
            let tagged = |k: &str, want: &str| crate::owner::tag(&v, k) == Some(want);
            if tagged(TAG_SCRATCH, owner) && tagged(TAG_DEPLOYMENT, deployment) {
                found.push(v);
            }
        }
    }
    for v in found {
        let id = volume::id(&v).to_string();
        for a in volume::live_attachments(&v) {
            let instance = a.instance_id().unwrap_or_default();
            let size = v.size().map(|g| (g.max(0) as u64) << 30);
            let seen = attached_disk(ProviderKind::Ec2, &id, a.device(), size, instance);
            discover::refuse_if_mounted_here(&seen)?;
            run.api.detach(&id, instance, false).await?;
        }
        let gone = run
            .api
            .wait_volumes(
                "the scratch volume to be detached",
                vec![id.clone()],
                &run.deadline,
                Absent::Gone,
                |v| {
                    if volume::live_attachments(v).is_empty() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                },
            )
            .await;
        settled(
            gone,
            &id,
            &run.deadline,
            "the scratch volume to be detached",
        )?;
        trace(format_args!("DeleteVolume {id}"));
        run.api
            .client
            .delete_volume()
            .volume_id(&id)
            .send()
            .await
            .map_err(|e| Failure::from(api_error(&format!("DeleteVolume {id}"), e)))?;
        deleted.push(id);
    }
    trace(format_args!("DescribeSnapshots {TAG_SCRATCH}={owner}"));
    let listed = run
        .api
        .client
        .describe_snapshots()
        .owner_ids("self")
        .filters(ours(TAG_SCRATCH, owner))
        .filters(ours(TAG_DEPLOYMENT, deployment))
        .filters(ours(TAG_TOOL, TOOL))
        .send()
        .await
        .map_err(|e| Failure::from(api_error("DescribeSnapshots (scratch)", e)))?;
    let mut ids: Vec<String> = listed
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id().map(str::to_string))
        .collect();
    for s in snaps {
        if !ids.contains(s) {
            ids.push(s.clone());
        }
    }
    for id in ids {
        trace(format_args!("DeleteSnapshot {id}"));
        match run
            .api
            .client
            .delete_snapshot()
            .snapshot_id(&id)
            .send()
            .await
        {
            Ok(_) => deleted.push(id),
            Err(e) => {
                let e = api_error(&format!("DeleteSnapshot {id}"), e);
                if e.failure.code != "InvalidSnapshot.NotFound" {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(if deleted.is_empty() {
        String::new()
    } else {
        format!(", deleted {}", deleted.join(", "))
    })
}
