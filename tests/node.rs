//! The node-side tools on real loop devices: disk-ensure-fs, disk-mount,
//! disk-unmount. Every device and mount is cleaned up on drop, also when a
//! test fails.

mod common;

use common::*;
use serde_json::{Value, json};

/// Runs disk-ensure-fs on one device.
fn ensure(dev: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--device", dev];
    args.extend_from_slice(extra);
    run("disk-ensure-fs", &args, "")
}

/// A 64 MiB loop device, formatted by disk-ensure-fs (the tools' defaults).
fn formatted(tag: &str) -> (TempDir, LoopDev) {
    require_root();
    let t = TempDir::new(tag);
    let d = LoopDev::new(&t, "disk", 64);
    ensure(&d.device, &[]).expect(0);
    (t, d)
}

/// Runs disk-mount on one device.
fn mount(dev: &str, mountpoint: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--device", dev, "--mountpoint", mountpoint];
    args.extend_from_slice(extra);
    run("disk-mount", &args, "")
}

fn blkid_type(dev: &str) -> String {
    sh(&["blkid", "-p", "-s", "TYPE", "-o", "value", dev])
        .stdout
        .trim()
        .to_string()
}

#[test]
fn a_blank_device_is_formatted_once() {
    require_root();
    let t = TempDir::new("blank");
    let d = LoopDev::new(&t, "disk", 64);
    let first = ensure(&d.device, &["--label", "appdata"])
        .expect(0)
        .record();
    assert_eq!(first["state"], "formatted");
    assert_eq!(first["changed"], true);
    assert_eq!(first["fs"]["type"], "ext4");
    assert_eq!(first["fs"]["label"], "appdata");
    assert_eq!(first["fs"]["formatted"], true);
    let uuid = first["fs"]["uuid"].as_str().unwrap().to_string();
    assert_eq!(blkid_type(&d.device), "ext4");

    let hash = d.digest();
    let again = ensure(&d.device, &[]).expect(0).record();
    assert_eq!(again["state"], "has-fs");
    assert_eq!(again["changed"], false);
    assert_eq!(again["fs"]["uuid"], uuid.as_str());
    assert_eq!(d.digest(), hash, "a rerun writes nothing");
}

#[test]
fn xfs_is_supported() {
    require_root();
    let t = TempDir::new("xfs");
    let d = LoopDev::new(&t, "disk", 320);
    let r = ensure(&d.device, &["--fstype", "xfs"]).expect(0).record();
    assert_eq!(
        (r["state"].as_str(), r["fs"]["type"].as_str()),
        (Some("formatted"), Some("xfs"))
    );
    assert_eq!(blkid_type(&d.device), "xfs");
    let r = ensure(&d.device, &["--fstype", "xfs"]).expect(0).record();
    assert_eq!(r["changed"], false);
    // A label too long for XFS is a usage error, before anything is done.
    let r = ensure(
        &d.device,
        &["--fstype", "xfs", "--label", "much-too-long-label"],
    )
    .expect(2);
    assert!(r.stderr.contains("at most 12 bytes"), "{}", r.stderr);
}

