//! disk-snapshot and disk-create --from-snapshot on the local provider, on
//! real loop devices: snapshot, list, keep N, restore with the data checked
//! byte for byte; retention that never touches another disk's or another
//! deployment's snapshots; and the freeze always released (a signal while
//! frozen, once or twice; a copy that fails), the filesystem taking writes
//! afterwards.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

/// A local disk, made, attached, formatted and mounted in a scratch
/// directory; the state directory is `t/disks`.
struct Disk {
    t: TempDir,
    state: String,
    up: Value,
}

impl Disk {
    fn new(tag: &str, size: &str) -> Disk {
        require_root();
        let t = TempDir::new(tag);
        let state = t.s("disks");
        std::fs::create_dir_all(t.join("mnt")).unwrap();
        let created = run(
            "disk-create",
            &[
                "--provider",
                "local",
                "--disk",
                "data-1",
                "--size",
                size,
                "--state-dir",
                &state,
            ],
            "",
        )
        .expect(0);
        let attached = run("disk-attach", &["--state-dir", &state], &created.stdout).expect(0);
        let fs = run("disk-ensure-fs", &[], &attached.stdout).expect(0);
        let mnt = t.s("mnt");
        let up = run(
            "disk-mount",
            &["--no-fstab", "--mountpoint", &mnt],
            &fs.stdout,
        )
        .expect(0)
        .record();
        Disk { t, state, up }
    }

    fn mnt(&self) -> PathBuf {
        self.t.join("mnt")
    }

    fn snapshot(&self, args: &[&str]) -> Run {
        let mut a = vec!["--state-dir", self.state.as_str()];
        a.extend_from_slice(args);
        run("disk-snapshot", &a, &ndjson(std::slice::from_ref(&self.up)))
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.t.join("disks/snapshots")
    }

