//! `disk-create` on Compute Engine: plan, send, wait, finish.
//!
//! * **plan**: each record's disk is looked up (`disks.get`); for one to
//!   make, whether a regional disk has its name (`disks.aggregatedList`,
//!   bounded filters) and whether the record's instance, when it names one
//!   (`instances.get`), takes its type; then a [`CreatePlan`] per record. A disk found is held to `--size`, `--type`,
//!   `--kms-key`, `--iops` and `--throughput` when given; with `--grow` a
//!   smaller one is planned to grow, with `--retag` given the labels it
//!   lacks.
//! * **send**: `disks.insert` for the disks to make, `disks.setLabels` for
//!   the hand-made ones to adopt and the ones to relabel, at most
//!   `--concurrency` at once; once those are done, `disks.resize` for the
//!   ones to grow.
//! * **wait**: every operation, then every new disk (and one an earlier run
//!   left being created) until it is ready, under one deadline.
//! * **finish**: the record gets the disk's size.

use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::record::{Record, State};
use appscale_persist::step::{Failure, Outcome, StepResult};
use appscale_persist_cloudkit::spec::{Change, encryption_mismatch, performance_mismatch};
use appscale_persist_cloudkit::{DiskSpec, call_each, failures};

use crate::api::{DiskInfo, NewDisk, region_of};
use crate::disk::{self, Found};
use crate::options::check_machine;
use crate::owner::{self, Owner};
use crate::{DEFAULT_DISK_TYPE, DEFAULT_SIZE, Run, Target, snapshot};

/// What disk-create does for one record, decided before any call.
#[derive(Debug, Clone)]
pub enum CreatePlan {
    /// The disk exists and is this deployment's: nothing to do but
    /// `Change`.
    Exists(DiskInfo, Change),
    /// The disk exists, this deployment's, but an earlier run left it
    /// being created: wait until it is ready.
    Creating(DiskInfo),
    /// The disk was made by hand: adopt it (label it for the deployment and
    /// node), and `Change` it.
    Adopt(DiskInfo, Change),
    /// No such disk: create it.
    Create(NewDisk),
}

/// What `change` does to `d`, for messages (`grow from 10 GB to 20 GB, label
/// a=b`).
fn change_said(change: &Change, d: &DiskInfo) -> String {
    change.describe(d.size_gb, "GB", "label")
}