/// Puts something that is not blank on a device.
fn prepare(kind: &str, d: &LoopDev, t: &TempDir) {
    let dev = d.device.as_str();
    match kind {
        "ext4" => drop(sh_ok(&["mkfs.ext4", "-q", dev])),
        "xfs" => drop(sh_ok(&["mkfs.xfs", "-q", dev])),
        "btrfs" => drop(sh_ok(&["mkfs.btrfs", "-q", dev])),
        "swap" => drop(sh_ok(&["mkswap", dev])),
        "lvm" => drop(sh_ok(&["pvcreate", "-q", dev])),
        "luks" => {
            let key = t.join("key");
            std::fs::write(&key, b"secret").unwrap();
            sh_ok(&[
                "cryptsetup",
                "luksFormat",
                "-q",
                "--batch-mode",
                // The cheapest key derivation: this header only has to be
                // seen (the default, argon2 calibrated to 2 s, cost 20
                // CPU-seconds).
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                key.to_str().unwrap(),
                dev,
            ]);
        }
        "gpt" => drop(sh_ok(&["sgdisk", "--clear", "--new=1:2048:+16M", dev])),
        "mbr" => {
            let r = run_env(
                "/usr/sbin/sfdisk",
                &["--quiet", "--label", "dos", dev],
                "2048,32768,83\n",
                &[],
            );
            assert_eq!(r.code, 0, "sfdisk: {}", r.stderr);
        }
        "random" => {
            // 4 MiB of random bytes at the start: no probe recognises them.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&d.image)
                .unwrap();
            let mut buf = vec![0u8; 4 << 20];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut u| std::io::Read::read_exact(&mut u, &mut buf))
                .unwrap();
            std::io::Write::write_all(&mut f, &buf).unwrap();
            f.sync_all().unwrap();
        }
        "last-sector" => {
            // Zeros everywhere but one sector at the very end.
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&d.image)
                .unwrap();
            let len = f.metadata().unwrap().len();
            f.seek(SeekFrom::Start(len - 512)).unwrap();
            f.write_all(&[0xA5; 512]).unwrap();
            f.sync_all().unwrap();
        }
        other => panic!("unknown kind {other}"),
    }
    sync_device(dev);
}

/// The byte-for-byte checks rest on `common::digest`: it sees a change to
/// any one byte, holes or not, and not how a file's bytes are stored.
#[test]
fn the_digest_sees_every_byte_and_not_where_the_holes_are() {
    use std::os::unix::fs::FileExt;
    let t = TempDir::new("digest");
    let patch = |path: &std::path::Path, at: &[(u64, &[u8])]| {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        for (off, bytes) in at {
            f.write_all_at(bytes, *off).unwrap();
        }
    };
    // A sparse file of `len` bytes holding `at`.
    let write = |name: &str, len: u64, at: &[(u64, &[u8])]| {
        let path = t.join(name);
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        patch(&path, at);
        path
    };
    let len = (8 << 20) + 100;
    let data: &[(u64, &[u8])] = &[(5000, b"abc"), (3 << 20, &[7; 9000]), (len - 1, b"z")];
    let sparse = write("sparse", len, data);
    // The same bytes, with its zeros written out (no holes at all).
    let dense = write("dense", len, &[(0, &vec![0; len as usize][..])]);
    patch(&dense, data);
    assert_eq!(digest(&sparse), digest(&dense));
    for (name, len, at) in [
        ("one byte more", len, &[(6000u64, &b"\x01"[..])][..]),
        (
            "one byte in a hole",
            len,
            &[((6 << 20) + 17, &b"\x01"[..])][..],
        ),
        ("one zero byte longer", len + 1, &[][..]),
    ] {
        let other = write(name, len, data);
        patch(&other, at);
        assert_ne!(digest(&other), digest(&sparse), "{name}");
    }
}

