//! The up and down flows (scripts/up, scripts/down) on the local provider,
//! end to end: data survives down and up, reruns change nothing, one bad
//! disk does not stop the others, and a flow killed with SIGKILL at any step
//! converges on the next run with nothing lost; so do scripts/backup,
//! scripts/restore and `up --grow`, with nothing left frozen, no
//! filesystem with errors, and nothing of theirs left behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// One local deployment in a scratch directory.
struct Deployment {
    dir: TempDir,
    file: PathBuf,
    /// The provider options of `up` (after `--`).
    provider: Vec<&'static str>,
}

impl Deployment {
    fn new(tag: &str, nodes: usize) -> Deployment {
        let dir = TempDir::new(tag);
        let names: Vec<String> = (0..nodes).map(|i| format!("data-{i}")).collect();
        let file = dir.join("AppScalefile");
        std::fs::write(
            &file,
            format!(
                "infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: {nodes}\n    disks: [{}]\n",
                names.join(", ")
            ),
        )
        .unwrap();
        Deployment {
            dir,
            file,
            provider: vec!["--size", "64M"],
        }
    }

    fn mnt(&self, node: usize) -> PathBuf {
        self.dir.join(&format!("mnt/node-{node}"))
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("APPSCALE_PERSIST_STATE_DIR".into(), self.dir.s("disks")),
            (
                "APPSCALE_PERSIST_BIN".into(),
                bin_dir().display().to_string(),
            ),
        ]
    }

    /// The flow `name` with its options; `setsid` runs it in its own
    /// process group (so it can be killed whole).
    fn script(&self, name: &str, bin: Option<&Path>, extra: &[&str], setsid: bool) -> Command {
        let script = repo().join("scripts").join(name);
        let mut c = if setsid {
            let mut c = Command::new("setsid");
            c.arg("--wait").arg(script);
            c
        } else {
            Command::new(script)
        };
        if name != "backup" {
            c.arg("--mountpoint").arg(self.dir.s("mnt/{node}"));
        }
        if name == "up" || name == "restore" {
            c.arg("--fstab").arg(self.dir.join("fstab"));
        }
        c.args(extra).arg(&self.file);
        if name == "up" {
            c.arg("--").args(&self.provider);
        }
        for (k, v) in self.env() {
            c.env(k, v);
        }
        if let Some(b) = bin {
            c.env("APPSCALE_PERSIST_BIN", b);
        }
        c
    }

    fn flow_with(&self, name: &str, extra: &[&str]) -> Run {
        finish(self.script(name, None, extra, false).output().unwrap())
    }

    fn flow(&self, name: &str) -> Run {
        self.flow_with(name, &[])
    }
}

#[test]
fn data_survives_down_and_up_and_reruns_change_nothing() {
    require_root();
    let d = Deployment::new("survive", 1);
    let r = d.flow("up").expect(0);
    let rec = r.record();
    assert_eq!(rec["state"], "mounted");
    assert!(
        r.stderr.contains("NODE    DISK    DEVICE"),
        "summary table on stderr: {}",
        r.stderr
    );
    assert!(is_mounted(&d.mnt(0)));
    std::fs::write(d.mnt(0).join("precious"), "cassandra data").unwrap();

    let again = d.flow("up").expect(0);
    assert!(
        all_unchanged(&again.records()),
        "rerun of up is a no-op: {}",
        again.stdout
    );

    let r = d.flow("down").expect(0);
    assert_eq!(r.record()["state"], "detached");
    assert!(!is_mounted(&d.mnt(0)));
    assert!(
        sh_ok(&["losetup", "--list", "--noheadings", "--output", "BACK-FILE"])
            .lines()
            .all(|l| !l.contains(&d.dir.s("disks")))
    );
    let again = d.flow("down").expect(0);
    assert!(all_unchanged(&again.records()), "rerun of down is a no-op");

    d.flow("up").expect(0);
    assert_eq!(
        std::fs::read_to_string(d.mnt(0).join("precious")).unwrap(),
        "cassandra data"
    );
    d.flow("down").expect(0);
}

