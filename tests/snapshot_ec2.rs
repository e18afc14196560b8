//! disk-snapshot on EC2, against moto: CreateSnapshot tagged (deployment,
//! node, disk, time, tool), waited for in one loop, listed newest first, and
//! pruned with --keep among the same disk and deployment only. On the node,
//! a loop device stands in for the attached volume (behind its NVMe link):
//! its filesystem is frozen for the CreateSnapshot call alone, and thawed
//! on every path. The ec2_proxy.py in front of moto fails, slows down or
//! keeps pending what moto would not.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// moto (behind the proxy with `proxied`), every tool run for deployment
/// `snaps`.
fn snaps(proxied: bool) -> Ec2 {
    let ec2 = if proxied {
        Ec2::proxied(&[])
    } else {
        Ec2::moto()
    };
    ec2.with_args(&["--deployment", "snaps"])
}

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "ec2", "zone": "us-east-1b", "disk": disk})
}

#[test]
fn ebs_snapshots_are_tagged_listed_and_pruned_per_disk() {
    let ec2 = snaps(false);
    let both = ndjson(&[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    let created = ec2.create(&["--size", "1G"], &both).expect(0);

    // Not attached: nothing to freeze.
    let r = ec2.snapshot(&[], &created.stdout).expect(0).records();
    for r in &r {
        assert_eq!(r["snapshot"]["freeze"], "not-mounted", "{r}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let c = ec2
        .snapshot(&["--check", "--no-freeze"], &created.stdout)
        .expect(0)
        .records();
    assert_eq!(c[0]["snapshot"]["state"], "planned");
    let l = ec2.snapshot(&["--list"], &created.stdout).expect(0);
    assert_eq!(l.records().len(), 2, "one each, none taken by --check");

    let mut taken0 = ids(&r[..1]);
    for _ in 0..1 {
        let r = ec2
            .snapshot(&["--no-freeze"], &created.stdout)
            .expect(0)
            .records();
        assert_eq!(r[0]["snapshot"]["state"], "completed");
        assert_eq!(r[0]["snapshot"]["freeze"], "not-mounted");
        assert_eq!(r[0]["snapshot"]["size"], 1u64 << 30);
        taken0.push(r[0]["snapshot"]["id"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let disk0 = ndjson(&created.records()[..1]);
    let kept = ec2
        .snapshot(&["--no-freeze", "--keep", "1"], &disk0)
        .expect(0)
        .record();
    assert_eq!(
        kept["snapshot"]["pruned"].as_array().unwrap().len(),
        2,
        "{kept}"
    );
    let list0 = ec2.snapshot(&["--list"], &disk0).expect(0).records();
    assert_eq!(ids(&list0), [kept["snapshot"]["id"].as_str().unwrap()]);
    let disk1 = ndjson(&created.records()[1..]);
    let list1 = ec2.snapshot(&["--list"], &disk1).expect(0).records();
    assert_eq!(list1.len(), 2, "another disk's snapshots are kept");
    assert!(
        list1[0]["snapshot"]["time"].as_str() >= list1[1]["snapshot"]["time"].as_str(),
        "newest first"
    );
    // Restore: a new volume from the disk's latest snapshot, the old one kept.
    let old_vol = created.records()[0]["disk_id"]
        .as_str()
        .unwrap()
        .to_string();
    let restored = ec2
        .create(&["--from-snapshot", "latest"], &disk0)
        .expect(0)
        .record();
    let latest = kept["snapshot"]["id"].as_str().unwrap();
    assert_eq!(restored["restored_from"]["snapshot"], latest);
    assert_eq!(restored["restored_from"]["disk"], "data-0");
    assert!(
        restored["disk"]
            .as_str()
            .unwrap()
            .starts_with("data-0-restored-")
    );
    let new_vol = restored["disk_id"].as_str().unwrap();
    assert_ne!(new_vol, old_vol);
    assert_eq!(ec2.volume(new_vol)["snapshot"], latest);
    assert_eq!(ec2.volume(&old_vol)["state"], "available", "old one kept");
    let again = ec2
        .create(&["--from-snapshot", "latest"], &disk0)
        .expect(0)
        .record();
    assert_eq!(
        (again["changed"].as_bool(), again["disk_id"].as_str()),
        (Some(false), Some(new_vol))
    );
    // An id of another disk's snapshot is refused.
    let other = list1[0]["snapshot"]["id"].as_str().unwrap();
    let r = ec2
        .create(&["--from-snapshot", other], &disk0)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "no-such-snapshot");
    // The tags say whose they are.
    let all = ec2.admin(&["snapshots"]);
    let text = all.to_string();
    for key in [
        "appscale-persist:deployment",
        "appscale-persist:node",
        "appscale-persist:disk",
        "appscale-persist:time",
        "appscale-persist:tool",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
}

/// A node: an EBS volume attached (in moto) to an instance, and a loop
/// device standing in for it here, behind the volume's NVMe link, with an
/// ext4 filesystem mounted. Fields drop in order: the thaw first, then the
/// loop device (unmounted), then its directory.
struct Node {
    _thaw: ThawOnDrop,
    /// The record after disk-attach, with the filesystem's `fs`.
    rec: Value,
    mnt: PathBuf,
    /// The node's environment (its devices, its IMDS), besides AWS's.
    env: Vec<(String, String)>,
    _dev: LoopDev,
    _t: TempDir,
    /// The instance the volume is attached to: this machine, as its fake
    /// IMDS says.
    inst: String,
    /// A fake IMDS saying this machine is another instance.
    other_imds: Server,
    _imds: Server,
    ec2: Ec2,
}

impl Node {
    fn new(tag: &str) -> Node {
        Node::with(tag, false)
    }

    /// With `xen`, the loop device stands behind the volume's attach name
    /// (`/dev/sdf`), as on a Xen instance (no NVMe link, no serial).
    fn with(tag: &str, xen: bool) -> Node {
        require_root();
        let ec2 = snaps(true);
        let t = TempDir::new(tag);
        let inst = ec2.instance();
        let created = ec2
            .create(&["--size", "1G"], &[rec("node-0", "data-0")])
            .expect(0)
            .stdout;
        let mut rec = ec2
            .attach(&["--instance", &inst], &created)
            .expect(0)
            .record();
        let vol = rec["disk_id"].as_str().unwrap().to_string();
        let dev = LoopDev::new(&t, &vol, 1024);
        let by_id = t.join("dev/disk/by-id");
        std::fs::create_dir_all(&by_id).unwrap();
        let link = if xen {
            let name = rec["attached_as"].as_str().unwrap();
            t.join("dev").join(name.trim_start_matches("/dev/"))
        } else {
            by_id.join(format!(
                "nvme-Amazon_Elastic_Block_Store_{}",
                vol.replacen('-', "", 1)
            ))
        };
        std::os::unix::fs::symlink(&dev.device, link).unwrap();
        sh_ok(&["mkfs.ext4", "-q", &dev.device]);
        let uuid = sh_ok(&["blkid", "-s", "UUID", "-o", "value", &dev.device])
            .trim()
            .to_string();
        let mnt = t.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        sh_ok(&["mount", &dev.device, mnt.to_str().unwrap()]);
        rec["fs"] = json!({"type": "ext4", "uuid": uuid});
        let imds = fake_imds(&inst, &[]);
        let env = vec![
            ("APPSCALE_PERSIST_DEV_ROOT".into(), t.s("dev")),
            ("APPSCALE_PERSIST_METADATA_ENDPOINT".into(), imds.url()),
        ];
        let other_imds = fake_imds("i-0123456789abcdef0", &[]);
        Node {
            inst,
            other_imds,
            _imds: imds,
            ec2,
            rec,
            _thaw: ThawOnDrop(mnt.clone()),
            mnt,
            env,
            _dev: dev,
            _t: t,
        }
    }

    /// disk-snapshot on this node, on `rec`.
    fn snapshot_of(&self, rec: &Value, args: &[&str]) -> Run {
        self.snapshot_with(rec, args, &[])
    }

    /// disk-snapshot on this node, on `rec`, with `extra` in its
    /// environment.
    fn snapshot_with(&self, rec: &Value, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(extra);
        let input = ndjson(std::slice::from_ref(rec));
        self.ec2.tool_env("disk-snapshot", args, &input, &env)
    }

    /// disk-snapshot elsewhere: where the volume's device is not found.
    fn snapshot_elsewhere(&self, args: &[&str]) -> Run {
        let url = self.other_imds.url();
        let env = [("APPSCALE_PERSIST_METADATA_ENDPOINT", url.as_str())];
        let input = ndjson(std::slice::from_ref(&self.rec));
        self.ec2.tool_env("disk-snapshot", args, &input, &env)
    }

    /// A second volume (1 GiB), created for `node` and attached to
    /// `instance` when given.
    fn volume(&self, node: &str, instance: Option<&str>) -> Value {
        let created = self
            .ec2
            .create(&["--size", "1G"], &[rec(node, &format!("data-{node}"))])
            .expect(0)
            .stdout;
        match instance {
            Some(i) => self
                .ec2
                .attach(&["--instance", i], &created)
                .expect(0)
                .record(),
            None => serde_json::from_str(created.lines().next().unwrap()).unwrap(),
        }
    }

    fn snapshot(&self, args: &[&str]) -> Run {
        self.snapshot_of(&self.rec, args)
    }

    /// The ids of the disk's snapshots, newest first.
    fn listed(&self) -> Vec<String> {
        ids(&self.snapshot(&["--list"]).expect(0).records())
    }

    /// Starts disk-snapshot -v, sends `signals` (SIGTERM, then SIGINT)
    /// once it says it froze the filesystem, and returns its run.
    fn killed_while_frozen(&self, signals: usize) -> Run {
        let mut cmd = Command::new(bin("disk-snapshot"));
        cmd.args([
            "-v",
            "--endpoint-url",
            &self.ec2.url(),
            "--deployment",
            "snaps",
        ])
        .envs(aws_env())
        .envs(self.env.iter().map(|(k, v)| (k, v)));
        let input = ndjson(std::slice::from_ref(&self.rec));
        signalled_at(cmd, &input, "froze ", signals)
    }
}

#[test]
fn on_its_node_a_mounted_volume_is_frozen_for_create_snapshot_alone() {
    let n = Node::new("snap-ec2-freeze");
    let r = n.snapshot(&["-v"]).expect(0);
    let rec = r.record();
    assert_eq!(rec["snapshot"]["freeze"], "frozen", "{rec}");
    assert_eq!(rec["snapshot"]["state"], "completed");
    assert!(
        r.stderr.contains("froze ") && r.stderr.contains("thawed "),
        "{}",
        r.stderr
    );
    assert!(accepts_writes(&n.mnt, 10), "thawed");
    assert_eq!(n.listed().len(), 1);

    // The filesystem mounted is not the one the record names: refused.
    let mut other = n.rec.clone();
    other["fs"]["uuid"] = json!("00000000-0000-4000-8000-000000000000");
    let r = n.snapshot_of(&other, &[]).expect(1).record();
    assert_eq!(r["error"]["code"], "identity-mismatch", "{r}");
    assert_eq!(n.listed().len(), 1, "nothing taken");

    // Not found on this node while attached: not frozen, so refused unless
    // --no-freeze.
    let r = n.snapshot_elsewhere(&[]).expect(1).record();
    assert_eq!(r["error"]["code"], "freeze-failed", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not on this node"),
        "{r}"
    );
    let r = n.snapshot_elsewhere(&["--no-freeze"]).expect(0).record();
    assert_eq!(r["snapshot"]["freeze"], "not-frozen");

    // Attached, found, not mounted: nothing to freeze.
    sh_ok(&["umount", n.mnt.to_str().unwrap()]);
    let r = n.snapshot(&[]).expect(0).record();
    assert_eq!(r["snapshot"]["freeze"], "not-mounted", "{r}");
    assert_eq!(n.listed().len(), 3);
}

#[test]
fn a_create_snapshot_that_fails_or_hangs_while_frozen_is_thawed() {
    let n = Node::new("snap-ec2-fail");
    n.ec2.control(json!({"fail": {"CreateSnapshot": {"status": 400, "code": "InvalidParameterValue", "times": -1}}}),
    );
    let r = n.snapshot(&["-v"]).expect(1);
    assert!(r.stderr.contains("froze "), "{}", r.stderr);
    assert_eq!(
        r.record()["error"]["code"],
        "InvalidParameterValue",
        "{}",
        r.stdout
    );
    assert!(accepts_writes(&n.mnt, 10), "thawed after the failure");
    n.ec2
        .control(json!({"fail": {}, "delay": {"CreateSnapshot": 30}}));
    let r = n.snapshot(&["--freeze-timeout", "1"]).expect(1).record();
    assert_eq!(r["error"]["code"], "freeze-timeout", "{r}");
    assert!(accepts_writes(&n.mnt, 10), "thawed at the freeze's limit");
}

#[test]
fn sigterm_while_frozen_for_create_snapshot_thaws() {
    let n = Node::new("snap-ec2-term");
    n.ec2.control(json!({"delay": {"CreateSnapshot": 60}}));
    let r = n.killed_while_frozen(1);
    assert!(r.stderr.contains("froze "), "{}", r.stderr);
    assert!(
        accepts_writes(&n.mnt, 10),
        "thawed after SIGTERM: {}",
        r.stderr
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.record()["error"]["code"], "interrupted");
}

#[test]
fn a_second_signal_while_frozen_for_create_snapshot_thaws_before_it_exits() {
    let n = Node::new("snap-ec2-term2");
    n.ec2.control(json!({"delay": {"CreateSnapshot": 60}}));
    let r = n.killed_while_frozen(2);
    assert!(r.stderr.contains("froze "), "{}", r.stderr);
    // Whichever of the two the signal thread saw second ends it at once.
    assert!(
        r.code == 128 + 2 || r.code == 128 + 15,
        "exited at once: {} {}",
        r.code,
        r.stderr
    );
    assert!(
        accepts_writes(&n.mnt, 10),
        "thawed after two signals: {}",
        r.stderr
    );
}

#[test]
fn wait_polls_all_snapshots_together_and_a_deadline_leaves_them_pending() {
    let ec2 = snaps(true);
    let both = ndjson(&[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    let created = ec2.create(&["--size", "1G"], &both).expect(0);

    // Without --wait: back once started.
    ec2.control(json!({"pending_snapshots": -1}));
    let r = ec2.snapshot(&[], &created.stdout).expect(0).records();
    assert!(
        r.iter().all(|r| r["snapshot"]["state"] == "pending"),
        "{r:?}"
    );

    // --wait, bounded: pending at the deadline, left there.
    let w = ec2
        .snapshot(&["--wait", "--wait-timeout", "1"], &created.stdout)
        .expect(1);
    let recs = w.records();
    for r in &recs {
        assert_eq!(r["error"]["code"], "snapshot-pending", "{r}");
        assert_eq!(r["snapshot"]["state"], "pending", "{r}");
    }
    let left = ids(&recs);
    ec2.control(json!({"pending_snapshots": 0}));
    let listed = ec2
        .snapshot(&["--list"], &created.stdout)
        .expect(0)
        .records();
    for id in &left {
        assert!(ids(&listed).contains(id), "{id} never deleted");
    }

    // Two polls see both pending, the third both completed: one
    // DescribeSnapshots per poll for all of them (after the one listing).
    ec2.record_start();
    ec2.control(json!({"pending_snapshots": 3}));
    let w = ec2.snapshot(&["--wait", "-v"], &created.stdout).expect(0);
    assert!(
        w.records()
            .iter()
            .all(|r| r["snapshot"]["state"] == "completed"),
        "{}",
        w.stdout
    );
    assert!(w.stderr.contains("2 of 2 done"), "{}", w.stderr);
    let actions = ec2.recorded();
    assert_eq!(actions["DescribeSnapshots"], 4, "{actions}");
    assert_eq!(actions["CreateSnapshot"], 2, "{actions}");
}

#[test]
fn pruning_deletes_concurrently_and_reports_every_failure() {
    let ec2 = snaps(true);
    let disks = ndjson(&[
        rec("node-0", "data-0"),
        rec("node-1", "data-1"),
        rec("node-2", "data-2"),
    ]);
    let created = ec2.create(&["--size", "1G"], &disks).expect(0);
    let mut older = Vec::new();
    for _ in 0..2 {
        let r = ec2.snapshot(&[], &created.stdout).expect(0).records();
        older.extend(ids(&r));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Six deletions, four fail: some record has two failures.
    ec2.control(json!({"fail": {"DeleteSnapshot": {"status": 403, "code": "UnauthorizedOperation", "times": 4}}}),
    );
    let r = ec2.snapshot(&["--keep", "1"], &created.stdout).expect(1);
    let recs = r.records();
    let taken = ids(&recs);
    let pruned: Vec<String> = recs
        .iter()
        .flat_map(|r| {
            r["snapshot"]["pruned"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(pruned.len(), 2, "{}", r.stdout);
    let listed = ids(&ec2
        .snapshot(&["--list"], &created.stdout)
        .expect(0)
        .records());
    for id in &taken {
        assert!(listed.contains(id), "the new one {id} is kept");
    }
    let errors: Vec<String> = recs
        .iter()
        .filter(|r| r["error"]["code"] == "prune-failed")
        .map(|r| r["error"]["message"].as_str().unwrap().to_string())
        .collect();
    let left: Vec<&String> = older.iter().filter(|id| listed.contains(id)).collect();
    assert_eq!(left.len(), 4, "{listed:?}");
    for id in left {
        assert!(
            errors.iter().any(|m| m.contains(id.as_str())),
            "the failure to delete {id} is reported: {errors:?}"
        );
    }
    for id in &pruned {
        assert!(older.contains(id) && !listed.contains(id));
    }
}

/// Only completed snapshots count toward --keep, and a pending one (left by
/// an earlier --wait-timeout) is never deleted. Before, the pending one
/// counted: --keep 2 kept [new, pending] and deleted the last good one.
#[test]
fn retention_counts_only_completed_snapshots_and_never_deletes_a_pending_one() {
    let ec2 = snaps(true);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = ec2.create(&["--size", "1G"], &input).expect(0);
    let take = |args: &[&str]| ec2.snapshot(args, &created.stdout).expect(0).record();
    let good = ids(&[take(&[])]).remove(0);
    let slow = ids(&[take(&[])]).remove(0);
    ec2.control(json!({"pending_ids": [slow]}));
    let r = take(&["--keep", "2"]);
    assert_eq!(r["snapshot"]["state"], "completed", "{r}");
    assert!(r["snapshot"].get("pruned").is_none(), "nothing pruned: {r}");
    let listed = ec2
        .snapshot(&["--list"], &created.stdout)
        .expect(0)
        .records();
    // (moto's start times are in seconds: compare as a set.)
    let mut states: Vec<(String, String)> = listed
        .iter()
        .map(|l| {
            let s = &l["snapshot"];
            (
                s["id"].as_str().unwrap().into(),
                s["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    states.sort();
    let new = r["snapshot"]["id"].as_str().unwrap().to_string();
    let mut want = vec![
        (new.clone(), "completed".to_string()),
        (slow.clone(), "pending".to_string()),
        (good.clone(), "completed".to_string()),
    ];
    want.sort();
    assert_eq!(
        states, want,
        "the last good one and the pending one are kept"
    );
    // --keep 1: the good one goes, the pending one still stays.
    let r = take(&["--keep", "1"]);
    let pruned = pruned_sorted(&r);
    let mut want = vec![good, new];
    want.sort();
    assert_eq!(pruned, want, "{r}");
    let listed = ec2
        .snapshot(&["--list"], &created.stdout)
        .expect(0)
        .records();
    assert!(
        ids(&listed).contains(&slow),
        "a pending snapshot is never deleted"
    );
}

/// `scripts/backup` on one machine runs every node's record there. On Xen
/// every instance's first data volume is /dev/sdf and reports no serial:
/// another instance's volume, or one not attached at all, is never looked
/// for here (so never frozen in this machine's stead), and a volume of this
/// instance found by attach name and size alone is frozen only when the
/// record's fs.uuid proves it.
#[test]
fn only_a_volume_provably_attached_and_mounted_here_is_frozen() {
    let n = Node::with("snap-ec2-xen", true);
    // Another node's volume, attached to another instance as /dev/sdf too.
    let inst2 = n.ec2.instance();
    assert_ne!(inst2, n.inst);
    let other = n.volume("node-1", Some(&inst2));
    assert_eq!(other["attached_as"], n.rec["attached_as"], "{other}");
    let r = n.snapshot_of(&other, &[]).expect(1).record();
    assert_eq!(r["error"]["code"], "freeze-failed", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not to this instance"),
        "{r}"
    );
    let r = n.snapshot_of(&other, &["--no-freeze"]).expect(0).record();
    assert_eq!(r["snapshot"]["freeze"], "not-frozen", "{r}");

    // A volume attached nowhere, its record still naming /dev/sdf: nothing
    // to freeze, nothing looked for here.
    let mut loose = n.volume("node-2", None);
    loose["attached_as"] = n.rec["attached_as"].clone();
    let r = n.snapshot_of(&loose, &["-v"]).expect(0);
    assert_eq!(
        r.record()["snapshot"]["freeze"],
        "not-mounted",
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("froze "), "{}", r.stderr);

    // This instance's volume, found by attach name and size alone (no
    // fs.uuid in the record): not provably this volume, refused.
    let mut bare = n.rec.clone();
    bare.as_object_mut().unwrap().remove("fs");
    let r = n.snapshot_of(&bare, &[]).expect(1).record();
    assert_eq!(r["error"]["code"], "freeze-failed", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("fs.uuid"),
        "{r}"
    );
    assert!(accepts_writes(&n.mnt, 10));
    // With its fs.uuid: proven, frozen.
    let r = n.snapshot(&["-v"]).expect(0);
    assert_eq!(r.record()["snapshot"]["freeze"], "frozen", "{}", r.stdout);
    assert!(accepts_writes(&n.mnt, 10), "thawed");
}

/// The node lock is held from the look at the node through the thaw: while
/// another run holds it (a disk-unmount, say), nothing is looked at, frozen
/// or taken.
#[test]
fn a_freeze_holds_the_node_lock() {
    let n = Node::new("snap-ec2-lock");
    {
        std::fs::create_dir_all("/run/appscale-persist").unwrap();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/appscale-persist/lock")
            .unwrap();
        let _held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let r = n
            .snapshot_with(&n.rec, &[], &[("APPSCALE_PERSIST_LOCK_TIMEOUT", "1")])
            .expect(1)
            .record();
        assert_eq!(r["error"]["code"], "node-locked", "{r}");
    }
    let r = n.snapshot(&[]).expect(0).record();
    assert_eq!(r["snapshot"]["freeze"], "frozen", "{r}");
    assert_eq!(n.listed().len(), 1, "nothing taken while locked");
}

/// Right after CreateSnapshot, EC2 may answer DescribeSnapshots of the new
/// id with InvalidSnapshot.NotFound (eventual consistency): the wait takes
/// it as still pending, never as a failure.
#[test]
fn wait_takes_a_snapshot_not_found_yet_as_pending() {
    let ec2 = snaps(true);
    let created = ec2
        .create(
            &["--size", "1G"],
            &[rec("node-0", "data-0"), rec("node-1", "data-1")],
        )
        .expect(0);
    // The listing passes; the first poll is NotFound; the next sees them
    // pending, the one after completed.
    ec2.control(json!({"pending_snapshots": 2,
               "fail": {"DescribeSnapshots": {"status": 400, "code": "InvalidSnapshot.NotFound", "times": 1, "skip": 1}}}),
    );
    let w = ec2.snapshot(&["--wait"], &created.stdout).expect(0);
    for r in w.records() {
        assert_eq!(r["snapshot"]["state"], "completed", "{r}");
    }
    let seen = ec2.seen();
    assert_eq!(seen["injected"]["DescribeSnapshots"], 1, "{seen}");
}

// --- EC2 as it answers (issue 26) ------------------------------------------

/// The proxy (answering as EC2 does) in front of a fresh moto, and one 1 GiB
/// volume made through it (disk-create's run).
fn one_disk() -> (Ec2, Run) {
    let ec2 = snaps(true);
    let created = ec2
        .create(&["--size", "1G"], &[rec("node-0", "data-0")])
        .expect(0);
    (ec2, created)
}

/// A second CreateSnapshot of one volume seconds after the first is
/// refused `SnapshotCreationPerVolumeRateExceeded` (EC2 API error codes):
/// `snapshot-too-soon` (as on Compute Engine), saying nothing is wrong
/// with the volume.
#[test]
fn a_snapshot_seconds_after_the_last_is_too_soon() {
    let (ec2, created) = one_disk();
    ec2.control(json!({"snapshot_interval": 60}));
    ec2.snapshot(&[], &created.stdout).expect(0);
    let r = ec2.snapshot(&[], &created.stdout).expect(1).record();
    assert_eq!(r["error"]["code"], "snapshot-too-soon", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("nothing is wrong with the volume"), "{msg}");
}

/// A snapshot an image (AMI) uses cannot be deleted (`InvalidSnapshot.InUse`,
/// EC2 API error codes): said once, kept, and left out of retention's
/// count from then on, instead of failing every run.
#[test]
fn a_snapshot_an_image_uses_is_said_once_and_not_counted() {
    let (ec2, created) = one_disk();
    let take = |args: &[&str]| {
        let r = ec2.snapshot(args, &created.stdout).expect(0);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        r
    };
    let imaged = ids(&[take(&[]).record()]).remove(0);
    ec2.control(json!({"in_use_snapshots": [imaged]}));
    let second = take(&["--keep", "1"]);
    assert!(
        second.stderr.contains(&imaged) && second.stderr.contains("InvalidSnapshot.InUse"),
        "said: {}",
        second.stderr
    );
    let second = second.record();
    assert!(second["snapshot"].get("pruned").is_none(), "{second}");
    let second_id = second["snapshot"]["id"].as_str().unwrap().to_string();
    // Next run: the imaged one is not counted: --keep 1 keeps the new one,
    // prunes the second, and says nothing of the imaged one.
    let third = take(&["--keep", "1"]);
    assert!(
        !third.stderr.contains(&imaged),
        "said once: {}",
        third.stderr
    );
    assert_eq!(pruned_sorted(&third.record()), [second_id]);
    let listed = ids(&ec2
        .snapshot(&["--list"], &created.stdout)
        .expect(0)
        .records());
    assert!(listed.contains(&imaged), "kept: {listed:?}");
}

/// CreateSnapshot carries no token: an answer lost in transit makes the
/// SDK send it again, and EC2 makes a twin. The twin is tagged (in the
/// same call) so retention counts it, and prunes it.
#[test]
fn a_create_snapshot_twin_is_tagged_and_counted() {
    let ec2 = snaps(true);
    let created = ec2
        .create(&["--size", "1G"], &[rec("node-0", "data-0")])
        .expect(0);
    let vol = created.record()["disk_id"].as_str().unwrap().to_string();
    ec2.control(json!({"lose": {"CreateSnapshot": 1}}));
    ec2.snapshot(&[], &created.stdout).expect(0);
    let snaps = ec2.admin(&["snapshots", &vol]);
    let snaps = snaps.as_object().unwrap();
    assert_eq!(snaps.len(), 2, "a twin: {snaps:?}");
    for tags in snaps.values() {
        assert_eq!(tags["appscale-persist:disk"], "data-0", "{tags}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = ec2
        .snapshot(&["--keep", "1"], &created.stdout)
        .expect(0)
        .record();
    assert_eq!(pruned_sorted(&r).len(), 2, "both counted: {r}");
}

/// DescribeSnapshots pages (NextToken; ec2-api-pagination.html): every
/// page is followed, or retention and `--from-snapshot latest` would see a
/// partial list.
#[test]
fn every_page_of_snapshots_is_followed() {
    let (ec2, created) = one_disk();
    let mut taken = Vec::new();
    for _ in 0..4 {
        let r = ec2.snapshot(&[], &created.stdout).expect(0);
        taken.extend(ids(&r.records()));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    ec2.control(json!({"page_size": 2}));
    let listed = ec2
        .snapshot(&["--list"], &created.stdout)
        .expect(0)
        .records();
    assert_eq!(listed.len(), 4, "{listed:?}");
    let restored = ec2
        .create(&["--from-snapshot", "latest"], &created.stdout)
        .expect(0)
        .record();
    assert_eq!(
        restored["restored_from"]["snapshot"].as_str(),
        Some(taken[3].as_str()),
        "the newest, on the last page: {restored}"
    );
    let r = ec2
        .snapshot(&["--keep", "1"], &created.stdout)
        .expect(0)
        .record();
    let mut want = taken.clone();
    want.sort();
    assert_eq!(pruned_sorted(&r), want, "{r}");
}

/// Only snapshots disk-snapshot took (every tag it puts on one: the
/// deployment, node, disk, time and tool) are counted, listed, pruned or
/// restored from: one made by hand, or by another tool, tagged with the
/// deployment and disk alone, is left alone. Before, it counted (as the
/// oldest: it has no time tag) and was pruned first.
#[test]
fn retention_never_counts_or_deletes_a_snapshot_it_did_not_make() {
    let ec2 = snaps(false);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = ec2.create(&["--size", "1G"], &input).expect(0);
    let vol = created.record()["disk_id"].as_str().unwrap().to_string();
    let by_hand = ec2.admin(&[
        "create-snapshot",
        &vol,
        &json!({"appscale-persist:deployment": "snaps", "appscale-persist:disk": "data-0"})
            .to_string(),
    ]);
    let by_hand = by_hand.as_str().unwrap().to_string();
    let other_tool = ec2.admin(&[
        "create-snapshot",
        &vol,
        &json!({"appscale-persist:deployment": "snaps", "appscale-persist:disk": "data-0",
                "appscale-persist:node": "node-0", "appscale-persist:time": "2020-01-01T00:00:00.000Z",
                "appscale-persist:tool": "backup.sh"})
        .to_string(),
    ]);
    let other_tool = other_tool.as_str().unwrap().to_string();
    let mut ours = Vec::new();
    for _ in 0..2 {
        let r = ec2
            .snapshot(&["--keep", "1"], &created.stdout)
            .expect(0)
            .record();
        ours.push(r["snapshot"]["id"].as_str().unwrap().to_string());
        assert!(
            pruned_sorted(&r).iter().all(|p| ours.contains(p)),
            "only ours is pruned: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let all = ec2.admin(&["snapshots"]);
    for theirs in [&by_hand, &other_tool] {
        assert!(all.get(theirs.as_str()).is_some(), "{theirs} kept: {all}");
    }
    assert!(
        all.get(ours[0].as_str()).is_none(),
        "the older of ours pruned"
    );
    let listed = ec2
        .snapshot(&["--list"], &created.stdout)
        .expect(0)
        .records();
    assert_eq!(ids(&listed), [ours[1].clone()], "theirs is not listed");
    let r = ec2
        .create(&["--from-snapshot", &by_hand], &created.stdout)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "no-such-snapshot", "{r}");
}

/// On its node, a volume whose filesystem was lazily unmounted but is still
/// in use (written to, with no mountpoint to freeze it through) is refused
/// (`freeze-failed`) unless --no-freeze; it was taken as `not-mounted`.
#[test]
fn a_lazily_unmounted_live_volume_is_not_snapshotted_unfrozen() {
    let n = Node::new("snap-ec2-lazy");
    let mut holder = Command::new("sleep")
        .arg("60")
        .current_dir(&n.mnt)
        .spawn()
        .unwrap();
    sh_ok(&["umount", "--lazy", n.mnt.to_str().unwrap()]);
    let r = n.snapshot(&[]);
    let forced = n.snapshot(&["--no-freeze"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.code, 1, "{}", r.stdout);
    let rec = r.record();
    assert_eq!(rec["error"]["code"], "freeze-failed", "{rec}");
    assert!(
        rec["error"]["message"].as_str().unwrap().contains("sleep"),
        "{rec}"
    );
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(forced.record()["snapshot"]["freeze"], "not-frozen");
}

/// `disk-create --from-snapshot` of a volume still attached to an instance
/// is refused before anything is made (`original-attached`): the restored
/// volume would carry a filesystem of the same UUID, and an attachment
/// survives a reboot. Detached, the restore goes ahead.
#[test]
fn a_restore_beside_its_attached_original_is_refused() {
    let ec2 = snaps(false);
    let input = ndjson(&[rec("node-0", "data-0")]);
    let created = ec2.create(&["--size", "1G"], &input).expect(0);
    let vol = created.record()["disk_id"].as_str().unwrap().to_string();
    let snap = ec2
        .snapshot(&["--wait"], &created.stdout)
        .expect(0)
        .record();
    let inst = ec2.instance();
    ec2.admin(&["attach", &vol, &inst, "/dev/sdf"]);
    let restored_name = || {
        let t = snap["snapshot"]["time"].as_str().unwrap();
        let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
        format!("data-0-restored-{compact}")
    };
    let r = ec2
        .create(&["--from-snapshot", "latest"], &created.stdout)
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "original-attached", "{r}");
    assert!(
        ec2.admin(&["named", &restored_name()])
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was made"
    );
    ec2.detach(&["--force"], &created.stdout).expect(0);
    let r = ec2
        .create(&["--from-snapshot", "latest"], &created.stdout)
        .expect(0)
        .record();
    assert_eq!(r["disk"], restored_name().as_str(), "{r}");
}
