//! disk-snapshot and disk-create --from-snapshot on Compute Engine, against
//! the fake (tests/servers/fake_gce.py): disks.createSnapshot labelled
//! (deployment, node, disk, time, tool), listed newest first through a
//! labels filter, pruned with --keep / --keep-within among the same disk
//! and deployment only; a failed snapshot leaves nothing behind; a disk
//! made from a snapshot holds the snapshot's bytes.

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use common::*;
use serde_json::{Value, json};

const ZONE: &str = "us-central1-a";

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "gce", "zone": ZONE, "disk": disk})
}

fn tool(g: &Gce, name: &str, args: &[&str], input: &str) -> Run {
    let mut a = vec!["--deployment", "snaps"];
    a.extend_from_slice(args);
    g.tool(name, &a, input)
}

/// The fake's snapshots, by name.
fn snapshots(g: &Gce) -> serde_json::Map<String, Value> {
    g.state()["snapshots"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.trim_start_matches("proj/").to_string(), v.clone()))
        .collect()
}

/// Snapshots someone else made: of data-0 in another deployment, of a
/// disk of this deployment that is not in the records, and one unlabelled.
fn foreign_snapshots(g: &Gce) -> Vec<&'static str> {
    let old = "20200101-000000-000";
    for (name, labels) in [
        (
            "other-deployments-data-0",
            json!({"appscale-persist-deployment": "other", "appscale-persist-disk": "data-0", "appscale-persist-time": old}),
        ),
        (
            "snaps-data-9",
            json!({"appscale-persist-deployment": "snaps", "appscale-persist-disk": "data-9", "appscale-persist-time": old}),
        ),
        ("made-by-hand", json!({})),
    ] {
        g.control(
            "snapshots",
            json!({"project": "proj", "name": name, "labels": labels, "diskSizeGb": 1}),
        );
    }
    vec!["other-deployments-data-0", "snaps-data-9", "made-by-hand"]
}