#[test]
fn anything_not_blank_is_refused_and_left_byte_for_byte() {
    require_root();
    let t = TempDir::new("corpus");
    // (what is on the device, the filesystem asked for)
    let corpus = [
        ("ext4", "xfs"),
        ("xfs", "ext4"),
        ("btrfs", "ext4"),
        ("swap", "ext4"),
        ("lvm", "ext4"),
        ("luks", "ext4"),
        ("gpt", "ext4"),
        ("mbr", "ext4"),
        ("random", "ext4"),
        ("last-sector", "ext4"),
    ];
    let mut failures = Vec::new();
    for (kind, want) in corpus {
        let d = LoopDev::new(&t, kind, 320);
        prepare(kind, &d, &t);
        let before = d.digest();
        let r = ensure(&d.device, &["--fstype", want]);
        let after = d.digest();
        let rec = r.records();
        let code = rec
            .first()
            .map(|r| r["error"]["code"].clone())
            .unwrap_or(Value::Null);
        if r.code != 3
            || before != after
            || !(code == "not-blank" || code == "fs-mismatch")
            || rec[0]["refused"] != true
        {
            failures.push(format!(
                "{kind}: exit {} code {code} changed bytes: {}\n{}",
                r.code,
                before != after,
                r.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_vanished_or_missing_device_is_not_blank() {
    require_root();
    let t = TempDir::new("vanished");
    let d = LoopDev::new(&t, "gone", 64);
    let before = digest(&d.image);
    // The loop device is detached: it reads as nothing, like a disk that
    // went away. blkid finds "nothing" there, which must not mean blank.
    sh_ok(&["losetup", "--detach", &d.device]);
    let r = ensure(&d.device, &[]).expect(1);
    assert_eq!(r.record()["error"]["code"], "no-media", "{}", r.stderr);
    assert_eq!(digest(&d.image), before);
    let r = ensure("/dev/disk/by-id/no-such-disk", &[]).expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-device");
    let r = ensure("/etc/hostname", &[]).expect(1);
    assert_eq!(r.record()["error"]["code"], "not-a-block-device");
}

#[test]
fn a_mounted_filesystem_of_the_wanted_type_is_accepted_as_is() {
    let (t, d) = formatted("mounted");
    let mp = t.s("mnt");
    mount(&d.device, &mp, &["--no-fstab"]).expect(0);
    let r = ensure(&d.device, &[]).expect(0).record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("has-fs"), Some(false))
    );
}

#[test]
fn check_mode_changes_nothing() {
    require_root();
    let t = TempDir::new("check");
    let d = LoopDev::new(&t, "disk", 64);
    let before = d.digest();
    let r = ensure(&d.device, &["--check"]).expect(0).record();
    assert_eq!(
        (r["changed"].as_bool(), r["check"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(d.digest(), before);
    assert_eq!(blkid_type(&d.device), "");

    ensure(&d.device, &[]).expect(0);
    let fstab = t.join("fstab");
    std::fs::write(&fstab, "# fstab\n").unwrap();
    let mp = t.join("mnt");
    let r = mount(
        &d.device,
        mp.to_str().unwrap(),
        &["--check", "--fstab", fstab.to_str().unwrap()],
    )
    .expect(0)
    .record();
    assert_eq!(r["changed"], true);
    assert!(
        !mp.exists(),
        "check mode does not even create the mountpoint"
    );
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), "# fstab\n");
}

#[test]
fn mount_and_unmount_are_idempotent_and_keep_fstab() {
    require_root();
    let t = TempDir::new("mount");
    let d = LoopDev::new(&t, "disk", 64);
    let fs = ensure(&d.device, &[]).expect(0).record();
    let uuid = fs["fs"]["uuid"].as_str().unwrap().to_string();
    let mp = t.join("mount point");
    let fstab = t.join("fstab");
    std::fs::write(&fstab, "# static\nUUID=root / ext4 defaults 0 1\n").unwrap();
    std::fs::set_permissions(&fstab, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let input = ndjson(&[fs]);
    let args = [
        "--mountpoint",
        mp.to_str().unwrap(),
        "--fstab",
        fstab.to_str().unwrap(),
    ];

    let r = run("disk-mount", &args, &input).expect(0).record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("mounted"), Some(true))
    );
    assert!(is_mounted(&mp));
    let text = std::fs::read_to_string(&fstab).unwrap();
    let line = format!(
        "UUID={uuid} {} ext4 noatime,nofail,x-systemd.device-timeout=30s,x-appscale-persist 0 2\n",
        mp.to_str().unwrap().replace(' ', "\\040")
    );
    assert_eq!(
        text,
        format!("# static\nUUID=root / ext4 defaults 0 1\n{line}")
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fstab).unwrap().permissions())
            & 0o777,
        0o640
    );
    assert_eq!(
        std::fs::read_to_string(t.join("fstab.appscale-persist.bak")).unwrap(),
        "# static\nUUID=root / ext4 defaults 0 1\n"
    );
    let opts = sh_ok(&["findmnt", "-n", "-o", "OPTIONS", mp.to_str().unwrap()]);
    assert!(opts.contains("noatime"), "{opts}");

    let r = run("disk-mount", &args, &input).expect(0).record();
    assert_eq!(r["changed"], false, "second mount changes nothing");
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), text);
    std::fs::write(mp.join("data"), "kept").unwrap();

    let unmount_args = ["--device", &d.device, "--mountpoint", mp.to_str().unwrap()];
    let r = run("disk-unmount", &unmount_args, "").expect(0).record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("unmounted"), Some(true))
    );
    assert!(!is_mounted(&mp));
    assert!(!mp.join("data").exists());
    let r = run("disk-unmount", &unmount_args, "").expect(0).record();
    assert_eq!(r["changed"], false, "not mounted is success, unchanged");
    assert_eq!(
        std::fs::read_to_string(&fstab).unwrap(),
        text,
        "fstab is kept unless asked"
    );

    // Mount again: the data is there; then unmount removing our entry.
    run("disk-mount", &args, &input).expect(0);
    assert_eq!(std::fs::read_to_string(mp.join("data")).unwrap(), "kept");
    let fstab_arg = format!("--fstab={}", fstab.display());
    run(
        "disk-unmount",
        &[&unmount_args[..], &[fstab_arg.as_str(), "--remove-fstab"]].concat(),
        "",
    )
    .expect(0);
    assert_eq!(
        std::fs::read_to_string(&fstab).unwrap(),
        "# static\nUUID=root / ext4 defaults 0 1\n"
    );
}

