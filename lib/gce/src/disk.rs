//! Looking the records' disks and instances up before any plan: reads, at
//! most `--concurrency` at once, each instance once however many records
//! name it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use appscale_persist::record::Record;
use appscale_persist::step::Failure;
use appscale_persist_cloudkit::{concurrently, failures};

use crate::api::{DiskInfo, InstanceInfo, Location};
use crate::owner::{self, Owner};
use crate::{Run, Target};

/// A disk that exists, and whose it is.
pub type Found = Option<(DiskInfo, Owner)>;

/// Each target's disk (`None`: it does not exist), checked to be its
/// deployment's and node's ([`owner::check`]). A target that failed keeps
/// its failure.
pub async fn find_disks(
    run: &Run,
    targets: &[Result<Target, Failure>],
) -> Vec<Result<Found, Failure>> {
    let lookups: Vec<Result<Target, Failure>> = targets.to_vec();
    concurrently(run.cfg.concurrency, lookups, |t| {
        let api = run.api.clone();
        async move {
            let t = t?;
            let Some(d) = api.disk(&t.location, &t.disk).await? else {
                return Ok(None);
            };
            let o = owner::check(&d, &t.deployment, t.node.as_deref())?;
            Ok(Some((d, o)))
        }
    })
    .await
}

/// [`find_disks`] in one `disks.list` per zone ([`crate::api::Api::disks_named`])
/// instead of one `disks.get` per disk: for looking many disks up at once
/// (disk-status).
pub async fn list_disks(
    run: &Run,
    targets: &[Result<Target, Failure>],
) -> Vec<Result<Found, Failure>> {
    let mut zones: BTreeMap<Location, Vec<String>> = BTreeMap::new();
    for t in targets.iter().flatten() {
        zones
            .entry(t.location.clone())
            .or_default()
            .push(t.disk.clone());
    }
    let lookups: Vec<(Location, Vec<String>)> = zones.into_iter().collect();
    let keys: Vec<Location> = lookups.iter().map(|(at, _)| at.clone()).collect();
    let found = concurrently(run.cfg.concurrency, lookups, |(at, names)| {
        let api = run.api.clone();
        async move { Ok(api.disks_named(&at, &names).await?) }
    })
    .await;
    let by_zone: HashMap<Location, Result<HashMap<String, DiskInfo>, Failure>> =
        keys.into_iter().zip(found).collect();
    targets
        .iter()
        .map(|t| {
            let t = t.clone()?;
            let disks = by_zone
                .get(&t.location)
                .cloned()
                .unwrap_or_else(|| Ok(HashMap::new()))?;
            let Some(d) = disks.get(&t.disk) else {
                return Ok(None);
            };
            let o = owner::check(d, &t.deployment, t.node.as_deref())?;
            Ok(Some((d.clone(), o)))
        })
        .collect()
}

/// An instance by where it is and its name.
pub type InstanceKey = (Location, String);

/// The instances `wanted`, each looked up once (a missing one is a failure
/// `no-such-instance`).
pub async fn find_instances(
    run: &Run,
    wanted: impl IntoIterator<Item = InstanceKey>,
) -> HashMap<InstanceKey, Result<InstanceInfo, Failure>> {
    let unique: Vec<InstanceKey> = wanted
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let found = concurrently(run.cfg.concurrency, unique.clone(), |(at, name)| {
        let api = run.api.clone();
        async move { Ok(api.instance(&at, &name).await?) }
    })
    .await;
    unique.into_iter().zip(found).collect()
}

/// Records what the API says about a disk on the record.
pub fn note(r: &mut Record, d: &DiskInfo) {
    r.size_bytes = Some((d.size_gb.max(0) as u64) << 30);
}

/// The target's disk does not exist.
pub fn no_such_disk(t: &Target) -> Failure {
    failures::no_such_disk("disk", &t.disk, Some(&t.location.to_string()))
}
