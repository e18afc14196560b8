//! What every tool promises on its command line: --help with an example
//! pipeline, --version, records in and out, and the documented schema.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn every_tool_has_help_with_an_example_pipeline() {
    for &t in TOOLS {
        let r = run(t, &["--help"], "").expect(0);
        assert!(r.stdout.contains("Examples:"), "{t}: {}", r.stdout);
        let examples = r.stdout.split("Examples:").nth(1).unwrap();
        assert!(
            examples.contains(" | "),
            "{t}: an example pipeline: {examples}"
        );
        assert!(
            examples.lines().any(|l| l.trim_start().starts_with(t)),
            "{t}: an example of the tool alone"
        );
        if t != "appscalefile-lint" {
            assert!(r.stdout.contains("--check"), "{t}: --check");
        }
        let v = run(t, &["--version"], "").expect(0);
        assert!(v.stdout.starts_with(&format!("{t} ")), "{t}: {}", v.stdout);
    }
}

#[test]
fn the_tool_list_is_the_binary_crates() {
    let mut crates: Vec<String> = std::fs::read_dir(repo().join("bins"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    crates.sort();
    let mut tools: Vec<String> = TOOLS.iter().map(|t| t.to_string()).collect();
    tools.sort();
    assert_eq!(tools, crates, "appscale_persist::TOOLS and bins/");
}

#[test]
fn bad_usage_exits_2_and_says_why() {
    for &t in TOOLS {
        let r = run(t, &["--no-such-flag"], "").expect(2);
        assert!(r.stderr.contains("--no-such-flag"), "{t}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
    let r = run("disk-create", &["--provider", "azure", "--disk", "x"], "").expect(2);
    assert!(
        r.stderr.contains("one of ec2, euca, gce, local, static"),
        "{}",
        r.stderr
    );
    let r = run(
        "disk-create",
        &["--provider", "local", "--disk", "x", "--size", "ten"],
        "",
    )
    .expect(2);
    assert!(r.stderr.contains("not a size"), "{}", r.stderr);
}

#[test]
fn empty_input_is_no_work_not_a_hang() {
    for t in &TOOLS[1..] {
        let r = run(t, &[], "").expect(0);
        assert!(r.stdout.is_empty(), "{t}");
    }
}

#[test]
fn a_malformed_line_is_named_and_nothing_is_done() {
    let t = TempDir::new("cli-malformed");
    let state = t.s("disks");
    let input = "{\"v\":1,\"provider\":\"local\",\"disk\":\"a\"}\nnot json\n";
    let r = run("disk-create", &["--state-dir", &state], input).expect(2);
    assert!(
        r.stderr.contains("stdin line 2: not valid JSON"),
        "{}",
        r.stderr
    );
    assert!(
        !t.join("disks/a.img").exists(),
        "the valid record before it was not acted on"
    );
}

#[test]
fn unknown_keys_ride_through_the_tools() {
    let t = TempDir::new("cli-extra");
    let state = t.s("disks");
    let input = "{\"v\":1,\"provider\":\"local\",\"disk\":\"a\",\"ticket\":{\"id\":42},\"owner\":\"ops\"}\n";
    let r = run(
        "disk-create",
        &["--state-dir", &state, "--size", "1M", "--check"],
        input,
    )
    .expect(0);
    let rec = r.record();
    assert_eq!(rec["ticket"]["id"], 42);
    assert_eq!(rec["owner"], "ops");
    assert_eq!(rec["steps"][0]["tool"], "disk-create");
}

#[test]
fn the_schema_documents_every_key_the_tools_write() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/record.schema.json")).unwrap(),
    )
    .unwrap();
    let props: Vec<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let record = appscale_persist::record::Record::default();
    let mut known: Vec<String> = serde_json::to_value(&record)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // Optional keys are skipped when empty; name them from the struct.
    known.extend(
        [
            "node",
            "provider",
            "zone",
            "disk",
            "instance",
            "device",
            "fs",
            "mountpoint",
            "state",
            "changed",
            "error",
        ]
        .map(String::from),
    );
    known.extend(
        [
            "steps",
            "check",
            "refused",
            "roles",
            "disk_id",
            "size_bytes",
            "attached_as",
            "deployment",
            "adopted",
            "unmount_proof",
            "status",
            "doctor",
            "snapshot",
            "restored_from",
            "archive",
            "scratch",
        ]
        .map(String::from),
    );
    known.sort();
    known.dedup();
    let mut props_sorted = props.clone();
    props_sorted.sort();
    assert_eq!(props_sorted, known);
    let doc = std::fs::read_to_string(repo().join("docs/protocol.md")).unwrap();
    for k in &known {
        assert!(
            doc.contains(&format!("`{k}`")),
            "docs/protocol.md mentions `{k}`"
        );
    }
}

/// Each cloud tool offers only the flags it uses: another tool's flag is a
/// usage error (exit 2, nothing done), on the command line and as an
/// Ansible module argument.
#[test]
fn each_cloud_tool_takes_only_its_own_flags() {
    let t = TempDir::new("cli-own-flags");
    let state = t.s("disks");
    let not_theirs: &[(&str, &[&[&str]])] = &[
        ("disk-create", &[&["--force"], &["--ebs-force"]]),
        (
            "disk-attach",
            &[
                &["--size", "1G"],
                &["--type", "gp3"],
                &["--encrypted"],
                &["--grow"],
                &["--kms-key", "k"],
                &["--iops", "3000"],
                &["--throughput", "125"],
                &["--tag", "a=b"],
                &["--retag"],
                &["--force"],
                &["--ebs-force"],
            ],
        ),
        (
            "disk-detach",
            &[
                &["--size", "1G"],
                &["--type", "gp3"],
                &["--encrypted"],
                &["--grow"],
                &["--kms-key", "k"],
                &["--iops", "3000"],
                &["--tag", "a=b"],
            ],
        ),
    ];
    for (tool, flags) in not_theirs {
        let help = run(tool, &["--help"], "").expect(0).stdout;
        for flag in *flags {
            assert!(!help.contains(&format!("{} ", flag[0])), "{tool}: {help}");
            let mut args = vec!["--provider", "local", "--disk", "d", "--state-dir", &state];
            args.extend_from_slice(flag);
            let r = run(tool, &args, "").expect(2);
            assert!(r.stderr.contains(flag[0]), "{tool} {flag:?}: {}", r.stderr);
            assert!(r.stdout.is_empty(), "{tool} {flag:?}");
        }
    }
    assert!(!t.join("disks").exists(), "nothing was done");
    // As a module: the same flag is an unsupported argument.
    let args = t.join("args.json");
    std::fs::write(
        &args,
        r#"{"_ansible_check_mode": false, "provider": "local", "disk": "d", "size": "1G"}"#,
    )
    .unwrap();
    let r = run("disk-detach", &[args.to_str().unwrap()], "").expect(1);
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out["failed"], true, "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("Unsupported parameters for (disk_detach) module: size"),
        "{out}"
    );
}

/// The cloud options are a usage error for a local image (which takes
/// --size and --grow) and a static device (used as it is): exit 2, nothing
/// done.
#[test]
fn local_and_static_disks_refuse_the_cloud_options() {
    let t = TempDir::new("cli-cloud-options");
    let state = t.s("disks");
    let refused: &[(&str, &[&str])] = &[
        ("local", &["--encrypted"]),
        ("local", &["--kms-key", "alias/k"]),
        ("local", &["--iops", "3000"]),
        ("local", &["--throughput", "125"]),
        ("local", &["--tag", "a=b"]),
        ("static", &["--grow"]),
        ("static", &["--tag", "a=b"]),
    ];
    for (provider, flag) in refused {
        let mut args = vec!["--provider", provider, "--disk", "d", "--state-dir", &state];
        args.extend_from_slice(flag);
        let r = run("disk-create", &args, "").expect(2);
        assert!(
            r.stderr.contains(flag[0]),
            "{provider} {flag:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{provider} {flag:?}");
    }
    assert!(!t.join("disks").exists(), "nothing was done");
}
