//! The ec2 provider against a real EC2 emulator (moto's server on
//! 127.0.0.1), and, where moto refuses nothing, a local proxy injecting what
//! real EC2 does (errors, throttling, slow attachments).

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "ec2", "zone": "us-east-1b", "disk": disk})
}

/// Creates 1G volumes for `recs` (`disk-create`, which must succeed).
fn create(ec2: &Ec2, recs: &[Value]) -> Vec<Value> {
    ec2.create(&["--size", "1G"], recs).expect(0).records()
}

fn steps_changed(r: &Value) -> bool {
    r["changed"].as_bool().unwrap()
}

#[test]
fn create_attach_detach_are_idempotent() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let input = [rec("node-0", "data-0")];

    let created = ec2
        .create(&["--size", "1G", "--deployment", "test"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (created["state"].as_str(), steps_changed(&created)),
        (Some("created"), true)
    );
    let vol = created["disk_id"].as_str().unwrap().to_string();
    assert!(vol.starts_with("vol-"));
    let again = ec2
        .create(&["--size", "1G", "--deployment", "test"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (again["disk_id"].as_str(), steps_changed(&again)),
        (Some(vol.as_str()), false)
    );
    assert_eq!(
        ec2.admin(&["named", "data-0"]),
        json!([vol]),
        "one volume, found again by its Name tag"
    );
    let v = ec2.volume(&vol);
    assert_eq!(v["tags"]["appscale-persist:deployment"], "test");
    assert_eq!(v["tags"]["appscale-persist:node"], "node-0");
    assert_eq!(
        (v["size"].as_u64(), v["zone"].as_str()),
        (Some(1), Some("us-east-1b"))
    );

    let attached = ec2
        .attach(&["--instance", &inst], &[created.clone()])
        .expect(0)
        .record();
    assert_eq!(
        (attached["state"].as_str(), steps_changed(&attached)),
        (Some("attached"), true)
    );
    assert_eq!(attached["attached_as"], "/dev/sdf");
    assert_eq!(attached["instance"], inst.as_str());
    let v = ec2.volume(&vol);
    assert_eq!(
        v["attachments"],
        json!([{"instance": inst, "state": "attached", "device": "/dev/sdf"}])
    );
    let again = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert!(!steps_changed(&again), "already attached here: unchanged");

    // No node ever used it: detached from here without a node's proof.
    let detached = ec2
        .detach(&["--force"], &[attached.clone()])
        .expect(0)
        .record();
    assert_eq!(
        (detached["state"].as_str(), steps_changed(&detached)),
        (Some("detached"), true)
    );
    assert_eq!(ec2.volume(&vol)["state"], "available");
    let again = ec2.detach(&[], &[attached]).expect(0).record();
    assert!(!steps_changed(&again), "not attached: unchanged");

    // A disk named by its volume id works the same way.
    let id_rec = ec2
        .create(
            &[
                "--provider",
                "ec2",
                "--disk",
                &vol,
                "--zone",
                "us-east-1b",
                "--deployment",
                "test",
            ],
            &[],
        )
        .expect(0)
        .record();
    assert!(!steps_changed(&id_rec));
    ec2.attach(
        &[
            "--provider",
            "ec2",
            "--disk",
            &vol,
            "--instance",
            &inst,
            "--deployment",
            "test",
        ],
        &[],
    )
    .expect(0);
}

/// A whole pipeline in --check mode, for a volume that does not exist yet:
/// every step says what it would do, and nothing is made.
#[test]
fn a_check_mode_pipeline_makes_nothing() {
    let ec2 = Ec2::moto();
    let url = ec2.url();
    let inst = ec2.instance();
    let mut recs = ndjson(&[rec("node-0", "not-yet")]);
    for (tool_name, args) in [
        ("disk-create", vec!["--check", "--endpoint-url", &url]),
        (
            "disk-attach",
            vec!["--check", "--endpoint-url", &url, "--instance", &inst],
        ),
        ("disk-ensure-fs", vec!["--check"]),
        ("disk-mount", vec!["--check", "--no-fstab"]),
    ] {
        let r = run_env(tool_name, &args, &recs, &aws_env()).expect(0);
        let rec = r.record();
        assert_eq!(
            (rec["changed"].as_bool(), rec["check"].as_bool()),
            (Some(true), Some(true)),
            "{tool_name}: {rec}"
        );
        recs = r.stdout;
    }
    assert_eq!(
        ec2.admin(&["named", "not-yet"]),
        json!([]),
        "no volume was created"
    );
}

#[test]
fn a_missing_volume_is_a_clear_error() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let r = ec2
        .create(
            &[
                "--provider",
                "ec2",
                "--disk",
                "vol-0123456789abcdef0",
                "--zone",
                "us-east-1b",
            ],
            &[],
        )
        .expect(1);
    let e = &r.record()["error"];
    assert_eq!(
        (e["code"].as_str(), e["tool"].as_str()),
        (Some("no-such-disk"), Some("disk-create"))
    );
    assert_eq!(e["message"], "no such volume: vol-0123456789abcdef0");
    let r = ec2
        .attach(
            &["--provider", "ec2", "--disk", "data-x", "--instance", &inst],
            &[],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-disk");
    let r = ec2
        .attach(
            &[
                "--provider",
                "ec2",
                "--disk",
                "vol-0123456789abcdef0",
                "--instance",
                "i-0000000000000dead",
            ],
            &[],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-disk");
}

#[test]
fn a_volume_attached_elsewhere_is_left_alone() {
    let ec2 = Ec2::moto();
    let [a, b]: [String; 2] = ec2.instances("us-east-1b", 2).try_into().unwrap();
    let created = create(&ec2, &[rec("node-0", "shared")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    ec2.attach(&["--instance", &a], &[created.clone()])
        .expect(0);

    let r = ec2
        .attach(&["--instance", &b], &[created.clone()])
        .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "attached-elsewhere");
    assert!(e["message"].as_str().unwrap().contains(&a), "{e}");
    let r = ec2
        .detach(&["--instance", &b], &[created.clone()])
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "attached-elsewhere");
    assert_eq!(
        ec2.volume(&vol)["attachments"][0]["instance"],
        a.as_str(),
        "still on its instance"
    );
}

#[test]
fn a_zone_mismatch_is_refused_before_any_attach() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let vol = ec2.hand_made("us-east-1a", None);
    ec2.record_start();
    let r = ec2
        .attach(
            &["--provider", "ec2", "--disk", &vol, "--instance", &inst],
            &[],
        )
        .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "zone-mismatch");
    assert!(
        e["message"].as_str().unwrap().contains("us-east-1a")
            && e["message"].as_str().unwrap().contains("us-east-1b"),
        "{e}"
    );
    let actions = ec2.recorded();
    assert_eq!(
        actions.get("AttachVolume"),
        None,
        "no attach was tried: {actions}"
    );
    // disk-create says so too, for a record whose zone is not the volume's.
    let r = ec2
        .create(
            &["--provider", "ec2", "--disk", &vol, "--zone", "us-east-1b"],
            &[],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "zone-mismatch");
}

#[test]
fn fifty_volumes_attach_concurrently_with_batched_polling() {
    let ec2 = Ec2::moto();
    let inst = ec2.instances("us-east-1b", 5);
    let recs: Vec<Value> = (0..50)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("data-{i}"));
            r["instance"] = json!(inst[i / 10]);
            r
        })
        .collect();
    let created = create(&ec2, &recs);
    assert_eq!(created.len(), 50);

    ec2.record_start();
    let started = std::time::Instant::now();
    let attached = ec2
        .attach(&["--concurrency", "16"], &created)
        .expect(0)
        .records();
    let took = started.elapsed();
    assert!(
        attached
            .iter()
            .all(|r| r["state"] == "attached" && r["changed"] == true)
    );
    let actions = ec2.recorded();
    assert_eq!(actions["AttachVolume"], 50, "{actions}");
    let describes = actions["DescribeVolumes"].as_u64().unwrap();
    assert!(
        describes <= 3,
        "one DescribeVolumes to resolve, one per poll round: {actions}"
    );
    assert_eq!(actions["DescribeInstances"], 1, "{actions}");
    eprintln!("50 attachments: {took:?}, {describes} DescribeVolumes calls");
    // Each instance got ten distinct device names.
    for i in &inst {
        let mut names: Vec<&str> = attached
            .iter()
            .filter(|r| r["instance"] == i.as_str())
            .map(|r| r["attached_as"].as_str().unwrap())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 10, "{i}: {names:?}");
    }

    ec2.record_start();
    let detached = ec2.detach(&["--force"], &attached).expect(0).records();
    assert!(detached.iter().all(|r| r["state"] == "detached"));
    let actions = ec2.recorded();
    assert_eq!(actions["DetachVolume"], 50);
    assert!(
        actions["DescribeVolumes"].as_u64().unwrap() <= 3,
        "{actions}"
    );
}

