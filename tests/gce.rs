//! The gce provider against a fake Compute Engine (tests/servers/fake_gce.py)
//! that speaks the real REST paths and the metadata server's, holds state,
//! and can make operations fail, crawl or hang.

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "gce", "zone": "us-central1-a", "disk": disk})
}

#[test]
fn create_attach_detach_are_idempotent() {
    let g = Gce::new("us-central1-a");
    let input = ndjson(&[rec("node-0", "mydisk1")]);
    let r = g
        .tool("disk-create", &["--size", "10G"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("created"), Some(true))
    );
    assert_eq!(
        g.state()["disks"]["proj/us-central1-a/mydisk1"],
        json!({"sizeGb": 10, "type": "pd-balanced", "users": [], "labels": {
            "appscale-persist-deployment": "appscale",
            "appscale-persist-node": "node-0",
        }}),
        "labelled for its deployment (the shared default here) and node"
    );
    let r = g
        .tool("disk-create", &["--size", "10G"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "exists with the same size and type");
    let r = g.tool("disk-create", &[], &input).expect(0).record();
    assert_eq!(r["changed"], false, "no size asked: any size will do");
    let r = g
        .tool("disk-create", &["--size", "20G"], &input)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "size-mismatch");
    let r = g
        .tool("disk-create", &["--type", "pd-ssd"], &input)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "type-mismatch");

    let a = g
        .tool("disk-attach", &["--instance", "vm-1"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (
            a["state"].as_str(),
            a["changed"].as_bool(),
            a["attached_as"].as_str()
        ),
        (Some("attached"), Some(true), Some("mydisk1"))
    );
    assert_eq!(
        g.state()["instances"]["proj/us-central1-a/vm-1"],
        json!(["persistent-disk-0", "mydisk1"]),
        "deviceName = disk name"
    );
    let again = g
        .tool("disk-attach", &["--instance", "vm-1"], &input)
        .expect(0)
        .record();
    assert_eq!(again["changed"], false);

    // No node ever used it: detached from here without a node's proof.
    let d = g
        .tool("disk-detach", &["--force"], &ndjson(&[a.clone()]))
        .expect(0)
        .record();
    assert_eq!(
        (d["state"].as_str(), d["changed"].as_bool()),
        (Some("detached"), Some(true))
    );
    assert_eq!(
        g.state()["disks"]["proj/us-central1-a/mydisk1"]["users"],
        json!([])
    );
    let again = g.tool("disk-detach", &[], &ndjson(&[a])).expect(0).record();
    assert_eq!(again["changed"], false, "not attached is success");
}

#[test]
fn a_disk_in_use_elsewhere_is_refused() {
    let g = Gce::new("us-central1-a");
    g.instance("us-central1-a", "vm-2");
    let input = ndjson(&[rec("node-0", "shared")]);
    g.tool("disk-create", &["--size", "1G"], &input).expect(0);
    g.tool("disk-attach", &["--instance", "vm-1"], &input)
        .expect(0);
    let r = g
        .tool("disk-attach", &["--instance", "vm-2"], &input)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "attached-elsewhere");
    assert!(r["error"]["message"].as_str().unwrap().contains("vm-1"));
    assert_eq!(
        g.state()["calls"]["instances.attachDisk"],
        1,
        "no attach was sent for vm-2"
    );
    let r = g
        .tool("disk-detach", &["--instance", "vm-2"], &input)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "attached-elsewhere");
    let r = g
        .tool(
            "disk-attach",
            &["--instance", "vm-9"],
            &ndjson(&[rec("node-0", "other")]),
        )
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "no-such-disk");
}

#[test]
fn an_operation_error_becomes_the_record_error() {
    let g = Gce::new("us-central1-a");
    let recs: Vec<Value> = [rec("node-0", "d1"), rec("node-1", "d2")]
        .into_iter()
        .map(|mut r| {
            r["instance"] = json!("vm-1");
            r
        })
        .collect();
    let input = ndjson(&recs);
    g.tool("disk-create", &["--size", "1G"], &input).expect(0);
    g.control("config", json!({"fail": {"attachDisk": {"code": "QUOTA_EXCEEDED", "message": "Quota 'DISKS_TOTAL_GB' exceeded"}}}));
    let recs = g.tool("disk-attach", &[], &input).expect(1).records();
    for r in &recs {
        assert_eq!(r["error"]["code"], "QUOTA_EXCEEDED");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("DISKS_TOTAL_GB"),
            "{r}"
        );
    }
}

#[test]
fn a_hung_operation_times_out_and_a_slow_one_is_waited_for() {
    let g = Gce::new("us-central1-a");
    let input = ndjson(&[rec("node-0", "d1")]);
    g.control("config", json!({"op_delay": 1.5, "wait_max": 0.5}));
    let r = g
        .tool("disk-create", &["--size", "1G"], &input)
        .expect(0)
        .record();
    assert_eq!(r["state"], "created", "a slow operation is waited for");
    assert!(
        g.state()["calls"]["zoneOperations.wait"].as_u64().unwrap() >= 2,
        "{}",
        g.state()
    );

    g.control("config", json!({"hang": true}));
    let started = std::time::Instant::now();
    let r = g
        .tool(
            "disk-attach",
            &["--instance", "vm-1", "--timeout", "2"],
            &input,
        )
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within 2s"),
        "{r}"
    );
    eprintln!(
        "a hung operation was given up after {:?}",
        started.elapsed()
    );
}

#[test]
fn server_errors_on_reads_are_retried() {
    let g = Gce::new("us-central1-a");
    g.control(
        "config",
        json!({"http_fail": {"disks.get": {"status": 503, "times": 2}}}),
    );
    let r = g
        .tool(
            "disk-create",
            &["--size", "1G"],
            &ndjson(&[rec("node-0", "d1")]),
        )
        .expect(0)
        .record();
    assert_eq!(r["state"], "created");
    assert!(g.state()["calls"]["disks.get"].as_u64().unwrap() >= 3);
}