/// Runs disk-create over the records' targets.
pub async fn create(
    run: &Run,
    records: &mut [Record],
    targets: Vec<Result<Target, Failure>>,
) -> Vec<StepResult> {
    let found = disk::find_disks(run, &targets).await;
    let refused = refusals(run, &targets, &found).await;
    let mut plans: Vec<Result<(Target, CreatePlan), Failure>> = targets
        .into_iter()
        .zip(found)
        .zip(refused)
        .map(|((t, found), refused)| {
            let t = t?;
            refused?;
            let p = plan(run, &t, found?)?;
            Ok((t, p))
        })
        .collect();
    if run.check {
        return records
            .iter_mut()
            .zip(plans)
            .map(|(r, p)| Ok(describe(r, &p?)))
            .collect();
    }
    // Send.
    let ops = call_each(run.cfg.concurrency, &mut plans, to_send, |(t, p, call)| {
        let api = run.api.clone();
        async move {
            let (at, labels) = (&t.location, owner::labels(&t.deployment, t.node.as_deref()));
            Ok(match call {
                Call::Label(mut more) => {
                    if matches!(p, CreatePlan::Adopt(..)) {
                        more.extend(labels);
                    }
                    api.adopt(at, &t.disk, more).await?
                }
                Call::Insert(new) => api.insert_disk(at, &t.disk, &new, labels).await?,
            })
        }
    })
    .await;
    // Wait: for the operations, then grow (after any labels: one change of
    // a disk at a time), then until the new disks are ready (read back:
    // their size known).
    run.wait_all(&mut plans, ops).await;
    let grown = call_each(run.cfg.concurrency, &mut plans, to_grow, |(t, gb)| {
        let api = run.api.clone();
        async move { Ok(api.resize(&t.location, &t.disk, gb).await?) }
    })
    .await;
    run.wait_all(&mut plans, grown).await;
    let progress = run.deadline.progress("disks to be READY", 0);
    let made = call_each(
        plans.len(),
        &mut plans,
        |(t, p)| {
            matches!(p, CreatePlan::Create { .. } | CreatePlan::Creating(_)).then(|| t.clone())
        },
        |t| {
            let (api, deadline) = (run.api.clone(), run.deadline);
            let progress = progress.clone();
            progress.set_total(progress.total() + 1);
            async move {
                api.wait_ready(&t.location, &t.disk, &deadline, &progress)
                    .await
            }
        },
    )
    .await;
    // Finish.
    records
        .iter_mut()
        .zip(plans)
        .zip(made)
        .map(|((r, plan), made)| {
            let (t, plan) = plan?;
            Ok(match (plan, made) {
                (CreatePlan::Exists(d, change), _) if !change.is_empty() => {
                    disk::note(r, &d);
                    if let Some(gb) = change.grow {
                        r.size_bytes = Some(gb << 30);
                        log::info(format_args!(
                            "{}: grew disk {} to {gb} GB: run disk-ensure-fs --grow to grow its filesystem",
                            r.label(),
                            t.disk
                        ));
                    }
                    Outcome::changed(
                        State::Created,
                        format!("disk {}: did {}", d.describe(), change_said(&change, &d)),
                    )
                }
                (CreatePlan::Create(new), Some(d)) => {
                    disk::note(r, &d);
                    let from = new
                        .source_snapshot
                        .map(|s| format!(" from snapshot {s}"))
                        .unwrap_or_default();
                    Outcome::changed(
                        State::Created,
                        format!("created disk {}{from}", d.describe()),
                    )
                }
                (CreatePlan::Creating(_), Some(d)) => {
                    disk::note(r, &d);
                    Outcome::unchanged(State::Created, format!("disk {}", d.describe()))
                }
                (CreatePlan::Adopt(d, change), _) => {
                    disk::note(r, &d);
                    if let Some(gb) = change.grow {
                        r.size_bytes = Some(gb << 30);
                    }
                    r.adopted = true;
                    log::info(format_args!(
                        "{}: adopted disk {}, made by hand: labelled for deployment {}",
                        r.label(),
                        t.disk,
                        t.deployment
                    ));
                    let also = if change.is_empty() {
                        String::new()
                    } else {
                        format!(", and did {}", change_said(&change, &d))
                    };
                    Outcome::changed(
                        State::Created,
                        format!("adopted disk {}, made by hand{also}", d.describe()),
                    )
                }
                (plan, _) => describe(r, &(t, plan)),
            })
        })
        .collect()
}