    /// Files in the snapshots directory (hidden ones too).
    fn snapshot_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.snapshots_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[test]
fn snapshot_list_keep_and_restore_bring_back_the_data_byte_for_byte() {
    let d = Disk::new("snap-restore", "64M");
    let _thaw = ThawOnDrop(d.mnt());
    std::fs::write(d.mnt().join("a"), vec![0xA5u8; 3 << 20]).unwrap();

    // --check takes nothing.
    let c = d.snapshot(&["--check"]).expect(0).record();
    assert_eq!(c["snapshot"]["state"], "planned");
    assert!(d.snapshot_files().is_empty(), "{:?}", d.snapshot_files());

    let first = d.snapshot(&[]).expect(0).record();
    let snap = &first["snapshot"];
    assert_eq!(snap["state"], "completed");
    assert_eq!(snap["freeze"], "frozen");
    assert_eq!(snap["size"], 64 << 20);
    assert_eq!(first["state"], "mounted", "the record's state is kept");
    let id = snap["id"].as_str().unwrap().to_string();
    assert!(accepts_writes(&d.mnt(), 10), "thawed after the snapshot");
    std::fs::write(d.mnt().join("b"), b"written after the snapshot").unwrap();

    // Three more, keeping two: the oldest two go, and are reported.
    let mut taken = vec![id.clone()];
    for _ in 0..3 {
        let r = d.snapshot(&["--keep", "2"]).expect(0).record();
        taken.push(r["snapshot"]["id"].as_str().unwrap().to_string());
    }
    let listed = d.snapshot(&["--list"]).expect(0).records();
    assert_eq!(
        ids(&listed),
        [taken[3].clone(), taken[2].clone()],
        "newest first"
    );
    let mut all_pruned: Vec<String> = Vec::new();
    // The last run pruned what the earlier ones had not.
    assert_eq!(
        d.snapshot_files().len(),
        4,
        "two images, two metadata files"
    );
    let again = d.snapshot(&["--check", "--keep", "1"]).expect(0).record();
    all_pruned.extend(
        again["snapshot"]["pruned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string()),
    );
    assert_eq!(
        all_pruned,
        [taken[3].clone(), taken[2].clone()],
        "--check says what would go"
    );
    assert_eq!(d.snapshot_files().len(), 4, "--check deleted nothing");

    // Restore the first snapshot... which retention deleted: refused.
    let gone = run(
        "disk-create",
        &["--state-dir", &d.state, "--from-snapshot", &id],
        &ndjson(std::slice::from_ref(&d.up)),
    )
    .expect(1)
    .record();
    assert_eq!(gone["error"]["code"], "no-such-snapshot");

    // Take one now, then down, then restore `latest`: a new disk holding
    // exactly the snapshot's bytes, the old disk kept.
    let last = d.snapshot(&["--keep", "2"]).expect(0).record();
    let last_id = last["snapshot"]["id"].as_str().unwrap().to_string();
    std::fs::write(d.mnt().join("c"), b"written after the last snapshot").unwrap();
    let fstab = d.t.s("fstab");
    let down = run(
        "disk-unmount",
        &["--fstab", &fstab],
        &ndjson(std::slice::from_ref(&d.up)),
    )
    .expect(0);
    run("disk-detach", &["--state-dir", &d.state], &down.stdout).expect(0);
    let old_image = d.t.join("disks/data-1.img");
    let old_sum = digest(&old_image);
    let plan = serde_json::json!({"v": 1, "provider": "local", "disk": "data-1", "mountpoint": d.t.s("mnt")});
    let created = run(
        "disk-create",
        &["--state-dir", &d.state, "--from-snapshot", "latest"],
        &ndjson(std::slice::from_ref(&plan)),
    )
    .expect(0)
    .record();
    let new_disk = created["disk"].as_str().unwrap().to_string();
    assert_ne!(new_disk, "data-1");
    assert_eq!(created["restored_from"]["snapshot"], last_id.as_str());
    assert_eq!(created["restored_from"]["disk"], "data-1");
    let new_image = d.t.join(&format!("disks/{new_disk}.img"));
    assert_eq!(
        digest(&new_image),
        digest(&d.snapshots_dir().join(format!("{last_id}.img"))),
        "the restored image is the snapshot, byte for byte"
    );
    // A rerun finds it.
    let rerun = run(
        "disk-create",
        &["--state-dir", &d.state, "--from-snapshot", "latest"],
        &ndjson(&[plan]),
    )
    .expect(0)
    .record();
    assert_eq!(rerun["changed"], false);
    assert_eq!(rerun["disk"], new_disk.as_str());

    let attached = run(
        "disk-attach",
        &["--state-dir", &d.state],
        &ndjson(&[created]),
    )
    .expect(0);
    let fs = run("disk-ensure-fs", &[], &attached.stdout)
        .expect(0)
        .record();
    assert_eq!(fs["state"], "has-fs", "the filesystem is kept");
    run("disk-mount", &["--no-fstab"], &ndjson(&[fs])).expect(0);
    assert_eq!(
        std::fs::read(d.mnt().join("a")).unwrap(),
        vec![0xA5u8; 3 << 20]
    );
    assert!(
        d.mnt().join("b").exists(),
        "written before the last snapshot"
    );
    assert!(!d.mnt().join("c").exists(), "written after it");
    assert_eq!(
        digest(&old_image),
        old_sum,
        "the old disk is kept, untouched"
    );
}

/// Retention deletes only the snapshots of the record's disk and
/// deployment. Two deployments cannot share an image name in one state
/// directory (the image has one owner): here they keep their images in two
/// state directories, and their snapshots in one (`--snapshot-dir`).
#[test]
fn retention_never_touches_another_disk_or_another_deployment() {
    require_root();
    let t = TempDir::new("snap-retention");
    let shared = t.s("snapshots");
    let rec = |disk: &str, dep: &str| serde_json::json!({"v": 1, "provider": "local", "disk": disk, "deployment": dep});
    let state = |dep: &str| t.s(&format!("disks-{dep}"));
    let tool = |name: &str, dep: &str, extra: &[&str], input: &str| {
        let st = state(dep);
        let mut a = vec![
            "--state-dir",
            st.as_str(),
            "--snapshot-dir",
            shared.as_str(),
        ];
        a.extend_from_slice(extra);
        run(name, &a, input)
    };
    let prod = ndjson(&[rec("a", "prod"), rec("b", "prod")]);
    let test = ndjson(&[rec("a", "test")]);
    tool("disk-create", "prod", &["--size", "8M"], &prod).expect(0);
    tool("disk-create", "test", &["--size", "8M"], &test).expect(0);
    for _ in 0..2 {
        for (dep, input) in [("prod", &prod), ("test", &test)] {
            let r = tool("disk-snapshot", dep, &[], input).expect(0);
            for r in r.records() {
                assert_eq!(r["snapshot"]["freeze"], "not-mounted");
            }
        }
    }
    let kept = tool(
        "disk-snapshot",
        "prod",
        &["--keep", "1"],
        &ndjson(&[rec("a", "prod")]),
    )
    .expect(0)
    .record();
    assert_eq!(kept["snapshot"]["pruned"].as_array().unwrap().len(), 2);
    let list = |r: Value| {
        let dep = r["deployment"].as_str().unwrap().to_string();
        tool("disk-snapshot", &dep, &["--list"], &ndjson(&[r]))
            .expect(0)
            .records()
            .len()
    };
    assert_eq!(list(rec("a", "prod")), 1);
    assert_eq!(
        list(rec("b", "prod")),
        2,
        "another disk's snapshots are kept"
    );
    assert_eq!(
        list(rec("a", "test")),
        2,
        "another deployment's snapshots are kept"
    );
    // --keep-within 1h keeps the recent ones.
    let within = tool(
        "disk-snapshot",
        "prod",
        &["--keep-within", "1h"],
        &ndjson(&[rec("b", "prod")]),
    )
    .expect(0)
    .record();
    assert!(within["snapshot"].get("pruned").is_none());
    assert_eq!(list(rec("b", "prod")), 3);
}

#[test]
fn a_static_disk_is_refused_and_a_held_freeze_is_an_error_unless_no_freeze() {
    let r = run(
        "disk-snapshot",
        &["--provider", "static", "--disk", "/dev/null"],
        "",
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "snapshot-unsupported");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no provider")
    );

    let d = Disk::new("snap-held", "32M");
    let _thaw = ThawOnDrop(d.mnt());
    sh_ok(&["fsfreeze", "-f", d.mnt().to_str().unwrap()]);
    let r = d.snapshot(&[]).expect(1).record();
    assert_eq!(r["error"]["code"], "freeze-failed");
    let r = d.snapshot(&["--no-freeze"]).expect(0).record();
    assert_eq!(r["snapshot"]["freeze"], "not-frozen");
    sh_ok(&["fsfreeze", "-u", d.mnt().to_str().unwrap()]);
    assert!(accepts_writes(&d.mnt(), 10));
    // A freeze that outlasts --freeze-timeout is abandoned, and thawed.
    let r = d.snapshot(&["--freeze-timeout", "0"]).expect(1).record();
    assert_eq!(r["error"]["code"], "freeze-timeout");
    assert!(accepts_writes(&d.mnt(), 10), "thawed after the timeout");
    assert_eq!(d.snapshot_files().len(), 2, "only the --no-freeze one");
}

/// Starts disk-snapshot (-v) on a disk holding 1 GiB, sends SIGTERM (and,
/// with `signals` 2, SIGINT right after) once it says it froze the
/// filesystem, and returns its run.
fn snapshot_killed_while_frozen(d: &Disk, signals: usize) -> Run {
    let mut cmd = Command::new(bin("disk-snapshot"));
    cmd.args(["-v", "--state-dir", &d.state]);
    signalled_at(cmd, &ndjson(std::slice::from_ref(&d.up)), "froze ", signals)
}

fn disk_with_a_gib() -> Disk {
    let d = Disk::new("snap-signal", "2G");
    sh_ok(&[
        "dd",
        "if=/dev/zero",
        &format!("of={}", d.mnt().join("big").display()),
        "bs=1M",
        "count=1024",
        "status=none",
        "conv=fsync",
    ]);
    d
}

#[test]
fn sigterm_while_frozen_thaws_and_keeps_nothing() {
    let d = disk_with_a_gib();
    let _thaw = ThawOnDrop(d.mnt());
    let r = snapshot_killed_while_frozen(&d, 1);
    assert!(r.stderr.contains("froze "), "{}", r.stderr);
    assert!(
        accepts_writes(&d.mnt(), 10),
        "thawed after SIGTERM: {}",
        r.stderr
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.record()["error"]["code"], "interrupted");
    assert!(
        d.snapshot_files().is_empty(),
        "nothing kept: {:?}",
        d.snapshot_files()
    );
}

#[test]
fn a_second_signal_while_frozen_thaws_before_it_exits() {
    let d = disk_with_a_gib();
    let _thaw = ThawOnDrop(d.mnt());
    let r = snapshot_killed_while_frozen(&d, 2);
    assert!(r.stderr.contains("froze "), "{}", r.stderr);
    assert!(
        accepts_writes(&d.mnt(), 10),
        "thawed after two signals: {}",
        r.stderr
    );
    assert!(
        r.code == 1 || r.code == 128 + 15 || r.code == 128 + 2,
        "stopped or exited at once: {} {}",
        r.code,
        r.stderr
    );
}

#[test]
fn a_copy_that_fails_while_frozen_thaws_and_keeps_nothing() {
    let d = Disk::new("snap-full", "64M");
    let _thaw = ThawOnDrop(d.mnt());
    std::fs::write(d.mnt().join("data"), vec![1u8; 16 << 20]).unwrap();
    std::fs::create_dir_all(d.snapshots_dir()).unwrap();
    let dir = d.snapshots_dir().display().to_string();
    // Room enough by its free space (so the copy is started), but no
    // inode for the copy: it fails while the filesystem is frozen.
    sh_ok(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=64m,nr_inodes=1,mode=700",
        "tmpfs",
        &dir,
    ]);
    let r = d.snapshot(&[]).expect(1).record();
    assert_eq!(r["error"]["code"], "snapshot-failed", "{r}");
    assert!(accepts_writes(&d.mnt(), 10), "thawed after the failure");
    assert!(
        d.snapshot_files().is_empty(),
        "nothing kept: {:?}",
        d.snapshot_files()
    );
    sh_ok(&["umount", &dir]);
}