#[test]
fn fifty_disks_are_created_and_attached_concurrently() {
    let g = Gce::new("us-central1-a");
    let vms: Vec<String> = (0..5).map(|i| format!("vm-{}", i + 10)).collect();
    for v in &vms {
        g.instance("us-central1-a", v);
    }
    g.control("config", json!({"op_delay": 0.3}));
    let recs: Vec<Value> = (0..50)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("disk-{i}"));
            r["instance"] = json!(vms[i / 10]);
            r
        })
        .collect();
    let started = std::time::Instant::now();
    let created = g
        .tool(
            "disk-create",
            &["--size", "1G", "--concurrency", "16"],
            &ndjson(&recs),
        )
        .expect(0)
        .records();
    let create_took = started.elapsed();
    let started = std::time::Instant::now();
    let attached = g
        .tool("disk-attach", &["--concurrency", "16"], &ndjson(&created))
        .expect(0)
        .records();
    let attach_took = started.elapsed();
    assert!(
        attached
            .iter()
            .all(|r| r["state"] == "attached" && r["changed"] == true)
    );
    let s = g.state();
    assert_eq!(s["calls"]["disks.insert"], 50);
    assert_eq!(s["calls"]["instances.attachDisk"], 50);
    for v in &vms {
        assert_eq!(
            s["instances"][format!("proj/us-central1-a/{v}")]
                .as_array()
                .unwrap()
                .len(),
            11,
            "{v}"
        );
    }
    // 50 operations of 0.3 s each, 16 at a time: well under the 15 s they
    // would take one by one.
    eprintln!("50 disks: create {create_took:?}, attach {attach_took:?}");
    let detached = g
        .tool(
            "disk-detach",
            &["--concurrency", "16", "--force"],
            &ndjson(&attached),
        )
        .expect(0)
        .records();
    assert!(detached.iter().all(|r| r["state"] == "detached"));
}

#[test]
fn missing_configuration_is_named() {
    let g = Gce::new("us-central1-a");
    let url = g.url();
    let env = g.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = run_env(
        "disk-create",
        &["--endpoint", &url],
        &ndjson(&[rec("node-0", "d1")]),
        &env,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "no-project");
    let mut no_zone = rec("node-0", "d1");
    no_zone.as_object_mut().unwrap().remove("zone");
    let r = g
        .tool("disk-create", &[], &ndjson(&[no_zone]))
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "no-zone");
}

#[test]
fn up_and_down_on_the_seed_gce_appscalefile() {
    require_root();
    // The seed page's example. Its zone, `us-central-1a`, is not a Compute
    // Engine zone: the linter refuses it and names the real one, which the
    // flow then runs with.
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let t = TempDir::new("gce-flow");
    let file = t.join("AppScalefile");
    let seed = "infrastructure: gce\nproject: proj\nmachine: appscale-image\nclient_secrets: ~/client_secrets.json\nzone: us-central-1a\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: mydisk1\n";
    std::fs::write(&file, seed).unwrap();
    let lint = run("appscalefile-lint", &[file.to_str().unwrap()], "").expect(1);
    assert!(
        lint.stderr.contains("did you mean `us-central1-a`?"),
        "{}",
        lint.stderr
    );
    std::fs::write(&file, seed.replace("us-central-1a", zone)).unwrap();
    let lint = run("appscalefile-lint", &[file.to_str().unwrap()], "").expect(0);
    assert!(!lint.stderr.contains("error"), "{}", lint.stderr);
    // A loop device stands in for the persistent disk, linked where the
    // guest environment's udev rules link it.
    let dev = LoopDev::new(&t, "mydisk1", 1024);
    std::fs::create_dir_all(t.join("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink(&dev.device, t.join("dev/disk/by-id/google-mydisk1")).unwrap();

    let mut env = g.env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT".into(), t.s("dev")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = g.url();
    let up = || {
        flow_with(
            "up",
            &t,
            &file,
            &["--node", "node-1"],
            &["--endpoint", url.as_str(), "--self", "--size", "1G"],
            &env,
        )
    };
    let down = || {
        flow_with(
            "down",
            &t,
            &file,
            &["--node", "node-1"],
            &["--endpoint", url.as_str(), "--self"],
            &env,
        )
    };

    let r = up().expect(0).record();
    assert_eq!(
        (r["state"].as_str(), r["instance"].as_str()),
        (Some("mounted"), Some("vm-1")),
        "{r}"
    );
    assert!(
        r["device"]
            .as_str()
            .unwrap()
            .ends_with("/disk/by-id/google-mydisk1")
    );
    assert_eq!(
        g.state()["disks"][format!("proj/{zone}/mydisk1")]["users"],
        json!(["vm-1"])
    );
    let data = t.join("mnt/node-1/zookeeper");
    std::fs::write(&data, "znodes").unwrap();

    let r = down().expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(
        g.state()["disks"][format!("proj/{zone}/mydisk1")]["users"],
        json!([])
    );
    assert!(!Path::new(&data).exists());

    up().expect(0);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "znodes");
    let again = up().expect(0).record();
    assert!(all_unchanged(std::slice::from_ref(&again)), "{again}");
    down().expect(0);
}

fn error_code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or("none")
}

fn in_deployment(mut r: Value, deployment: &str) -> Value {
    r["deployment"] = json!(deployment);
    r
}

