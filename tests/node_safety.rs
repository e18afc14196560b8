//! The node-side data-safety rules (docs/safety.md, "On the node"), each
//! reproduced the way an operator would meet the failure: two runs at once,
//! a stale record, an interrupted seed, an odd mountpoint, a busy disk, odd
//! input. Every test here failed on the code before its rule existed.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The node-wide lock every changing step takes (lib/persist/src/lock.rs).
const NODE_LOCK: &str = "/run/appscale-persist/lock";

fn blkid(dev: &str, tag: &str) -> String {
    sh(&["blkid", "-p", "-s", tag, "-o", "value", dev])
        .stdout
        .trim()
        .to_string()
}

/// Makes an ext4 filesystem with mkfs directly (not through the tools).
fn mkfs_ext4(dev: &str) -> String {
    sh_ok(&["mkfs.ext4", "-q", "-F", dev]);
    blkid(dev, "UUID")
}

/// A directory holding fake versions of system tools, put first on PATH:
/// each is a shell script with the body given.
fn fake_tools(t: &TempDir, tools: &[(&str, &str)]) -> String {
    let dir = t.join("fakebin");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in tools {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// Starts a tool without waiting for it.
fn spawn(name: &str, args: &[&str], input: &str, env: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(bin(name));
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child
}

fn finish_child(child: std::process::Child) -> Run {
    finish(child.wait_with_output().unwrap())
}

/// Holds the node-wide lock, as another run of the tools would.
struct HeldLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn hold_node_lock() -> HeldLock {
    std::fs::create_dir_all(Path::new(NODE_LOCK).parent().unwrap()).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(NODE_LOCK)
        .unwrap();
    HeldLock(nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap())
}

fn fstab_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Races: one writer at a time

/// Two disk-mount runs on two disks editing one fstab at once keep both
/// entries, every round (without the lock, about 2 rounds in 3 lost one).
#[test]
fn two_mounts_at_once_keep_both_fstab_entries() {
    require_root();
    let t = TempDir::new("fstab-race");
    let a = LoopDev::new(&t, "a", 64);
    let b = LoopDev::new(&t, "b", 64);
    mkfs_ext4(&a.device);
    mkfs_ext4(&b.device);
    let fstab = t.join("fstab");
    let base = "# static\nUUID=root / ext4 defaults 0 1\n";
    for round in 0..12 {
        std::fs::write(&fstab, base).unwrap();
        let kids: Vec<_> = [(&a, "mnt-a"), (&b, "mnt-b")]
            .iter()
            .map(|(d, m)| {
                spawn(
                    "disk-mount",
                    &[
                        "--device",
                        &d.device,
                        "--mountpoint",
                        &t.s(m),
                        "--fstab",
                        fstab.to_str().unwrap(),
                        "--no-fsck",
                    ],
                    "",
                    &[],
                )
            })
            .collect();
        for k in kids {
            finish_child(k).expect(0);
        }
        let lines = fstab_lines(&fstab);
        let ours = lines
            .iter()
            .filter(|l| l.contains("x-appscale-persist"))
            .count();
        assert_eq!(ours, 2, "round {round}: both entries kept: {lines:#?}");
        assert!(
            lines.join("\n").starts_with(base.trim_end()),
            "round {round}"
        );
        for (d, m) in [(&a, "mnt-a"), (&b, "mnt-b")] {
            run(
                "disk-unmount",
                &["--device", &d.device, "--mountpoint", &t.s(m)],
                "",
            )
            .expect(0);
        }
    }
}

/// A second run waits for the first (saying so), then sees its result; the
/// wait is bounded, and the error names the run holding the lock.
#[test]
fn a_second_run_waits_for_the_node_lock_then_sees_the_result() {
    require_root();
    let t = TempDir::new("node-lock");
    let d = LoopDev::new(&t, "disk", 64);
    let held = hold_node_lock();
    let first = spawn("disk-ensure-fs", &["--device", &d.device], "", &[]);
    let second = spawn("disk-ensure-fs", &["--device", &d.device], "", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        blkid(&d.device, "TYPE"),
        "",
        "nothing is formatted while another run holds the node lock"
    );
    drop(held);
    let (a, b) = (
        finish_child(first).expect(0),
        finish_child(second).expect(0),
    );
    assert!(a.stderr.contains("waiting"), "says it waits: {}", a.stderr);
    let (a, b) = (a.record(), b.record());
    let mut states = [a["state"].as_str().unwrap(), b["state"].as_str().unwrap()];
    states.sort();
    assert_eq!(
        states,
        ["formatted", "has-fs"],
        "one formats, the other sees it"
    );
    assert_eq!(a["fs"]["uuid"], b["fs"]["uuid"]);

    // Bounded: with the lock held past the deadline, a clear error.
    let _held = hold_node_lock();
    let other = LoopDev::new(&t, "other", 64);
    let r = run_env(
        "disk-ensure-fs",
        &["--device", &other.device],
        "",
        &[("APPSCALE_PERSIST_LOCK_TIMEOUT", "1")],
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "node-locked", "{}", r.stderr);
    assert_eq!(blkid(&other.device, "TYPE"), "");
}

/// While another tool holds the whole-disk device node with flock (as
/// sfdisk, systemd-repart or a partitioner does), nothing is formatted.
#[test]
fn a_device_locked_by_another_tool_is_not_formatted() {
    require_root();
    let t = TempDir::new("dev-flock");
    let d = LoopDev::new(&t, "disk", 64);
    let f = std::fs::File::open(&d.device).unwrap();
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let r = run_env(
        "disk-ensure-fs",
        &["--device", &d.device],
        "",
        &[("APPSCALE_PERSIST_DEVICE_LOCK_TIMEOUT", "1")],
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "device-locked", "{}", r.stderr);
    assert_eq!(blkid(&d.device, "TYPE"), "");
    drop(held);
    ensure_ok(&d.device);
}

fn ensure_ok(dev: &str) -> Value {
    run("disk-ensure-fs", &["--device", dev], "")
        .expect(0)
        .record()
}

/// mkfs runs on the resolved device node, not on a link that could be
/// re-pointed meanwhile.
#[test]
fn mkfs_runs_on_the_resolved_device_node() {
    require_root();
    let t = TempDir::new("resolved");
    let d = LoopDev::new(&t, "disk", 64);
    let link = t.join("by-id-link");
    std::os::unix::fs::symlink(&d.device, &link).unwrap();
    let r = run(
        "disk-ensure-fs",
        &["-v", "--device", link.to_str().unwrap()],
        "",
    )
    .expect(0);
    let mkfs_line = r
        .stderr
        .lines()
        .find(|l| l.contains("running mkfs.ext4"))
        .unwrap_or_else(|| panic!("no mkfs line: {}", r.stderr))
        .to_string();
    assert!(
        mkfs_line.ends_with(&format!(" {}", d.device)),
        "mkfs on {}: {mkfs_line}",
        d.device
    );
}

/// A local deployment brought up twice at once ends with one image, one
/// filesystem, one mount and one fstab entry.
#[test]
fn two_ups_at_once_make_one_image_one_filesystem_one_mount_one_entry() {
    require_root();
    for round in 0..4 {
        let t = TempDir::new("two-ups");
        let file = t.join("AppScalefile");
        std::fs::write(
            &file,
            "infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 1\n    disks: data-0\n",
        )
        .unwrap();
        let state = t.s("disks");
        let bin = bin_dir().display().to_string();
        let up = || {
            Command::new(repo().join("scripts/up"))
                .args(["--mountpoint", &t.s("mnt/{node}"), "--fstab", &t.s("fstab")])
                .arg(&file)
                .args(["--", "--size", "64M"])
                .env("APPSCALE_PERSIST_STATE_DIR", &state)
                .env("APPSCALE_PERSIST_BIN", &bin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (up(), up());
        let (ra, rb) = (finish_child(a), finish_child(b));
        let what = format!("round {round}:\n{}\n{}", ra.stderr, rb.stderr);
        assert_eq!((ra.code, rb.code), (0, 0), "{what}");
        let mut images: Vec<String> = std::fs::read_dir(t.join("disks"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect();
        images.sort();
        // One image, and the owner file that says whose it is.
        assert_eq!(images, ["data-0.img", "data-0.owner.json"], "{what}");
        let loops = sh_ok(&[
            "losetup",
            "--list",
            "--noheadings",
            "--output",
            "NAME,BACK-FILE",
        ]);
        let bound: Vec<&str> = loops.lines().filter(|l| l.contains(&state)).collect();
        assert_eq!(bound.len(), 1, "{what}: one loop device: {bound:?}");
        let mnt = t.join("mnt/node-0");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
            .count();
        assert_eq!(mounts, 1, "{what}: one mount");
        assert_eq!(fstab_lines(&t.join("fstab")).len(), 1, "{what}: one entry");
        let dev = bound[0].split_whitespace().next().unwrap();
        assert_eq!(blkid(dev, "TYPE"), "ext4", "{what}");
        assert_eq!(
            ra.records()[0]["fs"]["uuid"],
            rb.records()[0]["fs"]["uuid"],
            "{what}"
        );
        flow_down(&t, &file, &state);
    }
}

/// A process keeping a directory busy (its working directory), killed on
/// drop so a failing test leaves nothing behind.
struct Holder(std::process::Child);

impl Holder {
    fn in_dir(dir: &Path) -> Holder {
        Holder(
            Command::new("sleep")
                .arg("600")
                .current_dir(dir)
                .spawn()
                .unwrap(),
        )
    }
    fn id(&self) -> u32 {
        self.0.id()
    }
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn flow_down(t: &TempDir, file: &Path, state: &str) {
    let bin = bin_dir().display().to_string();
    run_env(
        repo().join("scripts/down").to_str().unwrap(),
        &["--mountpoint", &t.s("mnt/{node}"), file.to_str().unwrap()],
        "",
        &[
            ("APPSCALE_PERSIST_STATE_DIR", state),
            ("APPSCALE_PERSIST_BIN", &bin),
        ],
    )
    .expect(0);
}

/// disk-create never replaces an image that appeared since it looked.
#[test]
fn create_never_replaces_an_existing_image() {
    require_root();
    let t = TempDir::new("create-race");
    let state = t.s("disks");
    for round in 0..6 {
        let name = format!("img-{round}");
        let kids: Vec<_> = (0..2)
            .map(|_| {
                spawn(
                    "disk-create",
                    &["--provider", "local", "--disk", &name, "--size", "64M"],
                    "",
                    &[("APPSCALE_PERSIST_STATE_DIR", &state)],
                )
            })
            .collect();
        // Whichever made it, write into it at once: a second create must not
        // replace it with an empty image.
        let image = t.join(&format!("disks/{name}.img"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !image.exists() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        let ino = std::fs::metadata(&image).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let results: Vec<Run> = kids.into_iter().map(finish_child).collect();
        for r in &results {
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
        let changed = results
            .iter()
            .filter(|r| r.record()["changed"] == true)
            .count();
        assert_eq!(
            changed, 1,
            "round {round}: exactly one run created the image"
        );
        assert_eq!(
            ino.ok(),
            std::fs::metadata(&image)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
            "round {round}: the image first seen is the image kept"
        );
    }
}

// ---------------------------------------------------------------------------
// Never format a disk that holds something

/// A record that already names a filesystem is never formatted, even when
/// its device now reads blank: the device changed between steps.
#[test]
fn a_record_naming_a_filesystem_is_never_formatted() {
    require_root();
    let t = TempDir::new("named-fs");
    let d = LoopDev::new(&t, "disk", 64);
    let with_uuid = json!({"v": 1, "device": d.device, "fs": {"type": "ext4", "uuid": "3f1c1a52-0a57-4b8e-9c41-1b2f0c3d4e5f", "formatted": false}});
    let has_fs = json!({"v": 1, "device": d.device, "state": "has-fs"});
    for rec in [with_uuid, has_fs] {
        let r = run("disk-ensure-fs", &[], &ndjson(std::slice::from_ref(&rec))).expect(1);
        assert_eq!(
            r.record()["error"]["code"],
            "identity-mismatch",
            "{rec}: {}",
            r.stderr
        );
        assert_eq!(blkid(&d.device, "TYPE"), "", "{rec}: not formatted");
    }
}

/// A stale record naming another disk's loop device is refused by both
/// ensure-fs and mount: the device is checked against the image it claims.
#[test]
fn a_record_naming_another_disks_device_is_refused() {
    require_root();
    let t = TempDir::new("stale-device");
    let env = [("APPSCALE_PERSIST_STATE_DIR", t.s("disks"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let attach = |disk: &str| -> Value {
        let c = run_env(
            "disk-create",
            &["--provider", "local", "--disk", disk, "--size", "64M"],
            "",
            &env,
        )
        .expect(0);
        run_env("disk-attach", &[], &c.stdout, &env)
            .expect(0)
            .record()
    };
    let a = attach("alpha");
    let b = attach("beta");
    // beta holds data of its own.
    let b_dev = b["device"].as_str().unwrap().to_string();
    let b_uuid = mkfs_ext4(&b_dev);
    let mut stale = a.clone();
    stale["device"] = json!(b_dev);
    let r = run_env("disk-ensure-fs", &[], &ndjson(&[stale.clone()]), &env).expect(1);
    assert_eq!(
        r.record()["error"]["code"],
        "identity-mismatch",
        "{}",
        r.stderr
    );
    let r = run_env(
        "disk-mount",
        &["--no-fstab", "--mountpoint", &t.s("mnt")],
        &ndjson(&[stale]),
        &env,
    )
    .expect(1);
    assert_eq!(
        r.record()["error"]["code"],
        "identity-mismatch",
        "{}",
        r.stderr
    );
    assert!(!is_mounted(&t.join("mnt")));
    assert_eq!(blkid(&b_dev, "UUID"), b_uuid);
    for disk in ["alpha", "beta"] {
        run_env(
            "disk-detach",
            &["--provider", "local", "--disk", disk],
            "",
            &env,
        )
        .expect(0);
    }
}

/// A cloud record's device is checked against the disk's own links.
#[test]
fn a_cloud_record_naming_another_device_is_refused() {
    require_root();
    let t = TempDir::new("stale-cloud");
    let ours = LoopDev::new(&t, "ours", 64);
    let other = LoopDev::new(&t, "other", 64);
    let root = t.join("dev");
    std::fs::create_dir_all(root.join("disk/by-id")).unwrap();
    std::os::unix::fs::symlink(&ours.device, root.join("disk/by-id/google-data-1")).unwrap();
    let rec = json!({"v": 1, "provider": "gce", "disk": "data-1", "device": other.device});
    let r = run_env(
        "disk-ensure-fs",
        &[],
        &ndjson(&[rec]),
        &[("APPSCALE_PERSIST_DEV_ROOT", root.to_str().unwrap())],
    )
    .expect(1);
    assert_eq!(
        r.record()["error"]["code"],
        "identity-mismatch",
        "{}",
        r.stderr
    );
    assert_eq!(blkid(&other.device, "TYPE"), "");
}

/// Zeroes the first MiB of a device (what a careless `dd` or a wipe of the
/// head does), flushing so the tools read the device as it now is.
fn wipe_head(d: &LoopDev) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&d.device)
        .unwrap();
    f.write_all(&vec![0u8; 1 << 20]).unwrap();
    f.sync_all().unwrap();
    sync_device(&d.device);
}

/// The blank check looks past a wiped head: backup superblocks, secondary
/// AG headers, superblock mirrors, the GPT backup header, and a sample of
/// the whole device.
#[test]
fn data_behind_a_wiped_head_is_not_blank() {
    require_root();
    let t = TempDir::new("wiped-head");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "ext4",
            vec!["mkfs.ext4", "-q", "-F"],
            "ext2/3/4 backup superblock",
        ),
        (
            "xfs",
            vec!["mkfs.xfs", "-q", "-f"],
            "XFS secondary superblock",
        ),
        (
            "btrfs",
            vec!["mkfs.btrfs", "-q", "-f"],
            "btrfs superblock mirror",
        ),
    ];
    for (name, mkfs, found) in cases {
        let d = LoopDev::new(&t, name, 512);
        let mut argv = mkfs.clone();
        argv.push(&d.device);
        sh_ok(&argv);
        wipe_head(&d);
        let before = d.digest();
        let r = run("disk-ensure-fs", &["--device", &d.device], "").expect(3);
        assert_eq!(
            r.record()["error"]["code"],
            "not-blank",
            "{name}: {}",
            r.stderr
        );
        let msg = r.record()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(found), "{name}: names what it found: {msg}");
        assert_eq!(d.digest(), before, "{name}: untouched");
    }
    // A GPT whose primary header is gone: its backup at the end remains.
    let d = LoopDev::new(&t, "gpt", 512);
    sh_ok(&["sgdisk", "-o", &d.device]);
    wipe_head(&d);
    let r = run("disk-ensure-fs", &["--device", &d.device], "").expect(3);
    let msg = r.record()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("GPT backup header"), "{msg}");
    // Data in the middle only, far from both ends.
    let d = LoopDev::new(&t, "middle", 512);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&d.device)
            .unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(200 << 20)).unwrap();
        f.write_all(&vec![0x42u8; 8 << 20]).unwrap();
        f.sync_all().unwrap();
    }
    let r = run("disk-ensure-fs", &["--device", &d.device], "").expect(3);
    assert_eq!(r.record()["error"]["code"], "not-blank", "{}", r.stderr);
    let msg = r.record()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("sampling 256 blocks"), "{msg}");
}

// ---------------------------------------------------------------------------
// --seed never deletes

/// A leftover seeding marker on a disk that holds other data is an error
/// naming the marker; nothing on the disk is deleted.
#[test]
fn a_leftover_seed_marker_never_wipes_the_disk() {
    require_root();
    let t = TempDir::new("seed-marker");
    let d = LoopDev::new(&t, "disk", 64);
    let uuid = mkfs_ext4(&d.device);
    let scratch = t.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    sh_ok(&["mount", &d.device, scratch.to_str().unwrap()]);
    std::fs::write(scratch.join("cassandra-data"), "precious").unwrap();
    std::fs::write(scratch.join(".appscale-persist-seeding"), "old marker").unwrap();
    sh_ok(&["umount", scratch.to_str().unwrap()]);
    let mp = t.join("appscale");
    std::fs::create_dir_all(&mp).unwrap();
    std::fs::write(mp.join("from-image"), "image file").unwrap();
    // Even a record claiming this run formatted the disk changes nothing.
    let rec = json!({"v": 1, "device": d.device, "fs": {"type": "ext4", "uuid": uuid, "formatted": true}});
    let r = run(
        "disk-mount",
        &["--seed", "--no-fstab", "--mountpoint", mp.to_str().unwrap()],
        &ndjson(&[rec]),
    )
    .expect(1);
    let err = &r.record()["error"];
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(".appscale-persist-seeding"),
        "names the marker: {err}"
    );
    assert!(!is_mounted(&mp));
    sh_ok(&["mount", "-o", "ro", &d.device, scratch.to_str().unwrap()]);
    let kept = std::fs::read_to_string(scratch.join("cassandra-data"));
    sh_ok(&["umount", scratch.to_str().unwrap()]);
    assert_eq!(kept.unwrap(), "precious");
}

/// A filesystem this flow did not format is never seeded: mounting over a
/// directory that holds files warns how many entries it hides.
#[test]
fn only_a_filesystem_this_flow_formatted_is_seeded() {
    require_root();
    let t = TempDir::new("seed-foreign");
    let d = LoopDev::new(&t, "disk", 64);
    mkfs_ext4(&d.device);
    let mp = t.join("appscale");
    std::fs::create_dir_all(&mp).unwrap();
    for n in ["a", "b", "c"] {
        std::fs::write(mp.join(n), n).unwrap();
    }
    let r = run(
        "disk-mount",
        &[
            "--seed",
            "--no-fstab",
            "--device",
            &d.device,
            "--mountpoint",
            mp.to_str().unwrap(),
        ],
        "",
    )
    .expect(0);
    assert!(is_mounted(&mp));
    assert!(!mp.join("a").exists(), "not seeded: {}", r.stderr);
    assert!(r.stderr.contains("hides 3 entries"), "{}", r.stderr);
    run(
        "disk-unmount",
        &["--device", &d.device, "--mountpoint", mp.to_str().unwrap()],
        "",
    )
    .expect(0);
    // Without --seed, the same warning.
    let r = run(
        "disk-mount",
        &[
            "--no-fstab",
            "--device",
            &d.device,
            "--mountpoint",
            mp.to_str().unwrap(),
        ],
        "",
    )
    .expect(0);
    assert!(r.stderr.contains("hides 3 entries"), "{}", r.stderr);
}

/// A seed interrupted mid-copy is redone from its staging directory alone,
/// and the copy appears whole.
#[test]
fn an_interrupted_seed_is_redone_from_its_staging_directory() {
    require_root();
    let t = TempDir::new("seed-staging");
    let d = LoopDev::new(&t, "disk", 64);
    let rec = ensure_ok(&d.device);
    let scratch = t.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    sh_ok(&["mount", &d.device, scratch.to_str().unwrap()]);
    let staging = scratch.join(".appscale-persist-seed.partial");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("half"), "half a copy").unwrap();
    sh_ok(&["umount", scratch.to_str().unwrap()]);
    let mp = t.join("appscale");
    std::fs::create_dir_all(mp.join("apps")).unwrap();
    std::fs::write(mp.join("apps/app"), "app").unwrap();
    run(
        "disk-mount",
        &["--seed", "--no-fstab", "--mountpoint", mp.to_str().unwrap()],
        &ndjson(&[rec]),
    )
    .expect(0);
    assert_eq!(std::fs::read_to_string(mp.join("apps/app")).unwrap(), "app");
    let names: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["apps", "lost+found"]);
}