#[test]
fn api_errors_become_record_errors_with_the_aws_code() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let mut created = create(&ec2, &[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    for r in &mut created {
        r["instance"] = json!(inst);
    }
    let rule = json!({"fail": {"AttachVolume": {"status": 403, "code": "UnauthorizedOperation", "times": 1}}});
    ec2.control(rule);
    let r = ec2.attach(&["--concurrency", "1"], &created).expect(1);
    let recs = r.records();
    let codes: Vec<&str> = recs
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("ok"))
        .collect();
    assert!(
        codes.contains(&"UnauthorizedOperation") && codes.contains(&"ok"),
        "one failed with the AWS code, the other went on: {codes:?}"
    );
    assert!(
        r.stderr.contains("injected UnauthorizedOperation"),
        "{}",
        r.stderr
    );
}

#[test]
fn throttling_and_server_errors_are_retried() {
    let ec2 = Ec2::proxied(&[]);
    let rule = json!({"fail": {
        "DescribeVolumes": {"status": 503, "code": "RequestLimitExceeded", "times": 2},
        "CreateVolume": {"status": 500, "code": "InternalError", "times": 1},
    }});
    ec2.control(rule);
    let r = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    assert_eq!(r["state"], "created");
    let injected = ec2.seen();
    assert_eq!(
        injected["injected"],
        json!({"DescribeVolumes": 2, "CreateVolume": 1})
    );
    assert_eq!(
        ec2.admin(&["named", "data-0"]).as_array().unwrap().len(),
        1,
        "the retried create made one volume"
    );
}

#[test]
fn an_attachment_stuck_attaching_is_undone_and_reported() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    ec2.control(json!({"attaching": true}));
    let r = ec2
        .attach(&["--instance", &inst, "--timeout", "3"], &[created.clone()])
        .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "stuck-attaching", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("detached it again"),
        "{e}"
    );
    assert_eq!(
        ec2.admin(&["volume", created["disk_id"].as_str().unwrap()])["state"],
        "available"
    );
}

/// A loop device the size of a volume, linked where udev would link the
/// volume's NVMe device.
fn stand_in(t: &TempDir, vol: &str) -> LoopDev {
    let d = LoopDev::new(t, vol, 1024);
    let by_id = t.join("dev/disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    let link = by_id.join(format!(
        "nvme-Amazon_Elastic_Block_Store_{}",
        vol.replacen('-', "", 1)
    ));
    std::os::unix::fs::symlink(&d.device, link).unwrap();
    d
}

#[test]
fn the_node_finds_the_volume_device_after_a_controller_attach() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-node");
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    let _dev = stand_in(&t, &vol);
    let attached = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert!(
        attached.get("device").is_none(),
        "the controller cannot see the node's devices"
    );
    let root = t.s("dev");
    let r = run_env(
        "disk-ensure-fs",
        &[],
        &ndjson(&[attached]),
        &[("APPSCALE_PERSIST_DEV_ROOT", root.as_str())],
    )
    .expect(0)
    .record();
    let want = format!(
        "{root}/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
        vol.replacen('-', "", 1)
    );
    assert_eq!(r["device"].as_str(), Some(want.as_str()));
    assert_eq!(r["state"], "formatted");
    // A device of the wrong size is not taken for the volume.
    let mut wrong = r.clone();
    wrong.as_object_mut().unwrap().remove("device");
    wrong["size_bytes"] = json!(2u64 << 30);
    let r = run_env(
        "disk-ensure-fs",
        &[],
        &ndjson(&[wrong]),
        &[("APPSCALE_PERSIST_DEV_ROOT", root.as_str())],
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "identity-mismatch");
}

#[test]
fn up_and_down_on_an_ec2_appscalefile() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-flow");
    let inst = ec2.instance();
    let imds = fake_imds(&inst, &[]);
    // As on the seed page: create the volume first, then name it.
    let vol = ec2.hand_made("us-east-1b", None);
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!("infrastructure: ec2\nmachine: ami-0123456789abcdef0\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: {vol}\n"),
    )
    .unwrap();
    let _dev = stand_in(&t, &vol);
    let root = t.s("dev");
    let mut env = aws_env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT", root.as_str()));
    let (url, imds_url) = (ec2.url(), imds.url());
    let provider = [
        "--endpoint-url",
        url.as_str(),
        "--self",
        "--metadata-endpoint",
        imds_url.as_str(),
    ];
    let up = || flow("up", &t, &file, &provider, &env);
    let down = || flow("down", &t, &file, &provider, &env);

    let r = up().expect(0).record();
    assert_eq!(r["state"], "mounted");
    assert_eq!(
        r["instance"],
        inst.as_str(),
        "the instance came from IMDSv2"
    );
    assert!(
        r["device"]
            .as_str()
            .unwrap()
            .contains("nvme-Amazon_Elastic_Block_Store_")
    );
    assert_eq!(
        ec2.volume(&vol)["attachments"][0]["instance"],
        inst.as_str()
    );
    let data = t.join("mnt/node-1/cassandra");
    std::fs::write(&data, "rows").unwrap();

    // Detaching a mounted volume is refused, here on the node.
    let by_id = ["--provider", "ec2", "--disk", &vol];
    let mut here = vec!["--self", "--metadata-endpoint", &imds_url];
    here.extend(by_id);
    let r = ec2
        .tool_env(
            "disk-detach",
            &here,
            "",
            &[("APPSCALE_PERSIST_DEV_ROOT", &root)],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "mounted");

    let r = down().expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(ec2.volume(&vol)["state"], "available");
    assert!(!Path::new(&data).exists());

    let r = up().expect(0).record();
    assert_eq!(r["state"], "mounted");
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        "rows",
        "the data survived down and up"
    );
    let again = up().expect(0).record();
    assert!(all_unchanged(std::slice::from_ref(&again)), "{again}");
    // disk-create's own options go to it alone (disk-attach would refuse
    // them): the found volume is tagged.
    let mut tagged = provider.to_vec();
    tagged.extend([
        "--size",
        "1G",
        "--tag",
        "team=db",
        "--tag=tier=gold",
        "--retag",
    ]);
    let r = flow("up", &t, &file, &tagged, &env).expect(0).record();
    assert_eq!(r["state"], "mounted", "{r}");
    let tags = &ec2.volume(&vol)["tags"];
    assert_eq!(
        (tags["team"].as_str(), tags["tier"].as_str()),
        (Some("db"), Some("gold")),
        "{tags}"
    );
    down().expect(0);
}

/// As local and GCE: `--size` or `--type`, when given, must be what an
/// existing volume has; without them, any volume will do.
#[test]
fn an_existing_volume_of_another_size_or_type_is_refused() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    for args in [&["--size", "1G"][..], &[], &["--type", "gp3"]] {
        let r = ec2.create(args, &input).expect(0).record();
        assert_eq!(r["changed"], false, "{args:?}: {r}");
    }
    ec2.record_start();
    let r = ec2.create(&["--size", "2G"], &input).expect(1).record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&vol) && msg.contains("1G") && msg.contains("2G"),
        "{msg}"
    );
    let r = ec2.create(&["--type", "io1"], &input).expect(1).record();
    assert_eq!(error_code(&r), "type-mismatch", "{r}");
    // Named by its id, the same.
    let by_id = [
        "--provider",
        "ec2",
        "--disk",
        vol.as_str(),
        "--zone",
        "us-east-1b",
        "--size",
        "5G",
    ];
    let r = ec2.create(&by_id, &[]).expect(1).record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    let actions = ec2.recorded();
    for a in ["CreateVolume", "CreateTags"] {
        assert_eq!(actions.get(a), None, "nothing made or changed: {actions}");
    }
}

// --- Whose disk is it ---------------------------------------------------

fn in_deployment(mut r: Value, deployment: &str) -> Value {
    r["deployment"] = json!(deployment);
    r
}

/// disk-attach of the volume `vol` (node-1's, by id) to `instance`, from a
/// controller.
fn attach_volume(ec2: &Ec2, vol: &str, instance: &str) -> Run {
    ec2.attach(
        &[
            "--provider",
            "ec2",
            "--node",
            "node-1",
            "--disk",
            vol,
            "--instance",
            instance,
        ],
        &[],
    )
    .expect(0)
}

fn error_code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or("none")
}

#[test]
fn a_volume_tagged_for_another_deployment_is_never_adopted() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    // Deployment alpha made the volume Name=data for its node-0.
    let made = create(&ec2, &[in_deployment(rec("node-0", "data"), "alpha")]).remove(0);
    let vol = made["disk_id"].as_str().unwrap().to_string();

    // Deployment beta's AppScalefile names a disk `data` for its node-0 too.
    ec2.record_start();
    let theirs = in_deployment(rec("node-0", "data"), "beta");
    let mut by_id = theirs.clone();
    by_id["disk"] = json!(vol);
    for (tool_name, r) in [
        ("disk-create", &theirs),
        ("disk-attach", &theirs),
        ("disk-attach", &by_id),
    ] {
        let out = ec2
            .tool(tool_name, &["--instance", &inst], &ndjson(&[r.clone()]))
            .expect(1)
            .record();
        assert_eq!(error_code(&out), "other-deployment", "{tool_name}: {out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deployment alpha"),
            "the error names the owner: {out}"
        );
    }
    let actions = ec2.recorded();
    for a in ["CreateVolume", "CreateTags", "AttachVolume"] {
        assert_eq!(actions.get(a), None, "no {a}: {actions}");
    }
    assert_eq!(ec2.admin(&["named", "data"]), json!([vol]));
    assert_eq!(
        ec2.volume(&vol)["attachments"],
        json!([]),
        "still alpha's, unattached"
    );
    // --deployment names the deployment over the record's.
    let again = ec2
        .create(&["--deployment", "alpha"], &[theirs])
        .expect(0)
        .record();
    assert_eq!(
        (again["disk_id"].as_str(), again["changed"].as_bool()),
        (Some(vol.as_str()), Some(false))
    );
}