#[test]
fn a_disk_labelled_for_another_deployment_is_never_adopted() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    g.instance(zone, "vm-2");
    g.tool(
        "disk-create",
        &["--size", "1G"],
        &ndjson(&[in_deployment(rec("node-0", "data"), "alpha")]),
    )
    .expect(0);
    // Deployment beta names a disk `data` too.
    let theirs = in_deployment(rec("node-0", "data"), "beta");
    for (tool_name, args) in [
        ("disk-create", vec![]),
        ("disk-attach", vec!["--instance", "vm-1"]),
    ] {
        let r = g
            .tool(tool_name, &args, &ndjson(&[theirs.clone()]))
            .expect(1)
            .record();
        assert_eq!(error_code(&r), "other-deployment", "{tool_name}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deployment alpha"),
            "{r}"
        );
    }
    let s = g.state();
    assert_eq!(s["calls"].get("instances.attachDisk"), None, "{s}");
    assert_eq!(
        s["disks"][format!("proj/{zone}/data")]["labels"]["appscale-persist-deployment"],
        "alpha"
    );
    // Made by hand and in use by an instance: not adopted.
    g.control(
        "disks",
        json!({"project": "proj", "zone": zone, "name": "busy", "users": ["vm-2"]}),
    );
    let r = g
        .tool("disk-create", &[], &ndjson(&[rec("node-0", "busy")]))
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "not-adoptable", "{r}");
    // Made by hand and free: adopted, labelled, and the record says so.
    g.control(
        "disks",
        json!({"project": "proj", "zone": zone, "name": "free"}),
    );
    let mine = in_deployment(rec("node-0", "free"), "gamma");
    let r = g
        .tool("disk-create", &[], &ndjson(&[mine.clone()]))
        .expect(0)
        .record();
    assert_eq!(
        (r["adopted"].as_bool(), r["changed"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    assert_eq!(
        g.state()["disks"][format!("proj/{zone}/free")]["labels"],
        json!({"appscale-persist-deployment": "gamma", "appscale-persist-node": "node-0"})
    );
    let again = g
        .tool("disk-create", &[], &ndjson(&[mine]))
        .expect(0)
        .record();
    assert_eq!(
        (again["changed"].as_bool(), again.get("adopted")),
        (Some(false), None),
        "{again}"
    );
}

#[test]
fn a_failed_operation_poll_is_retried_until_the_deadline() {
    let g = Gce::new("us-central1-a");
    // A slow operation, and more failed polls in a row than the client
    // would try one call.
    g.control(
        "config",
        json!({"op_delay": 1.0, "wait_max": 0.1, "http_fail": {"zoneOperations.wait": {"status": 503, "times": 6}}}),
    );
    let r = g
        .tool(
            "disk-create",
            &["--size", "1G"],
            &ndjson(&[rec("node-0", "d1")]),
        )
        .expect(0)
        .record();
    assert_eq!(r["state"], "created", "{r}");
    assert!(
        g.state()["calls"]["zoneOperations.wait"].as_u64().unwrap() >= 7,
        "{}",
        g.state()
    );
}

#[test]
fn mutating_calls_are_retried_only_when_safe() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    // Throttled inserts and detaches, and an attach whose answer is lost
    // after it was done: each retried with its request id.
    g.control(
        "config",
        json!({"http_fail": {
            "disks.insert": {"status": 429, "times": 2},
            "instances.attachDisk": {"status": 503, "times": 1, "lost": true},
            "instances.detachDisk": {"status": 429, "times": 1},
        }}),
    );
    let input = ndjson(&[rec("node-0", "d1")]);
    g.tool("disk-create", &["--size", "1G"], &input).expect(0);
    let a = g
        .tool("disk-attach", &["--instance", "vm-1"], &input)
        .expect(0)
        .record();
    g.tool("disk-detach", &["--force"], &ndjson(&[a])).expect(0);
    let s = g.state();
    assert_eq!(
        (
            s["calls"]["disks.insert"].as_u64(),
            s["calls"]["instances.attachDisk"].as_u64(),
            s["calls"]["instances.detachDisk"].as_u64()
        ),
        (Some(3), Some(2), Some(2)),
        "{s}"
    );
    assert_eq!(s["disks"][format!("proj/{zone}/d1")]["users"], json!([]));
    // An insert whose answer is lost: the retry carries the same request
    // id, so Compute Engine answers with the first call's operation rather
    // than making a second disk or failing on the first.
    g.control(
        "config",
        json!({"http_fail": {"disks.insert": {"status": 503, "times": 1, "lost": true}}}),
    );
    let r = g
        .tool(
            "disk-create",
            &["--size", "1G"],
            &ndjson(&[rec("node-1", "d2")]),
        )
        .expect(0)
        .record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("created"), Some(true))
    );
    assert_eq!(g.state()["calls"]["disks.insert"], 5);
}

/// Disk `disk` (1G) of node-0, created and attached to vm-1: its record.
fn created_and_attached(g: &Gce, disk: &str) -> Value {
    let input = ndjson(&[rec("node-0", disk)]);
    g.tool("disk-create", &["--size", "1G"], &input).expect(0);
    g.tool("disk-attach", &["--instance", "vm-1"], &input)
        .expect(0)
        .record()
}

/// A loop device standing in for disk `name`, linked where the guest's
/// udev rules link it (`google-NAME`).
fn stand_in(t: &TempDir, name: &str, mib: u64) -> LoopDev {
    let d = LoopDev::new(t, name, mib);
    std::fs::create_dir_all(t.join("dev/disk/by-id")).unwrap();
    let link = t.join(&format!("dev/disk/by-id/google-{name}"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&d.device, link).unwrap();
    d
}

#[test]
fn detaching_from_elsewhere_needs_the_nodes_unmount_proof() {
    require_root();
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let t = TempDir::new("gce-proof");
    let mut r = rec("node-0", "pd1");
    r["mountpoint"] = json!(t.s("mnt"));
    g.tool("disk-create", &["--size", "1G"], &ndjson(&[r.clone()]))
        .expect(0);
    let attached = g
        .tool("disk-attach", &["--instance", "vm-1"], &ndjson(&[r]))
        .expect(0)
        .record();
    let _dev = stand_in(&t, "pd1", 1024);
    // From the controller, without the node's word: refused.
    let refused = g
        .tool("disk-detach", &[], &ndjson(&[attached.clone()]))
        .expect(1)
        .record();
    assert_eq!(error_code(&refused), "no-unmount-proof", "{refused}");
    assert_eq!(
        g.state()["disks"][format!("proj/{zone}/pd1")]["users"],
        json!(["vm-1"])
    );
    // disk-unmount on the node (vm-1, this machine with the stand-in)
    // stamps the record: the device is here and free.
    let mut env = g.env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT".into(), t.s("dev")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let unmounted = run_env("disk-unmount", &[], &ndjson(&[attached]), &env)
        .expect(0)
        .record();
    assert_eq!(
        (
            unmounted["unmount_proof"]["instance"].as_str(),
            unmounted["unmount_proof"]["disk"].as_str()
        ),
        (Some("vm-1"), Some("pd1")),
        "{unmounted}"
    );
    let r = g
        .tool("disk-detach", &[], &ndjson(&[unmounted]))
        .expect(0)
        .record();
    assert_eq!(r["state"], "detached");
    assert_eq!(
        g.state()["disks"][format!("proj/{zone}/pd1")]["users"],
        json!([])
    );
}

#[test]
fn links_that_disagree_or_a_device_of_another_size_are_refused() {
    require_root();
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let t = TempDir::new("gce-identity");
    let attached = created_and_attached(&g, "pd2");
    let root = t.s("dev");
    let ensure = || {
        run_env(
            "disk-ensure-fs",
            &["--check"],
            &ndjson(&[attached.clone()]),
            &[("APPSCALE_PERSIST_DEV_ROOT", root.as_str())],
        )
    };
    // google-pd2 and scsi-0Google_PersistentDisk_pd2 lead to two devices.
    let _right = stand_in(&t, "pd2", 1024);
    let other = LoopDev::new(&t, "other", 1024);
    let scsi = t.join("dev/disk/by-id/scsi-0Google_PersistentDisk_pd2");
    std::os::unix::fs::symlink(&other.device, &scsi).unwrap();
    let r = ensure().expect(1).record();
    assert_eq!(error_code(&r), "identity-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different devices"),
        "{r}"
    );
    std::fs::remove_file(&scsi).unwrap();
    ensure().expect(0);
    // The link leads to a device of another size than the disk.
    let _small = stand_in(&t, "pd2", 512);
    let r = ensure().expect(1).record();
    assert_eq!(error_code(&r), "identity-mismatch", "{r}");
}