// ---------------------------------------------------------------------------
// Mountpoints and unmounts are ours alone

/// A mountpoint with a symlink in it, or inside a system tree, is refused.
#[test]
fn symlinked_and_system_mountpoints_are_refused() {
    require_root();
    let t = TempDir::new("mp-rules");
    let d = LoopDev::new(&t, "disk", 64);
    mkfs_ext4(&d.device);
    std::fs::create_dir_all(t.join("real")).unwrap();
    std::os::unix::fs::symlink(t.join("real"), t.join("link")).unwrap();
    let via_link = t.s("link/mnt");
    for bad in [
        via_link.as_str(),
        "/etc/appscale",
        "/usr/local/appscale",
        "/var/lib/appscale",
        "/lib64/x",
        "/boot/efi2",
        "/run/appscale",
        "/proc/x",
        "/sys/x",
        "/dev/x",
        "/bin/x",
        "/sbin/x",
    ] {
        let r = run(
            "disk-mount",
            &[
                "--check",
                "--no-fstab",
                "--device",
                &d.device,
                "--mountpoint",
                bad,
            ],
            "",
        )
        .expect(1);
        assert_eq!(r.record()["error"]["code"], "bad-mountpoint", "{bad}");
    }
    assert!(!is_mounted(&t.join("real/mnt")));
    for good in ["/opt/appscale", "/srv/appscale", "/mnt/data"] {
        run(
            "disk-mount",
            &[
                "--check",
                "--no-fstab",
                "--device",
                &d.device,
                "--mountpoint",
                good,
            ],
            "",
        )
        .expect(0);
    }
}

