//! The ec2 provider against a real EC2 emulator (moto's server on
//! 127.0.0.1), and, where moto refuses nothing, a local proxy injecting what
//! real EC2 does (errors, throttling, slow attachments).

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ]
}

/// Runs a controller-side tool against `url`.
fn tool(url: &str, name: &str, args: &[&str], input: &str) -> Run {
    let mut a = vec!["--endpoint-url", url];
    a.extend_from_slice(args);
    run_env(name, &a, input, &aws_env())
}

fn instances(moto: &Server, zone: &str, n: usize) -> Vec<String> {
    moto.ec2_admin(&["run-instances", zone, &n.to_string()])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "ec2", "zone": "us-east-1b", "disk": disk})
}

/// Creates 1G volumes for `recs` (`disk-create`, which must succeed).
fn create(url: &str, recs: &[Value]) -> Vec<Value> {
    tool(url, "disk-create", &["--size", "1G"], &ndjson(recs))
        .expect(0)
        .records()
}

/// Tells the ec2_proxy.py at `url` what to inject.
fn inject(url: &str, rule: Value) {
    http("POST", &format!("{url}/__proxy__"), &rule.to_string());
}

fn steps_changed(r: &Value) -> bool {
    r["changed"].as_bool().unwrap()
}

#[test]
fn create_attach_detach_are_idempotent() {
    let moto = Server::moto();
    let url = moto.url();
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let input = ndjson(&[rec("node-0", "data-0")]);

    let created = tool(
        &url,
        "disk-create",
        &["--size", "1G", "--deployment", "test"],
        &input,
    )
    .expect(0)
    .record();
    assert_eq!(
        (created["state"].as_str(), steps_changed(&created)),
        (Some("created"), true)
    );
    let vol = created["disk_id"].as_str().unwrap().to_string();
    assert!(vol.starts_with("vol-"));
    let again = tool(
        &url,
        "disk-create",
        &["--size", "1G", "--deployment", "test"],
        &input,
    )
    .expect(0)
    .record();
    assert_eq!(
        (again["disk_id"].as_str(), steps_changed(&again)),
        (Some(vol.as_str()), false)
    );
    assert_eq!(
        moto.ec2_admin(&["named", "data-0"]),
        json!([vol]),
        "one volume, found again by its Name tag"
    );
    let v = moto.ec2_admin(&["volume", &vol]);
    assert_eq!(v["tags"]["appscale-persist:deployment"], "test");
    assert_eq!(v["tags"]["appscale-persist:node"], "node-0");
    assert_eq!(
        (v["size"].as_u64(), v["zone"].as_str()),
        (Some(1), Some("us-east-1b"))
    );

    let attached = tool(
        &url,
        "disk-attach",
        &["--instance", &inst],
        &ndjson(&[created.clone()]),
    )
    .expect(0)
    .record();
    assert_eq!(
        (attached["state"].as_str(), steps_changed(&attached)),
        (Some("attached"), true)
    );
    assert_eq!(attached["attached_as"], "/dev/sdf");
    assert_eq!(attached["instance"], inst.as_str());
    let v = moto.ec2_admin(&["volume", &vol]);
    assert_eq!(
        v["attachments"],
        json!([{"instance": inst, "state": "attached", "device": "/dev/sdf"}])
    );
    let again = tool(
        &url,
        "disk-attach",
        &["--instance", &inst],
        &ndjson(&[created]),
    )
    .expect(0)
    .record();
    assert!(!steps_changed(&again), "already attached here: unchanged");

    let detached = tool(&url, "disk-detach", &[], &ndjson(&[attached.clone()]))
        .expect(0)
        .record();
    assert_eq!(
        (detached["state"].as_str(), steps_changed(&detached)),
        (Some("detached"), true)
    );
    assert_eq!(moto.ec2_admin(&["volume", &vol])["state"], "available");
    let again = tool(&url, "disk-detach", &[], &ndjson(&[attached]))
        .expect(0)
        .record();
    assert!(!steps_changed(&again), "not attached: unchanged");

    // A disk named by its volume id works the same way.
    let id_rec = tool(
        &url,
        "disk-create",
        &["--provider", "ec2", "--disk", &vol, "--zone", "us-east-1b"],
        "",
    )
    .expect(0)
    .record();
    assert!(!steps_changed(&id_rec));
    tool(
        &url,
        "disk-attach",
        &["--provider", "ec2", "--disk", &vol, "--instance", &inst],
        "",
    )
    .expect(0);
}