#[test]
fn the_backup_demo_restores_a_and_not_b_and_keeps_the_old_disk() {
    require_root();
    let t = TempDir::new("demo-backup");
    let dir = t.s("demo");
    let bin = bin_dir().display().to_string();
    let r = run_env(
        repo().join("scripts/demo-backup").to_str().unwrap(),
        &[],
        "",
        &[
            ("DEMO_DIR", dir.as_str()),
            ("APPSCALE_PERSIST_BIN", bin.as_str()),
        ],
    )
    .expect(0);
    assert!(r.stderr.contains("demo-backup: OK"), "{}", r.stderr);
    assert!(!t.join("demo").exists(), "the demo cleaned up");
}

#[test]
fn on_a_reflink_filesystem_the_snapshot_shares_blocks_and_restores_byte_for_byte() {
    require_root();
    let t = TempDir::new("snap-reflink");
    let xfs = LoopDev::new(&t, "xfs", 512);
    sh_ok(&["mkfs.xfs", "-q", "-m", "reflink=1", &xfs.device]);
    let top = t.join("xfs");
    std::fs::create_dir_all(&top).unwrap();
    sh_ok(&["mount", &xfs.device, top.to_str().unwrap()]);
    let state = t.s("xfs/disks");
    let rec = serde_json::json!({"v": 1, "provider": "local", "disk": "r", "deployment": "d"});
    let made = run(
        "disk-create",
        &["--state-dir", &state, "--size", "64M"],
        &ndjson(std::slice::from_ref(&rec)),
    )
    .expect(0);
    let image = t.join("xfs/disks/r.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        f.write_all_at(&[0x3Cu8; 5 << 20], 7 << 20).unwrap();
        f.sync_all().unwrap();
    }
    let snap = run("disk-snapshot", &["--state-dir", &state], &made.stdout)
        .expect(0)
        .record();
    assert_eq!(snap["snapshot"]["method"], "reflink");
    assert_eq!(snap["snapshot"]["freeze"], "not-mounted");
    let id = snap["snapshot"]["id"].as_str().unwrap();
    let copy = t.join(&format!("xfs/disks/snapshots/{id}.img"));
    assert_eq!(digest(&copy), digest(&image));
    let restored = run(
        "disk-create",
        &["--state-dir", &state, "--from-snapshot", id],
        &ndjson(&[rec]),
    )
    .expect(0)
    .record();
    let new = t.join(&format!(
        "xfs/disks/{}.img",
        restored["disk"].as_str().unwrap()
    ));
    assert_eq!(digest(&new), digest(&image), "restored byte for byte");
}

