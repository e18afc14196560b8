//! disk-attach: volumes elsewhere or in another zone, API errors, and waits
//! that survive a bad minute (through ec2_proxy.py, which answers as EC2 does
//! where moto is lenient; each test names the behaviour's source).

use super::*;

#[test]
fn a_volume_attached_elsewhere_is_left_alone() {
    let ec2 = Ec2::moto();
    let [a, b]: [String; 2] = ec2.instances("us-east-1b", 2).try_into().unwrap();
    let created = create(&ec2, &[rec("node-0", "shared")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    ec2.attach(&["--instance", &a], &[created.clone()])
        .expect(0);

    let r = ec2
        .attach(&["--instance", &b], &[created.clone()])
        .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "attached-elsewhere");
    assert!(e["message"].as_str().unwrap().contains(&a), "{e}");
    let r = ec2
        .detach(&["--instance", &b], &[created.clone()])
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "attached-elsewhere");
    assert_eq!(
        ec2.volume(&vol)["attachments"][0]["instance"],
        a.as_str(),
        "still on its instance"
    );
}

#[test]
fn a_zone_mismatch_is_refused_before_any_attach() {
    let ec2 = Ec2::moto();
    let inst = ec2.instance();
    let vol = ec2.hand_made("us-east-1a", None);
    ec2.record_start();
    let r = ec2
        .attach(
            &["--provider", "ec2", "--disk", &vol, "--instance", &inst],
            &[],
        )
        .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "zone-mismatch");
    assert!(
        e["message"].as_str().unwrap().contains("us-east-1a")
            && e["message"].as_str().unwrap().contains("us-east-1b"),
        "{e}"
    );
    let actions = ec2.recorded();
    assert_eq!(
        actions.get("AttachVolume"),
        None,
        "no attach was tried: {actions}"
    );
    // disk-create says so too, for a record whose zone is not the volume's.
    let r = ec2
        .create(
            &["--provider", "ec2", "--disk", &vol, "--zone", "us-east-1b"],
            &[],
        )
        .expect(1);
    assert_eq!(r.record()["error"]["code"], "zone-mismatch");
}

#[test]
fn api_errors_become_record_errors_with_the_aws_code() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let mut created = create(&ec2, &[rec("node-0", "data-0"), rec("node-1", "data-1")]);
    for r in &mut created {
        r["instance"] = json!(inst);
    }
    let rule = json!({"fail": {"AttachVolume": {"status": 403, "code": "UnauthorizedOperation", "times": 1}}});
    ec2.control(rule);
    let r = ec2.attach(&["--concurrency", "1"], &created).expect(1);
    let recs = r.records();
    let codes: Vec<&str> = recs
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("ok"))
        .collect();
    assert!(
        codes.contains(&"UnauthorizedOperation") && codes.contains(&"ok"),
        "one failed with the AWS code, the other went on: {codes:?}"
    );
    assert!(
        r.stderr.contains("injected UnauthorizedOperation"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_attachment_stuck_attaching_is_undone_and_reported() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    ec2.control(json!({"attaching": true}));
    let r = ec2
        .attach(&["--instance", &inst, "--timeout", "3"], &[created.clone()])
        .expect(1);
    let e = r.record()["error"].clone();
    assert_eq!(e["code"], "stuck-attaching", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("detached it again"),
        "{e}"
    );
    assert_eq!(
        ec2.admin(&["volume", created["disk_id"].as_str().unwrap()])["state"],
        "available"
    );
}

#[test]
fn a_failed_poll_is_retried_until_the_deadline() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    // Let the lookup through, then fail more polls in a row than the SDK
    // tries one call (5 attempts).
    ec2.control(json!({"fail": {"DescribeVolumes": {"status": 503, "code": "RequestLimitExceeded", "skip": 1, "times": 7}}}),
    );
    let r = ec2.attach(&["--instance", &inst], &[created]).expect(0);
    assert_eq!(r.record()["state"], "attached", "{}", r.stderr);
    let injected = ec2.seen();
    assert_eq!(injected["injected"]["DescribeVolumes"], 7, "{injected}");
}

#[test]
fn a_volume_still_detaching_from_this_instance_is_waited_out() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    let vol = created["disk_id"].as_str().unwrap().to_string();
    // An earlier down left its detach in progress for three more polls.
    ec2.admin(&["attach", &vol, &inst, "/dev/sdf"]);
    ec2.control(json!({"detaching": {"volume": vol, "instance": inst, "polls": 3}}));
    let r = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert_eq!(
        (r["state"].as_str(), r["changed"].as_bool()),
        (Some("attached"), Some(true)),
        "{r}"
    );
    let v = ec2.volume(&vol);
    assert_eq!(v["attachments"][0]["instance"], inst.as_str());
    assert_eq!(v["attachments"][0]["state"], "attached");
}