#[test]
fn a_hand_made_volume_is_adopted_only_when_available_and_in_the_zone() {
    let ec2 = Ec2::moto();
    let other = ec2.instance();
    let hand = |zone: &str, name: &str| {
        ec2.admin(&["create-volume", zone, "1", name])
            .as_str()
            .unwrap()
            .to_string()
    };
    // In use by an instance: whose data is on it is unknown. Not adopted.
    let busy = hand("us-east-1b", "busy-data");
    ec2.admin(&["attach", &busy, &other, "/dev/sdf"]);
    let r = ec2
        .create(&[], &[rec("node-0", "busy-data")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "not-adoptable", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("in-use"),
        "{r}"
    );
    // In another zone: not adopted either.
    hand("us-east-1a", "far-data");
    let r = ec2
        .create(&[], &[rec("node-0", "far-data")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "zone-mismatch", "{r}");
    // Available, in the zone: adopted, tagged, and the record says so.
    let free = hand("us-east-1b", "free-data");
    let mine = in_deployment(rec("node-0", "free-data"), "gamma");
    let r = ec2.create(&[], &[mine.clone()]).expect(0).record();
    assert_eq!(
        (
            r["disk_id"].as_str(),
            r["adopted"].as_bool(),
            r["changed"].as_bool()
        ),
        (Some(free.as_str()), Some(true), Some(true)),
        "{r}"
    );
    let tags = &ec2.volume(&free)["tags"];
    assert_eq!(
        (
            tags["appscale-persist:deployment"].as_str(),
            tags["appscale-persist:node"].as_str()
        ),
        (Some("gamma"), Some("node-0"))
    );
    let again = ec2.create(&[], &[mine]).expect(0).record();
    assert_eq!(
        (again["changed"].as_bool(), again.get("adopted")),
        (Some(false), None),
        "now gamma's own: {again}"
    );
    // Adopted, it is no longer free for another deployment to take.
    let r = ec2
        .create(&[], &[in_deployment(rec("node-0", "free-data"), "delta")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "other-deployment");
}

#[test]
fn two_deployments_never_share_tags_or_client_tokens() {
    let ec2 = Ec2::proxied(&[]);
    let t = TempDir::new("ec2-deployments");
    let body = "infrastructure: ec2\nmachine: ami-0123456789abcdef0\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: data\n";
    // Each deployment in its own moto account, as two AWS accounts would
    // keep them; the disk, node and name are the same.
    let mut ids = Vec::new();
    for (head, account, want) in [
        ("keyname: alpha\n", "111111111111", "alpha"),
        ("group: beta\n", "222222222222", "beta"),
        ("", "333333333333", "appscale"),
    ] {
        ec2.control(json!({"account": account}));
        let file = t.join(&format!("AppScalefile-{want}"));
        std::fs::write(&file, format!("{head}{body}")).unwrap();
        let plan = run("appscalefile-lint", &["--plan", file.to_str().unwrap()], "")
            .expect(0)
            .stdout;
        let r = ec2.create(&["--size", "1G"], &plan).expect(0);
        let created = r.record();
        let vol = created["disk_id"].as_str().unwrap().to_string();
        // Asked through the proxy: in the account it plays now.
        let proxy = ec2.proxy.as_ref().unwrap();
        let tags = &proxy.ec2_admin(&["volume", &vol])["tags"];
        assert_eq!(
            tags["appscale-persist:deployment"].as_str(),
            Some(want),
            "{created}"
        );
        assert_eq!(created["deployment"], want);
        assert_eq!(
            r.stderr.contains("no deployment name"),
            want == "appscale",
            "the shared default is warned about, and only it: {}",
            r.stderr
        );
        ids.push(vol);
    }
    let tokens: Vec<String> = ec2.seen()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "no two deployments share a token: {tokens:?}"
    );
}

#[test]
fn one_instance_never_receives_the_disks_of_several_nodes() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let node = fake_imds(&inst, &[]);
    let created = create(&ec2, &[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    ec2.record_start();
    let imds_url = node.url();
    for (tool_name, args) in [
        ("disk-attach", vec!["--instance", inst.as_str()]),
        (
            "disk-attach",
            vec!["--self", "--metadata-endpoint", imds_url.as_str()],
        ),
        (
            "disk-create",
            vec!["--self", "--metadata-endpoint", imds_url.as_str()],
        ),
        ("disk-detach", vec!["--instance", inst.as_str()]),
    ] {
        let r = ec2.tool(tool_name, &args, &ndjson(&created)).expect(2);
        assert!(r.stdout.is_empty(), "{tool_name}: {}", r.stdout);
        assert!(
            r.stderr.contains("node-0, node-1")
                && r.stderr.contains("--node")
                && r.stderr.contains("nothing was done"),
            "{tool_name} {args:?}: {}",
            r.stderr
        );
    }
    // --node takes one node's records, and refuses the others.
    let r = ec2
        .attach(&["--instance", &inst, "--node", "node-0"], &created)
        .expect(2);
    assert!(r.stderr.contains("node-1"), "{}", r.stderr);
    let actions = ec2.recorded();
    assert_eq!(actions.get("AttachVolume"), None, "{actions}");
    let r = ec2
        .attach(&["--instance", &inst, "--node", "node-0"], &created[..1])
        .expect(0)
        .record();
    assert_eq!(
        (r["node"].as_str(), r["state"].as_str()),
        (Some("node-0"), Some("attached"))
    );
    // With --self, a record for another instance is refused.
    let mut elsewhere = created[1].clone();
    elsewhere["instance"] = json!("i-0000000000000beef");
    let r = ec2
        .attach(&["--self", "--metadata-endpoint", &imds_url], &[elsewhere])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "other-instance", "{r}");
    assert_eq!(
        ec2.admin(&["volume", created[1]["disk_id"].as_str().unwrap()])["attachments"],
        json!([])
    );
}

#[test]
fn two_records_for_one_volume_are_refused_up_front() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let mut created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    created["instance"] = json!(inst);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    ec2.record_start();
    let r = ec2
        .attach(&[], &[created.clone(), created.clone()])
        .expect(2);
    assert!(
        r.stderr.contains("records 1 and 2 both name disk")
            && r.stderr.contains("nothing was done"),
        "{}",
        r.stderr
    );
    // A Name tag and an id of one volume: found out once both are looked
    // up, and still before anything is done.
    let mut by_name = rec("node-0", "data-0");
    by_name["instance"] = json!(inst);
    let mut by_id = by_name.clone();
    by_id["disk"] = json!(vol);
    let recs = ec2.attach(&[], &[by_name, by_id]).expect(1).records();
    for r in &recs {
        assert_eq!(error_code(r), "duplicate-disk", "{r}");
    }
    let actions = ec2.recorded();
    assert_eq!(actions.get("AttachVolume"), None, "{actions}");
}

// --- Never detach under a live filesystem --------------------------------

/// An EC2 AppScalefile for node-1 whose disk is volume `vol`.
fn appscalefile(t: &TempDir, vol: &str) -> std::path::PathBuf {
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!("infrastructure: ec2\nmachine: ami-0123456789abcdef0\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: {vol}\n"),
    )
    .unwrap();
    file
}

#[test]
fn the_node_detaches_only_a_device_it_can_see_free() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-self-detach");
    let inst = ec2.instance();
    let node = fake_imds(&inst, &[]);
    let vol = ec2.hand_made("us-east-1b", None);
    let file = appscalefile(&t, &vol);
    let dev = stand_in(&t, &vol);
    let root = t.s("dev");
    let mut env = aws_env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT", root.as_str()));
    let (url, imds_url) = (ec2.url(), node.url());
    let on_node = [
        "--endpoint-url",
        url.as_str(),
        "--self",
        "--metadata-endpoint",
        imds_url.as_str(),
    ];
    flow_with("up", &t, &file, &["--node", "node-1"], &on_node, &env).expect(0);
    // disk-detach on the node, its devices under `dev_root`.
    let detach_here = |dev_root: &str| {
        let args = [
            "--self",
            "--metadata-endpoint",
            imds_url.as_str(),
            "--node",
            "node-1",
            "--provider",
            "ec2",
            "--disk",
            vol.as_str(),
        ];
        ec2.tool_env(
            "disk-detach",
            &args,
            "",
            &[("APPSCALE_PERSIST_DEV_ROOT", dev_root)],
        )
    };
    let attached_to = || ec2.volume(&vol)["attachments"][0]["instance"].clone();

    // Lazily unmounted while a file on it is open: the filesystem lives on.
    let mnt = t.join("mnt/node-1");
    let open = std::fs::File::create(mnt.join("open-file")).unwrap();
    sh_ok(&["umount", "--lazy", mnt.to_str().unwrap()]);
    assert!(!is_mounted(&mnt));
    let r = detach_here(&root).expect(1).record();
    assert_eq!(error_code(&r), "in-use", "{r}");
    assert_eq!(attached_to(), inst.as_str(), "still attached");
    drop(open);
    // Its device not visible here (no udev link): nothing can be checked.
    let blind = t.s("blind-dev");
    std::fs::create_dir_all(&blind).unwrap();
    let r = detach_here(&blind).expect(1);
    let rec = r.record();
    assert_eq!(error_code(&rec), "device-not-found", "{rec}");
    assert!(
        rec["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--force"),
        "says how: {rec}"
    );
    assert_eq!(attached_to(), inst.as_str(), "still attached");
    // Visible and free: detached.
    let r = detach_here(&root).expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(ec2.volume(&vol)["state"], "available");
    drop(dev);
}