/// What Compute Engine would refuse, or what would go wrong, in making
/// each disk that does not exist yet, found before anything is made:
///
/// * a regional disk of that name in the zone's region (`disks.get` in
///   the zone does not see it): it is another resource, and an empty zonal
///   disk beside it would be taken for it: `regional-disk`;
/// * a disk type the record's instance cannot take (a `pd-*` disk on a
///   Hyperdisk-only machine family, a `hyperdisk-*` disk on a family
///   without Hyperdisk, [`check_machine`]): `disk-type-unsupported`,
///   naming the type to choose.
async fn refusals(
    run: &Run,
    targets: &[Result<Target, Failure>],
    found: &[Result<disk::Found, Failure>],
) -> Vec<Result<(), Failure>> {
    let to_make: Vec<Option<&Target>> = targets
        .iter()
        .zip(found)
        .map(|(t, f)| match (t, f) {
            (Ok(t), Ok(None)) => Some(t),
            _ => None,
        })
        .collect();
    let regional = disk::per_zone(
        run,
        to_make.iter().flatten().copied(),
        |api, at, names| async move { api.regional_disks(&at, &names).await },
    )
    .await;
    let wanted = to_make
        .iter()
        .flatten()
        .filter_map(|t| Some((t.location.clone(), t.instance.clone()?)));
    let instances = disk::find_instances(run, wanted).await;
    let disk_type = run
        .cfg
        .spec
        .disk_type
        .clone()
        .unwrap_or_else(|| DEFAULT_DISK_TYPE.into());
    to_make
        .into_iter()
        .map(|t| {
            let Some(t) = t else { return Ok(()) };
            let twins = regional
                .get(&t.location)
                .cloned()
                .unwrap_or_else(|| Ok(Vec::new()))?;
            if twins.contains(&t.disk) {
                return Err(Failure::new(
                    codes::REGIONAL_DISK,
                    format!(
                        "a regional disk {} exists in {} (project {}): it is another resource than a zonal disk of that name, and no empty zonal disk is made beside it. Name another disk for this record, or move the data to a zonal disk",
                        t.disk,
                        region_of(&t.location.zone),
                        t.location.project
                    ),
                ));
            }
            let Some(instance) = &t.instance else {
                return Ok(());
            };
            let key = (t.location.clone(), instance.clone());
            let machine = match instances.get(&key) {
                Some(Ok(i)) => i.machine_type.clone(),
                Some(Err(f)) => return Err(f.clone()),
                None => None,
            };
            match machine {
                Some(m) => check_machine(&m, &disk_type).map_err(|why| {
                    Failure::new(
                        codes::DISK_TYPE_UNSUPPORTED,
                        format!("disk {} for {instance}: {why}; nothing was made", t.disk),
                    )
                }),
                None => Ok(()),
            }
        })
        .collect()
}

/// The plan for one record, from its disk.
fn plan(run: &Run, t: &Target, found: Found) -> Result<CreatePlan, Failure> {
    let spec = &run.cfg.spec;
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let Some((d, o)) = found else {
        let restore = t.restore.as_ref();
        let mut labels = spec.tags.clone();
        if let Some(r) = restore {
            labels.push((
                snapshot::LABEL_RESTORED_FROM.to_string(),
                owner::label_value(&r.snapshot),
            ));
        }
        // From a snapshot, its disk's size unless --size says otherwise.
        let size_gb = match (spec.size, restore) {
            (None, Some(r)) => r.size_gb,
            (size, _) => int(size.unwrap_or(DEFAULT_SIZE).gib()),
        };
        return Ok(CreatePlan::Create(NewDisk {
            size_gb,
            disk_type: spec
                .disk_type
                .clone()
                .unwrap_or_else(|| DEFAULT_DISK_TYPE.into()),
            kms_key: spec.kms_key.clone(),
            iops: spec.iops.map(int),
            throughput: spec.throughput.map(int),
            labels,
            source_snapshot: restore.map(|r| r.snapshot.clone()),
        }));
    };
    let what = t.what();
    if let Some(want) = &spec.disk_type
        && d.disk_type != *want
    {
        return Err(failures::type_mismatch(&what, &d.disk_type, want));
    }
    let grow = spec.size_change(&what, d.size_gb.max(0) as u64)?;
    check_encryption(spec, &what, &d)?;
    check_performance(spec, &what, &d)?;
    let change = Change {
        grow,
        tags: spec.missing_tags(|k| d.labels.get(k).map(String::as_str)),
    };
    if o == Owner::HandMade {
        owner::check_adoptable(&d, o)?;
        return Ok(CreatePlan::Adopt(d, change));
    }
    if d.is_creating() {
        if !change.is_empty() {
            return Err(Failure::new(
                codes::WAIT_FAILED,
                format!(
                    "{what} is still being created: run disk-create again once it is ready, to {}",
                    change_said(&change, &d)
                ),
            ));
        }
        return Ok(CreatePlan::Creating(d));
    }
    Ok(CreatePlan::Exists(d, change))
}