// --- Production options (issue 18) ----------------------------------------

const KEY: &str = "projects/proj/locations/us/keyRings/appscale/cryptoKeys/data";

/// A new disk gets the customer-managed key, provisioned IOPS and
/// throughput, and labels asked; found again it is held to them (Compute
/// Engine names the key version, which matches the key); labels are added
/// only with --retag.
#[test]
fn a_new_disk_has_the_key_performance_and_labels_asked_and_is_held_to_them() {
    let g = Gce::new("us-central1-a");
    let input = ndjson(&[rec("node-0", "data-0")]);
    let opts = [
        "--size",
        "100G",
        "--type",
        "hyperdisk-balanced",
        "--kms-key",
        KEY,
        "--iops",
        "6000",
        "--throughput",
        "400",
        "--tag",
        "team=db",
    ];
    let r = g.tool("disk-create", &opts, &input).expect(0).record();
    assert_eq!(r["changed"], true, "{r}");
    let d = &g.state()["disks"]["proj/us-central1-a/data-0"];
    assert_eq!(d["kmsKeyName"], KEY, "{d}");
    assert_eq!(
        (
            d["provisionedIops"].as_u64(),
            d["provisionedThroughput"].as_u64()
        ),
        (Some(6000), Some(400)),
        "{d}"
    );
    assert_eq!(d["labels"]["team"], "db", "{d}");
    assert_eq!(
        d["labels"]["appscale-persist-deployment"], "appscale",
        "{d}"
    );

    for args in [&opts[..], &[]] {
        let r = g.tool("disk-create", args, &input).expect(0).record();
        assert_eq!(r["changed"], false, "{args:?}: {r}");
    }
    let other = KEY.replace("data", "other");
    for (args, code) in [
        (&["--kms-key", other.as_str()][..], "encryption-mismatch"),
        (
            &["--type", "hyperdisk-balanced", "--iops", "7000"],
            "performance-mismatch",
        ),
    ] {
        let r = g.tool("disk-create", args, &input).expect(1).record();
        assert_eq!(error_code(&r), code, "{args:?}: {r}");
    }
    let r = g
        .tool("disk-create", &["--tag", "team=web"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "{r}");
    assert_eq!(g.state()["calls"].get("disks.setLabels"), None);
    let retag = ["--tag", "team=web", "--tag", "tier=gold", "--retag"];
    let r = g.tool("disk-create", &retag, &input).expect(0).record();
    assert_eq!(r["changed"], true, "{r}");
    let labels = &g.state()["disks"]["proj/us-central1-a/data-0"]["labels"];
    assert_eq!(
        (labels["team"].as_str(), labels["tier"].as_str()),
        (Some("web"), Some("gold"))
    );
    assert_eq!(
        labels["appscale-persist-deployment"], "appscale",
        "{labels}"
    );
    let r = g.tool("disk-create", &retag, &input).expect(0).record();
    assert_eq!(r["changed"], false, "labelled once: {r}");
    assert_eq!(g.state()["calls"]["disks.setLabels"], 1);
}

/// A disk found with a Google-managed key where --kms-key asks for one is
/// an error, never accepted.
#[test]
fn a_disk_with_a_google_managed_key_is_not_taken_for_a_customer_managed_one() {
    let g = Gce::new("us-central1-a");
    g.control(
        "disks",
        json!({"project": "proj", "zone": "us-central1-a", "name": "data-0", "sizeGb": 10}),
    );
    let input = ndjson(&[rec("node-0", "data-0")]);
    let r = g
        .tool("disk-create", &["--kms-key", KEY], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "encryption-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Google-managed"),
        "{r}"
    );
    assert_eq!(
        g.state()["calls"].get("disks.setLabels"),
        None,
        "not adopted"
    );
}