#[test]
fn gce_snapshots_are_labelled_listed_and_pruned_per_disk_and_deployment() {
    let g = Gce::new(ZONE);
    let foreign = foreign_snapshots(&g);
    let both = ndjson(&[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &both).expect(0);

    // The filesystem cannot be frozen from here: --no-freeze is needed.
    let r = tool(&g, "disk-snapshot", &[], &created.stdout).expect(1);
    for r in r.records() {
        assert_eq!(r["error"]["code"], "freeze-failed", "{r}");
    }
    let c = tool(
        &g,
        "disk-snapshot",
        &["--check", "--no-freeze", "--keep", "1"],
        &created.stdout,
    )
    .expect(0)
    .records();
    assert_eq!(c[0]["snapshot"]["state"], "planned");
    assert_eq!(c[0]["snapshot"]["freeze"], "not-frozen");
    assert!(c[0]["snapshot"].get("pruned").is_none(), "{}", c[0]);
    assert_eq!(g.state()["calls"].get("disks.createSnapshot"), None);
    let l = tool(&g, "disk-snapshot", &["--list"], &created.stdout).expect(0);
    assert!(
        l.records().iter().all(|r| r.get("snapshot").is_none()),
        "none taken by --check, none foreign listed: {}",
        l.stdout
    );

    let mut taken0 = Vec::new();
    for _ in 0..2 {
        let r = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
            .expect(0)
            .records();
        assert_eq!(r[0]["snapshot"]["state"], "completed", "{}", r[0]);
        assert_eq!(r[0]["snapshot"]["freeze"], "not-frozen");
        assert_eq!(r[0]["snapshot"]["size"], 1u64 << 30);
        assert_eq!(r[0]["changed"], true);
        taken0.push(r[0]["snapshot"]["id"].as_str().unwrap().to_string());
    }
    // Labelled like the disks, with the disk, time and tool.
    let all = snapshots(&g);
    let labels = &all[&taken0[0]]["labels"];
    assert_eq!(labels["appscale-persist-deployment"], "snaps");
    assert_eq!(labels["appscale-persist-node"], "node-0");
    assert_eq!(labels["appscale-persist-disk"], "data-0");
    assert_eq!(labels["appscale-persist-tool"], "disk-snapshot");
    assert!(
        labels["appscale-persist-time"]
            .as_str()
            .unwrap()
            .starts_with("20"),
        "{labels}"
    );

    // --check says what retention would prune; nothing is.
    let disk0 = ndjson(&created.records()[..1]);
    let c = tool(
        &g,
        "disk-snapshot",
        &["--check", "--no-freeze", "--keep", "1"],
        &disk0,
    )
    .expect(0)
    .record();
    let would = pruned_sorted(&c);
    let mut want = taken0.clone();
    want.sort();
    assert_eq!(would, want, "{c}");
    assert_eq!(snapshots(&g).len(), 4 + foreign.len());

    // --keep 1: the two older of data-0 go, nothing else.
    let kept = tool(&g, "disk-snapshot", &["--no-freeze", "--keep", "1"], &disk0)
        .expect(0)
        .record();
    let pruned = pruned_sorted(&kept);
    assert_eq!(pruned, want, "{kept}");
    let latest = kept["snapshot"]["id"].as_str().unwrap().to_string();
    let list0 = tool(&g, "disk-snapshot", &["--list"], &disk0)
        .expect(0)
        .records();
    assert_eq!(ids(&list0), [latest.clone()]);
    let disk1 = ndjson(&created.records()[1..]);
    let list1 = tool(&g, "disk-snapshot", &["--list"], &disk1)
        .expect(0)
        .records();
    assert_eq!(list1.len(), 2, "another disk's snapshots are kept");
    assert!(
        list1[0]["snapshot"]["time"].as_str() > list1[1]["snapshot"]["time"].as_str(),
        "newest first"
    );
    // --keep-within keeps what is recent: data-1's stay.
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--keep-within", "1h"],
        &disk1,
    )
    .expect(0)
    .record();
    assert!(r["snapshot"].get("pruned").is_none(), "{r}");
    let all = snapshots(&g);
    for f in &foreign {
        assert!(all.contains_key(*f), "{f} survives retention: {all:?}");
    }
    assert_eq!(all.len(), 1 + 3 + foreign.len());
    assert!(
        g.state()["calls"]["snapshots.list"].as_u64().unwrap() >= 1,
        "listed through the filter the fake applies"
    );

    // Restore: a new disk from data-0's latest snapshot, the old one kept.
    let restored = tool(&g, "disk-create", &["--from-snapshot", "latest"], &disk0)
        .expect(0)
        .record();
    assert_eq!(restored["restored_from"]["snapshot"], latest.as_str());
    assert_eq!(restored["restored_from"]["disk"], "data-0");
    assert_eq!(restored["size_bytes"], 1u64 << 30);
    let new_disk = restored["disk"].as_str().unwrap().to_string();
    assert!(new_disk.starts_with("data-0-restored-"), "{new_disk}");
    let disks = g.state()["disks"].clone();
    let made = &disks[format!("proj/{ZONE}/{new_disk}")];
    assert_eq!(made["sourceSnapshot"], latest.as_str(), "{disks}");
    assert_eq!(
        made["labels"]["appscale-persist-restored-from"],
        latest.as_str()
    );
    assert_eq!(made["labels"]["appscale-persist-deployment"], "snaps");
    assert!(
        disks.get(format!("proj/{ZONE}/data-0")).is_some(),
        "old one kept"
    );
    let again = tool(&g, "disk-create", &["--from-snapshot", "latest"], &disk0)
        .expect(0)
        .record();
    assert_eq!(
        (again["changed"].as_bool(), again["disk"].as_str()),
        (Some(false), Some(new_disk.as_str()))
    );
    // An id of another disk's, or another deployment's, snapshot is refused.
    for other in [
        list1[0]["snapshot"]["id"].as_str().unwrap(),
        "other-deployments-data-0",
    ] {
        let r = tool(&g, "disk-create", &["--from-snapshot", other], &disk0)
            .expect(1)
            .record();
        assert_eq!(r["error"]["code"], "no-such-snapshot", "{r}");
    }
    assert_eq!(
        g.state()["calls"]["disks.insert"],
        3,
        "two disks and one restored"
    );
}

