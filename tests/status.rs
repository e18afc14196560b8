//! disk-status end to end: every problem code made by a real situation
//! (loop devices and mounts for the node part, moto and the fake Compute
//! Engine for the cloud part), a healthy deployment exiting 0, and the
//! Prometheus output read by a real parser. Nothing here is changed by
//! disk-status itself: each test checks that too.

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

/// A local deployment of one disk, made and mounted by the tools, with its
/// own state directory, mountpoint and fstab under a scratch directory.
struct Local {
    t: TempDir,
    rec: Value,
}

impl Local {
    fn env(&self) -> Vec<(String, String)> {
        vec![("APPSCALE_PERSIST_STATE_DIR".into(), self.t.s("disks"))]
    }

    fn tool(&self, name: &str, args: &[&str], input: &str) -> Run {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_env(name, args, input, &env)
    }

    /// disk-create, disk-attach, disk-ensure-fs and disk-mount on `disk`.
    fn up(tag: &str, disk: &str) -> Local {
        require_root();
        let t = TempDir::new(tag);
        let mut l = Local {
            rec: json!({"v": 1, "node": "node-1", "provider": "local", "disk": disk,
                        "mountpoint": t.s("mnt")}),
            t,
        };
        let fstab = l.t.s("fstab");
        let mut r = ndjson(&[l.rec.clone()]);
        for (tool, args) in [
            ("disk-create", vec!["--size", "64M"]),
            ("disk-attach", vec![]),
            ("disk-ensure-fs", vec![]),
            ("disk-mount", vec!["--fstab", fstab.as_str()]),
        ] {
            r = ndjson(&l.tool(tool, &args, &r).expect(0).records());
        }
        l.rec = serde_json::from_str(r.trim()).unwrap();
        l
    }

    fn device(&self) -> String {
        self.rec["device"].as_str().unwrap().to_string()
    }

    fn mnt(&self) -> String {
        self.t.s("mnt")
    }

    /// disk-status on the deployment's record (or `rec`), with its fstab.
    fn status(&self, rec: &Value, args: &[&str]) -> Run {
        let fstab = self.t.s("fstab");
        let mut a = args.to_vec();
        if !args.contains(&"--fstab") {
            a.extend(["--fstab", fstab.as_str()]);
        }
        self.tool("disk-status", &a, &ndjson(&[rec.clone()]))
    }
}

/// The problem codes of a status run's one record.
fn codes_of(r: &Value) -> Vec<String> {
    r["status"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no status.problems in {r}"))
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_string())
        .collect()
}

/// Every problem carries a message and a fix.
fn assert_explained(r: &Value) {
    for p in r["status"]["problems"].as_array().unwrap() {
        assert!(!p["message"].as_str().unwrap().is_empty(), "{p}");
        assert!(!p["fix"].as_str().unwrap().is_empty(), "{p}");
    }
}

/// Runs disk-status and returns its one record, checking the exit code
/// (1 when `want` names problems, else 0) and that it names exactly `want`
/// (in any order).
fn expect_codes(run: Run, want: &[&str]) -> Value {
    let code = if want.is_empty() { 0 } else { 1 };
    let r = run.expect(code).record();
    let mut got = codes_of(&r);
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "problems of {r}");
    assert_explained(&r);
    r
}