/// Label rules, provisioned values beyond the type's limits, and a key
/// that is no Cloud KMS key name are usage errors before any call.
#[test]
fn labels_and_performance_beyond_the_rules_are_refused_before_any_call() {
    let g = Gce::new("us-central1-a");
    let input = ndjson(&[rec("node-0", "data-0")]);
    let refused: &[(&[&str], &str)] = &[
        (&["--tag", "Team=db"], "lowercase letter"),
        (&["--tag", "team=DB"], "only lowercase"),
        (&["--tag", "appscale-persist-node=x"], "itself"),
        (
            &["--iops", "5000"],
            "pd-balanced disks take no provisioned IOPS",
        ),
        (
            &["--type", "pd-extreme", "--iops", "5000"],
            "10000 to 120000",
        ),
        (
            &["--type", "hyperdisk-throughput", "--iops", "5000"],
            "no provisioned IOPS",
        ),
        (
            &["--type", "hyperdisk-balanced", "--throughput", "5000"],
            "140 to 2400",
        ),
        (&["--kms-key", "alias/data"], "Cloud KMS key name"),
    ];
    for (args, why) in refused {
        let r = g.tool("disk-create", args, &input).expect(2);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(g.state()["calls"], json!({}), "no call at all");
}

/// --grow resizes a smaller disk (disks.resize, its operation waited for);
/// without it the difference is reported; a larger disk is never shrunk.
#[test]
fn grow_resizes_a_smaller_disk_and_never_shrinks_one() {
    let g = Gce::new("us-central1-a");
    let input = ndjson(&[rec("node-0", "data-0")]);
    g.tool("disk-create", &["--size", "10G"], &input).expect(0);
    let size = || g.state()["disks"]["proj/us-central1-a/data-0"]["sizeGb"].as_u64();
    let r = g
        .tool("disk-create", &["--size", "20G"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("--grow"),
        "{r}"
    );
    let r = g
        .tool(
            "disk-create",
            &["--check", "--size", "20G", "--grow"],
            &input,
        )
        .expect(0);
    assert!(
        r.stderr.contains("would grow from 10 GB to 20 GB"),
        "{}",
        r.stderr
    );
    assert_eq!(g.state()["calls"].get("disks.resize"), None);

    let r = g
        .tool("disk-create", &["--size", "20G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], true, "{r}");
    assert_eq!(r["size_bytes"], 20u64 << 30, "{r}");
    assert_eq!(size(), Some(20));
    let r = g
        .tool("disk-create", &["--size", "20G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "grown once: {r}");

    let r = g
        .tool("disk-create", &["--size", "15G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never shrunk"),
        "{r}"
    );
    assert_eq!(size(), Some(20));
    assert_eq!(
        g.state()["calls"]["disks.resize"],
        1,
        "no call to shrink it"
    );
}

/// The whole way on Compute Engine: a disk grown by disk-create --grow
/// (the fake grows its stand-in as Compute Engine grows the disk under the
/// guest), then scripts/up --grow grows the filesystem; the data is
/// intact. (Grown while detached: this container lacks the
/// CAP_SYS_RESOURCE ext4's online resize needs.)
#[test]
fn up_grow_on_compute_engine_keeps_the_data() {
    require_root();
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let t = TempDir::new("gce-grow");
    let file = t.join("AppScalefile");
    std::fs::write(&file, format!("infrastructure: gce\nproject: proj\nmachine: appscale-image\nclient_secrets: ~/client_secrets.json\nzone: {zone}\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: growdisk\n")).unwrap();
    let dev = stand_in(&t, "growdisk", 1024);
    let mut env = g.env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT".into(), t.s("dev")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = g.url();
    let flow_of = |script: &str, flags: &[&str], size: &str| {
        let mut provider = vec!["--endpoint", url.as_str(), "--self"];
        if script == "up" {
            provider.extend(["--size", size]);
        }
        let mut flags = flags.to_vec();
        flags.extend(["--node", "node-1"]);
        flow_with(script, &t, &file, &flags, &provider, &env)
    };
    flow_of("up", &[], "1G").expect(0);
    let data = t.join("mnt/node-1/rows");
    std::fs::write(&data, "kept").unwrap();
    flow_of("down", &[], "").expect(0);

    // Without --grow, a larger size is reported and nothing is done.
    let r = flow_of("up", &[], "2G");
    assert_ne!(r.code, 0);
    assert_eq!(error_code(&r.record()), "size-mismatch", "{}", r.stdout);
    assert_eq!(g.state()["calls"].get("disks.resize"), None);

    // The disk grows (disks.resize); the guest sees its device grow.
    let input = ndjson(&[rec("node-1", "growdisk")]);
    g.tool("disk-create", &["--size", "2G", "--grow"], &input)
        .expect(0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dev.image)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    sh_ok(&["losetup", "--set-capacity", &dev.device]);

    let r = flow_of("up", &["--grow"], "2G").expect(0).record();
    assert_eq!(r["state"], "mounted", "{r}");
    let st = nix::sys::statvfs::statvfs(&t.join("mnt/node-1")).unwrap();
    assert!(
        st.blocks() * st.fragment_size() > 3 << 29,
        "the filesystem grew"
    );
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "kept");
    let again = flow_of("up", &["--grow"], "2G").expect(0).record();
    assert!(all_unchanged(std::slice::from_ref(&again)), "{again}");
    flow_of("down", &[], "").expect(0);
}

/// `--appscalefile`: the file's `project` is the one used when no
/// `--project` is given (and without it there is none).
#[test]
fn the_appscalefiles_project_is_used() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    g.instance(zone, "vm-1");
    let t = TempDir::new("gce-project");
    let file = t.join("AppScalefile");
    std::fs::write(&file, "infrastructure: gce\nproject: proj\nmachine: appscale-image\nclient_secrets: ~/client_secrets.json\ninstance_type: n1-standard-1\nzone: us-central1-a\nkeyname: projtest\nips_layout:\n- roles: [master, database, zookeeper, appengine]\n  nodes: 1\n  disks: proj-data\n").unwrap();
    let plan = run("appscalefile-lint", &["--plan", file.to_str().unwrap()], "").expect(0);
    let url = g.url();
    let env = g.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let without = run_env("disk-create", &["--endpoint", &url], &plan.stdout, &env);
    assert_eq!(without.code, 1, "{}", without.stderr);
    assert_eq!(without.record()["error"]["code"], "no-project");
    let with = run_env(
        "disk-create",
        &["--endpoint", &url, "--appscalefile", file.to_str().unwrap()],
        &plan.stdout,
        &env,
    )
    .expect(0);
    assert_eq!(with.record()["state"], "created", "{}", with.stderr);
    assert!(g.state().to_string().contains("proj-data"), "{}", g.state());
}

// --- Compute Engine as it answers (issue 26) --------------------------------
// Each rule below is one the fake learnt from the service's documentation
// (tests/servers/fake_gce.py names it); each test fails without its fix.

/// A per-minute rate quota is answered 403 with the reason
/// `rateLimitExceeded` (cloud.google.com/compute/api-quota: "wait a minute
/// then try your request again"): tried again like 429, reads and mutating
/// calls alike, within the run's deadline.
#[test]
fn a_403_rate_quota_is_tried_again_like_429() {
    let g = Gce::new("us-central1-a");
    g.control(
        "config",
        json!({"http_fail": {
            "disks.get": {"answer": "rate-limit", "times": 2},
            "disks.insert": {"answer": "rate-limit", "times": 1},
        }}),
    );
    let r = g
        .tool(
            "disk-create",
            &["--size", "1G"],
            &ndjson(&[rec("node-0", "d1")]),
        )
        .expect(0)
        .record();
    assert_eq!(r["state"], "created", "{r}");
    assert_eq!(g.calls("disks.insert"), 2, "{}", g.state());
    assert!(g.calls("disks.get") >= 3, "{}", g.state());
}

/// A 403 for a missing IAM permission (reason `forbidden`) is final: one
/// call, no retry, and the message says what is missing.
#[test]
fn a_403_refusal_fails_at_once() {
    let g = Gce::new("us-central1-a");
    g.control(
        "config",
        json!({"http_fail": {"disks.get": {"answer": "forbidden", "times": -1}}}),
    );
    let started = std::time::Instant::now();
    let r = g
        .tool("disk-create", &[], &ndjson(&[rec("node-0", "d1")]))
        .expect(1)
        .record();
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("IAM permission") && msg.contains("docs/gce.md"),
        "{r}"
    );
    assert!(msg.contains("compute.disks.get"), "{r}");
    assert_eq!(error_code(&r), "PERMISSION_DENIED", "{r}");
    assert_eq!(g.calls("disks.get"), 1, "not tried again");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The API not enabled in the project is a 403 too: said so.
    g.control(
        "config",
        json!({"http_fail": {"disks.get": {"answer": "api-disabled", "times": -1}}}),
    );
    let r = g
        .tool("disk-create", &[], &ndjson(&[rec("node-0", "d1")]))
        .expect(1)
        .record();
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gcloud services enable compute.googleapis.com"),
        "{r}"
    );
}

/// A VM with the default access scopes has no Compute scope: every call is
/// 403 `ACCESS_TOKEN_SCOPE_INSUFFICIENT`. The record names the fix (the
/// `compute` or `cloud-platform` scope, and the IAM roles), at once.
#[test]
fn an_insufficient_scope_names_the_fix() {
    let g = Gce::new("us-central1-a");
    g.control(
        "config",
        json!({"http_fail": {"*": {"answer": "scope", "times": -1}}}),
    );
    let r = g
        .tool("disk-create", &[], &ndjson(&[rec("node-0", "d1")]))
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "insufficient-scope", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    for want in [
        "cloud-platform",
        "`compute`",
        "set-service-account",
        "IAM roles",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert_eq!(g.calls("disks.get"), 1, "not tried again");
}

/// Hyperdisk-only machine families (C4, N4, ...) refuse pd-* disks at
/// attach (`UNSUPPORTED_OPERATION`), and families without Hyperdisk (E2,
/// N1) refuse hyperdisk-*: a disk for such an instance is refused before it
/// is made, naming the type to choose; an attach is refused before it is
/// sent; and the service's own refusal is said the same way.
#[test]
fn disk_types_the_machine_family_refuses_are_refused_before_creating() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    g.instance_of_type(zone, "vm-c4", "c4-standard-8");
    g.instance_of_type(zone, "vm-e2", "e2-medium");
    let on = |vm: &str, disk: &str| {
        let mut r = rec("node-0", disk);
        r["instance"] = json!(vm);
        ndjson(&[r])
    };
    let r = g
        .tool("disk-create", &["--size", "10G"], &on("vm-c4", "d-c4"))
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "disk-type-unsupported", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--type hyperdisk-balanced"),
        "{r}"
    );
    let r = g
        .tool(
            "disk-create",
            &["--size", "10G", "--type", "hyperdisk-balanced"],
            &on("vm-e2", "d-e2"),
        )
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "disk-type-unsupported", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--type pd-balanced"),
        "{r}"
    );
    assert_eq!(g.calls("disks.insert"), 0, "nothing made: {}", g.state());
    // The type it names works.
    let made = g
        .tool(
            "disk-create",
            &["--size", "10G", "--type", "hyperdisk-balanced"],
            &on("vm-c4", "d-c4"),
        )
        .expect(0);
    g.tool("disk-attach", &[], &made.stdout).expect(0);

    // A pd-balanced disk made without an instance in mind: its attach to
    // the C4 instance is refused before it is sent.
    let made = g
        .tool(
            "disk-create",
            &["--size", "10G"],
            &ndjson(&[rec("node-1", "pd")]),
        )
        .expect(0);
    let r = g
        .tool("disk-attach", &["--instance", "vm-c4"], &made.stdout)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "disk-type-unsupported", "{r}");
    assert_eq!(g.calls("instances.attachDisk"), 1, "{}", g.state());
    // A combination only the service knows: its refusal is said the same.
    g.control(
        "config",
        json!({"fail": {"attachDisk": {"code": "UNSUPPORTED_OPERATION", "message": "[pd-balanced] features are not compatible for creating instance."}}}),
    );
    let r = g
        .tool("disk-attach", &["--instance", "vm-1"], &made.stdout)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "disk-type-unsupported", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[pd-balanced]"),
        "{r}"
    );
}