#[test]
fn detaching_from_elsewhere_needs_the_nodes_unmount_proof() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-proof");
    let [a, b]: [String; 2] = ec2.instances("us-east-1b", 2).try_into().unwrap();
    let (node_a, node_b) = (fake_imds(&a, &[]), fake_imds(&b, &[]));
    let vol = ec2.hand_made("us-east-1b", None);
    let _dev = stand_in(&t, &vol);
    let root = t.s("dev");
    let mnt = t.s("mnt");
    // The controller attaches to instance a; the node (this machine, with
    // the stand-in device) formats and mounts.
    let attached = attach_volume(&ec2, &vol, &a).stdout;
    let node_env = |imds: &Server| {
        vec![
            ("APPSCALE_PERSIST_DEV_ROOT".to_string(), root.clone()),
            ("APPSCALE_PERSIST_METADATA_ENDPOINT".to_string(), imds.url()),
        ]
    };
    let on_node = |tool_name: &str, args: &[&str], input: &str, imds: &Server| {
        let env = node_env(imds);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_env(tool_name, args, input, &env)
    };
    let fs = on_node("disk-ensure-fs", &[], &attached, &node_a)
        .expect(0)
        .stdout;
    let mounted = on_node(
        "disk-mount",
        &["--mountpoint", &mnt, "--no-fstab"],
        &fs,
        &node_a,
    )
    .expect(0)
    .record();
    // The controller cannot see the node's devices.
    let from_controller = |r: &Value, extra: &[&str]| ec2.detach(extra, &[without(r, "device")]);
    let attached_to = || ec2.volume(&vol)["attachments"][0]["instance"].clone();

    // No proof (the disk is mounted on the node): refused, says how.
    let r = from_controller(&mounted, &[]).expect(1).record();
    assert_eq!(error_code(&r), "no-unmount-proof", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("--self") && msg.contains("--force"), "{msg}");
    assert_eq!(attached_to(), a.as_str());
    assert!(is_mounted(Path::new(&mnt)));

    // A proof from another instance than the one the volume is on.
    let unmounted_b = on_node("disk-unmount", &[], &ndjson(&[mounted.clone()]), &node_b)
        .expect(0)
        .record();
    assert_eq!(unmounted_b["unmount_proof"]["instance"], b.as_str());
    let r = from_controller(&unmounted_b, &[]).expect(1).record();
    assert_eq!(error_code(&r), "unmount-proof-mismatch", "{r}");
    assert_eq!(attached_to(), a.as_str());

    // The proof from instance a, where it is attached.
    let unmounted = on_node("disk-unmount", &[], &ndjson(&[unmounted_b]), &node_a)
        .expect(0)
        .record();
    let proof = unmounted["unmount_proof"].clone();
    assert_eq!(
        (proof["instance"].as_str(), proof["disk"].as_str()),
        (Some(a.as_str()), Some(vol.as_str())),
        "{unmounted}"
    );
    // ... but old, or followed by a mount again: not taken.
    let mut old = unmounted.clone();
    old["unmount_proof"]["at"] = json!(proof["at"].as_u64().unwrap() - 7200);
    assert_eq!(
        error_code(&from_controller(&old, &[]).expect(1).record()),
        "unmount-proof-stale"
    );
    let mut remounted = unmounted.clone();
    remounted["state"] = json!("mounted");
    assert_eq!(
        error_code(&from_controller(&remounted, &[]).expect(1).record()),
        "no-unmount-proof"
    );
    assert_eq!(attached_to(), a.as_str());
    // As it is: detached.
    let r = from_controller(&unmounted, &[]).expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(ec2.volume(&vol)["state"], "available");

    // --force detaches without proof, and says what it risks.
    attach_volume(&ec2, &vol, &a);
    let r = from_controller(&mounted, &["--force"]).expect(0);
    assert!(
        r.stderr.contains("--force") && r.stderr.contains("not flushed"),
        "{}",
        r.stderr
    );
    assert_eq!(ec2.volume(&vol)["state"], "available");
}

#[test]
fn scripts_down_away_from_the_node_refuses_to_detach_and_says_how() {
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-down-away");
    let inst = ec2.instance();
    let vol = ec2.hand_made("us-east-1b", None);
    let file = appscalefile(&t, &vol);
    attach_volume(&ec2, &vol, &inst);
    // Run on a controller: nothing of node-1's is mounted or visible here.
    let url = ec2.url();
    let r = flow_with(
        "down",
        &t,
        &file,
        &["--node", "node-1"],
        &["--endpoint-url", url.as_str(), "--instance", inst.as_str()],
        &aws_env(),
    )
    .expect(1);
    let rec = r.record();
    assert_eq!(error_code(&rec), "no-unmount-proof", "{rec}");
    assert!(
        r.stderr
            .contains("scripts/down --node node-1 AppScalefile -- --self"),
        "says how to do it right: {}",
        r.stderr
    );
    assert_eq!(
        ec2.volume(&vol)["attachments"][0]["instance"],
        inst.as_str(),
        "still attached"
    );
}

// --- Waits that survive a bad minute -------------------------------------

#[test]
fn a_failed_poll_is_retried_until_the_deadline() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    // Let the lookup through, then fail more polls in a row than the SDK
    // tries one call (5 attempts).
    ec2.control(json!({"fail": {"DescribeVolumes": {"status": 503, "code": "RequestLimitExceeded", "skip": 1, "times": 7}}}),
    );
    let r = ec2.attach(&["--instance", &inst], &[created]).expect(0);
    assert_eq!(r.record()["state"], "attached", "{}", r.stderr);
    let injected = ec2.seen();
    assert_eq!(injected["injected"]["DescribeVolumes"], 7, "{injected}");
}

#[test]
fn a_volume_still_detaching_from_this_instance_is_waited_out() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    // An earlier down left its detach in progress for three more polls.
    ec2.admin(&["attach", &vol, &inst, "/dev/sdf"]);
    ec2.control(json!({"detaching": {"volume": vol, "instance": inst, "polls": 3}}));
    let r = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("attached"), Some(true)),
        "{r}"
    );
    let v = ec2.volume(&vol);
    assert_eq!(v["attachments"][0]["instance"], inst.as_str());
    assert_eq!(v["attachments"][0]["state"], "attached");
}

#[test]
fn an_api_error_reading_instances_is_reported_as_itself() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    ec2.control(json!({"fail": {"DescribeInstances": {"status": 403, "code": "UnauthorizedOperation", "times": -1}}}),
    );
    let r = ec2
        .create(
            &["--instance", &inst],
            &[without(&rec("node-0", "data-0"), "zone")],
        )
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "UnauthorizedOperation", "{r}");
    assert_eq!(ec2.admin(&["named", "data-0"]), json!([]));
}

// --- Identity on the node -------------------------------------------------

/// Plants a serial for a loop device under the test's sysfs root.
fn plant_serial(t: &TempDir, dev: &LoopDev, serial: &str) {
    let name = dev.device.trim_start_matches("/dev/");
    let dir = t.join(&format!("sys/block/{name}/device"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("serial"), format!("{serial}\n")).unwrap();
}

#[test]
fn a_stand_in_with_a_wrong_serial_or_links_that_disagree_is_refused() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-identity");
    let inst = ec2.instance();
    let mut created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    created["instance"] = json!(inst);
    let attached = ec2.attach(&[], &[created]).expect(0).record();
    let vol = attached["disk_id"].as_str().unwrap().to_string();
    let dev = stand_in(&t, &vol);
    let (root, sys) = (t.s("dev"), t.s("sys"));
    let env = [
        ("APPSCALE_PERSIST_DEV_ROOT", root.as_str()),
        ("APPSCALE_PERSIST_SYS_ROOT", sys.as_str()),
    ];
    let ensure = || {
        run_env(
            "disk-ensure-fs",
            &["--check"],
            &ndjson(&[attached.clone()]),
            &env,
        )
    };

    // The udev link leads to a device whose serial is another volume's.
    plant_serial(&t, &dev, "vol0aaaaaaaaaaaaaaaa");
    let r = ensure().expect(1).record();
    assert_eq!(error_code(&r), "identity-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vol0aaaaaaaaaaaaaaaa"),
        "{r}"
    );
    // Its own serial: taken.
    plant_serial(&t, &dev, &vol.replacen('-', "", 1));
    ensure().expect(0);
    // The attach name (/dev/sdf) leads to another device than the NVMe link.
    let other = LoopDev::new(&t, "other", 1024);
    assert_eq!(attached["attached_as"], "/dev/sdf");
    std::os::unix::fs::symlink(&other.device, t.join("dev/sdf")).unwrap();
    let r = ensure().expect(1).record();
    assert_eq!(error_code(&r), "identity-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different devices"),
        "{r}"
    );
}