/// Writes a snapshot (image and metadata) into `dir` as another tool, or a
/// person, might: every field disk-snapshot writes, but `tool` says who
/// made it.
fn plant_snapshot(
    dir: &std::path::Path,
    disk: &str,
    deployment: &str,
    tool: &str,
    ms: u64,
) -> String {
    let stamp = |ms: u64| {
        // 2020-01-01T00:00:00.000Z plus `ms`.
        let base = 1_577_836_800_000u64 + ms;
        (
            base,
            format!("2020-01-01T00:00:{:02}.{:03}Z", ms / 1000, ms % 1000),
        )
    };
    let (at, time) = stamp(ms);
    let compact = format!("20200101T0000{:02}.{:03}Z", ms / 1000, ms % 1000);
    let id = format!("{disk}@{compact}");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{id}.img")), b"").unwrap();
    let meta = serde_json::json!({
        "id": id, "disk": disk, "deployment": deployment, "ms": at, "time": time,
        "size": 8u64 << 20, "freeze": "not-mounted", "method": "sparse", "tool": tool,
    });
    std::fs::write(dir.join(format!("{id}.json")), meta.to_string()).unwrap();
    id
}

/// Only snapshots disk-snapshot took count toward retention or are ever
/// deleted, listed or restored from: one another tool wrote, with the
/// deployment and disk of ours, is left alone (it was the oldest, and
/// pruned first).
#[test]
fn retention_counts_and_deletes_only_snapshots_this_tool_made() {
    require_root();
    let t = TempDir::new("snap-ours");
    let state = t.s("disks");
    let rec = serde_json::json!({"v": 1, "provider": "local", "disk": "a", "deployment": "prod"});
    let input = ndjson(std::slice::from_ref(&rec));
    run(
        "disk-create",
        &["--state-dir", &state, "--size", "8M"],
        &input,
    )
    .expect(0);
    let dir = t.join("disks/snapshots");
    let theirs = plant_snapshot(&dir, "a", "prod", "backup.sh", 1);
    let mine = run("disk-snapshot", &["--state-dir", &state], &input)
        .expect(0)
        .record();
    let listed = run("disk-snapshot", &["--state-dir", &state, "--list"], &input)
        .expect(0)
        .records();
    assert_eq!(
        ids(&listed),
        ids(std::slice::from_ref(&mine)),
        "theirs is not listed"
    );
    let kept = run(
        "disk-snapshot",
        &["--state-dir", &state, "--keep", "1"],
        &input,
    )
    .expect(0)
    .record();
    assert_eq!(
        pruned_sorted(&kept),
        ids(std::slice::from_ref(&mine)),
        "only ours is pruned: {kept}"
    );
    for ext in ["img", "json"] {
        assert!(
            dir.join(format!("{theirs}.{ext}")).exists(),
            "{theirs}.{ext} kept"
        );
    }
    let r = run(
        "disk-create",
        &["--state-dir", &state, "--from-snapshot", &theirs],
        &input,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "no-such-snapshot", "{r}");
}