#[test]
fn eucalyptus_is_the_same_api_at_another_endpoint() {
    let moto = Server::moto();
    let url = moto.url();
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let mut r = rec("node-0", "euca-data");
    r["provider"] = json!("euca");
    let created = create(&url, &[r]).remove(0);
    assert_eq!(
        (created["provider"].as_str(), created["state"].as_str()),
        (Some("euca"), Some("created"))
    );
    let attached = tool(
        &url,
        "disk-attach",
        &["--instance", &inst],
        &ndjson(&[created]),
    )
    .expect(0)
    .record();
    assert_eq!(attached["state"], "attached");
    tool(&url, "disk-detach", &[], &ndjson(&[attached])).expect(0);
}

/// A whole pipeline in --check mode, for a volume that does not exist yet:
/// every step says what it would do, and nothing is made.
#[test]
fn a_check_mode_pipeline_makes_nothing() {
    let moto = Server::moto();
    let url = moto.url();
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
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
        moto.ec2_admin(&["named", "not-yet"]),
        json!([]),
        "no volume was created"
    );
}

#[test]
fn a_missing_volume_is_a_clear_error() {
    let moto = Server::moto();
    let url = moto.url();
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let r = tool(
        &url,
        "disk-create",
        &[
            "--provider",
            "ec2",
            "--disk",
            "vol-0123456789abcdef0",
            "--zone",
            "us-east-1b",
        ],
        "",
    )
    .expect(1);
    let e = &r.record()["error"];
    assert_eq!(
        (e["code"].as_str(), e["tool"].as_str()),
        (Some("no-such-volume"), Some("disk-create"))
    );
    assert_eq!(e["message"], "no such volume: vol-0123456789abcdef0");
    let r = tool(
        &url,
        "disk-attach",
        &["--provider", "ec2", "--disk", "data-x", "--instance", &inst],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-volume");
    let r = tool(
        &url,
        "disk-attach",
        &[
            "--provider",
            "ec2",
            "--disk",
            "vol-0123456789abcdef0",
            "--instance",
            "i-0000000000000dead",
        ],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-volume");
}

#[test]
fn a_volume_attached_elsewhere_is_left_alone() {
    let moto = Server::moto();
    let url = moto.url();
    let [a, b]: [String; 2] = instances(&moto, "us-east-1b", 2).try_into().unwrap();
    let created = create(&url, &[rec("node-0", "shared")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    tool(
        &url,
        "disk-attach",
        &["--instance", &a],
        &ndjson(&[created.clone()]),
    )
    .expect(0);

    let r = tool(
        &url,
        "disk-attach",
        &["--instance", &b],
        &ndjson(&[created.clone()]),
    )
    .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "attached-elsewhere");
    assert!(e["message"].as_str().unwrap().contains(&a), "{e}");
    let r = tool(
        &url,
        "disk-detach",
        &["--instance", &b],
        &ndjson(&[created.clone()]),
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "attached-elsewhere");
    assert_eq!(
        moto.ec2_admin(&["volume", &vol])["attachments"][0]["instance"],
        a.as_str(),
        "still on its instance"
    );
}

#[test]
fn a_zone_mismatch_is_refused_before_any_attach() {
    let moto = Server::moto();
    let url = moto.url();
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let vol = moto
        .ec2_admin(&["create-volume", "us-east-1a", "1"])
        .as_str()
        .unwrap()
        .to_string();
    moto.ec2_admin(&["record-start"]);
    let r = tool(
        &url,
        "disk-attach",
        &["--provider", "ec2", "--disk", &vol, "--instance", &inst],
        "",
    )
    .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "zone-mismatch");
    assert!(
        e["message"].as_str().unwrap().contains("us-east-1a")
            && e["message"].as_str().unwrap().contains("us-east-1b"),
        "{e}"
    );
    let actions = moto.ec2_admin(&["actions"]);
    assert_eq!(
        actions.get("AttachVolume"),
        None,
        "no attach was tried: {actions}"
    );
    // disk-create says so too, for a record whose zone is not the volume's.
    let r = tool(
        &url,
        "disk-create",
        &["--provider", "ec2", "--disk", &vol, "--zone", "us-east-1b"],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "zone-mismatch");
}

#[test]
fn fifty_volumes_attach_concurrently_with_batched_polling() {
    let moto = Server::moto();
    let url = moto.url();
    let inst = instances(&moto, "us-east-1b", 5);
    let recs: Vec<Value> = (0..50)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("data-{i}"));
            r["instance"] = json!(inst[i / 10]);
            r
        })
        .collect();
    let created = create(&url, &recs);
    assert_eq!(created.len(), 50);

    moto.ec2_admin(&["record-start"]);
    let started = std::time::Instant::now();
    let attached = tool(
        &url,
        "disk-attach",
        &["--concurrency", "16"],
        &ndjson(&created),
    )
    .expect(0)
    .records();
    let took = started.elapsed();
    assert!(
        attached
            .iter()
            .all(|r| r["state"] == "attached" && r["changed"] == true)
    );
    let actions = moto.ec2_admin(&["actions"]);
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

    moto.ec2_admin(&["record-start"]);
    let detached = tool(&url, "disk-detach", &[], &ndjson(&attached))
        .expect(0)
        .records();
    assert!(detached.iter().all(|r| r["state"] == "detached"));
    let actions = moto.ec2_admin(&["actions"]);
    assert_eq!(actions["DetachVolume"], 50);
    assert!(
        actions["DescribeVolumes"].as_u64().unwrap() <= 3,
        "{actions}"
    );
}

