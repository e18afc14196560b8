//! Looking the records' volumes and instances up (in batches, before any
//! plan), and reading what a volume says.

use std::collections::HashMap;

use appscale_persist::codes;
use appscale_persist::provider::{DiskStatus, disk_of};
use appscale_persist::record::Record;
use appscale_persist::step::Failure;
use appscale_persist_cloudkit::{self as kit, failures};
use aws_sdk_ec2::types::{Volume, VolumeAttachment, VolumeAttachmentState};

use crate::Run;
use crate::instance::InstanceInfo;
use crate::owner::{self, Found, Owner};

/// How a record names its volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeRef {
    /// By volume id (`vol-...`), its `disk_id` or its `disk`.
    Id(String),
    /// By Name tag: any other `disk`.
    NameTag(String),
}

impl VolumeRef {
    /// How `r` names its volume.
    pub fn of(r: &Record) -> Result<VolumeRef, Failure> {
        if let Some(id) = r.disk_id.as_deref() {
            return Ok(VolumeRef::Id(id.to_string()));
        }
        let disk = disk_of(r)?;
        Ok(if disk.starts_with("vol-") {
            VolumeRef::Id(disk.to_string())
        } else {
            VolumeRef::NameTag(disk.to_string())
        })
    }
}

/// The id of `v`.
pub fn id(v: &Volume) -> &str {
    v.volume_id().unwrap_or("?")
}

/// `volume vol-...`, for messages.
pub fn what(v: &Volume) -> String {
    format!("volume {}", id(v))
}

/// Finds each placed record's volume, by id or by Name tag (one
/// DescribeVolumes for each kind), and whose it is ([`owner`]); two records
/// that turn out to name one volume both fail. A record that could not be
/// placed keeps its failure.
pub async fn find_volumes(
    run: &Run,
    records: &[Record],
    placed: Vec<Result<(), Failure>>,
) -> Vec<Result<Found, Failure>> {
    let refs: Vec<Result<VolumeRef, Failure>> = records
        .iter()
        .zip(placed)
        .map(|(r, placed)| placed.and_then(|()| VolumeRef::of(r)))
        .collect();
    let (mut ids, mut names) = (Vec::new(), Vec::new());
    for r in refs.iter().flatten() {
        match r {
            VolumeRef::Id(id) => ids.push(id.clone()),
            VolumeRef::NameTag(n) => names.push(n.clone()),
        }
    }
    let by_id = run.api.volumes_by_id(&ids).await.map_err(Failure::from);
    let by_name = run.api.volumes_by_name(&names).await.map_err(Failure::from);
    let mut found: Vec<Result<Found, Failure>> = records
        .iter()
        .zip(refs)
        .map(|(r, volume_ref)| {
            let deployment = run.deployment_of(r);
            let node = r.node.as_deref();
            match volume_ref? {
                VolumeRef::Id(id) => {
                    let v = by_id.as_ref().map_err(Clone::clone)?.get(&id);
                    let v = v.ok_or_else(|| failures::no_such_disk("volume", &id, None))?;
                    let mut f = owner::by_id(v.clone(), &deployment, node)?;
                    // An id a tool found by the record's Name tag: the
                    // operator chose the name, not this volume.
                    let named_by_id = r.disk.as_deref().is_some_and(|d| d.starts_with("vol-"));
                    if f.owner == Owner::HandMadeById && !named_by_id {
                        f.owner = Owner::HandMadeByName;
                    }
                    Ok(f)
                }
                VolumeRef::NameTag(n) => {
                    let all = by_name.as_ref().map_err(Clone::clone)?;
                    let tagged = all.get(&n).map(Vec::as_slice).unwrap_or_default();
                    owner::by_name(&n, tagged, &deployment, node)
                }
            }
        })
        .collect();
    kit::refuse_duplicates(
        records,
        &mut found,
        |f| id(&f.vol).to_string(),
        |vol| format!("volume {vol}"),
    );
    found
}

/// Zone and device names in use of the instances the records name (one
/// DescribeInstances); unknown ones are absent.
pub async fn find_instances(
    run: &Run,
    records: &[Record],
    wanted: impl Fn(&Record) -> bool,
) -> Result<HashMap<String, InstanceInfo>, Failure> {
    let ids: Vec<String> = records
        .iter()
        .filter(|r| wanted(r))
        .filter_map(|r| r.instance.clone())
        .collect();
    Ok(run.api.instances(&ids).await?)
}

/// Records what the API says about a volume on the record.
pub fn note(r: &mut Record, v: &Volume) {
    if let Some(id) = v.volume_id() {
        r.disk_id = Some(id.into());
    }
    if let Some(gib) = v.size() {
        r.size_bytes = Some((gib.max(0) as u64) << 30);
    }
    if r.zone.is_none() {
        r.zone = v.availability_zone().map(str::to_string);
    }
}

/// The attachment of `v` to `instance`, if any.
pub fn attachment_to<'a>(v: &'a Volume, instance: &str) -> Option<&'a VolumeAttachment> {
    v.attachments()
        .iter()
        .find(|a| a.instance_id() == Some(instance))
}

/// Live attachments of `v` (not `detached`).
pub fn live_attachments(v: &Volume) -> Vec<&VolumeAttachment> {
    v.attachments()
        .iter()
        .filter(|a| !matches!(a.state(), Some(VolumeAttachmentState::Detached)))
        .collect()
}

/// The state of attachment `a`, for messages.
pub fn state_of(a: &VolumeAttachment) -> &str {
    a.state().map(|s| s.as_str()).unwrap_or("?")
}

/// What [`crate::Provider::describe`] says of a volume, for the record
/// placed on `instance`.
pub fn status(v: &Volume, instance: Option<&str>) -> DiskStatus {
    let live = live_attachments(v);
    DiskStatus {
        id: id(v).to_string(),
        zone: v.availability_zone().map(str::to_string),
        size: v.size().map(|g| (g.max(0) as u64) << 30),
        attached_to: live
            .iter()
            .filter_map(|a| a.instance_id().map(str::to_string))
            .collect(),
        attached_as: live.first().and_then(|a| a.device()).map(str::to_string),
        disk_type: v.volume_type().map(|t| t.as_str().to_string()),
        encrypted: v.encrypted(),
        state: v.state().map(|s| s.as_str().to_string()),
        deployment: owner::tag(v, owner::TAG_DEPLOYMENT).map(str::to_string),
        node: owner::tag(v, owner::TAG_NODE).map(str::to_string),
        created: v.create_time().map(|t| t.to_string()),
        instance: instance.map(str::to_string),
    }
}

/// A failure of the wait on `vol`: it went somewhere waiting cannot bring
/// back from.
pub fn wait_failed(vol: &str, why: impl std::fmt::Display) -> Failure {
    Failure::new(codes::WAIT_FAILED, format!("{vol}: {why}"))
}
