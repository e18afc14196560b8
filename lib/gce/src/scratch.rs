//! `disk-scratch` on Compute Engine: a scratch copy of a persistent disk at
//! one moment, for `disk-archive` on the disk's node (docs/archive.md).
//!
//! * **snapshot**: `disks.createSnapshot` of the record's disk (found as
//!   disk-attach finds it), its zone operation waited for while the caller
//!   holds the filesystem frozen (once it is done the snapshot is at least
//!   UPLOADING: its moment is fixed). Before it, whatever a killed run of
//!   the same owner left is deleted.
//! * **attach**: once the snapshot is READY, `disks.insert` from it in this
//!   instance's zone, `instances.attachDisk` **read-only** with the disk's
//!   name as its device name, and its device found here
//!   (`/dev/disk/by-id/google-NAME`, [`discover::find`]).
//! * **drop**: the scratch disk detached (refused while its device is
//!   mounted here) and deleted (`disks.delete`), then its snapshot.
//!
//! The snapshot and the disk are labelled [`LABEL_SCRATCH`] with their
//! owner (this instance and the disk's archive key, [`ledger::key`]) and
//! named after it (`as-scratch-KEY-TIME`); only what carries this owner's
//! label and this deployment's is ever deleted, and no node label is set,
//! so no other tool takes the disk for a node's.

use appscale_persist::archive::ledger;
use appscale_persist::codes;
use appscale_persist::discover;
use appscale_persist::provider::ScratchPhase;
use appscale_persist::record::{ProviderKind, Record, Scratch, State};
use appscale_persist::snapshot::Stamp;
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist::wait::Poll;
use appscale_persist_cloudkit::{attached_disk, poll_until_with};
use google_cloud_compute_v1::model::{AttachedDisk, Snapshot as GceSnapshot, attached_disk};

use crate::api::{Api, Location, NewDisk, bounded, call, idempotent, is_not_found, request_id};
use crate::owner::{LABEL_DEPLOYMENT, label_value};
use crate::snapshot::{state_of, time_label};
use crate::{POLL, Run, Target};

/// The label that makes a snapshot or disk a scratch copy: its value is
/// the owner.
pub const LABEL_SCRATCH: &str = "appscale-persist-scratch";

/// The label of the tool that made it.
const LABEL_TOOL: &str = "appscale-persist-tool";

/// The owner label of a record's scratch copies made on `instance`: a
/// hash of the instance and the disk's archive key (a label value).
pub fn owner_of(instance: &str, deployment: &str, r: &Record) -> String {
    let key = ledger::key(
        deployment,
        r.provider.unwrap_or(ProviderKind::Gce),
        r.disk.as_deref().unwrap_or_default(),
    );
    let h = appscale_persist::hash::fnv1a64(0, format!("{instance}:{key}").as_bytes());
    format!("{h:016x}")
}

