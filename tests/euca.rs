//! Eucalyptus as it answers: every call goes through `ec2_proxy.py --euca`,
//! which binds query parameters as Eucalyptus 4.4 does (`ComputeQueryBinding`,
//! `UnknownParameterStrategy.ERROR`, the parameter sets of
//! `VmBlockDevice.groovy`, `Tags.groovy`, `VmControl.groovy`, maint-4.4): a
//! request carrying anything else (ClientToken, TagSpecification, ...) is
//! answered "Failed to bind the following fields" and nothing is done. moto
//! behind it keeps the state; node devices are loop devices under a test
//! `/dev` and `/sys`, with the serials the node controller gives
//! (`handlers_default.c` `set_serial_and_bus`: `euca-<vol>-dev-<dev>`, 20
//! characters on virtio).

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// moto behind the strict Eucalyptus 4.4 binding, and a directory for the
/// notes kept between CreateVolume and CreateTags.
struct Euca {
    ec2: Ec2,
    notes: TempDir,
}

impl Euca {
    fn new() -> Euca {
        Euca {
            ec2: Ec2::proxied(&["--euca"]),
            notes: TempDir::new("euca-notes"),
        }
    }

    /// moto itself, behind the binding (to set up and look at state).
    fn moto(&self) -> &Server {
        &self.ec2.moto
    }

    fn url(&self) -> String {
        self.ec2.url()
    }

    /// The environment of a tool run: test credentials, and the notes'
    /// directory.
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = aws_env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("APPSCALE_PERSIST_PENDING_DIR".into(), self.notes.s("")));
        env
    }

    /// A tool run through the strict binding, with `extra` environment.
    fn tool_env(&self, name: &str, args: &[&str], input: &str, extra: &[(&str, &str)]) -> Run {
        let notes = self.notes.s("");
        let mut env = vec![("APPSCALE_PERSIST_PENDING_DIR", notes.as_str())];
        env.extend_from_slice(extra);
        self.ec2.tool_env(name, args, input, &env)
    }

    fn tool(&self, name: &str, args: &[&str], input: &str) -> Run {
        self.tool_env(name, args, input, &[])
    }

    /// The same run, started and left running (to be killed).
    fn spawn(&self, name: &str, args: &[&str], input: &str) -> std::process::Child {
        let mut cmd = Command::new(bin(name));
        cmd.arg("--endpoint-url").arg(self.url()).args(args);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        start(cmd, input)
    }

    fn control(&self, rule: Value) {
        self.ec2.control(rule);
    }

    /// What the proxy saw: `actions` (every request), `injected` (the
    /// refusals it answered: binding failures among them).
    fn seen(&self) -> Value {
        self.ec2.seen()
    }

    /// Waits until the proxy has seen `action` (a run is inside it).
    fn wait_for_action(&self, action: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ec2.calls(action) == 0 {
            assert!(Instant::now() < deadline, "no {action} within 60s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The volumes of `gib` GiB in moto (the instances' root volumes are
    /// 8 GiB): id → tags.
    fn volumes_of(&self, gib: u64) -> serde_json::Map<String, Value> {
        self.moto()
            .ec2_admin(&["volumes"])
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v["size"] == gib)
            .map(|(id, v)| (id.clone(), v["tags"].clone()))
            .collect()
    }

    fn instance(&self) -> String {
        self.moto().ec2_admin(&["run-instances", "us-east-1b", "1"])[0]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "euca", "zone": "us-east-1b", "disk": disk})
}

