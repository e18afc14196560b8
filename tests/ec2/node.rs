//! Identity on the node: the volume's device found behind its NVMe link, and
//! refused when its serial or links disagree.

use super::*;

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