// --- More volumes per instance ------------------------------------------

/// `n` records of one node each, all for `inst`.
fn recs_for(inst: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("data-{i}"));
            r["instance"] = json!(inst);
            r
        })
        .collect()
}

/// HVM instances take volumes beyond `/dev/sdz` (`/dev/xvdba` on), where
/// the 22nd volume used to find no name.
#[test]
fn sixty_volumes_attach_to_one_hvm_instance() {
    let ec2 = Ec2::moto();
    // A type that takes 128 EBS volumes.
    let inst = ec2.instance_of("m7i.48xlarge");
    let created = create(&ec2, &recs_for(&inst, 60));
    let attached = ec2
        .attach(&["--concurrency", "16"], &created)
        .expect(0)
        .records();
    let mut names: Vec<&str> = attached
        .iter()
        .map(|r| r["attached_as"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 60, "{names:?}");
    for n in [
        "/dev/sdf",
        "/dev/sdz",
        "/dev/xvdba",
        "/dev/xvdbz",
        "/dev/xvdca",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let on_instance = ec2.admin(&["attached", &inst]);
    for r in &attached {
        assert_eq!(
            on_instance[r["disk_id"].as_str().unwrap()],
            r["attached_as"]
        );
    }
    // Found attached, under the names they were given.
    let again = ec2.attach(&[], &created).expect(0).records();
    assert!(again.iter().all(|r| r["changed"] == false));
    assert_eq!(
        again
            .iter()
            .map(|r| r["attached_as"].clone())
            .collect::<Vec<_>>(),
        attached
            .iter()
            .map(|r| r["attached_as"].clone())
            .collect::<Vec<_>>()
    );
}

/// An m5.large takes 27 EBS volumes (one network interface): its root
/// volume and 26 more. The volumes beyond fail `attachment-limit` before
/// any call; the others attach.
#[test]
fn an_instance_types_attachment_limit_is_reported_before_any_call() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance_of("m5.large");
    let created = create(&ec2, &recs_for(&inst, 28));
    ec2.record_start();
    let r = ec2.attach(&[], &created).expect(1);
    let out = r.records();
    let failed: Vec<&Value> = out.iter().filter(|r| r.get("error").is_some()).collect();
    assert_eq!(out.len() - failed.len(), 26, "{}", r.stdout);
    assert_eq!(failed.len(), 2);
    for f in &failed {
        assert_eq!(error_code(f), "attachment-limit", "{f}");
        let msg = f["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&inst) && msg.contains("m5.large") && msg.contains("at most 27"),
            "{msg}"
        );
    }
    assert_eq!(
        (failed[0]["node"].as_str(), failed[1]["node"].as_str()),
        (Some("node-26"), Some("node-27")),
        "the first ones fit"
    );
    assert_eq!(ec2.recorded()["AttachVolume"], 26);
    // One detached makes room for one more; the last still does not fit.
    let first = out[0].clone();
    ec2.detach(&["--force"], &[first]).expect(0);
    let rest = [created[26].clone(), created[27].clone()];
    let r = ec2.attach(&[], &rest).expect(1);
    let out = r.records();
    assert_eq!(out[0]["state"], "attached", "{}", r.stdout);
    assert_eq!(error_code(&out[1]), "attachment-limit");
}

/// EC2 itself refusing an attach for the limit (it counts what the plan
/// cannot see) is the same code.
#[test]
fn ec2_refusing_an_attach_for_its_limit_is_attachment_limit() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &recs_for(&inst, 1));
    let rule =
        json!({"fail": {"AttachVolume": {"status": 400, "code": "AttachmentLimitExceeded"}}});
    ec2.control(rule);
    let r = ec2.attach(&[], &created).expect(1).record();
    assert_eq!(error_code(&r), "attachment-limit", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected AttachmentLimitExceeded"),
        "{r}"
    );
}

// --- Production options (issue 18) ----------------------------------------

/// The calls the moto recorder saw of `action` since `record-start`.
fn calls(ec2: &Ec2, action: &str) -> u64 {
    ec2.recorded()
        .get(action)
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// A new volume gets the key, IOPS, throughput and tags asked; found again
/// it is held to them: another key, an unencrypted volume, other IOPS are
/// errors, never accepted; tags are added to it only with --retag.
#[test]
fn a_new_volume_has_the_key_performance_and_tags_asked_and_is_held_to_them() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let opts = [
        "--size",
        "10G",
        "--type",
        "gp3",
        "--kms-key",
        "alias/appscale-data",
        "--iops",
        "4000",
        "--throughput",
        "250",
        "--tag",
        "team=db",
        "--tag",
        "cost-center=42",
    ];
    let r = ec2.create(&opts, &input).expect(0).record();
    assert_eq!(r["changed"], true, "{r}");
    let vol = r["disk_id"].as_str().unwrap().to_string();
    let v = ec2.volume(&vol);
    assert_eq!(v["encrypted"], true, "{v}");
    assert_eq!(v["kms_key"], "alias/appscale-data", "{v}");
    assert_eq!(
        (v["iops"].as_u64(), v["throughput"].as_u64()),
        (Some(4000), Some(250))
    );
    assert_eq!(v["tags"]["team"], "db", "{v}");
    assert_eq!(v["tags"]["cost-center"], "42", "{v}");
    assert_eq!(v["tags"]["appscale-persist:kms-key"], "alias/appscale-data");

    // Found again with the same options (the alias confirmed by its tag),
    // or none: nothing to do.
    for args in [&opts[..], &["--encrypted"], &[]] {
        let r = ec2.create(args, &input).expect(0).record();
        assert_eq!(r["changed"], false, "{args:?}: {r}");
    }
    ec2.record_start();
    for (args, code) in [
        (&["--kms-key", "alias/other"][..], "encryption-mismatch"),
        (&["--iops", "5000"], "performance-mismatch"),
        (
            &["--throughput", "300", "--iops", "4000"],
            "performance-mismatch",
        ),
    ] {
        let r = ec2.create(args, &input).expect(1).record();
        assert_eq!(error_code(&r), code, "{args:?}: {r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(&vol),
            "{r}"
        );
    }
    // A tag with another value: left alone without --retag.
    let r = ec2
        .create(&["--tag", "team=web"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "{r}");
    for a in ["CreateVolume", "CreateTags", "ModifyVolume"] {
        assert_eq!(calls(&ec2, a), 0, "nothing changed: {a}");
    }
    let retag = ["--tag", "team=web", "--tag", "tier=gold", "--retag"];
    let r = ec2.create(&retag, &input).expect(0).record();
    assert_eq!(r["changed"], true, "{r}");
    assert!(r["steps"][0]["ms"].is_u64());
    let v = ec2.volume(&vol);
    assert_eq!(
        (v["tags"]["team"].as_str(), v["tags"]["tier"].as_str()),
        (Some("web"), Some("gold"))
    );
    assert_eq!(v["tags"]["cost-center"], "42", "other tags kept: {v}");
    assert_eq!(v["tags"]["appscale-persist:deployment"], "appscale", "{v}");
    let r = ec2.create(&retag, &input).expect(0).record();
    assert_eq!(r["changed"], false, "tagged once: {r}");
    assert_eq!(calls(&ec2, "CreateTags"), 1);
}

/// A volume found unencrypted, or encrypted with another key, is an
/// error when encryption is asked, named by its Name tag or by its id; a key
/// named by its id matches the ARN EC2 says.
#[test]
fn a_volume_encrypted_otherwise_than_asked_is_reported() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let plain = ec2.create(&["--size", "1G"], &input).expect(0).record();
    let plain_id = plain["disk_id"].as_str().unwrap().to_string();
    ec2.record_start();
    let r = ec2.create(&["--encrypted"], &input).expect(1).record();
    assert_eq!(error_code(&r), "encryption-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unencrypted"),
        "{r}"
    );
    let by_id = [
        "--provider",
        "ec2",
        "--disk",
        &plain_id,
        "--zone",
        "us-east-1b",
    ];
    let mut args = by_id.to_vec();
    args.extend(["--kms-key", "1234abcd-12ab-34cd-56ef-1234567890ab"]);
    let r = ec2.create(&args, &[]).expect(1).record();
    assert_eq!(error_code(&r), "encryption-mismatch", "{r}");
    assert_eq!(calls(&ec2, "CreateVolume"), 0);

    // Made by hand with a key given by its ARN: named by its id, it matches.
    let key = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let arn = format!("arn:aws:kms:us-east-1:123456789012:key/{key}");
    let spec =
        json!({"AvailabilityZone": "us-east-1b", "Size": 1, "Encrypted": true, "KmsKeyId": arn});
    let keyed = ec2.admin(&["create-volume-with", &spec.to_string()]);
    let keyed = keyed.as_str().unwrap();
    let by_id = ["--provider", "ec2", "--disk", keyed, "--zone", "us-east-1b"];
    for k in [key, arn.as_str()] {
        let mut args = by_id.to_vec();
        args.extend(["--kms-key", k]);
        ec2.create(&args, &[]).expect(0);
    }
    let mut args = by_id.to_vec();
    args.extend(["--kms-key", "alias/other"]);
    let r = ec2.create(&args, &[]).expect(1).record();
    assert_eq!(error_code(&r), "encryption-mismatch", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains(&arn),
        "{r}"
    );
}