/// Plants a virtio serial for a loop device under the test's sysfs root.
fn plant_serial(t: &TempDir, dev: &LoopDev, serial: &str) {
    let name = dev.device.trim_start_matches("/dev/");
    let dir = t.join(&format!("sys/block/{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("serial"), format!("{serial}\n")).unwrap();
}

/// The virtio serial Eucalyptus gives volume `vol` attached as `dev`.
fn virtio_serial(vol: &str, dev: &str) -> String {
    format!("euca-{vol}-dev-{dev}").chars().take(20).collect()
}

/// Create, rerun, attach, find on the node by virtio serial past a decoy,
/// snapshot, retention, restore: all through the strict 4.4 binding, which
/// refuses nothing the tools send.
#[test]
fn end_to_end_through_the_strict_eucalyptus_binding() {
    require_root();
    let e = Euca::new();
    let t = TempDir::new("euca-e2e");
    let inst = e.instance();
    let input = ndjson(&[rec("node-0", "data-0")]);

    // Create: CreateVolume with what 4.4 binds, then CreateTags.
    let created = e
        .tool("disk-create", &["--size", "1G"], &input)
        .expect(0)
        .record();
    assert_eq!(created["state"], "created", "{created}");
    let vol = created["disk_id"].as_str().unwrap().to_string();
    let tags = &e.moto().ec2_admin(&["volume", &vol])["tags"];
    assert_eq!(
        (
            tags["Name"].as_str(),
            tags["appscale-persist:deployment"].as_str(),
            tags["appscale-persist:node"].as_str()
        ),
        (Some("data-0"), Some("appscale"), Some("node-0")),
        "{tags}"
    );
    assert_eq!(
        e.moto().ec2_admin(&["volume", &vol])["type"],
        "gp2",
        "no VolumeType sent: moto's default (Eucalyptus describes it standard)"
    );

    // Rerun: found by its tags; no second volume, none untagged.
    e.control(json!({"actions": {}}));
    let again = e
        .tool("disk-create", &["--size", "1G"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (again["disk_id"].as_str(), again["changed"].as_bool()),
        (Some(vol.as_str()), Some(false)),
        "{again}"
    );
    assert!(e.seen()["actions"].get("CreateVolume").is_none());
    let ours = e.volumes_of(1);
    assert_eq!(ours.len(), 1, "{ours:?}");

    // Attach from the controller: /dev/sdf asked.
    let attached = e
        .tool("disk-attach", &["--instance", &inst], &ndjson(&[again]))
        .expect(0)
        .record();
    assert_eq!(attached["attached_as"], "/dev/sdf", "{attached}");

    // On the node: the volume arrived as vdb (the guest names disks in
    // arrival order); /dev/vdf, the old guess for /dev/sdf, is a decoy
    // carrying another volume's serial.
    let ours_dev = LoopDev::new(&t, "ours", 1024);
    let decoy = LoopDev::new(&t, "decoy", 1024);
    std::fs::create_dir_all(t.join("dev")).unwrap();
    std::os::unix::fs::symlink(&ours_dev.device, t.join("dev/vdb")).unwrap();
    std::os::unix::fs::symlink(&decoy.device, t.join("dev/vdf")).unwrap();
    plant_serial(&t, &ours_dev, &virtio_serial(&vol, "sdf"));
    plant_serial(&t, &decoy, &virtio_serial("vol-0aaaaaaaaaaaaaaaa", "sdf"));
    let (root, sys) = (t.s("dev"), t.s("sys"));
    let node_env = [
        ("APPSCALE_PERSIST_DEV_ROOT", root.as_str()),
        ("APPSCALE_PERSIST_SYS_ROOT", sys.as_str()),
    ];
    let formatted = run_env(
        "disk-ensure-fs",
        &[],
        &ndjson(&[attached.clone()]),
        &node_env,
    )
    .expect(0)
    .record();
    assert_eq!(
        formatted["device"].as_str(),
        Some(format!("{root}/vdb").as_str()),
        "{formatted}"
    );
    assert_eq!(formatted["state"], "formatted");

    // Snapshot on the node (IMDSv1: Eucalyptus has no v2): the volume is
    // found by its serial (not mounted: no freeze), then retention.
    let imds = Server::python("fake_imds.py", &[&inst, "us-east-1b", "--v1"]);
    let imds_url = imds.url();
    let snap = |args: &[&str]| {
        let mut a = vec!["--metadata-endpoint", imds_url.as_str(), "--wait"];
        a.extend_from_slice(args);
        e.tool_env(
            "disk-snapshot",
            &a,
            &ndjson(&[formatted.clone()]),
            &node_env,
        )
        .expect(0)
        .record()
    };
    let first = snap(&[]);
    assert_eq!(first["snapshot"]["freeze"], "not-mounted", "{first}");
    assert_eq!(first["snapshot"]["state"], "completed", "{first}");
    let first_id = first["snapshot"]["id"].as_str().unwrap().to_string();
    let snaps = e.moto().ec2_admin(&["snapshots", &vol]);
    assert_eq!(
        snaps[&first_id]["appscale-persist:disk"], "data-0",
        "tagged by CreateTags: {snaps}"
    );
    let second = snap(&["--keep", "1"]);
    assert_eq!(second["snapshot"]["pruned"], json!([first_id]), "{second}");

    // Restore: the old volume taken down first (a restore is refused beside
    // its attached original), then a new volume from the latest snapshot,
    // tagged.
    e.tool("disk-detach", &["--force"], &ndjson(&[attached.clone()]))
        .expect(0);
    let restored = e
        .tool(
            "disk-create",
            &["--from-snapshot", "latest"],
            &ndjson(&[formatted.clone()]),
        )
        .expect(0)
        .record();
    let new = restored["disk_id"].as_str().unwrap().to_string();
    assert_ne!(new, vol);
    let v = e.moto().ec2_admin(&["volume", &new]);
    assert_eq!(v["snapshot"], second["snapshot"]["id"], "{v}");
    assert!(
        v["tags"]["Name"]
            .as_str()
            .unwrap()
            .starts_with("data-0-restored-"),
        "{v}"
    );

    assert_eq!(
        e.seen()["injected"],
        json!({}),
        "the binding refused nothing the tools sent"
    );
}

/// What Eucalyptus lacks is refused before any call: exit 2, saying why.
#[test]
fn options_eucalyptus_lacks_are_refused_before_any_call() {
    let e = Euca::new();
    let input = ndjson(&[rec("node-0", "data-0")]);
    for (args, why) in [
        (
            &["--size", "2G", "--grow"][..],
            "Eucalyptus has no ModifyVolume",
        ),
        (&["--type", "gp3"][..], "type standard"),
        (&["--kms-key", "alias/k"][..], "no KMS key"),
        (&["--encrypted"][..], "does not encrypt"),
        (&["--iops", "3000"][..], "no provisioned IOPS"),
        (&["--throughput", "200"][..], "no provisioned throughput"),
    ] {
        let r = e.tool("disk-create", args, &input).expect(2);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "", "{args:?}: no record out");
    }
    assert_eq!(e.seen()["actions"], json!({}), "no request at all");
}

/// A run killed between CreateVolume and its CreateTags leaks nothing: the
/// next run tags the volume (its note holds the id CreateVolume answered)
/// and makes no second one.
#[test]
fn a_run_killed_before_create_tags_leaves_a_volume_the_next_run_tags() {
    let e = Euca::new();
    let input = ndjson(&[rec("node-0", "data-0")]);
    e.control(json!({"hold": {"CreateTags": 60}}));
    let mut child = e.spawn("disk-create", &["--size", "1G"], &input);
    e.wait_for_action("CreateTags");
    child.kill().unwrap();
    child.wait().unwrap();
    let left = e.volumes_of(1);
    assert_eq!(left.len(), 1, "{left:?}");
    let (vol, tags) = left.iter().next().unwrap();
    assert_eq!(*tags, json!({}), "killed before its tags");

    e.control(json!({"hold": {}}));
    let r = e.tool("disk-create", &["--size", "1G"], &input).expect(0);
    let rec = r.record();
    assert_eq!(rec["disk_id"].as_str(), Some(vol.as_str()), "{rec}");
    assert!(r.stderr.contains(&format!("tagged {vol}")), "{}", r.stderr);
    let all = e.volumes_of(1);
    assert_eq!(all.len(), 1, "no second volume: {all:?}");
    assert_eq!(all[vol]["Name"], "data-0", "{all:?}");
}

/// A run killed while CreateVolume's answer was on its way (the volume made,
/// its id never read) proves nothing about any volume: the next run names
/// the untagged volumes made around then, leaves them alone, and creates.
#[test]
fn a_run_killed_during_create_volume_has_its_maybe_volume_named() {
    let e = Euca::new();
    let input = ndjson(&[rec("node-0", "data-0")]);
    e.control(json!({"hold_answer": {"CreateVolume": 60}}));
    let mut child = e.spawn("disk-create", &["--size", "1G"], &input);
    e.wait_for_action("CreateVolume");
    let deadline = Instant::now() + Duration::from_secs(30);
    while e.volumes_of(1).is_empty() {
        assert!(Instant::now() < deadline, "moto made no volume");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lost = e.volumes_of(1).keys().next().unwrap().clone();

    e.control(json!({"hold_answer": {}}));
    let r = e.tool("disk-create", &["--size", "1G"], &input).expect(0);
    assert!(
        r.stderr.contains(&lost) && r.stderr.contains("stopped during CreateVolume"),
        "the maybe-leaked volume is named: {}",
        r.stderr
    );
    let rec = r.record();
    assert_ne!(rec["disk_id"].as_str(), Some(lost.as_str()));
    let all = e.volumes_of(1);
    assert_eq!(all[&lost], json!({}), "left alone: {all:?}");
    assert_eq!(all.len(), 2, "{all:?}");
    // Said once: the note is gone.
    let again = e.tool("disk-create", &["--size", "1G"], &input).expect(0);
    assert!(!again.stderr.contains(&lost), "{}", again.stderr);
}

/// A snapshot left untagged (a run killed before its CreateTags) is found
/// by its description and tagged by the next listing: retention counts it,
/// and prunes it.
#[test]
fn a_snapshot_left_untagged_is_found_by_its_description_and_counted() {
    let e = Euca::new();
    let created = e
        .tool(
            "disk-create",
            &["--size", "1G"],
            &ndjson(&[rec("node-0", "data-0")]),
        )
        .expect(0);
    let vol = created.record()["disk_id"].as_str().unwrap().to_string();
    let created = created.stdout;
    e.control(json!({"hold": {"CreateTags": 60}, "actions": {}}));
    let mut child = e.spawn("disk-snapshot", &[], &created);
    e.wait_for_action("CreateTags");
    child.kill().unwrap();
    child.wait().unwrap();
    let snaps = e.moto().ec2_admin(&["snapshots", &vol]);
    let (left, tags) = snaps.as_object().unwrap().iter().next().unwrap();
    assert_eq!(*tags, json!({}), "{snaps}");

    e.control(json!({"hold": {}}));
    let r = e
        .tool("disk-snapshot", &["--keep", "1", "--wait"], &created)
        .expect(0);
    assert!(
        r.stderr.contains(&format!("tagged snapshot {left}")),
        "{}",
        r.stderr
    );
    let rec = r.record();
    assert_eq!(rec["snapshot"]["pruned"], json!([left]), "{rec}");
    let snaps = e.moto().ec2_admin(&["snapshots", &vol]);
    assert_eq!(snaps.as_object().unwrap().len(), 1, "{snaps}");
}

/// Without credentials the error says what works on Eucalyptus: the SDK's
/// instance-profile credentials need IMDSv2, which Eucalyptus lacks.
#[test]
fn without_credentials_the_error_names_what_works_on_eucalyptus() {
    let mut cmd = Command::new(bin("disk-create"));
    cmd.args(["--endpoint-url", "http://127.0.0.1:9", "--size", "1G"]);
    without_aws_credentials(&mut cmd)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "eucalyptus");
    let r = run_cmd(cmd, &ndjson(&[rec("node-0", "data-0")])).expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "no-credentials", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("on Eucalyptus only")
            && msg.contains("EC2_ACCESS_KEY")
            && msg.contains("IMDSv2"),
        "{msg}"
    );
}

/// `disk-attach --self` on a Eucalyptus node: its identity from IMDSv1 (the
/// token call is refused), the attach through the strict binding, and the
/// device found by its virtio serial as `vdc`, past `vdb` (another volume's)
/// and with no `/dev/vdf` at all.
#[test]
fn on_the_node_attach_uses_imdsv1_and_finds_the_virtio_disk_by_serial() {
    require_root();
    let e = Euca::new();
    let t = TempDir::new("euca-node");
    let inst = e.instance();
    let node = Server::python("fake_imds.py", &[&inst, "us-east-1b", "--v1"]);
    let created = e
        .tool(
            "disk-create",
            &["--size", "1G"],
            &ndjson(&[rec("node-0", "data-0")]),
        )
        .expect(0)
        .record();
    let vol = created["disk_id"].as_str().unwrap().to_string();
    let other = LoopDev::new(&t, "other", 1024);
    let ours = LoopDev::new(&t, "ours", 1024);
    std::fs::create_dir_all(t.join("dev")).unwrap();
    std::os::unix::fs::symlink(&other.device, t.join("dev/vdb")).unwrap();
    std::os::unix::fs::symlink(&ours.device, t.join("dev/vdc")).unwrap();
    plant_serial(&t, &other, &virtio_serial("vol-0bbbbbbbbbbbbbbbb", "sdg"));
    plant_serial(&t, &ours, &virtio_serial(&vol, "sdf"));
    let (root, sys) = (t.s("dev"), t.s("sys"));
    let imds_url = node.url();
    let r = e
        .tool_env(
            "disk-attach",
            &[
                "--self",
                "--node",
                "node-0",
                "--metadata-endpoint",
                &imds_url,
            ],
            &ndjson(&[created]),
            &[
                ("APPSCALE_PERSIST_DEV_ROOT", root.as_str()),
                ("APPSCALE_PERSIST_SYS_ROOT", sys.as_str()),
            ],
        )
        .expect(0)
        .record();
    assert_eq!(
        (r["instance"].as_str(), r["attached_as"].as_str()),
        (Some(inst.as_str()), Some("/dev/sdf"))
    );
    assert_eq!(
        r["device"].as_str(),
        Some(format!("{root}/vdc").as_str()),
        "{r}"
    );
    assert_eq!(
        e.seen()["injected"],
        json!({}),
        "the binding refused nothing"
    );
}