#[test]
fn a_failed_snapshot_leaves_nothing_half_done() {
    let g = Gce::new(ZONE);
    let foreign = foreign_snapshots(&g);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &input).expect(0);
    let first = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
        .expect(0)
        .record();
    let first = first["snapshot"]["id"].as_str().unwrap().to_string();

    // The operation fails: no snapshot, nothing pruned.
    g.control(
        "config",
        json!({"fail": {"createSnapshot": {"code": "QUOTA_EXCEEDED", "message": "Quota 'SNAPSHOTS' exceeded"}}}),
    );
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--keep", "1"],
        &created.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "QUOTA_EXCEEDED", "{r}");
    assert!(r.get("snapshot").is_none(), "{r}");
    let all = snapshots(&g);
    assert_eq!(all.len(), 1 + foreign.len(), "{all:?}");
    assert!(all.contains_key(&first), "nothing pruned");

    // The call is refused: the same.
    g.control(
        "config",
        json!({"fail": {}, "http_fail": {"disks.createSnapshot": {"status": 403, "times": 1}}}),
    );
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--keep", "1"],
        &created.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "snapshot-failed", "{r}");
    assert_eq!(snapshots(&g).len(), 1 + foreign.len());

    // The snapshot is made but ends FAILED: it is deleted again.
    g.control("config", json!({"snapshot_status": "FAILED"}));
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--keep", "1"],
        &created.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "snapshot-failed", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("deleted"),
        "{r}"
    );
    let all = snapshots(&g);
    assert_eq!(all.len(), 1 + foreign.len(), "{all:?}");
    assert!(all.contains_key(&first), "nothing pruned");
    assert_eq!(g.state()["calls"]["snapshots.delete"], 1);
}