/// A disk found must be encrypted with `--kms-key` when given (Compute
/// Engine names the key version it used: `K/cryptoKeyVersions/N`);
/// `--encrypted` alone asks nothing more (every disk is encrypted).
fn check_encryption(spec: &DiskSpec, what: &str, d: &DiskInfo) -> Result<(), Failure> {
    let Some(want) = &spec.kms_key else {
        return Ok(());
    };
    match d.kms_key.as_deref() {
        Some(have) if have == want || have.starts_with(&format!("{want}/cryptoKeyVersions/")) => {
            Ok(())
        }
        Some(have) => Err(encryption_mismatch(
            what,
            format!("is encrypted with {have}, not {want}"),
        )),
        None => Err(encryption_mismatch(
            what,
            format!("is encrypted with a Google-managed key, not {want}"),
        )),
    }
}

/// `--iops` and `--throughput`, when given, must be what a disk found has.
fn check_performance(spec: &DiskSpec, what: &str, d: &DiskInfo) -> Result<(), Failure> {
    let have = |n: Option<i64>| n.map(|n| n.max(0) as u64);
    for (name, want, have) in [
        ("provisioned IOPS", spec.iops, have(d.iops)),
        (
            "provisioned throughput (MiB/s)",
            spec.throughput,
            have(d.throughput),
        ),
    ] {
        if let Some(want) = want
            && have != Some(want)
        {
            return Err(performance_mismatch(what, name, have, want));
        }
    }
    Ok(())
}

/// A call disk-create sends.
enum Call {
    /// `disks.setLabels`, after reading the labels it has: these, and the
    /// deployment's when adopting.
    Label(Vec<(String, String)>),
    /// `disks.insert`.
    Insert(NewDisk),
}

/// The call sent first for a plan: a disk to adopt, relabel or make.
fn to_send((t, plan): &(Target, CreatePlan)) -> Option<(Target, CreatePlan, Call)> {
    let call = match plan {
        CreatePlan::Exists(_, c) if !c.tags.is_empty() => Call::Label(c.tags.clone()),
        CreatePlan::Exists(..) | CreatePlan::Creating(_) => return None,
        CreatePlan::Adopt(_, c) => Call::Label(c.tags.clone()),
        CreatePlan::Create(new) => Call::Insert(new.clone()),
    };
    Some((t.clone(), plan.clone(), call))
}

/// The `disks.resize` sent for a plan that grows a disk found.
fn to_grow((t, plan): &(Target, CreatePlan)) -> Option<(Target, i64)> {
    match plan {
        CreatePlan::Exists(_, c) | CreatePlan::Adopt(_, c) => {
            Some((t.clone(), i64::try_from(c.grow?).unwrap_or(i64::MAX)))
        }
        _ => None,
    }
}

/// What the plan would do (`--check`), or found done (nothing to do).
fn describe(r: &mut Record, (t, plan): &(Target, CreatePlan)) -> Outcome {
    match plan {
        CreatePlan::Exists(d, change) if !change.is_empty() => {
            disk::note(r, d);
            Outcome::changed(
                State::Created,
                format!("disk {}: would {}", d.describe(), change_said(change, d)),
            )
        }
        CreatePlan::Exists(d, _) => {
            disk::note(r, d);
            Outcome::unchanged(State::Created, format!("disk {}", d.describe()))
        }
        CreatePlan::Creating(d) => {
            disk::note(r, d);
            Outcome::unchanged(
                State::Created,
                format!("disk {} is being created", d.describe()),
            )
        }
        CreatePlan::Adopt(d, change) => {
            disk::note(r, d);
            r.adopted = true;
            let also = if change.is_empty() {
                String::new()
            } else {
                format!(", and {}", change_said(change, d))
            };
            Outcome::changed(
                State::Created,
                format!(
                    "would adopt disk {}, made by hand, for deployment {}{also}",
                    d.describe(),
                    t.deployment
                ),
            )
        }
        CreatePlan::Create(new) => Outcome::changed(
            State::Created,
            format!(
                "would create disk {} ({} GB {}) in {}{}",
                t.disk,
                new.size_gb,
                new.disk_type,
                t.location.zone,
                new.source_snapshot
                    .as_ref()
                    .map(|s| format!(" from snapshot {s}"))
                    .unwrap_or_default()
            ),
        ),
    }
}