/// Values beyond EBS's limits are usage errors before any call: exit 2,
/// no record out, no request at all.
#[test]
fn options_beyond_the_volume_types_limits_are_refused_before_any_call() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    ec2.record_start();
    let refused: &[(&[&str], &str)] = &[
        (&["--type", "gp3", "--iops", "90000"], "3000 to 80000"),
        (
            &["--type", "gp3", "--size", "10G", "--iops", "6000"],
            "at most 5000",
        ),
        (&["--type", "gp3", "--throughput", "800"], "at most 750"),
        (
            &["--type", "io2", "--iops", "1000", "--throughput", "200"],
            "gp3 does",
        ),
        (&["--type", "gp2", "--iops", "3000"], "no provisioned IOPS"),
        (&["--tag", "aws:owner=x"], "AWS's own"),
        (&["--tag", "appscale-persist:node=x"], "itself"),
        (
            &[
                "--kms-key",
                "projects/p/locations/l/keyRings/r/cryptoKeys/k",
            ],
            "KMS key id",
        ),
        (&["--tag", "novalue"], "KEY=VALUE"),
        (&["--retag"], "--tag"),
    ];
    for (args, why) in refused {
        let r = ec2.create(args, &input).expect(2);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    let actions = ec2.recorded();
    assert_eq!(actions, json!({}), "no call at all: {actions}");
    // A new io1 volume needs --iops (a volume found has its own): the
    // record fails before any CreateVolume.
    let r = ec2.create(&["--type", "io1"], &input).expect(1).record();
    assert_eq!(error_code(&r), "create-failed", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs --iops"),
        "{r}"
    );
    assert_eq!(ec2.recorded().get("CreateVolume"), None);
}

/// --grow grows a smaller volume (ModifyVolume, waited until usable);
/// without it the difference is reported; a larger volume is never shrunk.
#[test]
fn grow_modifies_a_smaller_volume_and_never_shrinks_one() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let vol = create(&ec2, &[rec("node-0", "data-0")]).remove(0)["disk_id"]
        .as_str()
        .unwrap()
        .to_string();
    ec2.record_start();
    let r = ec2.create(&["--size", "3G"], &input).expect(1).record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("--grow"),
        "{r}"
    );
    let r = ec2
        .create(&["--check", "--size", "3G", "--grow"], &input)
        .expect(0);
    assert!(
        r.stderr.contains("would grow from 1 GiB to 3 GiB"),
        "{}",
        r.stderr
    );
    assert_eq!(calls(&ec2, "ModifyVolume"), 0);

    let r = ec2.create(&["--size", "3G", "--grow"], &input).expect(0);
    let rec = r.record();
    assert_eq!(rec["changed"], true, "{rec}");
    assert_eq!(rec["size_bytes"], 3u64 << 30, "{rec}");
    assert!(r.stderr.contains("disk-ensure-fs --grow"), "{}", r.stderr);
    assert_eq!(ec2.volume(&vol)["size"], 3);
    assert_eq!(calls(&ec2, "ModifyVolume"), 1);
    assert!(calls(&ec2, "DescribeVolumesModifications") >= 1);
    let r = ec2
        .create(&["--size", "3G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "grown once: {r}");

    let r = ec2
        .create(&["--size", "2G", "--grow"], &input)
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
    assert_eq!(ec2.volume(&vol)["size"], 3);
    assert_eq!(calls(&ec2, "ModifyVolume"), 1, "no call to shrink it");
}

/// A grow is waited for while its modification is `modifying`, and done at
/// `optimizing` (usable at the new size); a modification that fails is
/// `resize-failed`, with EC2's reason.
#[test]
fn a_grow_waits_out_modifying_and_a_failed_modification_is_resize_failed() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    create(&ec2, &[rec("node-0", "data-0")]);
    let polls = || {
        ec2.seen()["injected"]["DescribeVolumesModifications"]
            .as_u64()
            .unwrap_or(0)
    };
    ec2.control(json!({"modification": {"polls": 2, "then": "optimizing"}}));
    let r = ec2
        .create(&["--size", "2G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (r["changed"].as_bool(), r["size_bytes"].as_u64()),
        (Some(true), Some(2 << 30)),
        "{r}"
    );
    assert_eq!(polls(), 3, "polled until optimizing");

    // An earlier run's grow still modifying: waited for, nothing sent.
    ec2.control(json!({"modification": {"polls": 2, "then": "optimizing"}}));
    let r = ec2
        .create(&["--size", "2G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "{r}");
    assert_eq!(polls(), 3, "looked up once, then polled until optimizing");

    // The last modification is `optimizing`: EC2 takes the next only once
    // it is `completed` (API_ModifyVolume): too soon, nothing sent.
    ec2.control(json!({"actions": {}}));
    let r = ec2
        .create(&["--size", "3G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "resize-too-soon", "{r}");
    let seen = ec2.seen();
    assert!(seen["actions"].get("ModifyVolume").is_none(), "{seen}");

    // It failed meanwhile (a failed one may be retried): the new one fails
    // too, with EC2's reason.
    ec2.control(json!({"modification": {"polls": -1, "then": "failed", "message": "insufficient capacity"}}),
    );
    let r = ec2
        .create(&["--size", "3G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "resize-failed", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("insufficient capacity"), "{msg}");
}

/// EC2 modifies a volume at most 4 times in a rolling 24 hours
/// (API_ModifyVolume; the proxy counts): the fifth grow is `resize-too-soon`,
/// nothing changed.
#[test]
fn a_fifth_modification_within_a_day_is_too_soon() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    create(&ec2, &[rec("node-0", "data-0")]);
    ec2.control(json!({"modification": {"polls": -1, "then": "completed"}}));
    for gib in 2..=5 {
        let size = format!("{gib}G");
        ec2.create(&["--size", &size, "--grow"], &input).expect(0);
    }
    let r = ec2
        .create(&["--size", "6G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "resize-too-soon", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("at most 4 times in a rolling 24 hours"),
        "{msg}"
    );
    assert_eq!(r["size_bytes"], 5u64 << 30, "{r}");
}

// --- EC2 as it answers (issue 26) ------------------------------------------
// Through ec2_proxy.py, which answers as EC2 does where moto is lenient;
// each test names the behaviour's source.

/// Right after CreateVolume, DescribeVolumes naming the volume may answer
/// `InvalidVolume.NotFound`; right after AttachVolume, the volume may show
/// no attachment; right after ModifyVolume, DescribeVolumesModifications
/// may answer `InvalidVolumeModification.NotFound` (AWS "Eventual
/// consistency in the Amazon EC2 API"; the EBS CSI driver waits through
/// each). Within the deadline each is "not yet".
#[test]
fn a_change_ec2_does_not_show_yet_is_waited_for() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    ec2.control(json!({"consistency": {"CreateVolume": 2, "AttachVolume": 2, "ModifyVolume": 2}}));
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    assert_eq!(created["state"], "created", "{created}");
    let attached = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert_eq!(attached["state"], "attached", "{attached}");
    let grown = ec2
        .create(&["--size", "2G", "--grow"], &[attached])
        .expect(0)
        .record();
    assert_eq!(grown["size_bytes"], 2u64 << 30, "{grown}");
    let injected = &ec2.seen()["injected"];
    assert!(
        injected["DescribeVolumes"].as_u64() >= Some(2)
            && injected["DescribeVolumesModifications"].as_u64() >= Some(2),
        "each change was not seen at first: {injected}"
    );
}

/// EC2 remembers a client token for hours: the same token with the same
/// parameters answers the first volume again, even once it is deleted;
/// with other parameters it is `IdempotentParameterMismatch`
/// (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html; the
/// EBS CSI driver moves to a new token). Neither stops the next run.
#[test]
fn a_dead_volume_or_a_mismatch_behind_a_client_token_never_stops_a_run() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    // A lost answer: the SDK sends CreateVolume again, on the same token,
    // and gets the same volume.
    ec2.control(json!({"lose": {"CreateVolume": 1}}));
    let first = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    let first = first["disk_id"].as_str().unwrap().to_string();
    assert_eq!(ec2.admin(&["named", "data-0"]), json!([first]));
    let sent = &ec2.seen()["tokens"];
    assert_eq!(sent[0], sent[1], "one token for the run's retries");
    ec2.admin(&["delete-volume", &first]);
    // An earlier run's answer is told from this run's by its time.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let second = ec2
        .create(&["--size", "1G", "--timeout", "60"], &input)
        .expect(0)
        .record();
    let second = second["disk_id"].as_str().unwrap().to_string();
    assert_ne!(second, first, "not the dead volume");
    ec2.admin(&["delete-volume", &second]);
    let third = ec2
        .create(&["--size", "2G", "--timeout", "60"], &input)
        .expect(0)
        .record();
    assert_eq!(third["size_bytes"], 2u64 << 30, "{third}");
    assert_eq!(ec2.admin(&["named", "data-0"]), json!([third["disk_id"]]));
    let tokens: Vec<String> = ec2.seen()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert!(
        tokens[0] != tokens[tokens.len() - 1] && tokens.iter().all(|t| t.starts_with(&tokens[0])),
        "the same disk's tokens, the next attempt's after: {tokens:?}"
    );
}

/// The zone names the region: a region from the environment (here
/// `AWS_REGION`; equally the profile or IMDS) never sends a zone's volume
/// to another region (EC2 refuses a zone outside the signing region:
/// `Invalid availability zone`), and `--region` naming another region is
/// refused before any call, naming both.
#[test]
fn the_zone_names_the_region() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    // AWS_REGION given twice: the later value is the one the tool sees.
    let env = [("AWS_REGION", "us-west-2")];
    let r = ec2
        .tool_env("disk-create", &["--size", "1G"], &ndjson(&input), &env)
        .expect(0)
        .record();
    let vol = r["disk_id"].as_str().unwrap();
    assert_eq!(
        ec2.admin(&["named", "data-0"]),
        json!([vol]),
        "made in us-east-1, the zone's region"
    );
    ec2.control(json!({"actions": {}}));
    let other = ndjson(&[rec("node-1", "data-1")]);
    let r = ec2
        .tool_env("disk-create", &["--region", "us-west-2"], &other, &env)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "region-mismatch", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("us-east-1") && msg.contains("us-west-2"),
        "{msg}"
    );
    assert_eq!(ec2.seen()["actions"], json!({}), "nothing sent");
}

/// AttachVolume answers `InvalidParameterValue: Attachment point /dev/sdf
/// is already in use` for a name the instance's image maps (instance
/// store, which DescribeInstances does not show) and for a name a
/// concurrent attach just took (EBS CSI `pkg/cloud/devicemanager`). The
/// image's names are never tried (DescribeImages); a name refused gives
/// way to the next free one, in the same run.
#[test]
fn device_names_in_use_are_passed_over() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &recs_for(&inst, 2));
    ec2.control(json!({"ami_devices": ["/dev/sdf"], "taken_once": ["/dev/sdg"], "actions": {}}));
    let attached = ec2.attach(&[], &created).expect(0).records();
    let mut names: Vec<&str> = attached
        .iter()
        .map(|r| r["attached_as"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["/dev/sdh", "/dev/sdi"], "{attached:?}");
    assert_eq!(ec2.calls("AttachVolume"), 3, "one refused, once");
    let on_moto = ec2.admin(&["attached", &inst]);
    for r in &attached {
        assert_eq!(on_moto[r["disk_id"].as_str().unwrap()], r["attached_as"]);
    }
    // The next run never tries the image's name.
    let more = create(&ec2, &[recs_for(&inst, 3).remove(2)]);
    ec2.control(json!({"actions": {}}));
    let r = ec2.attach(&[], &more).expect(0).record();
    assert_eq!(r["attached_as"], "/dev/sdg", "{r}");
    assert_eq!(ec2.calls("AttachVolume"), 1);
}

/// AttachVolume and DetachVolume carry no token: when an answer is lost,
/// the SDK sends the call again, and EC2 answers `VolumeInUse` or
/// `IncorrectState` for the work already done (API reference). Already in
/// the state asked is success.
#[test]
fn lost_attach_and_detach_answers_are_success() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    ec2.control(json!({"lose": {"AttachVolume": 1}, "actions": {}}));
    let attached = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert_eq!(
        (attached["state"].as_str(), attached["attached_as"].as_str()),
        (Some("attached"), Some("/dev/sdf")),
        "{attached}"
    );
    assert_eq!(ec2.calls("AttachVolume"), 2, "sent again by the SDK");
    ec2.control(json!({"lose": {"DetachVolume": 1}, "actions": {}}));
    let detached = ec2.detach(&["--force"], &[attached]).expect(0).record();
    assert_eq!(detached["state"], "detached", "{detached}");
    assert_eq!(ec2.calls("DetachVolume"), 2);
}

/// Sizes per volume type (CreateVolume's `Size`: st1 and sc1 from 125
/// GiB, standard up to 1 TiB) are checked before any call: a `--size` out
/// of range is a usage error; the default size for st1 fails the record
/// before CreateVolume.
#[test]
fn sizes_per_type_are_checked_before_any_call() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    let r = ec2
        .create(&["--type", "st1", "--size", "10G"], &input)
        .expect(2);
    assert!(r.stderr.contains("125 to 16384 GiB"), "{}", r.stderr);
    let r = ec2.create(&["--type", "st1"], &input).expect(1).record();
    assert_eq!(error_code(&r), "create-failed", "{r}");
    assert!(ec2.seen()["actions"].get("CreateVolume").is_none());
    ec2.create(&["--type", "st1", "--size", "125G"], &input)
        .expect(0);
}