/// Runs `phase` for each record, one after the other.
pub async fn scratch(
    run: &Run,
    instance: &str,
    phase: ScratchPhase,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<StepResult> {
    let mut out = Vec::new();
    for (r, t) in records.iter_mut().zip(targets) {
        let state = r.state.unwrap_or(State::Created);
        let result = match t {
            Err(f) => Err(f),
            Ok(t) => {
                let owner = owner_of(instance, &t.deployment, r);
                let one = One {
                    run,
                    api: &run.api,
                    at: &t.location,
                    instance,
                    deployment: &t.deployment,
                    owner: &owner,
                };
                match phase {
                    ScratchPhase::Snapshot => one.snapshot(r, &t.disk).await,
                    ScratchPhase::Attach => one.attach(r).await,
                    ScratchPhase::Drop => one.drop_all(r).await,
                }
            }
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

/// One record's scratch copy, and where.
struct One<'a> {
    run: &'a Run,
    api: &'a Api,
    at: &'a Location,
    instance: &'a str,
    deployment: &'a str,
    owner: &'a str,
}

impl One<'_> {
    fn labels(&self) -> Vec<(String, String)> {
        vec![
            (LABEL_DEPLOYMENT.into(), label_value(self.deployment)),
            (LABEL_SCRATCH.into(), self.owner.into()),
            (LABEL_TOOL.into(), "disk-archive".into()),
        ]
    }

    /// Whether `labels` are this owner's and deployment's.
    fn ours(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        labels.get(LABEL_SCRATCH).map(String::as_str) == Some(self.owner)
            && labels.get(LABEL_DEPLOYMENT) == Some(&label_value(self.deployment))
    }

    async fn snapshot(&self, r: &mut Record, disk: &str) -> Result<String, Failure> {
        if self.run.check {
            return Ok(format!("would snapshot {disk} for a scratch copy"));
        }
        let left = self.reap(&[], &[]).await?;
        let now = Stamp::now();
        let name = format!("as-scratch-{}-{}", self.owner, time_label(now));
        let what = format!("disks.createSnapshot {disk} as {name}");
        let body = GceSnapshot::new()
            .set_name(&name)
            .set_labels(self.labels())
            .set_description(format!(
                "appscale-persist scratch copy of {disk} for an archive"
            ));
        let create = self
            .api
            .disks
            .create_snapshot()
            .set_project(&self.at.project)
            .set_zone(&self.at.zone)
            .set_disk(disk)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        let op = call(&what, create).await?;
        r.scratch = Some(Scratch {
            owner: self.owner.to_string(),
            snapshot: Some(name.clone()),
            time: Some(now.rfc3339()),
            ..Scratch::default()
        });
        // Done: the snapshot is at least UPLOADING, its moment fixed.
        let progress = self
            .run
            .deadline
            .progress("the scratch snapshot to be taken", 1);
        self.api
            .wait(self.at, op, &self.run.deadline, &progress)
            .await?;
        Ok(format!("took scratch snapshot {name} of {disk}{left}"))
    }

    async fn attach(&self, r: &mut Record) -> Result<String, Failure> {
        let mut s = r
            .scratch
            .clone()
            .filter(|s| s.owner == self.owner)
            .ok_or_else(|| {
                Failure::new(
                    codes::SNAPSHOT_FAILED,
                    "the record carries no scratch snapshot of this node's: run --phase snapshot first",
                )
            })?;
        let snap = s.snapshot.clone().unwrap_or_default();
        if self.run.check {
            return Ok(format!(
                "would make a scratch disk of {snap} and attach it here"
            ));
        }
        let size_gb = self.wait_snapshot(&snap).await?;
        let name = snap.clone();
        let new = NewDisk {
            size_gb,
            disk_type: crate::DEFAULT_DISK_TYPE.into(),
            kms_key: None,
            iops: None,
            throughput: None,
            labels: Vec::new(),
            source_snapshot: Some(snap.clone()),
        };
        let op = self
            .api
            .insert_disk(self.at, &name, &new, self.labels())
            .await?;
        s.disk = Some(name.clone());
        r.scratch = Some(s.clone());
        let progress = self.run.deadline.progress("the scratch disk to be made", 1);
        self.api
            .wait(self.at, op, &self.run.deadline, &progress)
            .await?;
        let progress = self
            .run
            .deadline
            .progress("the scratch disk to be ready", 1);
        self.api
            .wait_ready(self.at, &name, &self.run.deadline, &progress)
            .await?;
        let what = format!(
            "instances.attachDisk {name} to {} (read-only)",
            self.instance
        );
        let body = AttachedDisk::new()
            .set_source(format!(
                "projects/{}/zones/{}/disks/{name}",
                self.at.project, self.at.zone
            ))
            .set_device_name(&name)
            .set_mode(attached_disk::Mode::ReadOnly)
            .set_auto_delete(false);
        let attach = self
            .api
            .instances
            .attach_disk()
            .set_project(&self.at.project)
            .set_zone(&self.at.zone)
            .set_instance(self.instance)
            .set_request_id(request_id())
            .set_body(body)
            .with_options(idempotent())
            .send();
        let op = call(&what, attach).await?;
        let progress = self
            .run
            .deadline
            .progress("the scratch disk to be attached", 1);
        self.api
            .wait(self.at, op, &self.run.deadline, &progress)
            .await?;
        let size = Some((size_gb.max(0) as u64) << 30);
        let seen = attached_disk(ProviderKind::Gce, &name, Some(&name), size, self.instance);
        let device = discover::find(&seen, discover::DEVICE_WAIT)?;
        s.device = Some(device.display().to_string());
        r.scratch = Some(s);
        Ok(format!(
            "made scratch disk {name} of {snap}, attached here read-only ({})",
            device.display()
        ))
    }

    /// Waits until the snapshot is READY; its disk size in GB.
    async fn wait_snapshot(&self, name: &str) -> Result<i64, Failure> {
        let progress = self
            .run
            .deadline
            .progress("the scratch snapshot to be ready", 1);
        let project = self.at.project.clone();
        let round = || async {
            // Ours by its scratch label (disk-snapshot's marks it lacks).
            let found = self.api.snapshot_of_anyone(&project, name).await?;
            Ok(match found.as_ref().map(|s| (state_of(s), s)) {
                Some(("completed", s)) => {
                    progress.set_done(1);
                    Poll::Ready(s.disk_size_gb.unwrap_or(1).max(1))
                }
                Some(("error", _)) => Poll::Failed(Failure::new(
                    codes::SNAPSHOT_FAILED,
                    format!("the scratch snapshot {name} failed"),
                )),
                _ => Poll::Pending,
            })
        };
        poll_until_with(&progress, self.run.deadline.schedule(POLL), round)
            .await
            .map_err(|u| u.into_failure("the scratch snapshot to be ready", &self.run.deadline))
    }

    async fn drop_all(&self, r: &mut Record) -> Result<String, Failure> {
        if self.run.check {
            return Ok("would delete this node's scratch copies of the disk".into());
        }
        let s = r
            .scratch
            .clone()
            .filter(|s| s.owner == self.owner)
            .unwrap_or_default();
        let disks: Vec<String> = s.disk.into_iter().collect();
        let snaps: Vec<String> = s.snapshot.into_iter().collect();
        let said = self.reap(&disks, &snaps).await?;
        r.scratch = None;
        Ok(format!("deleted the scratch copies{said}"))
    }

    /// Deletes this owner's scratch disks (detached first, unless in use
    /// here) and snapshots, `disks` and `snaps` among them.
    async fn reap(&self, disks: &[String], snaps: &[String]) -> Result<String, Failure> {
        let mut deleted = Vec::new();
        let filter = format!("(labels.{LABEL_SCRATCH} = \"{}\")", self.owner);
        let what = format!("disks.list {filter}");
        let list = self
            .api
            .disks
            .list()
            .set_project(&self.at.project)
            .set_zone(&self.at.zone)
            .set_filter(&filter)
            .set_max_results(500u32)
            .send();
        let page = call(&what, list).await?;
        let mut names: Vec<(String, Vec<String>)> = page
            .items
            .into_iter()
            .filter(|d| self.ours(&d.labels))
            .filter_map(|d| {
                let users = d
                    .users
                    .iter()
                    .map(|u| crate::api::last_segment(u).to_string())
                    .collect();
                Some((d.name?, users))
            })
            .collect();
        for d in disks {
            if !names.iter().any(|(n, _)| n == d)
                && let Some(info) = self.api.disk(self.at, d).await?
                && self.ours(&info.labels)
            {
                names.push((d.clone(), info.users.clone()));
            }
        }
        for (name, users) in names {
            for user in users {
                let seen = attached_disk(ProviderKind::Gce, &name, Some(&name), None, &user);
                if user == self.instance {
                    discover::refuse_if_mounted_here(&seen)?;
                }
                let op = self.api.detach(self.at, &user, &name).await?;
                let progress = self
                    .run
                    .deadline
                    .progress("the scratch disk to be detached", 1);
                self.api
                    .wait(self.at, op, &self.run.deadline, &progress)
                    .await?;
            }
            let what = format!("disks.delete {name}");
            let delete = self
                .api
                .disks
                .delete()
                .set_project(&self.at.project)
                .set_zone(&self.at.zone)
                .set_disk(&name)
                .set_request_id(request_id())
                .with_options(idempotent())
                .send();
            match bounded(&what, delete).await? {
                Ok(op) => {
                    let progress = self
                        .run
                        .deadline
                        .progress("the scratch disk to be deleted", 1);
                    self.api
                        .wait(self.at, op, &self.run.deadline, &progress)
                        .await?;
                    deleted.push(name);
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(crate::api::api_error(&what, e).into()),
            }
        }
        let mut snapshots: Vec<String> = self
            .api
            .snapshots_labelled(&self.at.project, LABEL_SCRATCH, self.owner)
            .await?
            .into_iter()
            .filter(|(_, labels)| self.ours(labels))
            .map(|(n, _)| n)
            .collect();
        for s in snaps {
            if !snapshots.contains(s) {
                snapshots.push(s.clone());
            }
        }
        for name in snapshots {
            let found = self.api.snapshot_of_anyone(&self.at.project, &name);
            if found.await?.is_none() {
                continue;
            }
            self.api
                .delete_snapshot(&self.at.project, &name, &self.run.deadline)
                .await?;
            deleted.push(name);
        }
        Ok(if deleted.is_empty() {
            String::new()
        } else {
            format!(", deleted {}", deleted.join(", "))
        })
    }
}

impl Api {
    /// The names and labels of the project's snapshots labelled `key =
    /// value` (the labels checked again by the caller).
    async fn snapshots_labelled(
        &self,
        project: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<(String, std::collections::HashMap<String, String>)>, Failure> {
        let filter = format!("(labels.{key} = \"{value}\")");
        let what = format!("snapshots.list {filter}");
        let list = self
            .snapshots
            .list()
            .set_project(project)
            .set_filter(&filter)
            .set_max_results(500u32)
            .send();
        let page = call(&what, list).await?;
        Ok(page
            .items
            .into_iter()
            .filter_map(|s| Some((s.name?, s.labels)))
            .collect())
    }
}