/// Byte for byte: a loop device stands in for the disk (the fake's
/// snapshot copies its image, a disk made from the snapshot gets a copy of
/// that); written, snapshot, written again; the disk made from the
/// snapshot holds exactly the bytes it had then, and disk-ensure-fs and
/// disk-mount keep and mount its filesystem.
#[test]
fn a_restored_disk_holds_the_snapshots_bytes() {
    require_root();
    let g = Gce::new(ZONE);
    let t = TempDir::new("gce-restore");
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &input).expect(0);
    let dev = LoopDev::new(&t, "data-0", 1024);
    g.control(
        "backing",
        json!({"project": "proj", "zone": ZONE, "name": "data-0", "path": dev.image}),
    );
    let mnt = t.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh_ok(&["mkfs.ext4", "-q", &dev.device]);
    sh_ok(&["mount", &dev.device, mnt.to_str().unwrap()]);
    std::fs::write(mnt.join("rows"), "A").unwrap();
    sh_ok(&["umount", mnt.to_str().unwrap()]);
    let at_snapshot = dev.digest();

    let snap = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
        .expect(0)
        .record();
    let snap = snap["snapshot"]["id"].as_str().unwrap().to_string();
    sh_ok(&["mount", &dev.device, mnt.to_str().unwrap()]);
    std::fs::write(mnt.join("rows"), "B").unwrap();
    sh_ok(&["umount", mnt.to_str().unwrap()]);
    assert_ne!(dev.digest(), at_snapshot);

    let restored = tool(&g, "disk-create", &["--from-snapshot", &snap], &input)
        .expect(0)
        .record();
    let name = restored["disk"].as_str().unwrap().to_string();
    let image = g.state()["disks"][format!("proj/{ZONE}/{name}")]["backing"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(digest(std::path::Path::new(&image)), at_snapshot);

    // The restored disk, attached, on the node: its filesystem kept and
    // mounted, holding A and not B.
    let mut r = restored.clone();
    r["mountpoint"] = json!(t.s("restored"));
    let attached = tool(
        &g,
        "disk-attach",
        &["--instance", "vm-1"],
        &ndjson(&[r.clone()]),
    )
    .expect(0)
    .record();
    let loop_dev = sh_ok(&["losetup", "--find", "--show", &image])
        .trim()
        .to_string();
    std::fs::create_dir_all(t.join("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink(&loop_dev, t.join(&format!("dev/disk/by-id/google-{name}")))
        .unwrap();
    let env = [("APPSCALE_PERSIST_DEV_ROOT", t.s("dev"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ensured = run_env("disk-ensure-fs", &[], &ndjson(&[attached]), &env).expect(0);
    assert_eq!(ensured.record()["changed"], false, "{}", ensured.stdout);
    let mounted = run_env(
        "disk-mount",
        &["--fstab", &t.s("fstab")],
        &ensured.stdout,
        &env,
    )
    .expect(0)
    .record();
    assert_eq!(mounted["state"], "mounted", "{mounted}");
    assert_eq!(
        std::fs::read_to_string(t.join("restored/rows")).unwrap(),
        "A"
    );
    run_env(
        "disk-unmount",
        &["--fstab", &t.s("fstab")],
        &ndjson(&[mounted]),
        &env,
    )
    .expect(0);
    drop(t);
    drop(dev);
}

/// Without --wait the tool returns once the operation is done, the
/// snapshot possibly still uploading (`pending`); --wait waits for READY at
/// most --wait-timeout, then fails `snapshot-pending` and leaves the
/// snapshot (it is not failed, only slow); retention prunes nothing then.
#[test]
fn without_wait_a_started_snapshot_is_pending_and_a_wait_deadline_leaves_it() {
    let g = Gce::new(ZONE);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &input).expect(0);
    let first = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
        .expect(0)
        .record();
    assert_eq!(first["snapshot"]["state"], "completed", "{first}");

    g.control("config", json!({"snapshot_status": "UPLOADING"}));
    let started = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
        .expect(0)
        .record();
    assert_eq!(started["snapshot"]["state"], "pending", "{started}");

    let r = tool(
        &g,
        "disk-snapshot",
        &[
            "--no-freeze",
            "--wait",
            "--wait-timeout",
            "1",
            "--keep",
            "1",
        ],
        &created.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "snapshot-pending", "{r}");
    let all = snapshots(&g);
    assert_eq!(all.len(), 3, "every snapshot left, nothing pruned: {all:?}");
    assert_eq!(g.state()["calls"]["snapshots.delete"], Value::Null);
}

/// Snapshots are global to the project, disks are zonal: data-1 in two
/// zones are two disks. --list, retention and --from-snapshot latest each
/// see only the snapshots of the record's disk in the record's zone.
#[test]
fn two_disks_of_one_name_in_two_zones_keep_their_own_snapshots() {
    let g = Gce::new(ZONE);
    let other_zone = "us-central1-b";
    let in_zone = |zone: &str| {
        ndjson(&[
            json!({"v": 1, "node": "node-0", "provider": "gce", "zone": zone, "disk": "data-1"}),
        ])
    };
    let a = tool(&g, "disk-create", &["--size", "1G"], &in_zone(ZONE)).expect(0);
    let b = tool(&g, "disk-create", &["--size", "1G"], &in_zone(other_zone)).expect(0);
    let take = |disk: &Run, args: &[&str]| {
        let mut a = vec!["--no-freeze"];
        a.extend_from_slice(args);
        tool(&g, "disk-snapshot", &a, &disk.stdout)
            .expect(0)
            .record()
    };
    let a1 = ids(&[take(&a, &[])]).remove(0);
    let a2 = ids(&[take(&a, &[])]).remove(0);
    let b1 = ids(&[take(&b, &[])]).remove(0);
    let all = snapshots(&g);
    assert_eq!(all[&a1]["labels"]["appscale-persist-zone"], ZONE);
    assert_eq!(all[&b1]["labels"]["appscale-persist-zone"], other_zone);

    // `latest` in the first zone is that zone's newest, not the other's.
    let restored = tool(&g, "disk-create", &["--from-snapshot", "latest"], &a.stdout)
        .expect(0)
        .record();
    assert_eq!(
        restored["restored_from"]["snapshot"],
        a2.as_str(),
        "{restored}"
    );
    let listed = tool(&g, "disk-snapshot", &["--list"], &a.stdout).expect(0);
    assert_eq!(ids(&listed.records()), [a2.clone(), a1.clone()]);

    // --keep 1 in the other zone prunes its own old one only.
    let kept = take(&b, &["--keep", "1"]);
    assert_eq!(kept["snapshot"]["pruned"], json!([b1]), "{kept}");
    let all = snapshots(&g);
    assert!(
        all.contains_key(&a1) && all.contains_key(&a2),
        "the other zone's snapshots are left: {all:?}"
    );
    assert!(!all.contains_key(&b1));
}

/// Only READY snapshots count toward --keep: a FAILED one is deleted, one
/// still uploading (left by an earlier --wait-timeout, say) is never, and
/// the last good one is kept. Before, the three counted alike, and
/// --keep 2 kept [new, uploading] and deleted the last good one.
#[test]
fn retention_counts_only_ready_snapshots_and_never_deletes_one_being_made() {
    let g = Gce::new(ZONE);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &input).expect(0);
    let good = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
        .expect(0)
        .record();
    let good = good["snapshot"]["id"].as_str().unwrap().to_string();
    let labels = snapshots(&g)[&good]["labels"].clone();
    // Taken at the same moment as the good one: by name, both sort newer.
    for (name, status) in [("data-0-failed", "FAILED"), ("data-0-slow", "UPLOADING")] {
        g.control(
            "snapshots",
            json!({"project": "proj", "name": name, "labels": labels, "diskSizeGb": 1,
                   "sourceDisk": format!("projects/proj/zones/{ZONE}/disks/data-0"),
                   "status": status}),
        );
    }
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--keep", "2"],
        &created.stdout,
    )
    .expect(0)
    .record();
    assert_eq!(r["snapshot"]["pruned"], json!(["data-0-failed"]), "{r}");
    let all = snapshots(&g);
    assert!(all.contains_key(&good), "the last good one kept: {all:?}");
    assert!(
        all.contains_key("data-0-slow"),
        "one being made is never deleted"
    );
    assert!(!all.contains_key("data-0-failed"));
    assert!(all.contains_key(r["snapshot"]["id"].as_str().unwrap()));
    // `latest` never restores the one being made.
    let restored = tool(
        &g,
        "disk-create",
        &["--from-snapshot", "latest"],
        &created.stdout,
    )
    .expect(0)
    .record();
    assert_eq!(restored["restored_from"]["snapshot"], r["snapshot"]["id"]);
}

/// A wait for READY longer than --timeout leaves pruning a deadline of its
/// own: the delete's operation is waited for and reported, not failed at
/// once (`prune-failed`) while the delete goes ahead.
#[test]
fn pruning_after_a_long_wait_has_a_deadline_of_its_own() {
    let g = Gce::new(ZONE);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &input).expect(0);
    let old = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
        .expect(0)
        .record();
    let old = old["snapshot"]["id"].as_str().unwrap().to_string();
    g.control(
        "config",
        json!({"op_delay": 0.5, "snapshot_ready_after": 4.0}),
    );
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--keep", "1", "--timeout", "2"],
        &created.stdout,
    )
    .expect(0)
    .record();
    assert_eq!(r["snapshot"]["state"], "completed", "{r}");
    assert_eq!(r["snapshot"]["pruned"], json!([old]), "{r}");
    assert!(!snapshots(&g).contains_key(&old));
}