/// `scripts/down --keep-attached` (AppScale's plain `appscale down`, which
/// keeps the machines): the disk is unmounted and stays attached, the
/// summary says so, and the next up only mounts it again, data and all.
#[test]
fn down_keep_attached_unmounts_only() {
    require_root();
    let d = Deployment::new("keep-attached", 1);
    d.flow("up").expect(0);
    std::fs::write(d.mnt(0).join("precious"), "zookeeper data").unwrap();
    let attached = || {
        sh_ok(&["losetup", "--list", "--noheadings", "--output", "BACK-FILE"])
            .lines()
            .any(|l| l.contains(&d.dir.s("disks")))
    };

    let r = d.flow_with("down", &["--keep-attached"]).expect(0);
    assert_eq!(r.record()["state"], "unmounted", "{}", r.stdout);
    assert!(
        r.stderr
            .contains("down (unmounted only, disks kept attached)"),
        "{}",
        r.stderr
    );
    assert!(!is_mounted(&d.mnt(0)));
    assert!(attached(), "the disk stays attached");
    // Rerun: nothing to do.
    let again = d.flow_with("down", &["--keep-attached"]).expect(0);
    assert!(all_unchanged(&again.records()), "{}", again.stdout);

    let up = d.flow("up").expect(0);
    let steps: Vec<(String, bool)> = up.record()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tool"].as_str().unwrap().to_string(),
                s["changed"] == true,
            )
        })
        .collect();
    assert!(
        steps
            .iter()
            .all(|(tool, changed)| !changed || tool == "disk-mount"),
        "only the mount changes: {steps:?}"
    );
    assert_eq!(
        std::fs::read_to_string(d.mnt(0).join("precious")).unwrap(),
        "zookeeper data"
    );
    let r = d.flow("down").expect(0);
    assert_eq!(r.record()["state"], "detached");
    assert!(!attached());
}

/// The size of the filesystem mounted at `dir`, in bytes.
fn fs_size(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks() * st.fragment_size()
}

/// The size the loop device bound to `image` shows, in bytes.
fn loop_size(image: &Path) -> u64 {
    let dev = sh_ok(&["losetup", "-j", image.to_str().unwrap()]);
    let lo = dev
        .split(':')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{lo}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sectors * 512
}

