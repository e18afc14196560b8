//! disk-create --grow: ModifyVolume, waited for, never a shrink, and EC2's
//! limits on modifications.

use super::*;

/// --grow grows a smaller volume (ModifyVolume, waited until usable);
/// without it the difference is reported; a larger volume is never shrunk.
#[test]
fn grow_modifies_a_smaller_volume_and_never_shrinks_one() {
    let ec2 = Ec2::moto();
    let input = [rec("node-0", "data-0")];
    let vol = create(&ec2, &[rec("node-0", "data-0")]).remove(0)["disk_id"]
        .as_str()
        .unwrap()
        .to_string();
    ec2.record_start();
    let r = ec2.create(&["--size", "3G"], &input).expect(1).record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("--grow"),
        "{r}"
    );
    let r = ec2
        .create(&["--check", "--size", "3G", "--grow"], &input)
        .expect(0);
    assert!(
        r.stderr.contains("would grow from 1 GiB to 3 GiB"),
        "{}",
        r.stderr
    );
    assert_eq!(calls(&ec2, "ModifyVolume"), 0);

    let r = ec2.create(&["--size", "3G", "--grow"], &input).expect(0);
    let rec = r.record();
    assert_eq!(rec["changed"], true, "{rec}");
    assert_eq!(rec["size_bytes"], 3u64 << 30, "{rec}");
    assert!(r.stderr.contains("disk-ensure-fs --grow"), "{}", r.stderr);
    assert_eq!(ec2.volume(&vol)["size"], 3);
    assert_eq!(calls(&ec2, "ModifyVolume"), 1);
    assert!(calls(&ec2, "DescribeVolumesModifications") >= 1);
    let r = ec2
        .create(&["--size", "3G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "grown once: {r}");

    let r = ec2
        .create(&["--size", "2G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "size-mismatch", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never shrunk"),
        "{r}"
    );
    assert_eq!(ec2.volume(&vol)["size"], 3);
    assert_eq!(calls(&ec2, "ModifyVolume"), 1, "no call to shrink it");
}

/// A grow is waited for while its modification is `modifying`, and done at
/// `optimizing` (usable at the new size); a modification that fails is
/// `resize-failed`, with EC2's reason.
#[test]
fn a_grow_waits_out_modifying_and_a_failed_modification_is_resize_failed() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    create(&ec2, &[rec("node-0", "data-0")]);
    let polls = || {
        ec2.seen()["injected"]["DescribeVolumesModifications"]
            .as_u64()
            .unwrap_or(0)
    };
    ec2.control(json!({"modification": {"polls": 2, "then": "optimizing"}}));
    let r = ec2
        .create(&["--size", "2G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(
        (r["changed"].as_bool(), r["size_bytes"].as_u64()),
        (Some(true), Some(2 << 30)),
        "{r}"
    );
    assert_eq!(polls(), 3, "polled until optimizing");

    // An earlier run's grow still modifying: waited for, nothing sent.
    ec2.control(json!({"modification": {"polls": 2, "then": "optimizing"}}));
    let r = ec2
        .create(&["--size", "2G", "--grow"], &input)
        .expect(0)
        .record();
    assert_eq!(r["changed"], false, "{r}");
    assert_eq!(polls(), 3, "looked up once, then polled until optimizing");

    // The last modification is `optimizing`: EC2 takes the next only once
    // it is `completed` (API_ModifyVolume): too soon, nothing sent.
    ec2.control(json!({"actions": {}}));
    let r = ec2
        .create(&["--size", "3G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "resize-too-soon", "{r}");
    let seen = ec2.seen();
    assert!(seen["actions"].get("ModifyVolume").is_none(), "{seen}");

    // It failed meanwhile (a failed one may be retried): the new one fails
    // too, with EC2's reason.
    ec2.control(json!({"modification": {"polls": -1, "then": "failed", "message": "insufficient capacity"}}),
    );
    let r = ec2
        .create(&["--size", "3G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "resize-failed", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("insufficient capacity"), "{msg}");
}

/// EC2 modifies a volume at most 4 times in a rolling 24 hours
/// (API_ModifyVolume; the proxy counts): the fifth grow is `resize-too-soon`,
/// nothing changed.
#[test]
fn a_fifth_modification_within_a_day_is_too_soon() {
    let ec2 = Ec2::proxied(&[]);
    let input = [rec("node-0", "data-0")];
    create(&ec2, &[rec("node-0", "data-0")]);
    ec2.control(json!({"modification": {"polls": -1, "then": "completed"}}));
    for gib in 2..=5 {
        let size = format!("{gib}G");
        ec2.create(&["--size", &size, "--grow"], &input).expect(0);
    }
    let r = ec2
        .create(&["--size", "6G", "--grow"], &input)
        .expect(1)
        .record();
    assert_eq!(error_code(&r), "resize-too-soon", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("at most 4 times in a rolling 24 hours"),
        "{msg}"
    );
    assert_eq!(r["size_bytes"], 5u64 << 30, "{r}");
}