/// Compute Engine snapshots a disk about once per 10 minutes, in bursts of
/// at most 6 an hour (snapshot-best-practices); a faster one fails its
/// operation with RESOURCE_OPERATION_RATE_EXCEEDED. That is "try later"
/// (`snapshot-too-soon`), not a broken disk: nothing taken, nothing pruned.
#[test]
fn a_snapshot_too_soon_after_the_last_is_try_later() {
    let g = Gce::new(ZONE);
    // The burst spent: one snapshot left, then one per 10 minutes.
    g.control(
        "config",
        json!({"snapshot_burst": 1, "snapshot_interval": 600}),
    );
    let created = tool(
        &g,
        "disk-create",
        &["--size", "1G"],
        &ndjson(&[rec("node-0", "data-0")]),
    )
    .expect(0);
    let keep_1 = || {
        let args = ["--no-freeze", "--keep", "1"];
        tool(&g, "disk-snapshot", &args, &created.stdout)
    };
    let first = keep_1().expect(0).record();
    let r = keep_1().expect(1).record();
    assert_eq!(r["error"]["code"], "snapshot-too-soon", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try later"),
        "{r}"
    );
    let all = snapshots(&g);
    assert_eq!(all.len(), 1, "nothing taken, nothing pruned: {all:?}");
    assert!(all.contains_key(first["snapshot"]["id"].as_str().unwrap()));
    assert_eq!(g.calls("snapshots.delete"), 0);
}

/// Snapshots go to the multi-region nearest the disk unless
/// `storageLocations` says otherwise; an organisation that restricts
/// resource locations refuses the default. `--snapshot-location` sets it;
/// it is Compute Engine's alone (another provider's record: usage error).
#[test]
fn snapshot_location_sets_the_storage_location() {
    let g = Gce::new(ZONE);
    let created = tool(
        &g,
        "disk-create",
        &["--size", "1G"],
        &ndjson(&[rec("node-0", "data-0")]),
    )
    .expect(0);
    // Only `eu` allowed (constraints/gcp.resourceLocations).
    g.control(
        "config",
        json!({"allowed_locations": ["eu", "europe-west1"]}),
    );
    let r = tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout)
        .expect(1)
        .record();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("constraints/gcp.resourceLocations"),
        "{r}"
    );
    assert!(snapshots(&g).is_empty());
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--snapshot-location", "europe-west1"],
        &created.stdout,
    )
    .expect(0)
    .record();
    let id = r["snapshot"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        snapshots(&g)[&id]["storageLocations"],
        json!(["europe-west1"])
    );

    let ec2 =
        json!({"v": 1, "node": "n", "provider": "ec2", "zone": "us-east-1a", "disk": "vol-1"});
    let r = tool(
        &g,
        "disk-snapshot",
        &["--no-freeze", "--snapshot-location", "eu"],
        &ndjson(&[ec2]),
    )
    .expect(2);
    assert!(r.stderr.contains("Compute Engine"), "{}", r.stderr);
    let r = tool(
        &g,
        "disk-snapshot",
        &["--snapshot-location", "EU!"],
        &created.stdout,
    )
    .expect(2);
    assert!(
        r.stderr.contains("not a Compute Engine location"),
        "{}",
        r.stderr
    );
}