/// `up --grow` grows the image (the loop device bound to it refreshed),
/// then the filesystem, with the data intact; without --grow a larger
/// size is reported; a smaller one is never applied. The filesystem is
/// grown offline here: this container lacks CAP_SYS_RESOURCE, which
/// ext4's online resize needs (disk-ensure-fs grows a mounted one online
/// where it may).
#[test]
fn up_grow_grows_the_image_the_loop_device_and_the_filesystem_never_shrinks() {
    require_root();
    let mut d = Deployment::new("grow", 1);
    d.flow("up").expect(0);
    let image = d.dir.join("disks/data-0.img");
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.mnt(0).join("precious"), &data).unwrap();
    let before = fs_size(&d.mnt(0));
    assert!(before < 64 << 20, "{before}");
    // Unmounted, still attached: the loop device is refreshed in place.
    let mnt = d.mnt(0).display().to_string();
    let fstab = d.dir.s("fstab");
    run_alone("disk-unmount", &["--mountpoint", &mnt, "--fstab", &fstab]).expect(0);
    assert_eq!(loop_size(&image), 64 << 20);

    // A larger size without --grow: reported, nothing changed.
    d.provider = vec!["--size", "128M"];
    let r = d.flow("up");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.record()["error"]["code"], "size-mismatch", "{}", r.stdout);
    let msg = r.record()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("--grow"), "{msg}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 << 20);

    // With --grow: the image, the loop device, then the filesystem.
    let r = d.flow_with("up", &["--grow"]).expect(0);
    let rec = r.record();
    assert_eq!(rec["state"], "mounted", "{}", r.stdout);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 128 << 20);
    assert_eq!(
        loop_size(&image),
        128 << 20,
        "the loop device sees the new size"
    );
    let after = fs_size(&d.mnt(0));
    assert!(
        after > 100 << 20,
        "the filesystem grew: {before} -> {after}"
    );
    assert!(
        std::fs::read(d.mnt(0).join("precious")).unwrap() == data,
        "data intact"
    );

    // Grown once: a rerun changes nothing.
    let again = d.flow_with("up", &["--grow"]).expect(0);
    assert!(all_unchanged(&again.records()), "{}", again.stdout);

    // Never shrunk, even with --grow.
    d.provider = vec!["--size", "64M"];
    let r = d.flow_with("up", &["--grow"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.record()["error"]["code"], "size-mismatch", "{}", r.stdout);
    let msg = r.record()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("never shrunk"), "{msg}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 128 << 20);
    assert!(
        std::fs::read(d.mnt(0).join("precious")).unwrap() == data,
        "data intact"
    );

    // Detached, grown again: the image alone, then attached at its size.
    d.flow("down").expect(0);
    d.provider = vec!["--size", "192M"];
    d.flow_with("up", &["--grow"]).expect(0);
    assert_eq!(loop_size(&image), 192 << 20);
    assert!(fs_size(&d.mnt(0)) > 160 << 20);
    assert!(
        std::fs::read(d.mnt(0).join("precious")).unwrap() == data,
        "data intact"
    );
    d.flow("down").expect(0);
}

#[test]
fn one_bad_disk_does_not_stop_the_others() {
    require_root();
    let d = Deployment::new("isolation", 3);
    // node-1's image exists and holds data nobody recognises.
    std::fs::create_dir_all(d.dir.join("disks")).unwrap();
    let bad = d.dir.join("disks/data-1.img");
    junk_image(&bad, 64);
    let before = digest(&bad);

    let r = d.flow("up");
    assert_eq!(
        r.code, 3,
        "the refusal is the flow's exit status (pipefail): {}",
        r.stderr
    );
    let recs = r.records();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["state"], "mounted");
    assert_eq!(recs[1]["error"]["code"], "not-blank");
    assert_eq!(recs[1]["error"]["tool"], "disk-ensure-fs");
    assert_eq!(recs[2]["state"], "mounted");
    assert!(r.stderr.contains("FAILED(disk-ensure-fs)"), "{}", r.stderr);
    assert!(r.stderr.contains("node-1: disk-ensure-fs:"), "{}", r.stderr);
    assert!(is_mounted(&d.mnt(0)) && is_mounted(&d.mnt(2)) && !is_mounted(&d.mnt(1)));
    d.flow("down").expect(0);
    assert_eq!(digest(&bad), before, "the refused disk is untouched");
}

