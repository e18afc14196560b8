//! Never detach under a live filesystem: on the node only a device it can see
//! free; from elsewhere only with the node's unmount proof.

use super::*;

/// disk-attach of the volume `vol` (node-1's, by id) to `instance`, from a
/// controller.
fn attach_volume(ec2: &Ec2, vol: &str, instance: &str) -> Run {
    ec2.attach(
        &[
            "--provider",
            "ec2",
            "--node",
            "node-1",
            "--disk",
            vol,
            "--instance",
            instance,
        ],
        &[],
    )
    .expect(0)
}

/// An EC2 AppScalefile for node-1 whose disk is volume `vol`.
fn appscalefile(t: &TempDir, vol: &str) -> std::path::PathBuf {
    let file = t.join("AppScalefile");
    std::fs::write(
        &file,
        format!("infrastructure: ec2\nmachine: ami-0123456789abcdef0\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: {vol}\n"),
    )
    .unwrap();
    file
}

#[test]
fn the_node_detaches_only_a_device_it_can_see_free() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-self-detach");
    let inst = ec2.instance();
    let node = fake_imds(&inst, &[]);
    let vol = ec2.hand_made("us-east-1b", None);
    let file = appscalefile(&t, &vol);
    let dev = stand_in(&t, &vol);
    let root = t.s("dev");
    let mut env = aws_env();
    env.push(("APPSCALE_PERSIST_DEV_ROOT", root.as_str()));
    let (url, imds_url) = (ec2.url(), node.url());
    let on_node = [
        "--endpoint-url",
        url.as_str(),
        "--self",
        "--metadata-endpoint",
        imds_url.as_str(),
    ];
    flow_with("up", &t, &file, &["--node", "node-1"], &on_node, &env).expect(0);
    // disk-detach on the node, its devices under `dev_root`.
    let detach_here = |dev_root: &str| {
        let args = [
            "--self",
            "--metadata-endpoint",
            imds_url.as_str(),
            "--node",
            "node-1",
            "--provider",
            "ec2",
            "--disk",
            vol.as_str(),
        ];
        ec2.tool_env(
            "disk-detach",
            &args,
            "",
            &[("APPSCALE_PERSIST_DEV_ROOT", dev_root)],
        )
    };
    let attached_to = || ec2.volume(&vol)["attachments"][0]["instance"].clone();

    // Lazily unmounted while a file on it is open: the filesystem lives on.
    let mnt = t.join("mnt/node-1");
    let open = std::fs::File::create(mnt.join("open-file")).unwrap();
    sh_ok(&["umount", "--lazy", mnt.to_str().unwrap()]);
    assert!(!is_mounted(&mnt));
    let r = detach_here(&root).expect(1).record();
    assert_eq!(error_code(&r), "in-use", "{r}");
    assert_eq!(attached_to(), inst.as_str(), "still attached");
    drop(open);
    // Its device not visible here (no udev link): nothing can be checked.
    let blind = t.s("blind-dev");
    std::fs::create_dir_all(&blind).unwrap();
    let r = detach_here(&blind).expect(1);
    let rec = r.record();
    assert_eq!(error_code(&rec), "device-not-found", "{rec}");
    assert!(
        rec["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--force"),
        "says how: {rec}"
    );
    assert_eq!(attached_to(), inst.as_str(), "still attached");
    // Visible and free: detached.
    let r = detach_here(&root).expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(ec2.volume(&vol)["state"], "available");
    drop(dev);
}