/// Parses Prometheus text with prometheus_client's parser: (name, labels,
/// value) of every sample.
fn parse_prometheus(text: &str) -> Vec<(String, Value, f64)> {
    let script = [
        "import json, sys",
        "from prometheus_client.parser import text_string_to_metric_families",
        "out = []",
        "for fam in text_string_to_metric_families(sys.stdin.read()):",
        "    for s in fam.samples:",
        "        out.append([s.name, s.labels, s.value])",
        "print(json.dumps(out))",
    ]
    .join("\n");
    let mut child = Command::new(venv().join("bin/python"))
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused:\n{text}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_string(),
                s[1].clone(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect()
}

fn fstab_text(l: &Local) -> String {
    std::fs::read_to_string(l.t.join("fstab")).unwrap_or_default()
}

#[test]
fn a_healthy_local_disk_exits_0_in_every_format_and_nothing_changes() {
    let l = Local::up("st-healthy", "data-1");
    let fstab = fstab_text(&l);
    let r = expect_codes(l.status(&l.rec, &[]), &[]);
    let s = &r["status"];
    assert_eq!(s["cloud"]["exists"], true);
    assert_eq!(s["cloud"]["attached_to"], json!([l.device()]));
    assert_eq!(s["node"]["device"], l.device().as_str());
    assert!(
        s["node"]["identity"]
            .as_str()
            .unwrap()
            .contains("loop device"),
        "{s}"
    );
    assert_eq!(s["node"]["fs"]["type"], "ext4");
    assert_eq!(s["node"]["fs"]["uuid"], r["fs"]["uuid"]);
    assert_eq!(s["node"]["fs"]["clean"], true);
    assert_eq!(s["node"]["mounted_at"], l.mnt().as_str());
    assert!(s["node"]["mount_options"].as_str().unwrap().contains("rw"));
    assert_eq!(
        (
            &s["node"]["fstab"]["present"],
            &s["node"]["fstab"]["matching"],
            &s["node"]["fstab"]["nofail"]
        ),
        (&json!(true), &json!(true), &json!(true))
    );
    assert!(s["node"]["used_bytes"].as_u64().unwrap() > 0);
    assert!(s["node"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(r["state"], l.rec["state"], "the record's state is kept");

    // --check is the same run; --holders names a process in the mount.
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .current_dir(l.mnt())
        .spawn()
        .unwrap();
    let held = expect_codes(l.status(&l.rec, &["--check", "--holders"]), &[]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let holders = held["status"]["node"]["holders"].as_array().unwrap();
    assert!(
        holders
            .iter()
            .any(|h| h.as_str().unwrap().contains("(sleep) cwd")),
        "{holders:?}"
    );

    // The table and the metrics.
    let table = l.status(&l.rec, &["--format", "table"]).expect(0);
    let head = table.stdout.lines().next().unwrap().to_string();
    for col in [
        "NODE",
        "DISK",
        "CLOUD",
        "ATTACHED TO",
        "DEVICE",
        "FS",
        "MOUNTED",
        "FSTAB",
        "USED",
        "PROBLEMS",
    ] {
        assert!(head.contains(col), "{head}");
    }
    assert!(table.stdout.lines().nth(1).unwrap().ends_with("ok"));
    let prom = l.status(&l.rec, &["--format", "prometheus"]).expect(0);
    let samples = parse_prometheus(&prom.stdout);
    let get = |name: &str| {
        samples
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", prom.stdout))
            .clone()
    };
    let (_, labels, size) = get("appscale_persist_disk_size_bytes");
    assert_eq!(size, (64u64 << 20) as f64);
    assert_eq!(labels["node"], "node-1");
    assert_eq!(labels["disk"], "data-1");
    assert_eq!(labels["mountpoint"], l.mnt().as_str());
    assert_eq!(get("appscale_persist_disk_mounted").2, 1.0);
    assert_eq!(get("appscale_persist_disk_attached").2, 1.0);
    assert_eq!(get("appscale_persist_disk_healthy").2, 1.0);
    assert!(get("appscale_persist_disk_used_bytes").2 > 0.0);
    assert!(
        !samples
            .iter()
            .any(|(n, _, _)| n == "appscale_persist_disk_problem")
    );
    assert_eq!(fstab_text(&l), fstab, "disk-status wrote nothing");
    assert!(is_mounted(&l.t.join("mnt")));
}

#[test]
fn node_problems_each_come_from_a_real_situation() {
    let l = Local::up("st-node", "data-1");
    let dev = l.device();
    let mnt = l.mnt();

    // Over the threshold: a file of 24 MiB on a 64 MiB filesystem.
    sh_ok(&[
        "dd",
        "if=/dev/zero",
        &format!("of={mnt}/fill"),
        "bs=1M",
        "count=24",
        "status=none",
    ]);
    sh_ok(&["sync"]);
    let r = expect_codes(l.status(&l.rec, &["--full-percent", "30"]), &["disk-full"]);
    assert!(r["status"]["node"]["used_percent"].as_u64().unwrap() > 30);
    expect_codes(l.status(&l.rec, &[]), &[]);
    let prom = l
        .status(&l.rec, &["--full-percent", "30", "--format", "prometheus"])
        .expect(1);
    let samples = parse_prometheus(&prom.stdout);
    assert!(
        samples
            .iter()
            .any(|(n, labels, v)| n == "appscale_persist_disk_problem"
                && labels["code"] == "disk-full"
                && *v == 1.0)
    );
    assert!(
        samples
            .iter()
            .any(|(n, _, v)| n == "appscale_persist_disk_healthy" && *v == 0.0)
    );

    // The record names another filesystem UUID than the disk's.
    let mut other = l.rec.clone();
    other["fs"]["uuid"] = json!("0b9e0c2d-1111-4222-8333-444455556666");
    expect_codes(l.status(&other, &[]), &["identity-mismatch"]);

    // A stale record: its `device` is now another image's loop device.
    let stranger = LoopDev::new(&l.t, "stranger", 16);
    let mut stale = l.rec.clone();
    stale["device"] = json!(stranger.device);
    let r = expect_codes(l.status(&stale, &[]), &["identity-mismatch"]);
    assert!(
        r["status"]["node"].get("fs").is_none(),
        "another disk's: not read"
    );
    drop(stranger);

    // Mounted, but fstab has no entry (another fstab: this one is empty).
    let empty = l.t.join("empty-fstab");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let r = expect_codes(
        l.status(&l.rec, &["--fstab", empty.to_str().unwrap()]),
        &["no-fstab-entry"],
    );
    assert_eq!(r["status"]["node"]["fstab"]["present"], false);

    // fstab mounts another filesystem at the mountpoint.
    let wrong = l.t.join("wrong-fstab");
    std::fs::write(
        &wrong,
        format!("UUID=0b9e0c2d-1111-4222-8333-444455556666 {mnt} ext4 defaults,nofail 0 2\n"),
    )
    .unwrap();
    expect_codes(
        l.status(&l.rec, &["--fstab", wrong.to_str().unwrap()]),
        &["fstab-mismatch"],
    );

    // Mounted somewhere else as well as not at its mountpoint.
    sh_ok(&["umount", &mnt]);
    expect_codes(l.status(&l.rec, &[]), &["not-mounted"]);
    let elsewhere = l.t.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    sh_ok(&["mount", &dev, elsewhere.to_str().unwrap()]);
    let r = expect_codes(l.status(&l.rec, &[]), &["mounted-elsewhere"]);
    assert_eq!(
        r["status"]["node"]["mounted_at"],
        elsewhere.to_str().unwrap()
    );
    sh_ok(&["umount", elsewhere.to_str().unwrap()]);

    // The superblock says errors were found: fsck wanted.
    sh_ok(&["tune2fs", "-E", "force_fsck", &dev]);
    let r = expect_codes(l.status(&l.rec, &[]), &["needs-fsck", "not-mounted"]);
    assert_eq!(r["status"]["node"]["fs"]["clean"], false);
    sh_ok(&["e2fsck", "-fy", &dev]);
    expect_codes(l.status(&l.rec, &[]), &["not-mounted"]);

    // The loop device detached (the disk gone from the node), the fstab
    // line left behind. The plan's record (no `device`): the loop device's
    // number may already serve another image (another test's), which the
    // record naming it would rightly call identity-mismatch.
    let fstab = fstab_text(&l);
    l.tool("disk-detach", &[], &ndjson(&[l.rec.clone()]))
        .expect(0);
    let mut planned = l.rec.clone();
    planned.as_object_mut().unwrap().remove("device");
    let r = expect_codes(
        l.status(&planned, &[]),
        &["not-attached", "device-not-found", "fstab-stale"],
    );
    assert_eq!(r["status"]["node"]["fstab"]["present"], true);
    assert_eq!(fstab_text(&l), fstab, "disk-status wrote nothing");

    // A disk that does not exist at all.
    let mut ghost = l.rec.clone();
    ghost["disk"] = json!("ghost");
    ghost.as_object_mut().unwrap().remove("device");
    ghost["mountpoint"] = json!(l.t.s("ghost-mnt"));
    let r = expect_codes(l.status(&ghost, &[]), &["no-such-disk", "device-not-found"]);
    assert_eq!(r["status"]["cloud"]["exists"], false);
}

#[test]
fn a_bare_device_and_usage_errors() {
    require_root();
    let t = TempDir::new("st-dev");
    let d = LoopDev::new(&t, "disk", 64);
    // A device holding nothing: no filesystem.
    let r = expect_codes(
        run(
            "disk-status",
            &["--device", &d.device, "--fstab", &t.s("fstab")],
            "",
        ),
        &["no-filesystem"],
    );
    assert_eq!(r["status"]["node"]["device"], d.device.as_str());
    assert!(r["status"].get("cloud").is_none());
    // Bad usage: exit 2, with or without records.
    run("disk-status", &["--format", "yaml"], "").expect(2);
    run(
        "disk-status",
        &["--full-percent", "101", "--device", &d.device],
        "",
    )
    .expect(2);
    run("disk-status", &[], "not json\n").expect(2);
    // A record carrying an error passes through, and counts.
    let failed = json!({"v": 1, "disk": "x", "error": {"tool": "disk-create", "code": "create-failed", "message": "m"}});
    let r = run("disk-status", &["--quiet"], &ndjson(&[failed.clone()]))
        .expect(1)
        .record();
    assert_eq!(r, failed);
}

/// Runs a controller-side tool against moto at `url`.
fn ec2_tool(url: &str, name: &str, args: &[&str], input: &str) -> Run {
    let mut a = vec!["--endpoint-url", url];
    a.extend_from_slice(args);
    run_env(name, &a, input, &aws_env())
}

fn ec2_rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "ec2", "zone": "us-east-1b", "disk": disk,
           "deployment": "test"})
}

#[test]
fn ec2_problems_come_from_moto_in_one_describe() {
    let moto = Server::moto();
    let url = moto.url();
    let insts: Vec<String> = moto
        .ec2_admin(&["run-instances", "us-east-1b", "2"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let recs: Vec<Value> = (0..3)
        .map(|i| ec2_rec(&format!("node-{i}"), &format!("data-{i}")))
        .collect();
    let created = ec2_tool(&url, "disk-create", &["--size", "1G"], &ndjson(&recs))
        .expect(0)
        .records();
    // data-0 on the first instance, data-1 on the second, data-2 nowhere.
    for (r, inst) in created.iter().zip(&insts) {
        let mut r = r.clone();
        r["instance"] = json!(inst);
        ec2_tool(&url, "disk-attach", &[], &ndjson(&[r])).expect(0);
    }
    let with = |i: usize, inst: &str| {
        let mut r = recs[i].clone();
        r["instance"] = json!(inst);
        r
    };

    // Healthy: attached where the record says.
    let healthy = with(0, &insts[0]);
    let r = expect_codes(
        ec2_tool(&url, "disk-status", &[], &ndjson(&[healthy.clone()])),
        &[],
    );
    let c = &r["status"]["cloud"];
    assert!(c["id"].as_str().unwrap().starts_with("vol-"), "{c}");
    assert_eq!(c["size_bytes"], 1u64 << 30);
    assert_eq!(c["type"], "gp3");
    assert_eq!(c["zone"], "us-east-1b");
    assert_eq!(c["state"], "in-use");
    assert_eq!(c["encrypted"], false);
    assert_eq!(c["attached_to"], json!([insts[0]]));
    assert_eq!(c["attached_as"], "/dev/sdf");
    assert_eq!(c["deployment"], "test");
    assert_eq!(c["node"], "node-0");
    assert!(c["created"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    assert!(
        r["status"].get("node").is_none(),
        "no node part off the node"
    );

    // Every cloud problem at once, in one run: one DescribeVolumes.
    let mut ghost = ec2_rec("node-3", "ghost");
    ghost["instance"] = json!(insts[0]);
    let input = ndjson(&[healthy.clone(), with(1, &insts[0]), recs[2].clone(), ghost]);
    moto.ec2_admin(&["record-start"]);
    let run = ec2_tool(&url, "disk-status", &[], &input).expect(1);
    let actions = moto.ec2_admin(&["actions"]);
    assert_eq!(actions["DescribeVolumes"], 1, "{actions}");
    assert_eq!(actions.as_object().unwrap().len(), 1, "{actions}");
    let got: Vec<Vec<String>> = run.records().iter().map(codes_of).collect();
    assert_eq!(
        got,
        vec![
            vec![],
            vec!["attached-elsewhere".to_string()],
            vec!["not-attached".to_string()],
            vec!["no-such-disk".to_string()],
        ]
    );
    assert_eq!(run.records()[3]["status"]["cloud"]["exists"], false);

    // Another zone than the record's; another deployment's.
    let mut elsewhere = healthy.clone();
    elsewhere["zone"] = json!("us-east-1a");
    expect_codes(
        ec2_tool(&url, "disk-status", &[], &ndjson(&[elsewhere])),
        &["zone-mismatch"],
    );
    let r = expect_codes(
        ec2_tool(
            &url,
            "disk-status",
            &["--deployment", "other"],
            &ndjson(&[healthy.clone()]),
        ),
        &["other-deployment"],
    );
    assert_eq!(r["status"]["cloud"]["exists"], true);

    // The table names every disk; nothing was changed.
    let table = ec2_tool(&url, "disk-status", &["--format", "table"], &input).expect(1);
    for d in ["data-0", "data-1", "data-2", "ghost"] {
        assert!(table.stdout.contains(d), "{}", table.stdout);
    }
    assert!(
        table.stdout.contains("attached-elsewhere; fix:")
            || table.stdout.contains("[attached-elsewhere]")
    );
    let v = moto.ec2_admin(&["attached", &insts[1]]);
    assert!(
        v.as_object().unwrap().values().any(|d| d == "/dev/sdf"),
        "data-1 is still attached there: {v}"
    );
}

/// A disk on the fake Compute Engine, of deployment `deployment` (node
/// `node`), attached to `users`.
fn gce_disk(g: &Gce, zone: &str, name: &str, deployment: &str, node: &str, users: &[&str]) {
    g.control(
        "disks",
        json!({"project": "proj", "zone": zone, "name": name, "sizeGb": 10,
               "type": "pd-balanced", "users": users,
               "labels": {"appscale-persist-deployment": deployment,
                          "appscale-persist-node": node}}),
    );
}

#[test]
fn gce_problems_come_from_the_fake_in_one_list() {
    let zone = "us-central1-a";
    let g = Gce::new(zone);
    g.control(
        "instances",
        json!({"project": "proj", "zone": zone, "name": "vm-2"}),
    );
    gce_disk(&g, zone, "data-0", "test", "node-0", &["vm-1"]);
    gce_disk(&g, zone, "data-1", "test", "node-1", &["vm-2"]);
    gce_disk(&g, zone, "data-2", "test", "node-2", &[]);
    gce_disk(&g, zone, "theirs", "other", "node-4", &[]);
    let rec = |node: &str, disk: &str| {
        json!({"v": 1, "node": node, "provider": "gce", "zone": zone, "disk": disk,
               "deployment": "test", "instance": "vm-1"})
    };
    let healthy = rec("node-0", "data-0");
    let r = expect_codes(g.tool("disk-status", &[], &ndjson(&[healthy.clone()])), &[]);
    let c = &r["status"]["cloud"];
    assert_eq!(c["id"], "data-0");
    assert_eq!(c["size_bytes"], 10u64 << 30);
    assert_eq!(c["type"], "pd-balanced");
    assert_eq!(c["zone"], zone);
    assert_eq!(c["state"], "READY");
    assert_eq!(c["attached_to"], json!(["vm-1"]));
    assert_eq!(
        (&c["deployment"], &c["node"]),
        (&json!("test"), &json!("node-0"))
    );
    assert!(c["created"].as_str().is_some_and(|s| !s.is_empty()), "{c}");

    let before = g.state()["calls"].clone();
    let input = ndjson(&[
        healthy,
        rec("node-1", "data-1"),
        rec("node-2", "data-2"),
        rec("node-3", "ghost"),
        rec("node-4", "theirs"),
    ]);
    let run = g.tool("disk-status", &[], &input).expect(1);
    let after = g.state()["calls"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    assert_eq!(delta("disks.list"), 1, "one list for five disks: {after}");
    assert_eq!(delta("disks.get"), 0, "{after}");
    let got: Vec<Vec<String>> = run.records().iter().map(codes_of).collect();
    assert_eq!(
        got,
        vec![
            vec![],
            vec!["attached-elsewhere".to_string()],
            vec!["not-attached".to_string()],
            vec!["no-such-disk".to_string()],
            vec!["other-deployment".to_string()],
        ]
    );
    for r in run.records() {
        assert_explained(&r);
    }
}

#[test]
fn scripts_status_reports_a_deployment_made_by_scripts_up() {
    require_root();
    let t = TempDir::new("st-script");
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        "infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 2\n    disks: [d-0, d-1]\n",
    )
    .unwrap();
    let state = t.s("disks");
    let env = [("APPSCALE_PERSIST_STATE_DIR", state.as_str())];
    flow("up", &t, &file, &["--size", "64M"], &env).expect(0);
    let fstab = t.s("fstab");
    let status = |extra: &[&str]| {
        let mnt = t.s("mnt/{node}");
        let mut args = vec!["--mountpoint", mnt.as_str()];
        args.extend_from_slice(extra);
        args.extend([file.to_str().unwrap(), "--", "--fstab", fstab.as_str()]);
        let bin = bin_dir().display().to_string();
        run_env(
            repo().join("scripts/status").to_str().unwrap(),
            &args,
            "",
            &[
                ("APPSCALE_PERSIST_STATE_DIR", state.as_str()),
                ("APPSCALE_PERSIST_BIN", bin.as_str()),
            ],
        )
    };
    let healthy = status(&[]).expect(0);
    assert_eq!(healthy.stdout.lines().count(), 3, "{}", healthy.stdout);
    assert!(healthy.stdout.lines().skip(1).all(|l| l.ends_with("ok")));
    sh_ok(&["umount", t.join("mnt/node-1").to_str().unwrap()]);
    let one = status(&[]).expect(1);
    assert!(one.stdout.contains("[not-mounted]"), "{}", one.stdout);
    let json = status(&["--format", "json", "--node", "node-1"]).expect(1);
    assert_eq!(codes_of(&json.record()), vec!["not-mounted".to_string()]);
    flow("down", &t, &file, &[], &env).expect(0);
}

#[test]
fn ec2_on_the_node_adds_the_node_part_found_by_the_volume_link() {
    require_root();
    let moto = Server::moto();
    let url = moto.url();
    let t = TempDir::new("st-ec2-node");
    let inst = moto.ec2_admin(&["run-instances", "us-east-1b", "1"])[0]
        .as_str()
        .unwrap()
        .to_string();
    let imds = Server::python("fake_imds.py", &[&inst, "us-east-1b"]);
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
    // A loop device stands in for the volume, behind its NVMe link.
    let d = LoopDev::new(&t, &vol, 1024);
    let by_id = t.join("dev/disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    let link = by_id.join(format!(
        "nvme-Amazon_Elastic_Block_Store_{}",
        vol.replacen('-', "", 1)
    ));
    std::os::unix::fs::symlink(&d.device, &link).unwrap();
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
    let rec = flow("up", &t, &file, &provider, &env).expect(0).record();
    let fstab = t.s("fstab");
    let status = |r: &Value| {
        let mut a = provider.to_vec();
        a.extend(["--fstab", fstab.as_str(), "--node", "node-1"]);
        run_env("disk-status", &a, &ndjson(&[r.clone()]), &env)
    };
    let r = expect_codes(status(&rec), &[]);
    let s = &r["status"];
    assert_eq!(s["cloud"]["attached_to"], json!([inst]));
    assert_eq!(s["node"]["device"], rec["device"]);
    let how = s["node"]["identity"].as_str().unwrap();
    assert!(how.contains("nvme-Amazon_Elastic_Block_Store_"), "{how}");
    assert_eq!(s["node"]["fs"]["uuid"], rec["fs"]["uuid"]);
    assert_eq!(s["node"]["mounted_at"], t.s("mnt/node-1").as_str());
    // The plan's record alone (no device): found by the volume's link.
    let mut planned = rec.clone();
    for k in ["device", "fs", "state", "steps", "changed", "attached_as"] {
        planned.as_object_mut().unwrap().remove(k);
    }
    let r = expect_codes(status(&planned), &[]);
    assert_eq!(r["status"]["node"]["device"], link.to_str().unwrap(), "{r}");
    // The link gone: the device is not found on the node.
    std::fs::remove_file(&link).unwrap();
    let r = status(&planned).expect(1).record();
    assert!(
        codes_of(&r).contains(&"device-not-found".to_string()),
        "{r}"
    );
    std::os::unix::fs::symlink(&d.device, &link).unwrap();
    flow("down", &t, &file, &provider, &env).expect(0);
}