#[test]
fn a_failed_mount_leaves_fstab_untouched() {
    let (t, d) = formatted("rollback");
    let fstab = t.join("fstab");
    let original = "# original\n/dev/sda1 / ext4 defaults 0 1\n";
    std::fs::write(&fstab, original).unwrap();
    let mp = t.join("mnt");
    let r = mount(
        &d.device,
        mp.to_str().unwrap(),
        &[
            "--fstab",
            fstab.to_str().unwrap(),
            "--options",
            "noatime,no_such_option",
        ],
    )
    .expect(1);
    let rec = r.record();
    assert_eq!(rec["error"]["code"], "mount-failed", "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&fstab).unwrap(),
        original,
        "fstab untouched byte for byte: the line is written only after the mount"
    );
    assert!(!is_mounted(&mp));
}

#[test]
fn fsck_errors_stop_the_mount() {
    let (t, d) = formatted("fsck");
    // Damage the root directory and mark the filesystem unclean: preen
    // mode (-a) cannot fix that and exits 4.
    sh_ok(&["debugfs", "-w", "-R", "clri <2>", &d.device]);
    sh_ok(&["debugfs", "-w", "-R", "ssv state 0", &d.device]);
    let mp = t.join("mnt");
    let r = mount(&d.device, mp.to_str().unwrap(), &["--no-fstab"]).expect(1);
    let rec = r.record();
    assert_eq!(rec["error"]["code"], "fsck-failed", "{}", r.stderr);
    assert!(
        rec["error"]["message"].as_str().unwrap().contains("exit 4"),
        "{rec}"
    );
    assert!(!is_mounted(&mp));
}

/// A filesystem disk-ensure-fs just made skips fsck only while its
/// superblock still says clean: damaged between the two steps, the record's
/// word that it is new does not spare it the check.
#[test]
fn a_just_made_filesystem_damaged_before_the_mount_is_still_checked() {
    require_root();
    let t = TempDir::new("fresh-fsck");
    let d = LoopDev::new(&t, "disk", 64);
    let made = run("disk-ensure-fs", &["--device", &d.device], "").expect(0);
    assert_eq!(made.record()["fs"]["formatted"], true, "{}", made.stdout);
    sh_ok(&["debugfs", "-w", "-R", "clri <2>", &d.device]);
    sh_ok(&["debugfs", "-w", "-R", "ssv state 0", &d.device]);
    let mp = t.s("mnt");
    let r = run(
        "disk-mount",
        &["--no-fstab", "--mountpoint", &mp],
        &made.stdout,
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "fsck-failed", "{}", r.stderr);
    assert!(!is_mounted(&t.join("mnt")));
}