#[test]
fn api_errors_become_record_errors_with_the_aws_code() {
    let moto = Server::moto();
    let proxy = Server::python("ec2_proxy.py", &[&moto.url()]);
    let url = proxy.url();
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let created = create(&url, &[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    let rule = json!({"fail": {"AttachVolume": {"status": 403, "code": "UnauthorizedOperation", "times": 1}}});
    inject(&url, rule);
    let r = tool(
        &url,
        "disk-attach",
        &["--instance", &inst, "--concurrency", "1"],
        &ndjson(&created),
    )
    .expect(1);
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
    let moto = Server::moto();
    let proxy = Server::python("ec2_proxy.py", &[&moto.url()]);
    let url = proxy.url();
    let rule = json!({"fail": {
        "DescribeVolumes": {"status": 503, "code": "RequestLimitExceeded", "times": 2},
        "CreateVolume": {"status": 500, "code": "InternalError", "times": 1},
    }});
    inject(&url, rule);
    let r = create(&url, &[rec("node-0", "data-0")]).remove(0);
    assert_eq!(r["state"], "created");
    let (_, body) = http("GET", &format!("{url}/__proxy__"), "");
    let injected: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        injected["injected"],
        json!({"DescribeVolumes": 2, "CreateVolume": 1})
    );
    assert_eq!(
        moto.ec2_admin(&["named", "data-0"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "the retried create made one volume"
    );
}

#[test]
fn an_attachment_stuck_attaching_is_undone_and_reported() {
    let moto = Server::moto();
    let proxy = Server::python("ec2_proxy.py", &[&moto.url()]);
    let url = proxy.url();
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let created = create(&url, &[rec("node-0", "data-0")]).remove(0);
    inject(&url, json!({"attaching": true}));
    let r = tool(
        &url,
        "disk-attach",
        &["--instance", &inst, "--timeout", "3"],
        &ndjson(&[created.clone()]),
    )
    .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "stuck-attaching", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("detached it again"),
        "{e}"
    );
    assert_eq!(
        moto.ec2_admin(&["volume", created["disk_id"].as_str().unwrap()])["state"],
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
    let moto = Server::moto();
    let url = moto.url();
    let t = TempDir::new("ec2-node");
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let created = create(&url, &[rec("node-0", "data-0")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    let _dev = stand_in(&t, &vol);
    let attached = tool(
        &url,
        "disk-attach",
        &["--instance", &inst],
        &ndjson(&[created]),
    )
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
    let moto = Server::moto();
    let url = moto.url();
    let t = TempDir::new("ec2-flow");
    let inst = instances(&moto, "us-east-1b", 1).remove(0);
    let imds = Server::python("fake_imds.py", &[&inst, "us-east-1b"]);
    // As on the seed page: create the volume first, then name it.
    let vol = moto
        .ec2_admin(&["create-volume", "us-east-1b", "1"])
        .as_str()
        .unwrap()
        .to_string();
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
    let imds_url = imds.url();
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
        moto.ec2_admin(&["volume", &vol])["attachments"][0]["instance"],
        inst.as_str()
    );
    let data = t.join("mnt/node-1/cassandra");
    std::fs::write(&data, "rows").unwrap();

    // Detaching a mounted volume is refused, here on the node.
    let r = run_env(
        "disk-detach",
        &[
            "--endpoint-url",
            &url,
            "--self",
            "--metadata-endpoint",
            &imds_url,
            "--provider",
            "ec2",
            "--disk",
            &vol,
        ],
        "",
        &env,
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "mounted");

    let r = down().expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(moto.ec2_admin(&["volume", &vol])["state"], "available");
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
    down().expect(0);
}