/// A regional disk of the record's name is another resource, which
/// `disks.get` in the zone does not see: disk-create refuses rather than
/// make an empty zonal disk of that name beside it.
#[test]
fn a_regional_disk_of_the_same_name_gets_no_empty_zonal_twin() {
    let g = Gce::new("us-central1-a");
    g.control(
        "regional-disks",
        json!({"project": "proj", "region": "us-central1", "name": "shared-data", "sizeGb": 200}),
    );
    // Another region's disk of another name is no obstacle.
    g.control(
        "regional-disks",
        json!({"project": "proj", "region": "europe-west1", "name": "d2", "sizeGb": 10}),
    );
    let input = ndjson(&[rec("node-0", "shared-data"), rec("node-1", "d2")]);
    let recs = g
        .tool("disk-create", &["--size", "10G"], &input)
        .expect(1)
        .records();
    assert_eq!(error_code(&recs[0]), "regional-disk", "{}", recs[0]);
    assert!(
        recs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("us-central1"),
        "{}",
        recs[0]
    );
    assert_eq!(recs[1]["state"], "created", "{}", recs[1]);
    let disks = g.state()["disks"].clone();
    assert!(
        disks.get("proj/us-central1-a/shared-data").is_none(),
        "no zonal twin: {disks}"
    );
    assert_eq!(g.calls("disks.insert"), 1);
}