#[test]
fn detaching_from_elsewhere_needs_the_nodes_unmount_proof() {
    require_root();
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-proof");
    let [a, b]: [String; 2] = ec2.instances("us-east-1b", 2).try_into().unwrap();
    let (node_a, node_b) = (fake_imds(&a, &[]), fake_imds(&b, &[]));
    let vol = ec2.hand_made("us-east-1b", None);
    let _dev = stand_in(&t, &vol);
    let root = t.s("dev");
    let mnt = t.s("mnt");
    // The controller attaches to instance a; the node (this machine, with
    // the stand-in device) formats and mounts.
    let attached = attach_volume(&ec2, &vol, &a).stdout;
    let node_env = |imds: &Server| {
        vec![
            ("APPSCALE_PERSIST_DEV_ROOT".to_string(), root.clone()),
            ("APPSCALE_PERSIST_METADATA_ENDPOINT".to_string(), imds.url()),
        ]
    };
    let on_node = |tool_name: &str, args: &[&str], input: &str, imds: &Server| {
        let env = node_env(imds);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_env(tool_name, args, input, &env)
    };
    let fs = on_node("disk-ensure-fs", &[], &attached, &node_a)
        .expect(0)
        .stdout;
    let mounted = on_node(
        "disk-mount",
        &["--mountpoint", &mnt, "--no-fstab"],
        &fs,
        &node_a,
    )
    .expect(0)
    .record();
    // The controller cannot see the node's devices.
    let from_controller = |r: &Value, extra: &[&str]| ec2.detach(extra, &[without(r, "device")]);
    let attached_to = || ec2.volume(&vol)["attachments"][0]["instance"].clone();

    // No proof (the disk is mounted on the node): refused, says how.
    let r = from_controller(&mounted, &[]).expect(1).record();
    assert_eq!(error_code(&r), "no-unmount-proof", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("--self") && msg.contains("--force"), "{msg}");
    assert_eq!(attached_to(), a.as_str());
    assert!(is_mounted(Path::new(&mnt)));

    // A proof from another instance than the one the volume is on.
    let unmounted_b = on_node("disk-unmount", &[], &ndjson(&[mounted.clone()]), &node_b)
        .expect(0)
        .record();
    assert_eq!(unmounted_b["unmount_proof"]["instance"], b.as_str());
    let r = from_controller(&unmounted_b, &[]).expect(1).record();
    assert_eq!(error_code(&r), "unmount-proof-mismatch", "{r}");
    assert_eq!(attached_to(), a.as_str());

    // The proof from instance a, where it is attached.
    let unmounted = on_node("disk-unmount", &[], &ndjson(&[unmounted_b]), &node_a)
        .expect(0)
        .record();
    let proof = unmounted["unmount_proof"].clone();
    assert_eq!(
        (proof["instance"].as_str(), proof["disk"].as_str()),
        (Some(a.as_str()), Some(vol.as_str())),
        "{unmounted}"
    );
    // ... but old, or followed by a mount again: not taken.
    let mut old = unmounted.clone();
    old["unmount_proof"]["at"] = json!(proof["at"].as_u64().unwrap() - 7200);
    assert_eq!(
        error_code(&from_controller(&old, &[]).expect(1).record()),
        "unmount-proof-stale"
    );
    let mut remounted = unmounted.clone();
    remounted["state"] = json!("mounted");
    assert_eq!(
        error_code(&from_controller(&remounted, &[]).expect(1).record()),
        "no-unmount-proof"
    );
    assert_eq!(attached_to(), a.as_str());
    // As it is: detached.
    let r = from_controller(&unmounted, &[]).expect(0).record();
    assert_eq!(r["state"], "detached");
    assert_eq!(ec2.volume(&vol)["state"], "available");

    // --force detaches without proof, and says what it risks.
    attach_volume(&ec2, &vol, &a);
    let r = from_controller(&mounted, &["--force"]).expect(0);
    assert!(
        r.stderr.contains("--force") && r.stderr.contains("not flushed"),
        "{}",
        r.stderr
    );
    assert_eq!(ec2.volume(&vol)["state"], "available");
}

#[test]
fn scripts_down_away_from_the_node_refuses_to_detach_and_says_how() {
    let ec2 = Ec2::moto();
    let t = TempDir::new("ec2-down-away");
    let inst = ec2.instance();
    let vol = ec2.hand_made("us-east-1b", None);
    let file = appscalefile(&t, &vol);
    attach_volume(&ec2, &vol, &inst);
    // Run on a controller: nothing of node-1's is mounted or visible here.
    let url = ec2.url();
    let r = flow_with(
        "down",
        &t,
        &file,
        &["--node", "node-1"],
        &["--endpoint-url", url.as_str(), "--instance", inst.as_str()],
        &aws_env(),
    )
    .expect(1);
    let rec = r.record();
    assert_eq!(error_code(&rec), "no-unmount-proof", "{rec}");
    assert!(
        r.stderr
            .contains("scripts/down --node node-1 AppScalefile -- --self"),
        "says how to do it right: {}",
        r.stderr
    );
    assert_eq!(
        ec2.volume(&vol)["attachments"][0]["instance"],
        inst.as_str(),
        "still attached"
    );
}

/// An unmount proof holds for the attachment it was made in: one made
/// before the volume was attached as it is now (detached and attached
/// again since: perhaps mounted again) is refused, however recent; it was
/// taken for up to an hour.
#[test]
fn an_unmount_proof_is_tied_to_the_attachment_it_was_made_in() {
    let ec2 = Ec2::moto();
    let a = ec2.instance();
    let vol = ec2.hand_made("us-east-1b", None);
    let attached = attach_volume(&ec2, &vol, &a).record();
    let now = now_secs();
    let proven = |at: u64| unmount_proven(&attached, &a, &vol, at);
    // Made two minutes ago, before this attachment: of an earlier one.
    let r = ec2.detach(&[], &proven(now - 120)).expect(1).record();
    assert_eq!(error_code(&r), "unmount-proof-stale", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("earlier attachment"),
        "{r}"
    );
    assert_eq!(ec2.volume(&vol)["state"], "in-use");
    // Made during it: taken.
    ec2.detach(&[], &proven(now + 1)).expect(0);
    assert_eq!(ec2.volume(&vol)["state"], "available");
}