#[test]
fn busy_unmount_names_the_holder() {
    let (t, d) = formatted("busy");
    let mp = t.join("mnt");
    mount(&d.device, mp.to_str().unwrap(), &["--no-fstab"]).expect(0);
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .current_dir(&mp)
        .spawn()
        .unwrap();
    let by_device = ["--device", &d.device, "--mountpoint", mp.to_str().unwrap()];
    let r = run("disk-unmount", &by_device, "").expect(1);
    let _ = holder.kill();
    let _ = holder.wait();
    let msg = r.record()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&format!("pid {} (sleep) cwd", holder.id())),
        "{msg}"
    );
    assert!(
        is_mounted(&mp),
        "a busy mount is not detached lazily unless asked"
    );
    run("disk-unmount", &by_device, "").expect(0);
}

#[test]
fn seed_copies_what_the_mountpoint_held_onto_a_new_disk() {
    require_root();
    let t = TempDir::new("seed");
    let d = LoopDev::new(&t, "disk", 64);
    let mp = t.join("appscale");
    std::fs::create_dir_all(mp.join("apps")).unwrap();
    std::fs::write(mp.join("apps/app.tar.gz"), "image contents").unwrap();
    let rec = ensure(&d.device, &[]).expect(0).record();
    let r = run(
        "disk-mount",
        &["--seed", "--no-fstab", "--mountpoint", mp.to_str().unwrap()],
        &ndjson(&[rec]),
    )
    .expect(0);
    assert!(
        r.stderr.contains("seeded it with 1 entries"),
        "{}",
        r.stderr
    );
    assert!(is_mounted(&mp));
    assert_eq!(
        std::fs::read_to_string(mp.join("apps/app.tar.gz")).unwrap(),
        "image contents"
    );
    assert!(
        mp.join("lost+found").exists(),
        "it is the new disk that is visible"
    );
    assert!(!mp.join(".appscale-persist-seeding").exists());
    // A second mount of a disk holding data seeds nothing.
    run(
        "disk-unmount",
        &["--device", &d.device, "--mountpoint", mp.to_str().unwrap()],
        "",
    )
    .expect(0);
    std::fs::write(mp.join("apps/later"), "only in the image").unwrap();
    run(
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
    assert!(!mp.join("apps/later").exists());
}

#[test]
fn mountpoints_are_checked() {
    let (t, d) = formatted("mountpoints");
    for bad in ["/etc", "/", "relative/dir", "/opt/../etc", "/usr/"] {
        let r = mount(&d.device, bad, &["--no-fstab"]).expect(1);
        assert_eq!(r.record()["error"]["code"], "bad-mountpoint", "{bad}");
    }
    // Another device on the mountpoint, or ours mounted elsewhere: errors.
    let other = LoopDev::new(&t, "other", 64);
    ensure(&other.device, &[]).expect(0);
    let mp = t.join("mnt");
    mount(&other.device, mp.to_str().unwrap(), &["--no-fstab"]).expect(0);
    let r = mount(&d.device, mp.to_str().unwrap(), &["--no-fstab"]).expect(1);
    assert_eq!(r.record()["error"]["code"], "mountpoint-busy");
    let r = mount(&other.device, t.s("elsewhere").as_str(), &["--no-fstab"]).expect(1);
    assert_eq!(r.record()["error"]["code"], "mounted-elsewhere");
    // disk-unmount leaves another device's mount alone.
    let r = run(
        "disk-unmount",
        &["--device", &d.device, "--mountpoint", mp.to_str().unwrap()],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "mountpoint-other-device");
    assert!(is_mounted(&mp));
}

#[test]
fn a_record_naming_another_filesystem_is_not_mounted() {
    let (t, d) = formatted("identity");
    let rec = json!({"v": 1, "device": d.device, "fs": {"type": "ext4", "uuid": "00000000-1111-2222-3333-444444444444", "formatted": false}});
    let r = run(
        "disk-mount",
        &["--no-fstab", "--mountpoint", t.s("mnt").as_str()],
        &ndjson(&[rec]),
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "identity-mismatch");
}

#[test]
fn bad_input_does_nothing_and_errors_pass_through() {
    require_root();
    let t = TempDir::new("input");
    let d = LoopDev::new(&t, "disk", 64);
    let input = format!(
        "{}\n{{\"v\":1,\"device\":17}}\n",
        json!({"v": 1, "device": d.device})
    );
    let r = run("disk-ensure-fs", &[], &input).expect(2);
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("stdin line 2"), "{}", r.stderr);
    assert_eq!(blkid_type(&d.device), "", "nothing was formatted");

    let failed = json!({"v": 1, "device": d.device, "error": {"tool": "disk-attach", "code": "x", "message": "earlier"}, "custom": [1]});
    let ok = json!({"v": 1, "device": d.device, "node": "n2"});
    let r = run("disk-ensure-fs", &[], &ndjson(&[failed.clone(), ok])).expect(1);
    let recs = r.records();
    assert_eq!(recs[0], failed, "a failed record passes through untouched");
    assert_eq!(recs[1]["state"], "formatted");
    assert_eq!(blkid_type(&d.device), "ext4");

    let r = run("disk-ensure-fs", &[], "{\"v\": 2}\n").expect(2);
    assert!(r.stderr.contains("protocol version 2"), "{}", r.stderr);
}

