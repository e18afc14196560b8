//! docs/ec2.md's minimum IAM policies: what each tool calls, and each action
//! needed.

use super::*;

/// docs/ec2.md's `json` blocks: each policy's `Sid` and the EC2 actions
/// it allows (`ec2:` stripped).
fn documented_policies() -> std::collections::HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo().join("docs/ec2.md")).unwrap();
    let mut out = std::collections::HashMap::new();
    for block in text.split("```json\n").skip(1) {
        let json = block.split("```").next().unwrap();
        let policy: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("docs/ec2.md: a json block does not parse ({e}):\n{json}"));
        for st in policy["Statement"].as_array().unwrap() {
            assert_eq!(st["Effect"], "Allow", "{st}");
            let actions = st["Action"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a.as_str()?.strip_prefix("ec2:").map(str::to_string))
                .collect();
            out.insert(st["Sid"].as_str().unwrap().to_string(), actions);
        }
    }
    out
}

/// Each tool's minimum IAM policy in docs/ec2.md holds every EC2 action
/// the tool calls, and names none it never calls: every tool runs its
/// scenarios (every path that calls something) through the proxy, which
/// records the actions it sees.
#[test]
fn each_tools_documented_iam_policy_is_what_it_calls() {
    let policies = documented_policies();
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    // Every action the scenarios of the tools under `sids` saw.
    let actions_of = |scenario: &dyn Fn()| -> Vec<String> {
        ec2.control(json!({"actions": {}, "attaching": false}));
        scenario();
        let mut seen: Vec<String> = ec2.seen()["actions"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        seen.sort();
        seen
    };
    let hold_to = |sids: &[&str], seen: &[String]| {
        let mut allowed: Vec<String> = sids.iter().flat_map(|s| policies[*s].clone()).collect();
        allowed.sort();
        allowed.dedup();
        for a in seen {
            assert!(
                allowed.contains(a),
                "{sids:?} call {a}, which docs/ec2.md leaves out"
            );
        }
        for a in &allowed {
            assert!(
                seen.contains(a),
                "docs/ec2.md gives {sids:?} {a}, which they never call"
            );
        }
    };
    let hand = |name: &str| {
        ec2.admin(&["create-volume", "us-east-1b", "1", name])
            .as_str()
            .unwrap()
            .to_string()
    };
    // disk-create: a new volume in its instance's zone, a hand-made one
    // adopted and retagged, one from a snapshot.
    let mut zone_from_instance = rec("node-0", "data-0");
    zone_from_instance.as_object_mut().unwrap().remove("zone");
    zone_from_instance["instance"] = json!(inst);
    hand("hand-1");
    let created = ec2
        .create(&["--size", "1G"], &[zone_from_instance])
        .expect(0)
        .record();
    ec2.create(&[], &[rec("node-1", "hand-1")]).expect(0);
    ec2.snapshot(&[], &[created.clone()]).expect(0);
    let creating = actions_of(&|| {
        let mut r = rec("node-2", "data-2");
        r["instance"] = json!(inst);
        r.as_object_mut().unwrap().remove("zone");
        ec2.create(&["--size", "1G"], &[r]).expect(0);
        hand("hand-4");
        ec2.create(&["--tag", "team=db", "--retag"], &[rec("node-4", "hand-4")])
            .expect(0);
        ec2.create(&["--from-snapshot", "latest"], &[created.clone()])
            .expect(0);
    });
    hold_to(&["DiskCreate"], &creating);
    let grow = actions_of(&|| {
        ec2.create(&["--size", "2G", "--grow"], &[created.clone()])
            .expect(0);
    });
    hold_to(&["DiskCreate", "DiskCreateGrow"], &{
        let mut all = grow.clone();
        all.extend(creating.iter().cloned());
        all.sort();
        all.dedup();
        all
    });
    // disk-attach: one of ours, one made by hand (adopted), one stuck
    // attaching (given back).
    let hand_5 = hand("hand-5");
    let mut ours = created.clone();
    ours["instance"] = json!(inst);
    let mut by_id = rec("node-5", &hand_5);
    by_id["instance"] = json!(inst);
    let attach = actions_of(&|| {
        ec2.attach(&[], &[ours.clone(), by_id.clone()]).expect(0);
        let stuck = create(&ec2, &[rec("node-6", "data-6")]).remove(0);
        ec2.control(json!({"attaching": true}));
        ec2.attach(&["--instance", &inst, "--timeout", "3"], &[stuck])
            .expect(1);
        ec2.control(json!({"attaching": false}));
    });
    let attach: Vec<String> = attach.into_iter().filter(|a| a != "CreateVolume").collect();
    hold_to(&["DiskAttach"], &attach);
    let status = actions_of(&|| {
        ec2.status(&[], &[ours.clone()]).expect(0);
    });
    hold_to(&["DiskStatus"], &status);
    let snapshot = actions_of(&|| {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        ec2.snapshot(&["--no-freeze", "--keep", "1"], &[ours.clone()])
            .expect(0);
        ec2.snapshot(&["--list"], &[ours.clone()]).expect(0);
    });
    hold_to(&["DiskSnapshot"], &snapshot);
    let detach = actions_of(&|| {
        ec2.detach(&["--force"], &[ours.clone(), by_id.clone()])
            .expect(0);
    });
    hold_to(&["DiskDetach"], &detach);
}

/// Up (create, attach), `--grow`, backup with retention (two snapshots,
/// `--keep 1`) and down (detach) of one new disk `data-{n}` on `inst`,
/// from the controller, through `ec2`'s proxy: `Err(flow, stderr)` for the
/// first that fails, else the stderr of them all.
fn every_flow(ec2: &Ec2, inst: &str, n: usize) -> Result<String, (&'static str, String)> {
    let mut said = String::new();
    let mut step = |flow: &'static str, name: &str, args: &[&str], input: &str| {
        let r = ec2.tool(name, args, input);
        said.push_str(&r.stderr);
        if r.code == 0 {
            Ok(r.stdout)
        } else {
            Err((flow, format!("{name} {args:?}: {}{}", r.stdout, r.stderr)))
        }
    };
    let r = rec(&format!("node-{n}"), &format!("data-{n}"));
    let made = step("up", "disk-create", &["--size", "1G"], &ndjson(&[r]))?;
    let attached = step("up", "disk-attach", &["--instance", inst], &made)?;
    let grown = step(
        "grow",
        "disk-create",
        &["--size", "2G", "--grow"],
        &attached,
    )?;
    // From the controller: no freeze (the node's own run freezes).
    let snap = ["--no-freeze", "--keep", "1"];
    step("backup", "disk-snapshot", &snap, &grown)?;
    // Snapshots a second apart: retention tells them apart by time.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let kept = step("backup", "disk-snapshot", &snap, &grown)?;
    step("down", "disk-detach", &["--force"], &kept)?;
    Ok(said)
}