/// A local image and its snapshots belong to one deployment, as a cloud
/// disk does: another deployment naming the same disk gets none of it
/// (create, attach, snapshot, restore by id or `latest`); an image made
/// before owner files is adopted by the first deployment that meets it,
/// then refused to the others.
#[test]
fn local_images_and_snapshots_belong_to_their_deployment() {
    require_root();
    let t = TempDir::new("local-owner");
    let state = t.s("disks");
    let rec = |dep: &str| serde_json::json!({"v": 1, "provider": "local", "disk": "data", "deployment": dep, "node": "node-0"});
    let a = ndjson(&[rec("a")]);
    let b = ndjson(&[rec("b")]);
    let made = run("disk-create", &["--state-dir", &state, "--size", "8M"], &a).expect(0);
    assert!(t.join("disks/data.owner.json").exists());
    let snap = run("disk-snapshot", &["--state-dir", &state], &made.stdout)
        .expect(0)
        .record();
    let id = snap["snapshot"]["id"].as_str().unwrap().to_string();
    for (tool, args) in [
        ("disk-create", vec!["--size", "8M"]),
        ("disk-attach", vec![]),
        ("disk-snapshot", vec![]),
        ("disk-detach", vec![]),
        ("disk-create", vec!["--from-snapshot", id.as_str()]),
    ] {
        let mut all = vec!["--state-dir", state.as_str()];
        all.extend(args.iter());
        let r = run(tool, &all, &b).expect(1).record();
        assert_eq!(
            r["error"]["code"], "other-deployment",
            "{tool} {args:?}: {r}"
        );
    }
    let r = run(
        "disk-create",
        &["--state-dir", &state, "--from-snapshot", "latest"],
        &b,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "no-such-snapshot", "{r}");
    let r = run("disk-snapshot", &["--state-dir", &state, "--list"], &b).expect(0);
    assert!(
        r.records().iter().all(|r| r.get("snapshot").is_none()),
        "{}",
        r.stdout
    );
    // --deployment names the deployment over the records'.
    let r = run(
        "disk-attach",
        &["--state-dir", &state, "--deployment", "b"],
        &a,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "other-deployment", "{r}");
    // Another node of deployment a: refused too.
    let other_node = serde_json::json!({"v": 1, "provider": "local", "disk": "data", "deployment": "a", "node": "node-1"});
    let r = run(
        "disk-attach",
        &["--state-dir", &state],
        &ndjson(&[other_node]),
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "other-node", "{r}");
    assert!(
        !sh_ok(&["losetup", "--list", "--noheadings", "--output", "BACK-FILE"]).contains(&state)
    );

    // An image made before owner files: adopted by the first, then theirs.
    std::fs::write(t.join("disks/old.img"), vec![0u8; 8 << 20]).unwrap();
    let old = |dep: &str| {
        ndjson(&[
            serde_json::json!({"v": 1, "provider": "local", "disk": "old", "deployment": dep}),
        ])
    };
    let r = run("disk-create", &["--state-dir", &state], &old("c")).expect(0);
    assert_eq!(r.record()["adopted"], true, "{}", r.stdout);
    assert!(r.stderr.contains("adopted by deployment c"), "{}", r.stderr);
    let r = run("disk-create", &["--state-dir", &state], &old("c"))
        .expect(0)
        .record();
    assert!(r.get("adopted").is_none(), "adopted once: {r}");
    let r = run("disk-create", &["--state-dir", &state], &old("d"))
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "other-deployment", "{r}");
}