/// A sys root whose NVMe namespaces stand in for Compute Engine disks on an
/// NVMe machine family: `nvmeXnY` linked under the dev root to a loop
/// device, its controller model `nvme_card-pd`, and (when `name` is given)
/// its Identify Namespace page naming the device as Compute Engine does
/// (JSON from byte 384: guest-configs `google_nvme_id`).
fn nvme_stand_in(t: &TempDir, kernel: &str, name: Option<&str>, mib: u64) -> LoopDev {
    let d = LoopDev::new(t, kernel, mib);
    std::fs::create_dir_all(t.join("dev/disk/by-id")).unwrap();
    let _ = std::fs::remove_file(t.join(&format!("dev/{kernel}")));
    std::os::unix::fs::symlink(&d.device, t.join(&format!("dev/{kernel}"))).unwrap();
    let block = t.join(&format!("sys/block/{kernel}"));
    std::fs::create_dir_all(block.join("device")).unwrap();
    std::fs::write(
        block.join("device/model"),
        "nvme_card-pd                            \n",
    )
    .unwrap();
    if let Some(name) = name {
        let mut page = vec![0u8; 4096];
        let json = format!(r#"{{"device_name":"{name}","disk_type":"PERSISTENT"}}"#);
        page[384..384 + json.len()].copy_from_slice(json.as_bytes());
        std::fs::write(block.join("nvme-id-ns"), page).unwrap();
    }
    d
}

/// On an NVMe machine family without the guest environment's udev rules
/// no `google-<deviceName>` link appears: the disk is found by the name in
/// its namespace's Identify data, as google_nvme_id reads it (another
/// namespace, named otherwise, is never taken); and where no name can be
/// read at all, the failure says the rules are missing, at once, not a
/// bare device-not-found after 60 s.
#[test]
fn nvme_disks_without_the_guest_rules_are_found_by_their_identify_data() {
    require_root();
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let t = TempDir::new("gce-nvme");
    let attached = created_and_attached(&g, "nvdata");
    let (dev, sys) = (t.s("dev"), t.s("sys"));
    let ensure = || {
        run_env(
            "disk-ensure-fs",
            &["--check"],
            &ndjson(&[attached.clone()]),
            &[
                ("APPSCALE_PERSIST_DEV_ROOT", dev.as_str()),
                ("APPSCALE_PERSIST_SYS_ROOT", sys.as_str()),
            ],
        )
    };
    // The boot disk and the data disk, neither named readably.
    let _boot = nvme_stand_in(&t, "nvme0n1", None, 512);
    let _data = nvme_stand_in(&t, "nvme0n2", None, 1024);
    let started = std::time::Instant::now();
    let r = ensure().expect(1).record();
    assert_eq!(error_code(&r), "no-disk-naming", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("65-gce-disk-naming.rules") && msg.contains("google_nvme_id"),
        "{msg}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "said at once, not after the 60 s wait: {:?}",
        started.elapsed()
    );
    // Each namespace names its device, as Compute Engine fills the data.
    let _boot = nvme_stand_in(&t, "nvme0n1", Some("persistent-disk-0"), 512);
    let _data = nvme_stand_in(&t, "nvme0n2", Some("nvdata"), 1024);
    let r = ensure().expect(0).record();
    assert!(
        r["device"].as_str().unwrap().ends_with("/nvme0n2"),
        "the namespace named nvdata: {r}"
    );
    // A record naming that device is confirmed by the same data; once the
    // namespace names another disk, it is not.
    let check = |rec: &Value| {
        run_env(
            "disk-ensure-fs",
            &["--check"],
            &ndjson(&[rec.clone()]),
            &[
                ("APPSCALE_PERSIST_DEV_ROOT", dev.as_str()),
                ("APPSCALE_PERSIST_SYS_ROOT", sys.as_str()),
            ],
        )
    };
    let mut found = attached.clone();
    found["device"] = r["device"].clone();
    check(&found).expect(0);
    let _data = nvme_stand_in(&t, "nvme0n2", Some("somebody-elses"), 1024);
    let r = check(&found).expect(1).record();
    assert_eq!(error_code(&r), "identity-unconfirmed", "{r}");
    // Two namespaces that both say nvdata: neither is taken.
    let _data = nvme_stand_in(&t, "nvme0n2", Some("nvdata"), 1024);
    let _twin = nvme_stand_in(&t, "nvme0n3", Some("nvdata"), 1024);
    let r = ensure().expect(1).record();
    assert_eq!(error_code(&r), "identity-mismatch", "{r}");
}

/// 250 disks in one deployment: created, attached, described and
/// snapshotted twice with retention, every request within the service's
/// limits: the fake refuses a list filter over 4,096 characters and answers
/// list calls a page of at most 100 items (the service may send fewer than
/// `maxResults` asks), so lookups must be split and pages followed.
#[test]
fn two_hundred_fifty_disks_stay_within_compute_engines_limits() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let vms: Vec<String> = (0..5).map(|i| format!("vm-{}", i + 10)).collect();
    for v in &vms {
        g.instance(zone, v);
    }
    g.control("config", json!({"page_size": 100, "max_filter": 4096}));
    let recs: Vec<Value> = (0..250)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("deployment-disk-{i:03}"));
            r["instance"] = json!(vms[i / 50]);
            r
        })
        .collect();
    let started = std::time::Instant::now();
    let conc = ["--concurrency", "16"];
    let created = g
        .tool(
            "disk-create",
            &["--size", "1G", "--concurrency", "16"],
            &ndjson(&recs),
        )
        .expect(0)
        .records();
    assert!(created.iter().all(|r| r["state"] == "created"));
    assert!(
        g.calls("disks.aggregatedList") >= 2,
        "split: {}",
        g.state()["calls"]
    );
    let attached = g
        .tool("disk-attach", &conc, &ndjson(&created))
        .expect(0)
        .records();
    assert!(attached.iter().all(|r| r["state"] == "attached"));
    let before = g.calls("disks.list");
    let status = g.tool("disk-status", &[], &ndjson(&attached));
    assert_eq!(status.code, 0, "{}", status.stderr);
    let lists = g.calls("disks.list") - before;
    assert!((2..=6).contains(&lists), "a few bounded lists: {lists}");
    for r in status.records() {
        assert_eq!(
            r["status"]["cloud"]["attached_to"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "{r}"
        );
    }
    let snap = [
        "--deployment",
        "appscale",
        "--no-freeze",
        "--keep",
        "1",
        "--concurrency",
        "16",
    ];
    g.tool("disk-snapshot", &snap, &ndjson(&attached)).expect(0);
    let second = g
        .tool("disk-snapshot", &snap, &ndjson(&attached))
        .expect(0)
        .records();
    for r in &second {
        assert_eq!(
            r["snapshot"]["pruned"].as_array().map(Vec::len),
            Some(1),
            "every disk's older snapshot seen (every page) and pruned: {r}"
        );
    }
    assert_eq!(g.state()["snapshots"].as_object().unwrap().len(), 250);
    // One page before the first run; three of 100 for 250 snapshots.
    assert!(g.calls("snapshots.list") >= 4, "pages followed");
    eprintln!(
        "250 disks: create, attach, status, 2 snapshots: {:?}",
        started.elapsed()
    );
}