/// docs/ec2.md's policies, applied by the proxy as IAM would (every action
/// outside them refused: 403 `UnauthorizedOperation`, tags on creation
/// needing CreateTags too): up, `--grow`, backup with retention and down
/// all pass. Take any one action away and a flow fails, naming it, except
/// the two whose refusal a flow outlives by design, each said in a warning:
/// DescribeImages (an image's device names then found when EC2 refuses
/// one) and DescribeInstanceTypes (EC2 then says when the limit is hit).
#[test]
fn the_documented_policy_runs_every_flow_and_each_action_is_needed() {
    let policies = documented_policies();
    let mut allowed: Vec<String> = [
        "DiskCreate",
        "DiskCreateGrow",
        "DiskAttach",
        "DiskDetach",
        "DiskSnapshot",
    ]
    .iter()
    .flat_map(|s| policies[*s].clone())
    .collect();
    allowed.sort();
    allowed.dedup();
    let ec2 = Ec2::proxied(&[]);
    let inst = ec2.instance();
    ec2.control(json!({"allow": allowed}));
    every_flow(&ec2, &inst, 0)
        .unwrap_or_else(|(flow, e)| panic!("{flow} under the documented policy: {e}"));
    assert_eq!(ec2.seen()["injected"], json!({}), "nothing refused");
    let outlived = ["DescribeImages", "DescribeInstanceTypes"];
    for (n, action) in allowed.iter().enumerate() {
        let less: Vec<&String> = allowed.iter().filter(|a| *a != action).collect();
        ec2.control(json!({"allow": less}));
        match every_flow(&ec2, &inst, n + 1) {
            Err((flow, said)) => {
                assert!(
                    !outlived.contains(&action.as_str()),
                    "without {action}, {flow} failed: {said}"
                );
                assert!(
                    said.contains(action.as_str()) || said.contains("not authorized"),
                    "without {action}, {flow} failed without naming it: {said}"
                );
            }
            Ok(said) => {
                assert!(
                    outlived.contains(&action.as_str()),
                    "every flow passed without {action}: docs/ec2.md need not give it"
                );
                assert!(said.contains(action.as_str()), "{action}: {said}");
            }
        }
    }
}
