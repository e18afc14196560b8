//! The recipes of docs/appscale.md, run: the boot unit's own command line
//! (contrib/systemd/appscale-persist.service, as systemd would run it) on
//! a cluster node that finds itself by its address, and on cloud nodes that
//! all share one user-data (no per-node configuration), after the
//! controller's half of `up` (`scripts/up --cloud-only`, with AppScale's
//! record of its nodes); and the two halves of `down`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// The boot unit's script, as bash receives it from systemd (`$$` is a
/// literal `$`).
fn unit_script() -> String {
    let unit =
        std::fs::read_to_string(repo().join("contrib/systemd/appscale-persist.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let script = exec
        .split_once(" -c '")
        .and_then(|(_, s)| s.strip_suffix('\''))
        .expect("a single-quoted script");
    script.replace("$$", "$")
}

/// A directory where the installed names of the flows lead to this
/// checkout's scripts (as scripts/install links them).
fn flows_bin(t: &TempDir) -> PathBuf {
    let dir = t.join("flows");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["up", "down", "status", "backup", "restore"] {
        if dir.join(format!("appscale-persist-{f}")).exists() {
            continue;
        }
        std::os::unix::fs::symlink(
            repo().join("scripts").join(f),
            dir.join(format!("appscale-persist-{f}")),
        )
        .unwrap();
    }
    dir
}

/// Runs the boot unit's command with node.env's `env` (and the test's own
/// variables), as systemd would: `bash -o pipefail -c SCRIPT`.
fn boot(t: &TempDir, env: &[(&str, &str)]) -> Run {
    let path = format!(
        "{}:{}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin",
        flows_bin(t).display(),
        bin_dir().display()
    );
    let mut c = Command::new("/bin/bash");
    c.args(["-o", "pipefail", "-c", &unit_script()])
        .env_clear()
        .env("PATH", path)
        .env("APPSCALE_PERSIST_BIN", bin_dir());
    for (k, v) in env {
        c.env(k, v);
    }
    finish(c.output().unwrap())
}

/// The records in `fstab`'s entries of ours.
fn our_entries(fstab: &Path) -> usize {
    std::fs::read_to_string(fstab)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("x-appscale-persist"))
        .count()
}

/// Cluster mode (VirtualBox, bare metal: nodes by IP, disks by device
/// path): one node.env for every node; each finds itself by its address
/// and mounts its own disk; the other node's disk is not touched.
#[test]
fn cluster_mode_the_boot_unit_finds_its_node_by_address() {
    require_root();
    let t = TempDir::new("appscale-cluster");
    let mine = LoopDev::new(&t, "mine", 64);
    let theirs = LoopDev::new(&t, "theirs", 64);
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!(
            "ips_layout:\n  - roles: [master, appengine, database, zookeeper]\n    nodes: 127.0.0.1\n    disks: {}\n  - roles: [appengine, database]\n    nodes: 192.0.2.250\n    disks: {}\n",
            mine.device, theirs.device
        ),
    )
    .unwrap();
    let mnt = t.s("mnt");
    let fstab = t.s("fstab");
    let env = [
        ("APPSCALEFILE", file.to_str().unwrap()),
        ("APPSCALE_MOUNTPOINT", mnt.as_str()),
        ("APPSCALE_FSTAB", fstab.as_str()),
        ("APPSCALE_PERSIST_WAIT", "20"),
    ];
    let r = boot(&t, &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("this machine is 127.0.0.1 (by this machine's address)"),
        "{}",
        r.stderr
    );
    assert!(is_mounted(Path::new(&mnt)));
    assert_eq!(our_entries(Path::new(&fstab)), 1);
    let probe = sh(&["blkid", "-p", &theirs.device]);
    assert_ne!(
        probe.code, 0,
        "the other node's disk is untouched: {}",
        probe.stdout
    );
    // At the next boot the same command finds it all in place.
    sh_ok(&["umount", &mnt]);
    boot(&t, &env).expect(0);
    assert!(is_mounted(Path::new(&mnt)));
    // The node's half of down.
    let r = run_env(
        repo().join("scripts/down").to_str().unwrap(),
        &[
            "--node-only",
            "--node",
            "auto",
            "--mountpoint",
            &mnt,
            "--fstab",
            &fstab,
            file.to_str().unwrap(),
        ],
        "",
        &[("APPSCALE_PERSIST_BIN", bin_dir().to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!is_mounted(Path::new(&mnt)));
}

fn instances(moto: &Server, n: usize) -> Vec<String> {
    moto.ec2_admin(&["run-instances", "us-east-1b", &n.to_string()])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// A loop device standing in for EBS volume `vol` under the test's dev
/// root, as udev links an NVMe volume.
fn stand_in(t: &TempDir, root: &str, vol: &str) -> LoopDev {
    let d = LoopDev::new(t, vol, 1024);
    let by_id = Path::new(root).join("disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    std::os::unix::fs::symlink(
        &d.device,
        by_id.join(format!(
            "nvme-Amazon_Elastic_Block_Store_{}",
            vol.replacen('-', "", 1)
        )),
    )
    .unwrap();
    d
}

/// Cloud mode, one image and one user-data for every node: the controller
/// makes the disks before AppScale starts the machines, attaches each to
/// its node's instance once AppScale's record says which instance is
/// which; each node's boot unit, with no node of its own configured, finds
/// its node by the volume attached to it and mounts it. A node whose
/// instance carries the tag appscale-persist:node finds itself by the tag,
/// and attaches its own disk at boot.
#[test]
fn cloud_mode_one_user_data_serves_every_node() {
    require_root();
    let moto = Server::moto();
    let url = moto.url();
    let t = TempDir::new("appscale-cloud");
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!(
            "infrastructure: ec2\nkeyname: dep\nmachine: ami-0123abcd\ninstance_type: m5.large\nzone: us-east-1b\nEC2_URL: {url}\nips_layout:\n  - roles: [master, appengine, database, zookeeper]\n    nodes: 1\n    disks: data-0\n  - roles: [appengine, database]\n    nodes: 1\n    disks: data-1\n"
        ),
    )
    .unwrap();
    let aws = aws_env();
    let bin = bin_dir().display().to_string();
    let mut env: Vec<(&str, &str)> = aws.clone();
    env.push(("APPSCALE_PERSIST_BIN", bin.as_str()));
    let up = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend([file.to_str().unwrap(), "--", "--size", "1G"]);
        run_env(repo().join("scripts/up").to_str().unwrap(), &a, "", &env)
    };

    // 1. Before `appscale up`: the disks, made and tagged for their nodes.
    let r = up(&["--cloud-only"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let made = r.records();
    assert_eq!(made.len(), 2);
    assert!(made.iter().all(|m| m["state"] == "created"), "{made:?}");
    let vol: Vec<String> = made
        .iter()
        .map(|m| m["disk_id"].as_str().unwrap().to_string())
        .collect();

    // 2. AppScale starts the machines, and writes its record of them.
    let ids = instances(&moto, 2);
    let locations = t.join("locations-dep.json");
    std::fs::write(
        &locations,
        json!({"node_info": [
            {"instance_id": ids[0], "public_ip": "203.0.113.10", "private_ip": "10.0.0.10", "jobs": ["master", "appengine", "database", "zookeeper"]},
            {"instance_id": ids[1], "public_ip": "203.0.113.11", "private_ip": "10.0.0.11", "jobs": ["appengine", "database"]},
        ]})
        .to_string(),
    )
    .unwrap();
    // node-1's instance is tagged instead: it attaches its own disk.
    moto.ec2_admin(&["tag", &ids[1], "appscale-persist:node", "node-1"]);
    let partial = t.join("locations-partial.json");
    std::fs::write(
        &partial,
        json!({"node_info": [{"instance_id": ids[0], "private_ip": "10.0.0.10", "jobs": ["master", "appengine", "database", "zookeeper"]}]}).to_string(),
    )
    .unwrap();

    // 3. The controller's half again: node-0's disk attached to its instance.
    let r = up(&["--cloud-only", "--locations", partial.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        moto.ec2_admin(&["volume", &vol[0]])["attachments"][0]["instance"],
        ids[0].as_str()
    );
    assert!(
        moto.ec2_admin(&["volume", &vol[1]])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // 4. Each node boots with the same node.env.
    for (i, id) in ids.iter().enumerate() {
        let imds = Server::python("fake_imds.py", &[id, "us-east-1b"]);
        let root = t.s(&format!("dev-{i}"));
        let _dev = stand_in(&t, &root, &vol[i]);
        let mnt = t.s(&format!("mnt-{i}"));
        let fstab = t.s(&format!("fstab-{i}"));
        let imds_url = imds.url();
        let mut e: Vec<(&str, &str)> = aws.clone();
        e.extend([
            ("APPSCALEFILE", file.to_str().unwrap()),
            ("APPSCALE_MOUNTPOINT", mnt.as_str()),
            ("APPSCALE_FSTAB", fstab.as_str()),
            ("APPSCALE_PERSIST_WAIT", "60"),
            ("APPSCALE_PERSIST_METADATA_ENDPOINT", imds_url.as_str()),
            ("APPSCALE_PERSIST_DEV_ROOT", root.as_str()),
        ]);
        let r = boot(&t, &e);
        assert_eq!(r.code, 0, "node-{i}: {}", r.stderr);
        let how = if i == 0 {
            "attached here"
        } else {
            "the instance's tag appscale-persist:node"
        };
        assert!(
            r.stderr.contains(&format!("this machine is node-{i} (by")),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(how), "node-{i}: {}", r.stderr);
        assert!(is_mounted(Path::new(&mnt)), "node-{i}");
        assert_eq!(
            moto.ec2_admin(&["volume", &vol[i]])["attachments"][0]["instance"],
            id.as_str()
        );
        sh_ok(&["umount", &mnt]);
    }
    // AppScale's record alone also tells the controller every instance.
    let r = up(&[
        "--cloud-only",
        "--locations",
        locations.to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let recs = r.records();
    let by_node = |n: &str| recs.iter().find(|r| r["node"] == n).unwrap().clone();
    assert_eq!(by_node("node-1")["instance"], ids[1].as_str(), "{recs:?}");
}

/// The linter's `--node auto` reads the instance's tag from IMDS (instance
/// metadata tags enabled) and plans that node alone; a tag naming no node
/// of the plan is refused.
#[test]
fn the_linter_finds_its_node_by_the_instance_tag_in_imds() {
    let t = TempDir::new("appscale-imds-tag");
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        "infrastructure: ec2\nkeyname: dep\nmachine: ami-0123abcd\ninstance_type: m5.large\nzone: us-east-1b\nips_layout:\n  - roles: [master, appengine, database, zookeeper]\n    nodes: 1\n    disks: data-0\n  - roles: [appengine, database]\n    nodes: 1\n    disks: data-1\n",
    )
    .unwrap();
    let lint = |tag: &str| {
        let imds = Server::python(
            "fake_imds.py",
            &[
                "i-0123",
                "us-east-1b",
                "--tag",
                &format!("appscale-persist:node={tag}"),
            ],
        );
        run(
            "appscalefile-lint",
            &[
                "--plan",
                "--node",
                "auto",
                "--metadata-endpoint",
                &imds.url(),
                file.to_str().unwrap(),
            ],
            "",
        )
    };
    let r = lint("node-1").expect(0);
    let rec: Value = r.record();
    assert_eq!(rec["node"], "node-1");
    assert_eq!(rec["disk"], "data-1");
    let r = lint("node-7").expect(1);
    assert!(
        r.stderr
            .contains("`node-7`, which is not a node of the plan"),
        "{}",
        r.stderr
    );
}

/// A by-id link made for the test, removed however the test ends.
struct ByIdLink(PathBuf);

impl Drop for ByIdLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The VirtualBox recipe (docs/local.md, contrib/vagrant/Vagrantfile): the
/// node's second disk by its by-id path from the serial VirtualBox gives it,
/// with the static provider; the node finds itself by its address.
#[test]
fn virtualbox_the_static_disk_by_its_by_id_path() {
    require_root();
    let t = TempDir::new("appscale-vbox");
    let disk = LoopDev::new(&t, "vbox", 64);
    let serial = format!("apt{}", std::process::id());
    let path = PathBuf::from(format!("/dev/disk/by-id/ata-VBOX_HARDDISK_{serial}"));
    std::fs::create_dir_all("/dev/disk/by-id").unwrap();
    std::os::unix::fs::symlink(&disk.device, &path).unwrap();
    let _link = ByIdLink(path.clone());
    // The Vagrantfile gives each node the serial the AppScalefile names.
    let vagrantfile = std::fs::read_to_string(repo().join("contrib/vagrant/Vagrantfile")).unwrap();
    assert!(vagrantfile.contains("Port1/SerialNumber"), "{vagrantfile}");
    assert!(vagrantfile.contains("disks: /dev/disk/by-id/ata-VBOX_HARDDISK_appscale-node-1"));
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!("ips_layout:\n  - roles: [master, appengine, database, zookeeper]\n    nodes: 127.0.0.1\n    disks: {}\n", path.display()),
    )
    .unwrap();
    let mnt = t.s("mnt");
    let fstab = t.s("fstab");
    let r = boot(
        &t,
        &[
            ("APPSCALEFILE", file.to_str().unwrap()),
            ("APPSCALE_MOUNTPOINT", mnt.as_str()),
            ("APPSCALE_FSTAB", fstab.as_str()),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(is_mounted(Path::new(&mnt)));
    assert!(
        r.stderr.contains(&format!("ata-VBOX_HARDDISK_{serial}")),
        "{}",
        r.stderr
    );
    sh_ok(&["umount", &mnt]);
}