/// `-v` says which credential provider the SDK used. Without credentials,
/// where the SDK asked IMDS and got no answer (a container behind the
/// instance's default metadata hop limit of 1), the error names the fix;
/// and `--self` says the same when it cannot read the instance's identity.
#[test]
fn verbose_names_the_credentials_and_imds_silence_names_the_hop_limit() {
    let ec2 = Ec2::moto();
    let r = ec2
        .create(&["-v", "--size", "1G"], &[rec("node-0", "data-0")])
        .expect(0);
    assert!(
        r.stderr.contains("credentials from EnvironmentVariable"),
        "{}",
        r.stderr
    );
    let hop = fake_imds("i-0123456789abcdef0", &["--hop-limited"]);
    let (url, hop_url) = (ec2.url(), hop.url());
    let mut cmd = std::process::Command::new(bin("disk-create"));
    cmd.args([
        "--endpoint-url",
        &url,
        "--region",
        "us-east-1",
        "--size",
        "1G",
    ]);
    without_aws_credentials(&mut cmd).env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &hop_url);
    let r = run_cmd(cmd, &ndjson(&[rec("node-0", "data-1")]))
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "no-credentials", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("--http-put-response-hop-limit 2"), "{msg}");

    let here = [
        "--self",
        "--node",
        "node-0",
        "--metadata-endpoint",
        &hop_url,
    ];
    let r = ec2
        .attach(&here, &[rec("node-0", "data-0")])
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "metadata", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("hop limit must be 2"), "{msg}");
}

/// 250 disks in one deployment: create, attach, status, snapshot with
/// retention, every request within EC2's limits (at most 200 values a
/// filter, `FilterLimitExceeded` beyond; at most 1,000 ids a Describe;
/// DescribeSnapshots pages followed: ec2-api-pagination.html), which the
/// proxy enforces: it refused nothing.
#[test]
fn two_hundred_fifty_disks_stay_within_ec2s_request_limits() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instances("us-east-1b", 25);
    let recs: Vec<Value> = (0..250)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("data-{i}"));
            r["instance"] = json!(inst[i / 10]);
            r
        })
        .collect();
    ec2.control(json!({"page_size": 100}));
    let busy = ["--concurrency", "16", "--timeout", "600"];
    let run_all = |name: &str, extra: &[&str], input: &str| {
        let mut a = busy.to_vec();
        a.extend_from_slice(extra);
        ec2.tool(name, &a, input).expect(0).records()
    };
    let started = std::time::Instant::now();
    let created = run_all("disk-create", &["--size", "1G"], &ndjson(&recs));
    assert_eq!(created.len(), 250);
    let again = run_all("disk-create", &["--size", "1G"], &ndjson(&recs));
    assert!(all_unchanged(&again), "found again by their Name tags");
    let attached = run_all("disk-attach", &[], &ndjson(&created));
    assert!(attached.iter().all(|r| r["state"] == "attached"));
    let status = ec2.status(&[], &attached).expect(0);
    assert_eq!(status.records().len(), 250);
    let first = run_all("disk-snapshot", &["--no-freeze"], &ndjson(&attached));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = run_all(
        "disk-snapshot",
        &["--no-freeze", "--keep", "1", "--wait"],
        &ndjson(&attached),
    );
    let older: Vec<String> = ids(&first);
    let mut pruned: Vec<String> = second.iter().flat_map(pruned_sorted).collect();
    pruned.sort();
    let mut want = older.clone();
    want.sort();
    assert_eq!(
        pruned, want,
        "every disk's older snapshot, seen across pages"
    );
    eprintln!(
        "250 disks: create, attach, status, 2 snapshots in {:?}",
        started.elapsed()
    );
    assert_eq!(ec2.seen()["injected"], json!({}), "nothing refused");
}

/// docs/ec2.md's `json` blocks: each policy's `Sid` and the EC2 actions
/// it allows (`ec2:` stripped).
fn documented_policies() -> std::collections::HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo().join("docs/ec2.md")).unwrap();
    let mut out = std::collections::HashMap::new();
    for block in text.split("```json\n").skip(1) {
        let json = block.split("```").next().unwrap();
        let policy: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("docs/ec2.md: a json block does not parse ({e}):\n{json}"));
        for st in policy["Statement"].as_array().unwrap() {
            assert_eq!(st["Effect"], "Allow", "{st}");
            let actions = st["Action"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a.as_str()?.strip_prefix("ec2:").map(str::to_string))
                .collect();
            out.insert(st["Sid"].as_str().unwrap().to_string(), actions);
        }
    }
    out
}