/// When the check after mounting fails, what was mounted is unmounted and
/// the fstab line is rolled back.
#[test]
fn a_failed_post_mount_check_undoes_the_mount_and_the_entry() {
    require_root();
    let t = TempDir::new("post-check");
    let d = LoopDev::new(&t, "disk", 64);
    mkfs_ext4(&d.device);
    let fstab = t.join("fstab");
    std::fs::write(&fstab, "# theirs\n").unwrap();
    let stray = t.join("stray");
    std::fs::create_dir_all(&stray).unwrap();
    // A mount(8) that mounts the device somewhere else and says it succeeded.
    let path = fake_tools(
        &t,
        &[(
            "mount",
            &format!(
                "args=(\"$@\"); n=${{#args[@]}}; /usr/bin/mount \"${{args[@]:0:n-1}}\" {}",
                stray.display()
            ),
        )],
    );
    let mp = t.join("mnt");
    let r = run_env(
        "disk-mount",
        &[
            "--no-fsck",
            "--device",
            &d.device,
            "--mountpoint",
            mp.to_str().unwrap(),
            "--fstab",
            fstab.to_str().unwrap(),
        ],
        "",
        &[("PATH", &path)],
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "mount-failed", "{}", r.stderr);
    assert!(!is_mounted(&stray), "what was mounted is unmounted");
    assert!(!is_mounted(&mp));
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), "# theirs\n");
}