#[test]
fn grow_fills_a_device_that_grew() {
    let (_t, d) = formatted("grow");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d.image)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    sh_ok(&["losetup", "--set-capacity", &d.device]);
    let r = ensure(&d.device, &["--grow", "--check"]).expect(0);
    assert!(r.stderr.contains("would grow"), "{}", r.stderr);
    let r = ensure(&d.device, &["--grow"]).expect(0).record();
    assert_eq!(r["changed"], true);
    let blocks = sh_ok(&["dumpe2fs", "-h", &d.device]);
    let count: u64 = blocks
        .lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let size: u64 = blocks
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count * size, 128 << 20);
    assert_eq!(
        ensure(&d.device, &["--grow"]).expect(0).record()["changed"],
        false
    );
}

#[test]
fn grow_fills_a_grown_xfs_device_through_a_temporary_mount() {
    require_root();
    let t = TempDir::new("grow-xfs");
    let d = LoopDev::new(&t, "disk", 320);
    ensure(&d.device, &["--fstype", "xfs"]).expect(0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d.image)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    sh_ok(&["losetup", "--set-capacity", &d.device]);
    let r = ensure(&d.device, &["--fstype", "xfs", "--grow"]).expect(0);
    assert_eq!(r.record()["changed"], true, "{}", r.stderr);
    let out = sh_ok(&[
        "xfs_db",
        "-r",
        "-c",
        "sb 0",
        "-c",
        "p dblocks blocksize",
        &d.device,
    ]);
    let field = |k: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        field("dblocks =") * field("blocksize =") > 500 << 20,
        "{out}"
    );
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains("/run/appscale-persist/tmp-"),
        "the temporary mount is gone"
    );
}