/// docs/gce.md's `permissions` block, by tool.
fn documented_permissions() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo().join("docs/gce.md")).unwrap();
    let block = text
        .split("```permissions\n")
        .nth(1)
        .expect("docs/gce.md has a ```permissions block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_string);
            (words.next().unwrap(), words.collect())
        })
        .collect()
}

/// The minimum IAM permissions docs/gce.md gives each tool are exactly
/// those the tool's calls check, every path taken (the fake records each
/// call's permissions as Compute Engine's IAM reference lists them): none
/// missing, none to spare.
#[test]
fn the_documented_permissions_are_what_each_tool_uses() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    // Operations take a while, as Compute Engine's do: each is waited for.
    g.control("config", json!({"op_delay": 0.2}));
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut window = |tool: &str, args: &[&str], input: &str| -> Run {
        g.reset_calls();
        let r = g.tool(tool, args, input);
        let used = g.state()["permissions"].clone();
        seen.entry(tool.to_string()).or_default().extend(
            used.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string()),
        );
        r
    };
    let mut d1 = rec("node-0", "d1");
    d1["instance"] = json!("vm-1");
    let d1 = ndjson(&[d1]);
    // disk-create: a new disk for an instance, grown, a hand-made one
    // adopted and relabelled, and (below) one restored from a snapshot.
    window("disk-create", &["--size", "1G"], &d1).expect(0);
    window("disk-create", &["--size", "2G", "--grow"], &d1).expect(0);
    for name in ["hand", "hand2"] {
        g.control(
            "disks",
            json!({"project": "proj", "zone": zone, "name": name}),
        );
    }
    window(
        "disk-create",
        &["--tag", "team=db", "--retag"],
        &ndjson(&[rec("node-1", "hand")]),
    )
    .expect(0);
    // disk-attach: ours, and one made by hand (adopted on the way).
    let attached = window("disk-attach", &[], &d1).expect(0);
    window(
        "disk-attach",
        &["--instance", "vm-1"],
        &ndjson(&[rec("node-2", "hand2")]),
    )
    .expect(0);
    window("disk-status", &[], &attached.stdout).expect(0);
    // disk-snapshot: taken, waited for, retention pruning the older.
    let snap = ["--no-freeze", "--keep", "1"];
    window("disk-snapshot", &snap, &attached.stdout).expect(0);
    window("disk-snapshot", &snap, &attached.stdout).expect(0);
    // The swap: the old disk down first, then its snapshot restored.
    window("disk-detach", &["--force"], &attached.stdout).expect(0);
    window("disk-create", &["--from-snapshot", "latest"], &d1).expect(0);

    let documented = documented_permissions();
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>(),
        "a line per tool"
    );
    for (tool, used) in &seen {
        let doc = &documented[tool];
        let missing: Vec<_> = used.difference(doc).collect();
        let spare: Vec<_> = doc.difference(used).collect();
        assert!(
            missing.is_empty() && spare.is_empty(),
            "{tool}: documented but not used {spare:?}; used but not documented {missing:?}"
        );
    }
}

/// An unmount proof holds for the attachment it was made in
/// (`lastAttachTimestamp`): one made before the disk was attached as it is
/// now is refused, however recent; it was taken for up to an hour.
#[test]
fn an_unmount_proof_is_tied_to_the_attachment_it_was_made_in() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    let r = rec("node-0", "pd1");
    g.tool("disk-create", &["--size", "1G"], &ndjson(&[r.clone()]))
        .expect(0);
    let attached = g
        .tool("disk-attach", &["--instance", "vm-1"], &ndjson(&[r]))
        .expect(0)
        .record();
    let now = now_secs();
    let proven = |at: u64| unmount_proven(&attached, "vm-1", "pd1", at);
    let refused = g
        .tool("disk-detach", &[], &proven(now - 120))
        .expect(1)
        .record();
    assert_eq!(error_code(&refused), "unmount-proof-stale", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("earlier attachment"),
        "{refused}"
    );
    assert_eq!(
        g.state()["disks"][format!("proj/{zone}/pd1")]["users"],
        json!(["vm-1"])
    );
    g.tool("disk-detach", &[], &proven(now + 1)).expect(0);
    assert_eq!(
        g.state()["disks"][format!("proj/{zone}/pd1")]["users"],
        json!([])
    );
}