/// disk-unmount leaves a filesystem that is not the record's alone: a tmpfs
/// (or NFS share) at the mountpoint is reported, not unmounted.
#[test]
fn unmount_leaves_a_foreign_mount_alone() {
    require_root();
    let t = TempDir::new("foreign-mount");
    let mp = t.join("appscale");
    std::fs::create_dir_all(&mp).unwrap();
    sh_ok(&["mount", "-t", "tmpfs", "tmpfs", mp.to_str().unwrap()]);
    let r = run_alone("disk-unmount", &["--mountpoint", mp.to_str().unwrap()]).expect(1);
    let rec = r.record();
    assert_eq!(rec["error"]["code"], "not-ours", "{}", r.stderr);
    assert!(
        rec["error"]["message"].as_str().unwrap().contains("tmpfs"),
        "{rec}"
    );
    assert!(is_mounted(&mp), "the tmpfs is still there");
}

/// After a lazy unmount the filesystem can stay alive: the disk is not
/// reported ready to detach, and the node-side detach refuses it.
#[test]
fn a_lazily_unmounted_filesystem_still_alive_is_not_released() {
    require_root();
    let t = TempDir::new("lazy");
    let env = [("APPSCALE_PERSIST_STATE_DIR", t.s("disks"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = run_env(
        "disk-create",
        &["--provider", "local", "--disk", "lazy", "--size", "64M"],
        "",
        &env,
    )
    .expect(0);
    let a = run_env("disk-attach", &[], &c.stdout, &env).expect(0);
    let f = run_env("disk-ensure-fs", &[], &a.stdout, &env).expect(0);
    let mp = t.join("mnt");
    let m = run_env(
        "disk-mount",
        &["--no-fstab", "--mountpoint", mp.to_str().unwrap()],
        &f.stdout,
        &env,
    )
    .expect(0);
    let mut holder = Holder::in_dir(&mp);
    let r = run_env(
        "disk-unmount",
        &["--lazy"],
        &m.stdout,
        &[("APPSCALE_PERSIST_RELEASE_WAIT", "1")],
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "still-in-use", "{}", r.stderr);
    assert!(
        r.record()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", holder.id())),
        "{}",
        r.stdout
    );
    let dev = m.record()["device"].as_str().unwrap().to_string();
    let r = run_env(
        "disk-detach",
        &["--provider", "local", "--disk", "lazy"],
        "",
        &env,
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "in-use", "{}", r.stderr);
    assert!(
        Path::new(&format!(
            "/sys/block/{}/loop/backing_file",
            dev.trim_start_matches("/dev/")
        ))
        .exists(),
        "still attached"
    );
    holder.stop();
    // Once the last user is gone, both go through.
    run_env(
        "disk-detach",
        &["--provider", "local", "--disk", "lazy"],
        "",
        &env,
    )
    .expect(0);
}

// ---------------------------------------------------------------------------
// The protocol holds under odd input

/// `disk-unmount --mountpoint X` with records on stdin fills X in for the
/// records that name none; it never drops them.
#[test]
fn unmount_flags_fill_in_records_never_swallow_them() {
    require_root();
    let t = TempDir::new("fill-in");
    let a = LoopDev::new(&t, "a", 64);
    let b = LoopDev::new(&t, "b", 64);
    mkfs_ext4(&a.device);
    mkfs_ext4(&b.device);
    for (d, m) in [(&a, "mnt-a"), (&b, "mnt-b")] {
        run(
            "disk-mount",
            &["--no-fstab", "--device", &d.device, "--mountpoint", &t.s(m)],
            "",
        )
        .expect(0);
    }
    let input = ndjson(&[
        json!({"v": 1, "device": a.device, "mountpoint": t.s("mnt-a")}),
        json!({"v": 1, "device": b.device}),
    ]);
    let r = run("disk-unmount", &["--mountpoint", &t.s("mnt-b")], &input).expect(0);
    let recs = r.records();
    assert_eq!(recs.len(), 2, "both records come out: {}", r.stdout);
    assert_eq!(recs[1]["mountpoint"], t.s("mnt-b"));
    assert!(!is_mounted(&t.join("mnt-a")) && !is_mounted(&t.join("mnt-b")));
}

/// A line longer than 1 MiB is refused (exit 2, naming the line) without
/// reading the rest of it.
#[test]
fn an_overlong_line_is_refused_without_reading_it_all() {
    let mut child = Command::new(bin("disk-ensure-fs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b' '; 1 << 16];
        let mut written = 0usize;
        stdin.write_all(b"{\"v\":1,\"x\":\"").unwrap();
        // 256 MiB at most: a reader that reads it all takes it all.
        while written < 256 << 20 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    let written = writer.join().unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stdin line 1"), "{stderr}");
    assert!(stderr.contains("longer than 1 MiB"), "{stderr}");
    assert!(
        written < 64 << 20,
        "the tool stopped reading early ({written} bytes taken)"
    );
}

/// `--check` creates nothing: no lock file, no state directory entry, and
/// no stale temporary mount is reaped.
#[test]
fn check_mode_creates_and_reaps_nothing() {
    require_root();
    let t = TempDir::new("check-nothing");
    let state = t.join("disks");
    let env = [("APPSCALE_PERSIST_STATE_DIR", state.display().to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_env(
        "disk-create",
        &["--provider", "local", "--disk", "quiet", "--size", "64M"],
        "",
        &env,
    )
    .expect(0);
    let before: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    for tool in ["disk-attach", "disk-detach"] {
        run_env(
            tool,
            &["--check", "--provider", "local", "--disk", "quiet"],
            "",
            &env,
        )
        .expect(0);
    }
    let after: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "nothing created in the state directory");
    run_env(
        "disk-create",
        &[
            "--check",
            "--provider",
            "local",
            "--disk",
            "x",
            "--state-dir",
            &t.s("never"),
        ],
        "",
        &env,
    )
    .expect(0);
    assert!(!t.join("never").exists());

    // A stale temporary mount left by a killed run (pid gone) stays put in
    // --check mode.
    let d = LoopDev::new(&t, "disk", 64);
    mkfs_ext4(&d.device);
    let meta = std::fs::metadata(&d.device).unwrap();
    let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
    let stale = PathBuf::from(format!(
        "/run/appscale-persist/tmp-999999999-{}-{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    ));
    std::fs::create_dir_all(&stale).unwrap();
    sh_ok(&["mount", &d.device, stale.to_str().unwrap()]);
    let r = run(
        "disk-mount",
        &[
            "--check",
            "--no-fstab",
            "--device",
            &d.device,
            "--mountpoint",
            &t.s("mnt"),
        ],
        "",
    );
    let still = is_mounted(&stale);
    let _ = sh(&["umount", stale.to_str().unwrap()]);
    let _ = std::fs::remove_dir(&stale);
    assert!(still, "--check reaped a temporary mount: {}", r.stderr);
}

/// Control characters in disk, node and device strings are escaped on
/// stderr and in the flows' summary.
#[test]
fn control_characters_are_escaped_in_messages() {
    let rec = json!({"v": 1, "node": "n\u{1b}[2J\rFAKE ok", "device": "/dev/no-such\nthing"});
    let r = run("disk-ensure-fs", &[], &ndjson(&[rec])).expect(1);
    assert!(!r.stderr.contains('\u{1b}'), "{:?}", r.stderr);
    assert!(!r.stderr.contains('\r'), "{:?}", r.stderr);
    // One line for the record (a concurrent test may hold the node lock:
    // the run then also says it waits for it, on a line of its own).
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| !l.contains("waiting for"))
            .count(),
        1,
        "one line per record: {:?}",
        r.stderr
    );
    assert!(r.stderr.contains("\\u{1b}"), "{:?}", r.stderr);
    // The summary table of the flows.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; persist_summary title",
            repo().join("scripts/lib.sh").display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(r.stdout.as_bytes())
                .unwrap();
            c.wait_with_output()
        })
        .unwrap();
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(
        !table.contains('\u{1b}') && !table.contains('\r'),
        "{table:?}"
    );
    assert_eq!(
        table.lines().count(),
        3,
        "title, header, one row: {table:?}"
    );
}

/// The state directory must be root's and not writable by others; images
/// and the lock are never followed through symlinks.
#[test]
fn an_unsafe_state_directory_or_a_symlinked_image_is_refused() {
    require_root();
    let t = TempDir::new("state-dir");
    let state = t.join("disks");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let env = [("APPSCALE_PERSIST_STATE_DIR", state.display().to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = run_env(
        "disk-create",
        &["--provider", "local", "--disk", "d", "--size", "64M"],
        "",
        &env,
    )
    .expect(1);
    assert_eq!(
        r.record()["error"]["code"],
        "state-dir-unsafe",
        "{}",
        r.stderr
    );
    assert!(!state.join("d.img").exists());
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    // An image that is a symlink to some other file.
    let victim = t.join("victim");
    junk_image(&victim, 64);
    std::os::unix::fs::symlink(&victim, state.join("d.img")).unwrap();
    let r = run_env(
        "disk-attach",
        &["--provider", "local", "--disk", "d"],
        "",
        &env,
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "unsafe-image", "{}", r.stderr);
    let loops = sh_ok(&["losetup", "--list", "--noheadings", "--output", "BACK-FILE"]);
    assert!(!loops.contains(victim.to_str().unwrap()), "{loops}");
}

/// --mkfs-option cannot force mkfs or name another device; static device
/// paths are normalised and `..` refused.
#[test]
fn options_cannot_force_mkfs_or_escape_dev() {
    for bad in [
        &["--mkfs-option", "-F"][..],
        &["--mkfs-option=-qF"],
        &["--fstype", "xfs", "--mkfs-option", "-f"],
        &["--mkfs-option", "/dev/sdz"],
        &["--mkfs-option", "--force"],
        &[
            "--fstype",
            "xfs",
            "--mkfs-option=-l",
            "--mkfs-option=logdev=/dev/sdz",
        ],
        &["--mkfs-option=-Jdevice=/dev/sdz"],
    ] {
        let mut args = vec!["--check", "--device", "/dev/null"];
        args.extend_from_slice(bad);
        let r = run("disk-ensure-fs", &args, "").expect(2);
        assert!(r.stderr.contains("--mkfs-option"), "{bad:?}: {}", r.stderr);
    }
    // An option's own value is not a positional argument.
    run(
        "disk-ensure-fs",
        &[
            "--check",
            "--device",
            "/dev/no-such",
            "--mkfs-option",
            "-E",
            "--mkfs-option",
            "lazy_itable_init=0",
        ],
        "",
    )
    .expect(1);
    let r = run(
        "disk-attach",
        &["--provider", "static", "--disk", "/dev/../tmp/x"],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "bad-disk-name", "{}", r.stderr);
}

/// mount and umount are judged by the kernel's table afterwards, not by
/// their exit status alone; an interrupted fsck is reported as such.
#[test]
fn mount_and_unmount_are_judged_by_the_real_state() {
    require_root();
    let t = TempDir::new("real-state");
    let d = LoopDev::new(&t, "disk", 64);
    mkfs_ext4(&d.device);
    let fstab = t.join("fstab");
    let mp = t.join("mnt");
    // mount(8) that mounts, then reports failure (a timeout after the
    // kernel call went through looks like this).
    let path = fake_tools(
        &t,
        &[
            ("mount", "/usr/bin/mount \"$@\"; exit 32"),
            ("umount", "/usr/bin/umount \"$@\"; exit 32"),
        ],
    );
    let r = run_env(
        "disk-mount",
        &[
            "--no-fsck",
            "--device",
            &d.device,
            "--mountpoint",
            mp.to_str().unwrap(),
            "--fstab",
            fstab.to_str().unwrap(),
        ],
        "",
        &[("PATH", &path)],
    )
    .expect(0);
    assert_eq!(r.record()["state"], "mounted", "{}", r.stderr);
    assert!(is_mounted(&mp));
    assert_eq!(
        fstab_lines(&fstab).len(),
        1,
        "the entry matches what is mounted"
    );
    let r = run_env(
        "disk-unmount",
        &["--device", &d.device, "--mountpoint", mp.to_str().unwrap()],
        "",
        &[("PATH", &path)],
    )
    .expect(0);
    assert_eq!(r.record()["state"], "unmounted", "{}", r.stderr);
    assert!(!is_mounted(&mp));

    // fsck killed part-way: said plainly, and nothing is mounted.
    let path = fake_tools(&t, &[("fsck.ext4", "kill -9 $$")]);
    let r = run_env(
        "disk-mount",
        &[
            "--device",
            &d.device,
            "--mountpoint",
            mp.to_str().unwrap(),
            "--no-fstab",
        ],
        "",
        &[("PATH", &path)],
    )
    .expect(1);
    let err = &r.record()["error"];
    assert_eq!(err["code"], "fsck-interrupted", "{err}");
    assert!(err["message"].as_str().unwrap().contains("half"), "{err}");
    assert!(!is_mounted(&mp));
}

/// scripts/demo never deletes a DEMO_DIR it did not make.
#[test]
fn the_demo_never_deletes_a_directory_it_did_not_make() {
    require_root();
    let t = TempDir::new("demo-dir");
    std::fs::write(t.join("keep"), "operator's file").unwrap();
    let r = run_env(
        repo().join("scripts/demo").to_str().unwrap(),
        &[],
        "",
        &[
            ("DEMO_DIR", &t.s("")),
            ("APPSCALE_PERSIST_BIN", &bin_dir().display().to_string()),
        ],
    );
    assert_ne!(r.code, 0, "the demo refuses: {}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(t.join("keep")).unwrap(),
        "operator's file"
    );
}

/// The flows' --help prints the usage, not shell code.
#[test]
fn flow_help_is_the_usage_only() {
    for flow in ["up", "down"] {
        let r = run(
            repo().join("scripts").join(flow).to_str().unwrap(),
            &["--help"],
            "",
        );
        assert_eq!(r.code, 0, "{flow}: {}", r.stderr);
        assert!(r.stdout.contains("Usage:"), "{flow}: {}", r.stdout);
        for code in ["set -euo", "source ", "usage()", "#!/"] {
            assert!(!r.stdout.contains(code), "{flow}: {code}: {}", r.stdout);
        }
    }
}

/// Puts `entries` (name, contents) under `dir` at the top of the
/// filesystem on `dev`, through a scratch mount.
fn write_on_disk(t: &TempDir, dev: &str, dir: &str, entries: &[(&str, &str)]) {
    let scratch = t.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    sh_ok(&["mount", dev, scratch.to_str().unwrap()]);
    let base = scratch.join(dir);
    for (name, text) in entries {
        let p = base.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    sh_ok(&["umount", scratch.to_str().unwrap()]);
}

fn seed_into(mp: &Path, input: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--seed", "--no-fstab", "--mountpoint", mp.to_str().unwrap()];
    args.extend_from_slice(extra);
    run("disk-mount", &args, input)
}

/// A staging directory beside other data, or a finished copy on a
/// filesystem this node did not just format, is an error naming it; a
/// finished copy on a fresh one is moved into place.
#[test]
fn seed_staging_is_finished_only_on_a_fresh_disk() {
    require_root();
    let t = TempDir::new("seed-staged");
    let mp = t.join("appscale");
    std::fs::create_dir_all(&mp).unwrap();
    std::fs::write(mp.join("from-image"), "image file").unwrap();

    // Staging beside data.
    let d = LoopDev::new(&t, "beside", 64);
    mkfs_ext4(&d.device);
    write_on_disk(
        &t,
        &d.device,
        "",
        &[
            ("data", "theirs"),
            (".appscale-persist-seed.partial/x", "half"),
        ],
    );
    let r = seed_into(&mp, "", &["--device", &d.device]).expect(1);
    let err = r.record()["error"].clone();
    assert_eq!(err["code"], "seed-marker", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(".appscale-persist-seed.partial"),
        "{err}"
    );
    assert!(!is_mounted(&mp));

    // A finished copy on a disk this node did not just format.
    let d = LoopDev::new(&t, "stale", 64);
    mkfs_ext4(&d.device);
    write_on_disk(
        &t,
        &d.device,
        ".appscale-persist-seed.done",
        &[("old-copy", "old")],
    );
    let r = seed_into(&mp, "", &["--device", &d.device]).expect(1);
    assert_eq!(r.record()["error"]["code"], "seed-marker", "{}", r.stderr);
    assert!(!is_mounted(&mp));

    // A finished copy on a fresh disk: moved into place.
    let d = LoopDev::new(&t, "fresh", 64);
    let rec = ensure_ok(&d.device);
    write_on_disk(
        &t,
        &d.device,
        ".appscale-persist-seed.done",
        &[("apps/app", "copied")],
    );
    let r = seed_into(&mp, &ndjson(&[rec]), &[]).expect(0);
    assert!(
        r.stderr.contains("finished an interrupted seed"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(mp.join("apps/app")).unwrap(),
        "copied"
    );
    assert!(!mp.join(".appscale-persist-seed.done").exists());
}

/// SIGTERM in the middle of a seed: the copy is stopped, the temporary
/// mount released, nothing mounted, no fstab line left; a rerun finishes.
#[test]
fn a_signal_mid_seed_releases_everything() {
    require_root();
    let t = TempDir::new("sigterm-seed");
    let d = LoopDev::new(&t, "disk", 64);
    let rec = ensure_ok(&d.device);
    let mp = t.join("appscale");
    std::fs::create_dir_all(mp.join("apps")).unwrap();
    std::fs::write(mp.join("apps/app"), "app").unwrap();
    let fstab = t.join("fstab");
    std::fs::write(&fstab, "# theirs\n").unwrap();
    // A copy that takes long enough to be interrupted.
    let path = fake_tools(&t, &[("cp", "exec sleep 60")]);
    let args = [
        "--seed",
        "--mountpoint",
        mp.to_str().unwrap(),
        "--fstab",
        fstab.to_str().unwrap(),
    ];
    let child = spawn(
        "disk-mount",
        &args,
        &ndjson(std::slice::from_ref(&rec)),
        &[("PATH", &path)],
    );
    let pid = child.id();
    let temp_mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!("/run/appscale-persist/tmp-{pid}-")))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !temp_mounted() {
        assert!(Instant::now() < deadline, "the seed never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    let r = finish_child(child).expect(1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped promptly"
    );
    assert_eq!(r.record()["error"]["code"], "interrupted", "{}", r.stderr);
    assert!(!temp_mounted(), "the temporary mount is released");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains("/run/appscale-persist/tmp-"),
        "no temporary mount left at all"
    );
    assert!(!is_mounted(&mp));
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), "# theirs\n");
    // The rerun (the real cp) redoes the copy from its staging directory.
    run("disk-mount", &args, &ndjson(&[rec])).expect(0);
    assert_eq!(std::fs::read_to_string(mp.join("apps/app")).unwrap(), "app");
}

/// An empty pipe is a pipeline whose first step printed nothing: the
/// mountpoint flag does not stand in for records that never came.
#[test]
fn an_empty_pipe_is_no_records_not_the_flags() {
    require_root();
    let t = TempDir::new("empty-pipe");
    let d = LoopDev::new(&t, "disk", 64);
    mkfs_ext4(&d.device);
    let fstab = t.join("fstab");
    let mp = t.s("mnt");
    run(
        "disk-mount",
        &[
            "--device",
            &d.device,
            "--mountpoint",
            &mp,
            "--fstab",
            fstab.to_str().unwrap(),
        ],
        "",
    )
    .expect(0);
    let r = run(
        "disk-unmount",
        &["--mountpoint", &mp, "--fstab", fstab.to_str().unwrap()],
        "",
    )
    .expect(0);
    assert!(r.stdout.is_empty(), "no records: {}", r.stdout);
    assert!(is_mounted(&t.join("mnt")), "nothing was unmounted");
    // With stdin /dev/null (cron, a unit), the flags name the record.
    let out = Command::new(bin("disk-unmount"))
        .args(["--mountpoint", &mp, "--fstab", fstab.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&t.join("mnt")));
}

/// scripts/demo never deletes through a mount, even in a directory it made.
#[test]
fn the_demo_never_deletes_through_a_mount() {
    require_root();
    let t = TempDir::new("demo-mount");
    let dir = t.join("demo");
    std::fs::create_dir_all(dir.join("mnt/x")).unwrap();
    std::fs::write(dir.join(".appscale-persist-demo"), "").unwrap();
    sh_ok(&[
        "mount",
        "-t",
        "tmpfs",
        "tmpfs",
        dir.join("mnt/x").to_str().unwrap(),
    ]);
    std::fs::write(dir.join("mnt/x/precious"), "on another filesystem").unwrap();
    let r = run_env(
        repo().join("scripts/demo").to_str().unwrap(),
        &[],
        "",
        &[
            ("DEMO_DIR", dir.to_str().unwrap()),
            ("APPSCALE_PERSIST_BIN", &bin_dir().display().to_string()),
        ],
    );
    assert_ne!(r.code, 0, "the demo refuses: {}", r.stderr);
    assert!(r.stderr.contains("still mounted"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.join("mnt/x/precious")).unwrap(),
        "on another filesystem"
    );
}

// ---------------------------------------------------------------------------
// Growing

/// A signal during an offline `disk-ensure-fs --grow` no longer kills
/// resize2fs half-way (which left the filesystem with errors: `e2fsck -fn`
/// exit 4, "Resize inode not valid"): a SIGTERM to the tool, or a Ctrl-C
/// to its whole process group, lets resize2fs finish, as mkfs; the
/// filesystem is whole and grown.
#[test]
fn a_signal_never_stops_resize2fs_half_way() {
    use nix::sys::signal::Signal;
    require_root();
    let t = TempDir::new("grow-signal");
    for (round, group) in [(0, false), (1, true)] {
        let d = LoopDev::new(&t, &format!("disk{round}"), 256);
        mkfs_ext4(&d.device);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&d.image)
            .unwrap();
        f.set_len(200 << 30).unwrap();
        sh_ok(&["losetup", "--set-capacity", &d.device]);
        let mut cmd = Command::new(bin("disk-ensure-fs"));
        cmd.args(["-v", "--grow", "--device", &d.device]);
        let send = if group { group_signals_at } else { signals_at };
        let sig = if group {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let r = send(
            cmd,
            "",
            "running resize2fs",
            Duration::from_millis(500),
            &[sig],
        );
        assert!(r.stderr.contains("running resize2fs"), "{}", r.stderr);
        let fsck = sh(&["e2fsck", "-fn", &d.device]);
        assert_eq!(
            fsck.code, 0,
            "round {round}: the filesystem is whole: {}{}\n{}",
            fsck.stdout, fsck.stderr, r.stderr
        );
        let blocks = sh_ok(&["dumpe2fs", "-h", &d.device]);
        let count: u64 = blocks
            .lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert!(count > 100 << 20, "round {round}: grown ({count} blocks)");
    }
}

// ---------------------------------------------------------------------------
// Nested mountpoints

/// Records whose mountpoints nest (X and X/inner) in one disk-mount run:
/// the parent is mounted first, then the child, whatever the input order
/// and however long the parent takes (here an fsck the child skips). They
/// were mounted concurrently: the child won, the parent's mount hid it, and
/// writes to X/inner landed on the outer disk, with exit 0 and two fstab
/// lines. Now the fstab lists the parent first, disk-unmount takes the
/// child off first, a child whose parent fails is not mounted
/// (`parent-not-mounted`), and a parent is never mounted over a mount
/// inside it (`mountpoint-busy`).
#[test]
fn nested_mountpoints_mount_parents_first_and_unmount_children_first() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let t = TempDir::new("nested");
    let outer = LoopDev::new(&t, "outer", 64);
    let inner = LoopDev::new(&t, "inner", 64);
    let x = t.join("x");
    let xi = x.join("inner");
    let fstab = t.s("fstab");
    let rdev = |dev: &str| std::fs::metadata(dev).unwrap().rdev();
    let on = |p: &Path| std::fs::metadata(p).unwrap().dev();
    for round in 0..3 {
        // The parent's filesystem made outside the flow: fsck runs before
        // its mount. The child's made by disk-ensure-fs: none.
        mkfs_ext4(&outer.device);
        sh_ok(&[
            "dd",
            "if=/dev/zero",
            &format!("of={}", inner.device),
            "bs=1M",
            "count=64",
            "conv=fsync",
            "status=none",
        ]);
        let mut inner_rec = ensure_ok(&inner.device);
        inner_rec["mountpoint"] = json!(xi.display().to_string());
        let outer_rec =
            json!({"v": 1, "device": outer.device, "mountpoint": x.display().to_string()});
        let r = run(
            "disk-mount",
            &["--fstab", &fstab],
            &ndjson(&[inner_rec.clone(), outer_rec.clone()]),
        )
        .expect(0);
        assert_eq!(on(&x), rdev(&outer.device), "round {round}: {}", r.stderr);
        assert_eq!(
            on(&xi),
            rdev(&inner.device),
            "round {round}: X/inner is the inner disk, not hidden: {}",
            r.stderr
        );
        let lines = fstab_lines(Path::new(&fstab));
        let at = |p: &Path| {
            lines
                .iter()
                .position(|l| l.split_whitespace().nth(1) == Some(&p.display().to_string()))
                .unwrap()
        };
        assert!(
            at(&x) < at(&xi),
            "round {round}: the parent's line first: {lines:?}"
        );
        // Unmount, the parent's record first: the child goes first.
        run(
            "disk-unmount",
            &["--fstab", &fstab, "--remove-fstab"],
            &ndjson(&[outer_rec, inner_rec]),
        )
        .expect(0);
        assert!(!is_mounted(&xi) && !is_mounted(&x), "round {round}");
    }
    // A parent whose mount fails: its child is not mounted under it.
    sh_ok(&["wipefs", "-a", "-q", &outer.device]);
    let mut inner_rec = json!({"v": 1, "device": inner.device});
    inner_rec["mountpoint"] = json!(xi.display().to_string());
    let outer_rec = json!({"v": 1, "device": outer.device, "mountpoint": x.display().to_string()});
    let recs = run(
        "disk-mount",
        &["--fstab", &fstab],
        &ndjson(&[inner_rec.clone(), outer_rec.clone()]),
    )
    .expect(1)
    .records();
    assert_eq!(recs[1]["error"]["code"], "no-filesystem", "{}", recs[1]);
    assert_eq!(
        recs[0]["error"]["code"], "parent-not-mounted",
        "{}",
        recs[0]
    );
    assert!(!is_mounted(&xi));
    // A mount inside: the parent is not mounted over it.
    mkfs_ext4(&outer.device);
    run(
        "disk-mount",
        &["--fstab", &fstab],
        &ndjson(&[inner_rec.clone()]),
    )
    .expect(0);
    let r = run("disk-mount", &["--fstab", &fstab], &ndjson(&[outer_rec]))
        .expect(1)
        .record();
    assert_eq!(r["error"]["code"], "mountpoint-busy", "{r}");
    assert!(!is_mounted(&x) && is_mounted(&xi));
    run(
        "disk-unmount",
        &["--fstab", &fstab, "--remove-fstab"],
        &ndjson(&[inner_rec]),
    )
    .expect(0);
}

// ---------------------------------------------------------------------------
// Odd input, round two

/// Input is capped in all, not only per line: 24 records of 0.9 MiB (each
/// under the 1 MiB line cap) are refused (exit 2) once 16 MiB is read. It
/// was all read and held: 400 such lines took 402 MB.
#[test]
fn input_is_capped_in_all_not_only_per_line() {
    let mut child = Command::new(bin("disk-ensure-fs"))
        .arg("--check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let line = format!("{{\"v\":1,\"x\":\"{}\"}}\n", "y".repeat(900 << 10));
        for _ in 0..24 {
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("more than 16 MiB of input"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing done");
}

/// Mountpoints inside /home, /root, /var/log, /var/spool, /var/cache, /efi
/// and /snap are refused (they were accepted), and so is one holding a
/// control character: a tab, a carriage return or an escape reached fstab
/// raw (a tab splits the line in two fields) and broke the tools' own
/// reading of it.
#[test]
fn more_system_trees_and_control_characters_are_refused_as_mountpoints() {
    require_root();
    let t = TempDir::new("mp-rules-2");
    let d = LoopDev::new(&t, "disk", 64);
    mkfs_ext4(&d.device);
    let mount = |mp: &str, check: bool| {
        let fstab = t.s("fstab");
        let mut args = vec![
            "--fstab",
            fstab.as_str(),
            "--device",
            &d.device,
            "--mountpoint",
            mp,
        ];
        if check {
            args.insert(0, "--check");
        }
        run("disk-mount", &args, "")
    };
    for bad in [
        "/home/appscale",
        "/root/appscale",
        "/var/log/appscale",
        "/var/spool/appscale",
        "/var/cache/appscale",
        "/efi/appscale",
        "/snap/appscale",
    ] {
        let r = mount(bad, true).expect(1);
        assert_eq!(r.record()["error"]["code"], "bad-mountpoint", "{bad}");
    }
    for ctl in ["a\tb", "a\rb", "a\u{1b}b"] {
        let mp = t.s(ctl);
        let r = mount(&mp, false).expect(1);
        assert_eq!(r.record()["error"]["code"], "bad-mountpoint", "{ctl:?}");
        assert!(
            !r.stderr.contains('\t'),
            "escaped in messages: {}",
            r.stderr
        );
        assert!(!t.join(ctl).exists(), "{ctl:?}: nothing made");
    }
    assert!(!t.join("fstab").exists(), "fstab untouched");
}

// ---------------------------------------------------------------------------
// Static disks

/// A static disk named by its kernel name (`/dev/sdb`; a loop device here)
/// may be another disk after a reboot or once a disk is added. The linter
/// warns (`disk-kernel-name`); disk-create and disk-attach say so and name
/// the stable link to use instead, and disk-attach gives the record that
/// link as its `device` (a world-wide name first, never a partition's),
/// which the next steps use. A disk named by a stable link is left as it
/// is, without a word.
#[test]
fn a_static_disk_named_by_its_kernel_name_gets_its_stable_name() {
    require_root();
    let t = TempDir::new("static-by-id");
    let d = LoopDev::new(&t, "disk", 64);
    let by_id = t.join("dev/disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    for name in [
        "ata-FAKE_DISK_S3R1AL",
        "wwn-0x5000c500a1b2c3d4",
        "wwn-0x5000c500a1b2c3d4-part1",
    ] {
        std::os::unix::fs::symlink(&d.device, by_id.join(name)).unwrap();
    }
    let root = t.s("dev");
    let env = [("APPSCALE_PERSIST_DEV_ROOT", root.as_str())];
    let wwn = by_id.join("wwn-0x5000c500a1b2c3d4").display().to_string();
    let r = run_env(
        "disk-create",
        &["--provider", "static", "--disk", &d.device],
        "",
        &env,
    )
    .expect(0);
    assert!(
        r.stderr.contains("kernel name") && r.stderr.contains(&wwn),
        "{}",
        r.stderr
    );
    let attached = run_env("disk-attach", &[], &r.stdout, &env).expect(0);
    assert_eq!(
        attached.record()["device"],
        wwn.as_str(),
        "{}",
        attached.stdout
    );
    assert_eq!(
        attached.record()["disk"],
        d.device.as_str(),
        "the disk keeps its name"
    );
    run_env("disk-ensure-fs", &[], &attached.stdout, &env).expect(0);
    // By a stable name (a link under /dev, as udev makes them): used as it
    // is, nothing said.
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let links = Gone(PathBuf::from(format!(
        "/dev/appscale-persist-test-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&links.0).unwrap();
    let stable = links.0.join("wwn-0x5000c500a1b2c3d4");
    std::os::unix::fs::symlink(&d.device, &stable).unwrap();
    let stable = stable.display().to_string();
    let r = run_env(
        "disk-attach",
        &["--provider", "static", "--disk", &stable],
        "",
        &env,
    )
    .expect(0);
    assert!(!r.stderr.contains("kernel name"), "{}", r.stderr);
    assert_eq!(r.record()["device"], stable.as_str());
    // The linter warns about the kernel name, not about the link.
    let lint = |disk: &str| {
        run(
            "appscalefile-lint",
            &["-"],
            &format!(
                "ips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 10.0.0.5\n    disks: {disk}\n"
            ),
        )
    };
    let r = lint(&d.device);
    assert!(r.stderr.contains("disk-kernel-name"), "{}", r.stderr);
    let r = lint("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4");
    assert!(!r.stderr.contains("disk-kernel-name"), "{}", r.stderr);
}