/// A local snapshot never takes the room a live image may still claim:
/// with the state directory on a filesystem of 64 MiB, a 48 MiB image
/// holding 26 MiB leaves too little room for a copy (the copy's 26 MiB,
/// and the 22 MiB the image may still write). Before, the copy was taken,
/// and the disk's next writes were accepted, then lost at writeback (loop
/// I/O errors), and `e2fsck -fn` found errors. Refused (`no-space`,
/// saying how much it needs), the disk takes its writes; with
/// `--snapshot-dir` on another filesystem, the snapshot is taken.
#[test]
fn a_snapshot_never_takes_the_room_a_live_image_may_still_claim() {
    require_root();
    let t = TempDir::new("snap-room");
    let small = LoopDev::new(&t, "statefs", 64);
    sh_ok(&["mkfs.ext4", "-q", "-m", "0", &small.device]);
    std::fs::create_dir_all(t.join("state")).unwrap();
    sh_ok(&["mount", &small.device, &t.s("state")]);
    let state = t.s("state/disks");
    let mnt = t.s("mnt");
    let rec = serde_json::json!({"v": 1, "provider": "local", "disk": "data-1", "deployment": "d", "mountpoint": mnt});
    let made = run(
        "disk-create",
        &["--state-dir", &state, "--size", "48M"],
        &ndjson(&[rec]),
    )
    .expect(0);
    let attached = run("disk-attach", &["--state-dir", &state], &made.stdout).expect(0);
    let fs = run("disk-ensure-fs", &[], &attached.stdout).expect(0);
    let up = run("disk-mount", &["--no-fstab"], &fs.stdout)
        .expect(0)
        .record();
    let _thaw = ThawOnDrop(t.join("mnt"));
    let write = |name: &str, mib: usize| {
        let data: Vec<u8> = (0..mib << 20).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(t.join("mnt").join(name), &data).unwrap();
        sh_ok(&["sync", "-f", &t.s(&format!("mnt/{name}"))]);
    };
    write("first", 20);
    let input = ndjson(std::slice::from_ref(&up));
    let snap = |extra: &[&str]| {
        let mut a = vec!["--state-dir", state.as_str()];
        a.extend_from_slice(extra);
        run("disk-snapshot", &a, &input)
    };
    let c = snap(&["--check"]).expect(1).record();
    assert_eq!(c["error"]["code"], "no-space", "{c}");
    let r = snap(&[]).expect(1).record();
    assert_eq!(r["error"]["code"], "no-space", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("needs ") && msg.contains(" is free"), "{msg}");
    assert!(
        std::fs::read_dir(t.join("state/disks/snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "nothing copied"
    );
    // The room was kept: the disk takes writes up to its size.
    write("second", 14);
    // Snapshots on another filesystem: taken, and said how much they take.
    let elsewhere = t.s("snaps");
    let r = snap(&["--snapshot-dir", &elsewhere]).expect(0);
    assert_eq!(r.record()["snapshot"]["state"], "completed", "{}", r.stdout);
    assert!(r.stderr.contains("needs "), "{}", r.stderr);
    let id = r.record()["snapshot"]["id"].as_str().unwrap().to_string();
    assert!(t.join(&format!("snaps/{id}.json")).exists());
    let listed = run("disk-snapshot", &["--state-dir", &state, "--list"], &input)
        .expect(0)
        .records();
    assert!(
        listed[0].get("snapshot").is_none(),
        "the variable or flag says where they are"
    );
    let listed = run_env(
        "disk-snapshot",
        &["--state-dir", &state, "--list"],
        &input,
        &[("APPSCALE_PERSIST_SNAPSHOT_DIR", elsewhere.as_str())],
    )
    .expect(0);
    assert_eq!(ids(&listed.records()), std::slice::from_ref(&id));
    let down = run("disk-unmount", &["--fstab", &t.s("fstab")], &input).expect(0);
    let dev = up["device"].as_str().unwrap();
    let fsck = sh(&["e2fsck", "-fn", dev]);
    assert_eq!(
        fsck.code, 0,
        "no filesystem errors: {}{}",
        fsck.stdout, fsck.stderr
    );
    let detached = run("disk-detach", &["--state-dir", &state], &down.stdout).expect(0);
    // A restore into the small filesystem would not fit beside the image
    // (taken down first: a restore beside its attached original is
    // refused before the room is weighed).
    let r = run(
        "disk-create",
        &[
            "--state-dir",
            &state,
            "--snapshot-dir",
            &elsewhere,
            "--from-snapshot",
            &id,
        ],
        &detached.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "no-space", "{r}");
}

/// A pid no process has (for leftovers of a run that was killed).
fn dead_pid() -> u32 {
    (4_000_000..4_194_304)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

/// What a snapshot killed part-way leaves is reaped by the next run that
/// takes the node lock: partial copies (temporary files of a dead run),
/// an image whose metadata was never written, a half-made image or
/// metadata file in the state directory. Other files are left alone.
#[test]
fn snapshot_leftovers_are_reaped_by_the_next_run() {
    require_root();
    let t = TempDir::new("snap-reap");
    let state = t.s("disks");
    let rec = serde_json::json!({"v": 1, "provider": "local", "disk": "data-1", "deployment": "d"});
    let input = ndjson(&[rec]);
    run(
        "disk-create",
        &["--state-dir", &state, "--size", "8M"],
        &input,
    )
    .expect(0);
    let snaps = t.join("disks/snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let pid = dead_pid();
    let left = [
        snaps.join(format!(".data-1@20200101T000000.000Z.img.{pid}.tmp")),
        snaps.join("data-1@20200101T000001.000Z.img"),
        snaps.join(format!(".data-1@20200101T000002.000Z.json.{pid}.tmp")),
        t.join(&format!("disks/.data-2.img.{pid}.tmp")),
        t.join(&format!("disks/.data-2.owner.json.{pid}.tmp")),
    ];
    for f in &left {
        std::fs::write(f, b"partial").unwrap();
    }
    let kept = [
        snaps.join(format!(
            ".data-1@20200101T000003.000Z.img.{}.tmp",
            std::process::id()
        )),
        snaps.join("notes.txt"),
        t.join("disks/data-9.img.bak"),
    ];
    for f in &kept {
        std::fs::write(f, b"someone's").unwrap();
    }
    let r = run("disk-snapshot", &["--state-dir", &state], &input).expect(0);
    for f in &left {
        assert!(!f.exists(), "{} reaped: {}", f.display(), r.stderr);
    }
    for f in &kept {
        assert!(f.exists(), "{} kept", f.display());
    }
    assert!(
        r.stderr.contains("metadata was never written"),
        "{}",
        r.stderr
    );
}

/// A snapshot of an unmounted disk holds the node lock for the copy: it is
/// bounded by --freeze-timeout as a frozen copy is, so a boot-time
/// disk-mount waiting for the lock is never kept past it (it failed
/// `node-locked` while a long copy went on without a deadline).
#[test]
fn a_copy_of_an_unmounted_disk_holds_the_node_lock_for_a_bounded_time() {
    require_root();
    let t = TempDir::new("snap-unmounted-bound");
    let state = t.s("disks");
    let rec = serde_json::json!({"v": 1, "provider": "local", "disk": "data-1", "deployment": "d"});
    let input = ndjson(&[rec]);
    let made = run(
        "disk-create",
        &["--state-dir", &state, "--size", "64M"],
        &input,
    )
    .expect(0);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.join("disks/data-1.img"))
            .unwrap();
        f.write_all_at(&[7u8; 8 << 20], 1 << 20).unwrap();
    }
    let r = run(
        "disk-snapshot",
        &["--state-dir", &state, "--freeze-timeout", "0"],
        &made.stdout,
    )
    .expect(1)
    .record();
    assert_eq!(r["error"]["code"], "freeze-timeout", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("node lock"), "{msg}");
    let files: Vec<_> = std::fs::read_dir(t.join("disks/snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert!(files.is_empty(), "nothing kept: {files:?}");
}

/// A filesystem lazily unmounted but still in use is written to with no
/// mountpoint left to freeze it through: its snapshot is refused
/// (`freeze-failed`, naming who holds it) unless --no-freeze. Before, it
/// was taken as `not-mounted`, without a freeze, while writes went on.
#[test]
fn a_lazily_unmounted_live_filesystem_is_not_snapshotted_unfrozen() {
    let d = Disk::new("snap-lazy", "32M");
    let _thaw = ThawOnDrop(d.mnt());
    let mut holder = Command::new("sleep")
        .arg("60")
        .current_dir(d.mnt())
        .spawn()
        .unwrap();
    sh_ok(&["umount", "--lazy", d.mnt().to_str().unwrap()]);
    let r = d.snapshot(&[]);
    let refused = r.code == 1 && r.record()["error"]["code"] == "freeze-failed";
    let msg = r.record()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let forced = d.snapshot(&["--no-freeze"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(refused, "refused: {}", r.stdout);
    assert!(
        msg.contains("still alive") && msg.contains("sleep"),
        "{msg}"
    );
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(forced.record()["snapshot"]["freeze"], "not-frozen");
}

/// disk-snapshot killed with SIGKILL while the filesystem is frozen (an OOM
/// kill, `systemctl kill -s KILL`) left it frozen for good: every writer
/// hung, disk-status said ok, the next snapshot failed with a bare EBUSY.
/// Now the freeze is recorded before it is taken: disk-status reports the
/// filesystem `frozen`; the next tool that takes the node lock (here
/// disk-mount, finding it mounted) thaws it and says so; the partial copy
/// is reaped; and disk-unmount never unmounts a frozen filesystem (here
/// one an operator froze), which would leave it frozen with no mountpoint.
#[test]
fn a_freeze_left_by_a_killed_snapshot_is_reported_and_thawed_by_the_next_run() {
    use nix::sys::signal::Signal;
    let d = disk_with_a_gib();
    let _thaw = ThawOnDrop(d.mnt());
    let input = ndjson(std::slice::from_ref(&d.up));
    let mut cmd = Command::new(bin("disk-snapshot"));
    cmd.args(["-v", "--state-dir", &d.state]);
    let killed = signals_at(
        cmd,
        &input,
        "froze ",
        std::time::Duration::from_millis(300),
        &[Signal::SIGKILL],
    );
    assert!(killed.stderr.contains("froze "), "{}", killed.stderr);
    assert!(!accepts_writes(&d.mnt(), 2), "the kill left it frozen");
    assert!(
        d.snapshot_files().iter().any(|f| f.ends_with(".tmp")),
        "a partial copy is left: {:?}",
        d.snapshot_files()
    );
    let status = run("disk-status", &["--state-dir", &d.state], &input)
        .expect(1)
        .record();
    let problems = status["status"]["problems"].as_array().unwrap();
    let frozen = problems.iter().find(|p| p["code"] == "frozen");
    assert!(
        frozen.is_some_and(|p| p["message"].as_str().unwrap().contains("died")),
        "{status}"
    );
    // The next tool that takes the node lock thaws it, and says so.
    let m = run("disk-mount", &["--no-fstab"], &input).expect(0);
    assert!(m.stderr.contains("thawed "), "{}", m.stderr);
    assert!(accepts_writes(&d.mnt(), 10), "thawed");
    let st = run("disk-status", &["--state-dir", &d.state], &input).record();
    assert!(
        st["status"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["code"] != "frozen"),
        "{st}"
    );
    // The partial copy is reaped by the next snapshot, which is taken.
    let r = d.snapshot(&[]).expect(0).record();
    assert_eq!(r["snapshot"]["freeze"], "frozen");
    assert!(
        d.snapshot_files().iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        d.snapshot_files()
    );
    // Someone else's freeze: never unmounted.
    let mnt = d.mnt().display().to_string();
    sh_ok(&["fsfreeze", "-f", &mnt]);
    let st = run("disk-status", &["--state-dir", &d.state], &input)
        .expect(1)
        .record();
    assert!(
        st["status"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["code"] == "frozen"),
        "{st}"
    );
    let u = run("disk-unmount", &["--fstab", &d.t.s("fstab")], &input);
    sh_ok(&["fsfreeze", "-u", &mnt]);
    assert_eq!(u.code, 1, "{}", u.stderr);
    assert_eq!(u.record()["error"]["code"], "frozen", "{}", u.stdout);
    assert!(is_mounted(&d.mnt()), "left mounted");
    run("disk-unmount", &["--fstab", &d.t.s("fstab")], &input).expect(0);
    let fsck = sh(&["e2fsck", "-fn", d.up["device"].as_str().unwrap()]);
    assert_eq!(fsck.code, 0, "{}{}", fsck.stdout, fsck.stderr);
}

/// `scripts/restore` with the old disk still up (forgetting `scripts/down`)
/// attached the restored disk beside it: two filesystems of one UUID on one
/// node, either of which fstab's `UUID=` may mount at boot. Now the restore
/// is refused before anything is made (`original-attached`); after
/// `scripts/down` it goes ahead.
#[test]
fn a_restore_beside_its_attached_original_is_refused_before_anything_is_made() {
    require_root();
    let t = TempDir::new("restore-beside");
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        "infrastructure: local\nkeyname: beside\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 1\n    disks: data-0\n",
    )
    .unwrap();
    let state = t.s("disks");
    let provider = ["--state-dir", state.as_str(), "--size", "32M"];
    flow("up", &t, &file, &provider, &[]).expect(0);
    std::fs::write(t.join("mnt/node-0/precious"), "before").unwrap();
    let bin = bin_dir().display().to_string();
    let env = [("APPSCALE_PERSIST_BIN", bin.as_str())];
    let backup = repo().join("scripts/backup");
    run_env(
        backup.to_str().unwrap(),
        &[file.to_str().unwrap(), "--", "--state-dir", &state],
        "",
        &env,
    )
    .expect(0);
    let images = || {
        let mut v: Vec<String> = std::fs::read_dir(t.join("disks"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".img"))
            .collect();
        v.sort();
        v
    };
    let before = images();
    let r = flow("restore", &t, &file, &["--state-dir", &state], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.record()["error"]["code"],
        "original-attached",
        "{}",
        r.stdout
    );
    assert_eq!(images(), before, "nothing was made");
    assert_eq!(
        std::fs::read_to_string(t.join("mnt/node-0/precious")).unwrap(),
        "before"
    );
    flow("down", &t, &file, &["--state-dir", &state], &[]).expect(0);
    let r = flow("restore", &t, &file, &["--state-dir", &state], &[]).expect(0);
    let rec = r.record();
    assert_eq!(rec["restored_from"]["disk"], "data-0", "{rec}");
    assert_eq!(
        std::fs::read_to_string(t.join("mnt/node-0/precious")).unwrap(),
        "before"
    );
    run(
        "disk-unmount",
        &["--fstab", &t.s("fstab"), "--remove-fstab"],
        &r.stdout,
    )
    .expect(0);
    run("disk-detach", &["--state-dir", &state], &r.stdout).expect(0);
}