/// fstab is never seen half-written: a reader polling it while the tools
/// rewrite it many times sees only whole versions.
#[test]
fn fstab_writes_are_atomic() {
    require_root();
    let t = TempDir::new("atomic");
    let d = LoopDev::new(&t, "disk", 64);
    let rec = ensure(&d.device, &[]).expect(0).record();
    let fstab = t.join("fstab");
    // Large enough that a non-atomic write would be caught mid-way.
    let base: String = (0..20_000)
        .map(|i| format!("/dev/fake{i} /srv/fake{i} ext4 defaults 0 2\n"))
        .collect();
    std::fs::write(&fstab, &base).unwrap();
    let mp = t.join("mnt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (fstab, stop, base) = (fstab.clone(), stop.clone(), base.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&fstab).unwrap();
                assert!(
                    text.starts_with(&base),
                    "fstab was seen without its original lines ({} bytes)",
                    text.len()
                );
                let extra = &text[base.len()..];
                assert!(
                    extra.is_empty()
                        || (extra.ends_with("x-appscale-persist 0 2\n")
                            && extra.lines().count() == 1),
                    "partial entry: {extra:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    let input = ndjson(&[rec]);
    for _ in 0..10 {
        run(
            "disk-mount",
            &[
                "--mountpoint",
                mp.to_str().unwrap(),
                "--fstab",
                fstab.to_str().unwrap(),
            ],
            &input,
        )
        .expect(0);
        run_alone(
            "disk-unmount",
            &[
                "--mountpoint",
                mp.to_str().unwrap(),
                "--fstab",
                fstab.to_str().unwrap(),
                "--remove-fstab",
            ],
        )
        .expect(0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader saw a torn fstab");
    assert!(reads > 10, "the reader ran ({reads} reads)");
    let leftovers: Vec<_> = std::fs::read_dir(&t.path)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), base);
}

#[test]
fn many_disks_in_one_run_are_formatted_mounted_and_unmounted_together() {
    // One run works on its records concurrently: each still gets its own
    // blank check, mkfs, fsck and mount, and the fstab gets every line in
    // one rewrite. Children started by one record's thread must not hold
    // another record's device or filesystem (mkfs "apparently in use",
    // umount "busy"). That race is timing-bound: before children were
    // started one at a time (run.rs), about one run in eight of this test
    // failed with mkfs "apparently in use"; the flows saw both kinds.
    require_root();
    let t = TempDir::new("many");
    let disks: Vec<LoopDev> = (0..12)
        .map(|i| LoopDev::new(&t, &format!("d{i}"), 32))
        .collect();
    let fstab = t.s("fstab");
    std::fs::write(&fstab, "# kept\n").unwrap();
    let records: Vec<Value> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"v": 1, "node": format!("n{i}"), "device": d.device, "mountpoint": t.s(&format!("mnt/{i}"))}))
        .collect();
    let made = run("disk-ensure-fs", &[], &ndjson(&records))
        .expect(0)
        .records();
    assert_eq!(made.len(), 12);
    assert!(made.iter().all(|r| r["state"] == "formatted"), "{made:?}");
    let mounted = run("disk-mount", &["--fstab", &fstab], &ndjson(&made))
        .expect(0)
        .records();
    assert!(
        mounted.iter().all(|r| r["state"] == "mounted"),
        "{mounted:?}"
    );
    for i in 0..12 {
        assert!(is_mounted(&t.join(&format!("mnt/{i}"))));
    }
    let tab = std::fs::read_to_string(&fstab).unwrap();
    assert!(tab.starts_with("# kept\n"), "{tab}");
    assert_eq!(tab.matches("x-appscale-persist").count(), 12, "{tab}");
    // A rerun changes nothing.
    let again = run("disk-mount", &["--fstab", &fstab], &ndjson(&mounted))
        .expect(0)
        .records();
    assert!(again.iter().all(|r| r["changed"] == false), "{again:?}");
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), tab);
    let gone = run(
        "disk-unmount",
        &["--fstab", &fstab, "--remove-fstab"],
        &ndjson(&again),
    )
    .expect(0)
    .records();
    assert!(gone.iter().all(|r| r["state"] == "unmounted"), "{gone:?}");
    assert_eq!(std::fs::read_to_string(&fstab).unwrap(), "# kept\n");
}