#[test]
fn an_api_error_reading_instances_is_reported_as_itself() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    ec2.control(json!({"fail": {"DescribeInstances": {"status": 403, "code": "UnauthorizedOperation", "times": -1}}}),
    );
    let r = ec2
        .create(
            &["--instance", &inst],
            &[without(&rec("node-0", "data-0"), "zone")],
        )
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "UnauthorizedOperation", "{r}");
    assert_eq!(ec2.admin(&["named", "data-0"]), json!([]));
}

/// Right after CreateVolume, DescribeVolumes naming the volume may answer
/// `InvalidVolume.NotFound`; right after AttachVolume, the volume may show
/// no attachment; right after ModifyVolume, DescribeVolumesModifications
/// may answer `InvalidVolumeModification.NotFound` (AWS "Eventual
/// consistency in the Amazon EC2 API"; the EBS CSI driver waits through
/// each). Within the deadline each is "not yet".
#[test]
fn a_change_ec2_does_not_show_yet_is_waited_for() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    ec2.control(json!({"consistency": {"CreateVolume": 2, "AttachVolume": 2, "ModifyVolume": 2}}));
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    assert_eq!(created["state"], "created", "{created}");
    let attached = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert_eq!(attached["state"], "attached", "{attached}");
    let grown = ec2
        .create(&["--size", "2G", "--grow"], &[attached])
        .expect(0)
        .record();
    assert_eq!(grown["size_bytes"], 2u64 << 30, "{grown}");
    let injected = &ec2.seen()["injected"];
    assert!(
        injected["DescribeVolumes"].as_u64() >= Some(2)
            && injected["DescribeVolumesModifications"].as_u64() >= Some(2),
        "each change was not seen at first: {injected}"
    );
}

/// AttachVolume answers `InvalidParameterValue: Attachment point /dev/sdf
/// is already in use` for a name the instance's image maps (instance
/// store, which DescribeInstances does not show) and for a name a
/// concurrent attach just took (EBS CSI `pkg/cloud/devicemanager`). The
/// image's names are never tried (DescribeImages); a name refused gives
/// way to the next free one, in the same run.
#[test]
fn device_names_in_use_are_passed_over() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &recs_for(&inst, 2));
    ec2.control(json!({"ami_devices": ["/dev/sdf"], "taken_once": ["/dev/sdg"], "actions": {}}));
    let attached = ec2.attach(&[], &created).expect(0).records();
    let mut names: Vec<&str> = attached
        .iter()
        .map(|r| r["attached_as"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["/dev/sdh", "/dev/sdi"], "{attached:?}");
    assert_eq!(ec2.calls("AttachVolume"), 3, "one refused, once");
    let on_moto = ec2.admin(&["attached", &inst]);
    for r in &attached {
        assert_eq!(on_moto[r["disk_id"].as_str().unwrap()], r["attached_as"]);
    }
    // The next run never tries the image's name.
    let more = create(&ec2, &[recs_for(&inst, 3).remove(2)]);
    ec2.control(json!({"actions": {}}));
    let r = ec2.attach(&[], &more).expect(0).record();
    assert_eq!(r["attached_as"], "/dev/sdg", "{r}");
    assert_eq!(ec2.calls("AttachVolume"), 1);
}

/// AttachVolume and DetachVolume carry no token: when an answer is lost,
/// the SDK sends the call again, and EC2 answers `VolumeInUse` or
/// `IncorrectState` for the work already done (API reference). Already in
/// the state asked is success.
#[test]
fn lost_attach_and_detach_answers_are_success() {
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    let created = create(&ec2, &[rec("node-0", "data-0")]).remove(0);
    ec2.control(json!({"lose": {"AttachVolume": 1}, "actions": {}}));
    let attached = ec2
        .attach(&["--instance", &inst], &[created])
        .expect(0)
        .record();
    assert_eq!(
        (attached["state"].as_str(), attached["attached_as"].as_str()),
        (Some("attached"), Some("/dev/sdf")),
        "{attached}"
    );
    assert_eq!(ec2.calls("AttachVolume"), 2, "sent again by the SDK");
    ec2.control(json!({"lose": {"DetachVolume": 1}, "actions": {}}));
    let detached = ec2.detach(&["--force"], &[attached]).expect(0).record();
    assert_eq!(detached["state"], "detached", "{detached}");
    assert_eq!(ec2.calls("DetachVolume"), 2);
}