/// A directory of the tools where `step` is a wrapper that kills the whole
/// flow (SIGKILL to its process group) in `mode`: `after` the real tool has
/// done its work, or `mid`-way, `delay` seconds into it.
fn killing_bin(t: &TempDir, step: &str, mode: &str, delay: &str) -> PathBuf {
    let dir = t.join(&format!("bin-{step}-{mode}-{delay}"));
    std::fs::create_dir_all(&dir).unwrap();
    for &tool in TOOLS {
        let real = bin_dir().join(tool);
        let link = dir.join(tool);
        if tool != step {
            std::os::unix::fs::symlink(&real, &link).unwrap();
            continue;
        }
        let run = match mode {
            "after" => format!("\"{}\" \"$@\"", real.display()),
            // An asynchronous command's stdin is /dev/null (and `<&0`
            // dups that): the records go through fd 3.
            _ => format!(
                "exec 3<&0\n\"{}\" \"$@\" <&3 &\nsleep {delay}",
                real.display()
            ),
        };
        std::fs::write(
            &link,
            // `kill -9 -PGID`: dash's kill takes no `--` (with one it
            // killed nothing, and the flows went on).
            format!("#!/bin/sh\n{run}\nkill -9 -$(cut -d' ' -f5 /proc/$$/stat)\n"),
        )
        .unwrap();
        std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Runs a flow in its own process group with the killing tools; it must die.
fn killed(d: &Deployment, flow: &str, bin: &Path) {
    let status = d
        .script(flow, Some(bin), &[], true)
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "the {flow} flow was killed");
}

#[test]
fn a_killed_up_converges_on_rerun_with_nothing_lost() {
    require_root();
    let t = TempDir::new("kill-up-bins");
    let steps = ["disk-create", "disk-attach", "disk-ensure-fs", "disk-mount"];
    let modes = [("after", "0"), ("mid", "0.005"), ("mid", "0.02")];
    for step in steps {
        for (mode, delay) in modes {
            let bin = killing_bin(&t, step, mode, delay);
            let what = format!("{step} {mode} {delay}");
            // A first up, killed: the image holds files to seed onto it.
            let d = Deployment::new("kill-up", 2);
            for n in 0..2 {
                std::fs::create_dir_all(d.mnt(n).join("apps")).unwrap();
                for i in 0..200 {
                    std::fs::write(d.mnt(n).join(format!("apps/app{i}")), format!("app {i}"))
                        .unwrap();
                }
            }
            killed(&d, "up", &bin);
            let r = d.flow("up");
            assert_eq!(
                r.code, 0,
                "{what}: rerun after a killed first up: {}",
                r.stderr
            );
            for n in 0..2 {
                assert!(is_mounted(&d.mnt(n)), "{what}");
                assert_eq!(
                    std::fs::read_to_string(d.mnt(n).join("apps/app199")).unwrap(),
                    "app 199",
                    "{what}: seeded"
                );
                std::fs::write(d.mnt(n).join("precious"), format!("node {n}")).unwrap();
            }
            // A later up, killed after down: the data must be there after.
            d.flow("down").expect(0);
            killed(&d, "up", &bin);
            d.flow("up").expect(0);
            for n in 0..2 {
                assert_eq!(
                    std::fs::read_to_string(d.mnt(n).join("precious")).unwrap(),
                    format!("node {n}"),
                    "{what}"
                );
            }
            let fstab = std::fs::read_to_string(d.dir.join("fstab")).unwrap();
            assert_eq!(
                fstab.lines().count(),
                2,
                "{what}: one fstab entry per node: {fstab}"
            );
            d.flow("down").expect(0);
        }
    }
}

#[test]
fn a_killed_down_converges_on_rerun_with_nothing_lost() {
    require_root();
    let t = TempDir::new("kill-down-bins");
    for step in ["disk-unmount", "disk-detach"] {
        for (mode, delay) in [("after", "0"), ("mid", "0.005"), ("mid", "0.02")] {
            let what = format!("{step} {mode} {delay}");
            let bin = killing_bin(&t, step, mode, delay);
            let d = Deployment::new("kill-down", 2);
            d.flow("up").expect(0);
            for n in 0..2 {
                std::fs::write(d.mnt(n).join("precious"), format!("node {n}")).unwrap();
            }
            killed(&d, "down", &bin);
            d.flow("down").expect(0);
            for n in 0..2 {
                assert!(!is_mounted(&d.mnt(n)), "{what}");
            }
            d.flow("up").expect(0);
            for n in 0..2 {
                assert_eq!(
                    std::fs::read_to_string(d.mnt(n).join("precious")).unwrap(),
                    format!("node {n}"),
                    "{what}"
                );
            }
            d.flow("down").expect(0);
        }
    }
}

#[test]
fn check_mode_flow_changes_nothing() {
    require_root();
    let d = Deployment::new("check", 1);
    let r = d.flow_with("up", &["--check"]).expect(0);
    let recs = r.records();
    assert_eq!(recs[0]["state"], "mounted", "would be mounted");
    assert_eq!(recs[0]["check"], true);
    assert!(
        recs[0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["changed"] == true)
    );
    assert!(
        !d.dir.join("disks/data-0.img").exists(),
        "no image was created"
    );
    assert!(!d.mnt(0).exists() && !d.dir.join("fstab").exists());
}

#[test]
fn the_static_provider_uses_an_existing_device() {
    require_root();
    let t = TempDir::new("static");
    // A loop device stands in for a VirtualBox or bare-metal disk.
    let d = LoopDev::new(&t, "sdb", 64);
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!("ips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 10.0.0.5\n    disks: {}\n", d.device),
    )
    .unwrap();
    let r = flow("up", &t, &file, &[], &[]).expect(0).record();
    assert_eq!(
        (
            r["provider"].as_str(),
            r["node"].as_str(),
            r["state"].as_str()
        ),
        (Some("static"), Some("10.0.0.5"), Some("mounted"))
    );
    assert_eq!(r["device"], d.device.as_str());
    let mnt = t.join("mnt/10.0.0.5");
    std::fs::write(mnt.join("kept"), "yes").unwrap();
    // Detach refuses a mounted static disk, as any other.
    let r = run(
        "disk-detach",
        &["--provider", "static", "--disk", &d.device],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "mounted");
    let r = flow("down", &t, &file, &[], &[]).expect(0).record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("detached"), Some(false))
    );
    assert!(!is_mounted(&mnt));
    flow("up", &t, &file, &[], &[]).expect(0);
    assert_eq!(std::fs::read_to_string(mnt.join("kept")).unwrap(), "yes");
    flow("down", &t, &file, &[], &[]).expect(0);
    // A device that is not there is a clear error, not a guess.
    let r = run(
        "disk-attach",
        &["--provider", "static", "--disk", "/dev/no-such-disk"],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["error"]["code"], "no-such-disk");
}