/// Each tool's minimum IAM policy in docs/ec2.md holds every EC2 action
/// the tool calls, and names none it never calls: every tool runs its
/// scenarios (every path that calls something) through the proxy, which
/// records the actions it sees.
#[test]
fn each_tools_documented_iam_policy_is_what_it_calls() {
    let policies = documented_policies();
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    // Every action the scenarios of the tools under `sids` saw.
    let actions_of = |scenario: &dyn Fn()| -> Vec<String> {
        ec2.control(json!({"actions": {}, "attaching": false}));
        scenario();
        let mut seen: Vec<String> = ec2.seen()["actions"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        seen.sort();
        seen
    };
    let hold_to = |sids: &[&str], seen: &[String]| {
        let mut allowed: Vec<String> = sids.iter().flat_map(|s| policies[*s].clone()).collect();
        allowed.sort();
        allowed.dedup();
        for a in seen {
            assert!(
                allowed.contains(a),
                "{sids:?} call {a}, which docs/ec2.md leaves out"
            );
        }
        for a in &allowed {
            assert!(
                seen.contains(a),
                "docs/ec2.md gives {sids:?} {a}, which they never call"
            );
        }
    };
    let hand = |name: &str| {
        ec2.admin(&["create-volume", "us-east-1b", "1", name])
            .as_str()
            .unwrap()
            .to_string()
    };
    // disk-create: a new volume in its instance's zone, a hand-made one
    // adopted and retagged, one from a snapshot.
    let mut zone_from_instance = rec("node-0", "data-0");
    zone_from_instance.as_object_mut().unwrap().remove("zone");
    zone_from_instance["instance"] = json!(inst);
    hand("hand-1");
    let created = ec2
        .create(&["--size", "1G"], &[zone_from_instance])
        .expect(0)
        .record();
    ec2.create(&[], &[rec("node-1", "hand-1")]).expect(0);
    ec2.snapshot(&[], &[created.clone()]).expect(0);
    let creating = actions_of(&|| {
        let mut r = rec("node-2", "data-2");
        r["instance"] = json!(inst);
        r.as_object_mut().unwrap().remove("zone");
        ec2.create(&["--size", "1G"], &[r]).expect(0);
        hand("hand-4");
        ec2.create(&["--tag", "team=db", "--retag"], &[rec("node-4", "hand-4")])
            .expect(0);
        ec2.create(&["--from-snapshot", "latest"], &[created.clone()])
            .expect(0);
    });
    hold_to(&["DiskCreate"], &creating);
    let grow = actions_of(&|| {
        ec2.create(&["--size", "2G", "--grow"], &[created.clone()])
            .expect(0);
    });
    hold_to(&["DiskCreate", "DiskCreateGrow"], &{
        let mut all = grow.clone();
        all.extend(creating.iter().cloned());
        all.sort();
        all.dedup();
        all
    });
    // disk-attach: one of ours, one made by hand (adopted), one stuck
    // attaching (given back).
    let hand_5 = hand("hand-5");
    let mut ours = created.clone();
    ours["instance"] = json!(inst);
    let mut by_id = rec("node-5", &hand_5);
    by_id["instance"] = json!(inst);
    let attach = actions_of(&|| {
        ec2.attach(&[], &[ours.clone(), by_id.clone()]).expect(0);
        let stuck = create(&ec2, &[rec("node-6", "data-6")]).remove(0);
        ec2.control(json!({"attaching": true}));
        ec2.attach(&["--instance", &inst, "--timeout", "3"], &[stuck])
            .expect(1);
        ec2.control(json!({"attaching": false}));
    });
    let attach: Vec<String> = attach.into_iter().filter(|a| a != "CreateVolume").collect();
    hold_to(&["DiskAttach"], &attach);
    let status = actions_of(&|| {
        ec2.status(&[], &[ours.clone()]).expect(0);
    });
    hold_to(&["DiskStatus"], &status);
    let snapshot = actions_of(&|| {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        ec2.snapshot(&["--no-freeze", "--keep", "1"], &[ours.clone()])
            .expect(0);
        ec2.snapshot(&["--list"], &[ours.clone()]).expect(0);
    });
    hold_to(&["DiskSnapshot"], &snapshot);
    let detach = actions_of(&|| {
        ec2.detach(&["--force"], &[ours.clone(), by_id.clone()])
            .expect(0);
    });
    hold_to(&["DiskDetach"], &detach);
}

/// An unmount proof holds for the attachment it was made in: one made
/// before the volume was attached as it is now (detached and attached
/// again since: perhaps mounted again) is refused, however recent; it was
/// taken for up to an hour.
#[test]
fn an_unmount_proof_is_tied_to_the_attachment_it_was_made_in() {
    let ec2 = Ec2::moto();
    let a = ec2.instance();
    let vol = ec2.hand_made("us-east-1b", None);
    let attached = attach_volume(&ec2, &vol, &a).record();
    let now = now_secs();
    let proven = |at: u64| unmount_proven(&attached, &a, &vol, at);
    // Made two minutes ago, before this attachment: of an earlier one.
    let r = ec2.detach(&[], &proven(now - 120)).expect(1).record();
    assert_eq!(error_code(&r), "unmount-proof-stale", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("earlier attachment"),
        "{r}"
    );
    assert_eq!(ec2.volume(&vol)["state"], "in-use");
    // Made during it: taken.
    ec2.detach(&[], &proven(now + 1)).expect(0);
    assert_eq!(ec2.volume(&vol)["state"], "available");
}

/// Up (create, attach), `--grow`, backup with retention (two snapshots,
/// `--keep 1`) and down (detach) of one new disk `data-{n}` on `inst`,
/// from the controller, through `ec2`'s proxy: `Err(flow, stderr)` for the
/// first that fails, else the stderr of them all.
fn every_flow(ec2: &Ec2, inst: &str, n: usize) -> Result<String, (&'static str, String)> {
    let mut said = String::new();
    let mut step = |flow: &'static str, name: &str, args: &[&str], input: &str| {
        let r = ec2.tool(name, args, input);
        said.push_str(&r.stderr);
        if r.code == 0 {
            Ok(r.stdout)
        } else {
            Err((flow, format!("{name} {args:?}: {}{}", r.stdout, r.stderr)))
        }
    };
    let r = rec(&format!("node-{n}"), &format!("data-{n}"));
    let made = step("up", "disk-create", &["--size", "1G"], &ndjson(&[r]))?;
    let attached = step("up", "disk-attach", &["--instance", inst], &made)?;
    let grown = step(
        "grow",
        "disk-create",
        &["--size", "2G", "--grow"],
        &attached,
    )?;
    // From the controller: no freeze (the node's own run freezes).
    let snap = ["--no-freeze", "--keep", "1"];
    step("backup", "disk-snapshot", &snap, &grown)?;
    // Snapshots a second apart: retention tells them apart by time.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let kept = step("backup", "disk-snapshot", &snap, &grown)?;
    step("down", "disk-detach", &["--force"], &kept)?;
    Ok(said)
}

/// docs/ec2.md's policies, applied by the proxy as IAM would (every action
/// outside them refused: 403 `UnauthorizedOperation`, tags on creation
/// needing CreateTags too): up, `--grow`, backup with retention and down
/// all pass. Take any one action away and a flow fails, naming it, except
/// the two whose refusal a flow outlives by design, each said in a warning:
/// DescribeImages (an image's device names then found when EC2 refuses
/// one) and DescribeInstanceTypes (EC2 then says when the limit is hit).
#[test]
fn the_documented_policy_runs_every_flow_and_each_action_is_needed() {
    let policies = documented_policies();
    let mut allowed: Vec<String> = [
        "DiskCreate",
        "DiskCreateGrow",
        "DiskAttach",
        "DiskDetach",
        "DiskSnapshot",
    ]
    .iter()
    .flat_map(|s| policies[*s].clone())
    .collect();
    allowed.sort();
    allowed.dedup();
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    ec2.control(json!({"allow": allowed}));
    every_flow(&ec2, &inst, 0)
        .unwrap_or_else(|(flow, e)| panic!("{flow} under the documented policy: {e}"));
    assert_eq!(ec2.seen()["injected"], json!({}), "nothing refused");
    let outlived = ["DescribeImages", "DescribeInstanceTypes"];
    for (n, action) in allowed.iter().enumerate() {
        let less: Vec<&String> = allowed.iter().filter(|a| *a != action).collect();
        ec2.control(json!({"allow": less}));
        match every_flow(&ec2, &inst, n + 1) {
            Err((flow, said)) => {
                assert!(
                    !outlived.contains(&action.as_str()),
                    "without {action}, {flow} failed: {said}"
                );
                assert!(
                    said.contains(action.as_str()) || said.contains("not authorized"),
                    "without {action}, {flow} failed without naming it: {said}"
                );
            }
            Ok(said) => {
                assert!(
                    outlived.contains(&action.as_str()),
                    "every flow passed without {action}: docs/ec2.md need not give it"
                );
                assert!(said.contains(action.as_str()), "{action}: {said}");
            }
        }
    }
}