/// Only snapshots disk-snapshot took (every label it puts on one: the
/// deployment, disk, zone, time and tool) are counted, listed, pruned or
/// restored from. A snapshot of the disk labelled with the deployment but
/// without our time label counted as the oldest, and was pruned first.
#[test]
fn retention_never_counts_or_deletes_a_snapshot_it_did_not_make() {
    let g = Gce::new(ZONE);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &input).expect(0);
    let source = format!("projects/proj/zones/{ZONE}/disks/data-0");
    for (name, labels) in [
        (
            "data-0-by-hand",
            json!({"appscale-persist-deployment": "snaps", "appscale-persist-disk": "data-0",
                   "appscale-persist-zone": ZONE}),
        ),
        (
            "data-0-other-tool",
            json!({"appscale-persist-deployment": "snaps", "appscale-persist-disk": "data-0",
                   "appscale-persist-zone": ZONE, "appscale-persist-time": "20200101-000000-000",
                   "appscale-persist-tool": "backup-sh"}),
        ),
    ] {
        g.control(
            "snapshots",
            json!({"project": "proj", "name": name, "labels": labels, "diskSizeGb": 1,
                   "sourceDisk": source}),
        );
    }
    let mut ours = Vec::new();
    for _ in 0..2 {
        let r = tool(
            &g,
            "disk-snapshot",
            &["--no-freeze", "--keep", "1"],
            &created.stdout,
        )
        .expect(0)
        .record();
        ours.push(r["snapshot"]["id"].as_str().unwrap().to_string());
        assert!(
            pruned_sorted(&r).iter().all(|p| ours.contains(p)),
            "only ours is pruned: {r}"
        );
    }
    let all = snapshots(&g);
    for theirs in ["data-0-by-hand", "data-0-other-tool"] {
        assert!(all.contains_key(theirs), "{theirs} kept: {all:?}");
    }
    assert!(!all.contains_key(&ours[0]), "the older of ours pruned");
    let listed = tool(&g, "disk-snapshot", &["--list"], &created.stdout)
        .expect(0)
        .records();
    assert_eq!(ids(&listed), [ours[1].clone()], "theirs is not listed");
    let r = tool(
        &g,
        "disk-create",
        &["--from-snapshot", "data-0-other-tool"],
        &created.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "no-such-snapshot", "{r}");
}

/// `disk-create --from-snapshot` of a disk still attached to an instance is
/// refused before anything is made (`original-attached`): the restored disk
/// would carry a filesystem of the same UUID beside it.
#[test]
fn a_restore_beside_its_attached_original_is_refused() {
    let g = Gce::new(ZONE);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = tool(&g, "disk-create", &["--size", "1G"], &input).expect(0);
    tool(&g, "disk-snapshot", &["--no-freeze"], &created.stdout).expect(0);
    g.instance(ZONE, "vm-1");
    let attached = tool(&g, "disk-attach", &["--instance", "vm-1"], &created.stdout).expect(0);
    let disks = g.state()["disks"].as_object().unwrap().len();
    let r = tool(
        &g,
        "disk-create",
        &["--from-snapshot", "latest"],
        &attached.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "original-attached", "{r}");
    assert_eq!(
        g.state()["disks"].as_object().unwrap().len(),
        disks,
        "nothing was made"
    );
    tool(&g, "disk-detach", &["--force"], &attached.stdout).expect(0);
    let r = tool(
        &g,
        "disk-create",
        &["--from-snapshot", "latest"],
        &created.stdout,
    )
    .expect(0)
    .record();
    assert!(
        r["disk"].as_str().unwrap().starts_with("data-0-restored-"),
        "{r}"
    );
}