/// Writes `mib` MiB that compress poorly (nothing repeats within a MiB, no
/// two pages alike) into `node`'s mount, and flushes.
fn fill(d: &Deployment, node: usize, name: &str, mib: usize) -> Vec<u8> {
    // One MiB of pattern, then copies of it with each 4 KiB page's first
    // bytes made its own: no two pages alike, and made at memcpy speed (a
    // byte at a time, 24 MiB took a CPU-second in this debug build).
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect();
    let mut data = Vec::with_capacity(mib << 20);
    for _ in 0..mib {
        data.extend_from_slice(&block);
    }
    for (page, bytes) in data.chunks_mut(4096).enumerate() {
        bytes[..8].copy_from_slice(&(page as u64).to_le_bytes());
    }
    let path = d.mnt(node).join(name);
    std::fs::write(&path, &data).unwrap();
    sh_ok(&["sync", "-f", path.to_str().unwrap()]);
    data
}

/// Nothing a killed run left behind remains once the next has run: no
/// temporary file anywhere in the state directory, every snapshot image
/// with its metadata and every metadata file with its image, no freeze
/// recorded for a filesystem of this deployment.
fn assert_nothing_left(d: &Deployment, what: &str) {
    let disks = d.dir.join("disks");
    let mut files = Vec::new();
    for dir in [disks.clone(), disks.join("snapshots")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_file() {
                files.push((dir.clone(), e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    for (dir, f) in &files {
        assert!(
            !f.ends_with(".tmp"),
            "{what}: {} left",
            dir.join(f).display()
        );
        if dir.ends_with("snapshots") {
            let (id, other) = match (f.strip_suffix(".img"), f.strip_suffix(".json")) {
                (Some(id), _) => (id, format!("{id}.json")),
                (_, Some(id)) => (id, format!("{id}.img")),
                _ => panic!("{what}: {f} in the snapshot directory"),
            };
            assert!(
                dir.join(&other).exists(),
                "{what}: {id} is half there ({f})"
            );
        }
    }
    let here = d.dir.path.display().to_string();
    for m in std::fs::read_dir("/run/appscale-persist/frozen")
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(m.path()).unwrap_or_default();
        assert!(
            !text.contains(&here),
            "{what}: a freeze is still recorded: {text}"
        );
    }
}

/// Every image of the deployment, snapshots included, holds a filesystem
/// without errors (`e2fsck -fn`); the disks are down (detached).
fn assert_whole(d: &Deployment, what: &str) {
    let disks = d.dir.join("disks");
    for dir in [disks.clone(), disks.join("snapshots")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "img") {
                let r = sh(&["e2fsck", "-fn", p.to_str().unwrap()]);
                assert_eq!(
                    r.code,
                    0,
                    "{what}: {}: {}{}",
                    p.display(),
                    r.stdout,
                    r.stderr
                );
            }
        }
    }
}

/// Whether both nodes' filesystems take writes (a freeze left behind would
/// hang them).
fn assert_not_frozen(d: &Deployment, what: &str) {
    for n in 0..2 {
        let _thaw = ThawOnDrop(d.mnt(n));
        assert!(accepts_writes(&d.mnt(n), 10), "{what}: node {n} is frozen");
    }
}

/// scripts/backup killed with SIGKILL at any moment of disk-snapshot (a
/// filesystem frozen mid-copy, or not yet frozen, or done; and, every
/// time, right as it says it froze one): the next backup thaws what was
/// left frozen, reaps the partial copy, takes its snapshots and exits 0;
/// the data and every filesystem are whole.
#[test]
fn a_killed_backup_converges_on_rerun_with_nothing_frozen_or_left() {
    use nix::sys::signal::Signal;
    require_root();
    let t = TempDir::new("kill-backup-bins");
    let cases = [
        ("at the freeze", "0"),
        ("after", "0"),
        ("mid", "0.02"),
        ("mid", "0.05"),
        ("mid", "0.08"),
        ("mid", "0.12"),
        ("mid", "0.16"),
    ];
    let mut thawed = 0;
    for (mode, delay) in cases {
        let what = format!("disk-snapshot {mode} {delay}");
        let d = Deployment::new("kill-backup", 2);
        d.flow("up").expect(0);
        let data: Vec<Vec<u8>> = (0..2).map(|n| fill(&d, n, "precious", 24)).collect();
        if mode == "at the freeze" {
            // The whole flow's process group, killed as disk-snapshot
            // says it froze the first filesystem.
            let mut cmd = d.script("backup", None, &[], false);
            cmd.env("APPSCALE_PERSIST_LOG", "debug");
            let r = group_signals_at(cmd, "", "froze ", Duration::ZERO, &[Signal::SIGKILL]);
            assert!(r.stderr.contains("froze "), "{what}: {}", r.stderr);
        } else {
            killed(&d, "backup", &killing_bin(&t, "disk-snapshot", mode, delay));
        }
        let r = d.flow("backup");
        assert_eq!(r.code, 0, "{what}: rerun: {}", r.stderr);
        thawed += usize::from(r.stderr.contains("thawed "));
        for rec in r.records() {
            assert_eq!(rec["snapshot"]["state"], "completed", "{what}: {rec}");
        }
        assert_not_frozen(&d, &what);
        assert_nothing_left(&d, &what);
        for (n, data) in data.iter().enumerate() {
            assert!(
                std::fs::read(d.mnt(n).join("precious")).unwrap() == *data,
                "{what}"
            );
        }
        d.flow("down").expect(0);
        assert_whole(&d, &what);
    }
    assert!(thawed >= 1, "a kill left a freeze, and the rerun thawed it");
}

/// scripts/restore killed with SIGKILL at any step (the copy of
/// disk-create --from-snapshot mid-way, the attach, the blank check, the
/// mount): the next restore makes the one restored disk per node (no
/// second, no half-made one), with the snapshot's data, and exits 0;
/// every filesystem is whole.
#[test]
fn a_killed_restore_converges_on_rerun_with_nothing_left() {
    require_root();
    let t = TempDir::new("kill-restore-bins");
    for (step, mode, delay) in [
        ("disk-create", "mid", "0.01"),
        ("disk-create", "mid", "0.05"),
        ("disk-create", "after", "0"),
        ("disk-attach", "after", "0"),
        ("disk-ensure-fs", "mid", "0.01"),
        ("disk-mount", "mid", "0.01"),
    ] {
        let what = format!("{step} {mode} {delay}");
        let bin = killing_bin(&t, step, mode, delay);
        let d = Deployment::new("kill-restore", 2);
        d.flow("up").expect(0);
        let data: Vec<Vec<u8>> = (0..2).map(|n| fill(&d, n, "precious", 24)).collect();
        d.flow("backup").expect(0);
        d.flow("down").expect(0);
        killed(&d, "restore", &bin);
        let r = d.flow("restore");
        assert_eq!(r.code, 0, "{what}: rerun: {}", r.stderr);
        let recs = r.records();
        for (n, rec) in recs.iter().enumerate() {
            assert_eq!(
                rec["restored_from"]["disk"],
                format!("data-{n}"),
                "{what}: {rec}"
            );
            assert!(
                std::fs::read(d.mnt(n).join("precious")).unwrap() == data[n],
                "{what}"
            );
        }
        assert_nothing_left(&d, &what);
        let images: Vec<String> = std::fs::read_dir(d.dir.join("disks"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".img"))
            .collect();
        assert_eq!(
            images.len(),
            4,
            "{what}: two disks, two restored: {images:?}"
        );
        let down = run(
            "disk-unmount",
            &["--fstab", &d.dir.s("fstab"), "--remove-fstab"],
            &r.stdout,
        )
        .expect(0);
        let state = d.dir.s("disks");
        run("disk-detach", &["--state-dir", &state], &down.stdout).expect(0);
        assert_whole(&d, &what);
    }
}

/// `scripts/up --grow` killed with SIGKILL while disk-ensure-fs grows the
/// filesystem offline (in e2fsck, or in resize2fs, which is never killed
/// and finishes on its own): the next `up --grow` waits for a resize2fs
/// still running, then finds the filesystem grown (or grows it), mounts it
/// with the data, and the filesystem has no errors.
#[test]
fn a_killed_grow_converges_on_rerun_with_the_filesystem_whole() {
    require_root();
    let t = TempDir::new("kill-grow-bins");
    for delay in ["0.05", "0.3", "0.8"] {
        let what = format!("disk-ensure-fs --grow mid {delay}");
        let bin = killing_bin(&t, "disk-ensure-fs", "mid", delay);
        let mut d = Deployment::new("kill-grow", 2);
        d.flow("up").expect(0);
        let data: Vec<Vec<u8>> = (0..2).map(|n| fill(&d, n, "precious", 8)).collect();
        // Unmounted, still attached: grown offline.
        d.flow_with("down", &["--keep-attached"]).expect(0);
        d.provider = vec!["--size", "48G"];
        let status = d
            .script("up", Some(&bin), &["--grow"], true)
            .output()
            .unwrap()
            .status;
        assert!(!status.success(), "{what}: killed");
        let r = d.flow_with("up", &["--grow"]);
        assert_eq!(r.code, 0, "{what}: rerun: {}", r.stderr);
        for (n, data) in data.iter().enumerate() {
            let st = nix::sys::statvfs::statvfs(&d.mnt(n)).unwrap();
            assert!(
                st.blocks() * st.fragment_size() > 40 << 30,
                "{what}: node {n} grown"
            );
            assert!(
                std::fs::read(d.mnt(n).join("precious")).unwrap() == *data,
                "{what}"
            );
        }
        assert_nothing_left(&d, &what);
        d.flow("down").expect(0);
        assert_whole(&d, &what);
    }
}
