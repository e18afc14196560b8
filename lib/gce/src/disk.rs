//! Looking the records' disks and instances up before any plan: reads, at
//! most `--concurrency` at once, each instance once however many records
//! name it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use appscale_persist::record::Record;
use appscale_persist::step::Failure;
use std::future::Future;
use std::sync::Arc;

use appscale_persist_cloudkit::{ApiError, concurrently, failures};

use crate::api::{Api, DiskInfo, InstanceInfo, Location};
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
    let by_zone = per_zone(run, targets.iter().flatten(), |api, at, names| async move {
        api.disks_named(&at, &names).await
    })
    .await;
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

/// `call` once per zone of `targets`, with the names of their disks there,
/// at most `--concurrency` zones at once: the batched lookups, by zone.
pub async fn per_zone<'a, T, F, Fut>(
    run: &Run,
    targets: impl IntoIterator<Item = &'a Target>,
    call: F,
) -> HashMap<Location, Result<T, Failure>>
where
    T: Send + 'static,
    F: Fn(Arc<Api>, Location, Vec<String>) -> Fut,
    Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    let mut zones: BTreeMap<Location, Vec<String>> = BTreeMap::new();
    for t in targets {
        zones
            .entry(t.location.clone())
            .or_default()
            .push(t.disk.clone());
    }
    let lookups: Vec<(Location, Vec<String>)> = zones.into_iter().collect();
    let keys: Vec<Location> = lookups.iter().map(|(at, _)| at.clone()).collect();
    let answers = concurrently(run.cfg.concurrency, lookups, |(at, names)| {
        let answer = call(run.api.clone(), at, names);
        async move { Ok(answer.await?) }
    })
    .await;
    keys.into_iter().zip(answers).collect()
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
