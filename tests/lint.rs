//! appscalefile-lint against a corpus of AppScalefiles, valid and broken.
//!
//! What each file under tests/fixtures/appscalefile must produce is in the
//! table below (so the fixtures stay plain AppScalefiles): every diagnostic
//! is pinned with its severity, code, line and column, and nothing else may
//! be reported.

mod common;

use common::{repo, run};
use serde_json::Value;

fn fixture(name: &str) -> String {
    repo()
        .join("tests/fixtures/appscalefile")
        .join(name)
        .display()
        .to_string()
}

/// `severity code line:col` of every diagnostic, in order.
fn lint_json(name: &str) -> (i32, Vec<String>, Vec<Value>) {
    let r = run(
        "appscalefile-lint",
        &["--format", "json", &fixture(name)],
        "",
    );
    let diags: Vec<Value> = r.records();
    let short = diags
        .iter()
        .map(|d| {
            format!(
                "{} {} {}:{}",
                d["severity"].as_str().unwrap(),
                d["code"].as_str().unwrap(),
                d["line"],
                d["column"]
            )
        })
        .collect();
    for d in &diags {
        assert_eq!(d["file"].as_str(), Some(fixture(name).as_str()));
        assert!(!d["message"].as_str().unwrap().is_empty());
    }
    (r.code, short, diags)
}

const CORPUS: &[(&str, i32, &[&str])] = &[
    (
        "bad-type.yaml",
        1,
        &["error bad-type 2:7", "error node-id-format 7:12"],
    ),
    (
        "data-node-without-disk.yaml",
        0,
        &["warning data-node-without-disk 12:12"],
    ),
    ("disk-duplicate.yaml", 1, &["error disk-duplicate 12:12"]),
    (
        "disk-kernel-name.yaml",
        0,
        &["warning disk-kernel-name 6:12"],
    ),
    (
        "disk-name-invalid.yaml",
        1,
        &["error disk-name-invalid 10:12"],
    ),
    (
        "disk-on-stateless-node.yaml",
        0,
        &["info disk-on-stateless-node 8:12"],
    ),
    (
        "disk-unknown-node.yaml",
        1,
        &["error disk-unknown-node 11:3"],
    ),
    (
        "disks-count.yaml",
        1,
        &[
            "warning data-node-without-disk 9:12",
            "error disks-count 10:12",
        ],
    ),
    ("disks-empty.yaml", 0, &["warning disks-empty 13:12"]),
    (
        "disks-ignored.yaml",
        1,
        &[
            "warning data-node-without-disk 8:12",
            "error disks-ignored 10:3",
        ],
    ),
    ("disks-in-cluster.yaml", 1, &["error disks-in-cluster 4:12"]),
    (
        "disks-not-a-map.yaml",
        1,
        &["warning data-node-without-disk 5:15", "error bad-type 6:8"],
    ),
    (
        "disks-unsupported-infrastructure.yaml",
        1,
        &["error disks-unsupported-infrastructure 1:17"],
    ),
    (
        "disks-without-infrastructure.yaml",
        1,
        &[
            "error layout-missing 1:1",
            "error zone-without-infrastructure 1:7",
            "error disk-unknown-node 3:3",
            "error disks-without-infrastructure 3:3",
        ],
    ),
    (
        "disks-without-zone.yaml",
        1,
        &["error disks-without-zone 8:12"],
    ),
    ("duplicate-ip.yaml", 1, &["error duplicate-ip 5:23"]),
    (
        "duplicate-key.yaml",
        1,
        &[
            "error yaml-duplicate-key 3:1",
            "warning data-node-without-disk 5:15",
        ],
    ),
    ("empty.yaml", 1, &["error yaml-empty 1:1"]),
    (
        "gce-credentials-missing.yaml",
        1,
        &[
            "error setting-missing 1:17",
            "error setting-missing 1:17",
            "warning data-node-without-disk 6:12",
        ],
    ),
    (
        "infrastructure-unknown.yaml",
        1,
        &["error infrastructure-unknown 1:17"],
    ),
    (
        "key-abbreviated.yaml",
        1,
        &[
            "error unknown-key 2:1",
            "error layout-missing 2:1",
            "error setting-without-infrastructure 3:10",
        ],
    ),
    ("local-extension.yaml", 0, &[]),
    (
        "layout-many-logins.yaml",
        1,
        &["error layout-many-logins 6:12"],
    ),
    (
        "layout-many-masters.yaml",
        1,
        &[
            "warning data-node-without-disk 6:12",
            "error layout-many-masters 6:12",
        ],
    ),
    (
        "layout-mixed-format.yaml",
        1,
        &[
            "error layout-mixed-format 4:3",
            "warning data-node-without-disk 4:15",
            "warning data-node-without-disk 5:13",
        ],
    ),
    (
        "layout-no-compute.yaml",
        1,
        &["error layout-no-compute 2:3"],
    ),
    (
        "layout-no-database.yaml",
        1,
        &["error layout-no-database 2:3"],
    ),
    ("layout-no-master.yaml", 1, &["error layout-no-master 2:3"]),
    (
        "layout-unknown-format.yaml",
        1,
        &["error layout-unknown-format 3:13"],
    ),
    (
        "layout-unknown-role.yaml",
        1,
        &[
            "error layout-unknown-role 5:21",
            "warning data-node-without-disk 6:12",
        ],
    ),
    (
        "multiple-documents.yaml",
        1,
        &["error yaml-multiple-documents 3:1"],
    ),
    (
        "no-layout-disk-unknown-node.yaml",
        1,
        &["error disk-missing 6:6", "error disk-unknown-node 9:3"],
    ),
    ("no-layout-disks.yaml", 0, &[]),
    ("node-id-format.yaml", 1, &["error node-id-format 7:13"]),
    ("node-two-disks.yaml", 1, &["error node-two-disks 8:12"]),
    ("nodes-zero.yaml", 1, &["error nodes-zero 10:12"]),
    ("not-a-mapping.yaml", 1, &["error not-a-mapping 1:1"]),
    ("not-utf8.yaml", 1, &["error not-utf8 2:18"]),
    (
        "old-disks-stateless-node.yaml",
        1,
        &["error disk-missing 10:14"],
    ),
    ("same-ip-two-groups.yaml", 0, &[]),
    ("seed-lost-disks-line.yaml", 1, &["error yaml-syntax 3:8"]),
    ("setting-missing.yaml", 1, &["error setting-missing 1:13"]),
    (
        "settings-conflict.yaml",
        1,
        &["error settings-conflict 2:1"],
    ),
    ("switch-not-boolean.yaml", 1, &["error bad-type 1:10"]),
    ("tabs.yaml", 1, &["error yaml-syntax 3:1"]),
    ("zone-invalid.yaml", 1, &["error zone-invalid 7:7"]),
    ("zone-unknown.yaml", 0, &["warning zone-unknown 5:7"]),
    (
        "euca-settings.yaml",
        0,
        &["warning key-not-in-appscale 10:1"],
    ),
    (
        "ec2-url-invalid.yaml",
        1,
        &["error setting-invalid 6:10", "error setting-missing 7:17"],
    ),
    (
        "unknown-key.yaml",
        1,
        &[
            "error unknown-key 2:1",
            "warning data-node-without-disk 7:12",
            "warning unknown-key 8:5",
        ],
    ),
    ("valid-local.yaml", 0, &[]),
    ("valid-new-ec2-groups.yaml", 0, &[]),
    ("valid-new-gce.yaml", 0, &[]),
    ("valid-old-ec2.yaml", 0, &[]),
    ("valid-old-simple.yaml", 0, &[]),
    ("valid-static-cluster.yaml", 0, &[]),
    (
        "zone-without-infrastructure.yaml",
        1,
        &["error zone-without-infrastructure 1:7"],
    ),
];

/// AppScale's verdict on a file ported from its own tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// AppScale took the file.
    Accepted,
    /// AppScale refused it.
    Refused,
    /// AppScale refused it and the linter takes it, on purpose (the reason;
    /// docs/appscalefile-lint.md lists each).
    Differs(&'static str),
}

use Verdict::{Accepted, Differs, Refused};

/// Layouts and settings from appscale-tools' own tests (test_node_layout.py,
/// test_ip_layouts.py, test_parse_args.py, tc_node_layout.rb), written as
/// AppScalefiles under tests/fixtures/appscalefile/appscale/, each with its
/// source and AppScale's verdict in its opening comment; the verdicts were
/// confirmed by running appscale-tools' own layout and argument code (2.3.1,
/// 2.8.0, 3.1.0 and 3.3.1 for the old format, 3.8.1 for role groups).
const APPSCALE_CORPUS: &[(&str, Verdict, &[&str])] = &[
    ("advanced-eight-nodes.yaml", Accepted, &[]),
    ("advanced-four-nodes.yaml", Accepted, &[]),
    ("advanced-with-open-node.yaml", Accepted, &[]),
    (
        "args-disks-in-cluster.yaml",
        Refused,
        &["error disks-in-cluster 6:3"],
    ),
    (
        "args-disks-not-a-dict.yaml",
        Refused,
        &[
            "warning zone-unknown 5:7",
            "warning data-node-without-disk 6:6",
            "error bad-type 8:8",
        ],
    ),
    (
        "args-flag-unknown.yaml",
        Refused,
        &["error unknown-key 4:1"],
    ),
    (
        "args-instance-type-unknown.yaml",
        Differs("instance types are not checked: every release had its own list"),
        &["warning data-node-without-disk 7:6"],
    ),
    (
        "args-machine-in-cluster.yaml",
        Refused,
        &["error setting-without-infrastructure 4:10"],
    ),
    (
        "args-max-zero.yaml",
        Refused,
        &["error setting-invalid 6:6"],
    ),
    (
        "args-min-above-max.yaml",
        Refused,
        &["error setting-invalid 5:6"],
    ),
    (
        "args-min-zero.yaml",
        Refused,
        &["error setting-invalid 5:6"],
    ),
    (
        "args-no-machine.yaml",
        Refused,
        &[
            "error setting-missing 4:17",
            "warning data-node-without-disk 5:6",
        ],
    ),
    (
        "args-replication-above-databases.yaml",
        Refused,
        &[
            "error replication-too-high 9:4",
            "warning data-node-without-disk 10:6",
        ],
    ),
    (
        "args-replication-two.yaml",
        Accepted,
        &["warning data-node-without-disk 9:6"],
    ),
    (
        "args-replication-zero.yaml",
        Refused,
        &[
            "error setting-invalid 7:4",
            "warning data-node-without-disk 8:6",
        ],
    ),
    (
        "args-spot-in-cluster.yaml",
        Refused,
        &["error setting-without-infrastructure 4:21"],
    ),
    (
        "args-spot-on-ec2.yaml",
        Accepted,
        &[
            "warning zone-unknown 7:7",
            "warning data-node-without-disk 9:6",
        ],
    ),
    (
        "args-spot-on-euca.yaml",
        Refused,
        &[
            "error settings-conflict 7:21",
            "warning data-node-without-disk 8:6",
        ],
    ),
    (
        "args-spot-price-in-cluster.yaml",
        Refused,
        &["error setting-without-infrastructure 4:17"],
    ),
    (
        "args-spot-price-on-euca.yaml",
        Refused,
        &[
            "error settings-conflict 6:17",
            "warning data-node-without-disk 7:6",
        ],
    ),
    (
        "args-spot-price-with-spot.yaml",
        Accepted,
        &["warning data-node-without-disk 8:6"],
    ),
    (
        "args-spot-price-without-spot.yaml",
        Refused,
        &[
            "error setting-missing 6:17",
            "warning data-node-without-disk 7:6",
        ],
    ),
    (
        "args-static-ip-in-cluster.yaml",
        Refused,
        &["error setting-without-infrastructure 3:12"],
    ),
    (
        "args-table-unknown.yaml",
        Refused,
        &["error setting-invalid 3:8"],
    ),
    (
        "args-zone-in-cluster.yaml",
        Refused,
        &["error zone-without-infrastructure 3:7"],
    ),
    (
        "groups-disk-list.yaml",
        Accepted,
        &[
            "warning data-node-without-disk 12:12",
            "info disk-on-stateless-node 17:13",
            "info disk-on-stateless-node 17:28",
        ],
    ),
    (
        "groups-disk-not-unique.yaml",
        Refused,
        &[
            "info disk-on-stateless-node 17:12",
            "error disk-duplicate 17:12",
        ],
    ),
    (
        "groups-disk-per-group.yaml",
        Accepted,
        &["info disk-on-stateless-node 18:12"],
    ),
    (
        "groups-disks-fewer-than-nodes.yaml",
        Refused,
        &["error disks-count 17:12"],
    ),
    (
        "groups-four-node-cloud.yaml",
        Accepted,
        &[
            "warning data-node-without-disk 11:12",
            "warning data-node-without-disk 15:12",
            "warning data-node-without-disk 17:12",
        ],
    ),
    ("groups-four-node-cluster.yaml", Accepted, &[]),
    (
        "groups-login-node.yaml",
        Accepted,
        &["warning data-node-without-disk 11:12"],
    ),
    (
        "groups-one-node-no-instance-type.yaml",
        Refused,
        &[
            "error instance-type-missing 9:5",
            "warning data-node-without-disk 10:12",
        ],
    ),
    (
        "groups-open-node.yaml",
        Accepted,
        &["warning data-node-without-disk 10:12"],
    ),
    (
        "groups-three-node-cloud.yaml",
        Accepted,
        &[
            "warning data-node-without-disk 11:12",
            "warning data-node-without-disk 13:12",
            "warning data-node-without-disk 15:12",
        ],
    ),
    (
        "no-layout-cluster.yaml",
        Refused,
        &["error layout-missing 4:1"],
    ),
    (
        "no-layout-max-only.yaml",
        Accepted,
        &["warning data-node-without-disk 9:6"],
    ),
    (
        "no-layout-min-max.yaml",
        Accepted,
        &["warning data-node-without-disk 6:6"],
    ),
    (
        "no-layout-min-only.yaml",
        Refused,
        &["error setting-missing 7:6"],
    ),
    (
        "no-layout-no-machines.yaml",
        Refused,
        &["error setting-missing 6:17"],
    ),
    (
        "old-disks-not-unique.yaml",
        Refused,
        &["error disk-duplicate 13:11"],
    ),
    (
        "old-disks-one-missing.yaml",
        Refused,
        &["error disk-missing 11:13"],
    ),
    ("old-disks-one-per-node.yaml", Accepted, &[]),
    ("simple-controller-and-server.yaml", Accepted, &[]),
    ("simple-controller-only.yaml", Accepted, &[]),
    ("simple-login-host.yaml", Accepted, &[]),
    (
        "simple-no-controller.yaml",
        Refused,
        &["error layout-no-master 4:3"],
    ),
    (
        "simple-same-ip-twice.yaml",
        Refused,
        &["error duplicate-ip 5:13"],
    ),
    (
        "simple-two-controllers.yaml",
        Refused,
        &["error layout-many-masters 4:29"],
    ),
    (
        "simple-unsupported-flag.yaml",
        Refused,
        &["error layout-unknown-role 6:3"],
    ),
];

#[test]
fn every_fixture_reports_exactly_its_diagnostics() {
    let dir = repo().join("tests/fixtures/appscalefile");
    let mut listed: Vec<&str> = CORPUS.iter().map(|(n, _, _)| *n).collect();
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(
        listed, on_disk,
        "every fixture is in the table and every table entry is a fixture"
    );
    let mut failures = Vec::new();
    for (name, code, want) in CORPUS {
        let (got_code, got, _) = lint_json(name);
        if got != *want || got_code != *code {
            failures.push(format!(
                "{name}: exit {got_code} (want {code})\n  got  {got:?}\n  want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn appscale_test_layouts_get_appscale_verdicts() {
    let dir = repo().join("tests/fixtures/appscalefile/appscale");
    let mut listed: Vec<&str> = APPSCALE_CORPUS.iter().map(|(n, _, _)| *n).collect();
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk, "every ported file is in the table");
    let mut failures = Vec::new();
    for (name, verdict, want) in APPSCALE_CORPUS {
        let path = format!("appscale/{name}");
        // The file says where it came from and what AppScale said.
        let text = std::fs::read_to_string(dir.join(name))
            .unwrap()
            .replace("\n# ", " ");
        assert!(
            text.starts_with("# From") || text.starts_with("# test/"),
            "{name}: no source"
        );
        let said = if text.contains("AppScale: accepted") || text.contains("AppScale 3.4: accepted")
        {
            Accepted
        } else {
            assert!(text.contains("AppScale: refused"), "{name}: no verdict");
            Refused
        };
        let (code, got, _) = lint_json(&path);
        let agrees = match verdict {
            Differs(_) => said == Refused && code == 0,
            v => *v == said && code == i32::from(*v == Refused),
        };
        if got != *want || !agrees {
            failures.push(format!(
                "{name}: AppScale {said:?}, table {verdict:?}, linter exit {code}\n  got  {got:?}\n  want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn human_output_points_at_the_spot_with_help() {
    let r = run(
        "appscalefile-lint",
        &[&fixture("seed-lost-disks-line.yaml")],
        "",
    )
    .expect(1);
    assert!(r.stdout.is_empty(), "human diagnostics go to stderr only");
    let want = format!(
        "error[yaml-syntax]: YAML syntax error: mapping values are not allowed in this context\n --> {}:3:8\n  |\n3 |  node-1: vol-ABCDEFG\n  |        ^\n  = help:",
        fixture("seed-lost-disks-line.yaml")
    );
    assert!(r.stderr.starts_with(&want), "{}", r.stderr);
    assert!(r.stderr.contains("belongs under `disks:`"), "{}", r.stderr);
    // The seed page's own zone gets the real one.
    let r = run("appscalefile-lint", &[&fixture("zone-invalid.yaml")], "").expect(1);
    assert!(
        r.stderr.contains(
            "7 | zone: us-central-1a\n  |       ^^^^^^^^^^^^^\n  = help: did you mean `us-central1-a`?"
        ),
        "{}",
        r.stderr
    );
    let r = run("appscalefile-lint", &[&fixture("unknown-key.yaml")], "").expect(1);
    assert!(
        r.stderr
            .contains("2 | zome: us-east-1b\n  | ^^^^\n  = help: did you mean `zone`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn deny_warnings_turns_warnings_into_failure() {
    run(
        "appscalefile-lint",
        &["--deny-warnings", &fixture("data-node-without-disk.yaml")],
        "",
    )
    .expect(1);
    run(
        "appscalefile-lint",
        &["--deny-warnings", &fixture("disk-on-stateless-node.yaml")],
        "",
    )
    .expect(0);
}

#[test]
fn data_nodes_only_asks_disks_of_data_nodes_alone() {
    // AppScale's rule, the default: every node of the old `disks` map.
    let r = run(
        "appscalefile-lint",
        &[
            "--format",
            "json",
            &fixture("old-disks-stateless-node.yaml"),
        ],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["code"], "disk-missing");
    // The option: node-2 runs only appengine, so it needs none.
    let r = run(
        "appscalefile-lint",
        &[
            "--data-nodes-only",
            "--plan",
            &fixture("old-disks-stateless-node.yaml"),
        ],
        "",
    )
    .expect(0);
    assert_eq!(r.record()["node"], "node-1");
    // A data node still needs one.
    let r = run(
        "appscalefile-lint",
        &[
            "--data-nodes-only",
            "--format",
            "json",
            &fixture("appscale/old-disks-one-missing.yaml"),
        ],
        "",
    )
    .expect(1);
    assert_eq!(r.record()["code"], "disk-missing");
    let help = run("appscalefile-lint", &["--help"], "").expect(0);
    assert!(help.stdout.contains("--data-nodes-only"), "{}", help.stdout);
}

#[test]
fn files_without_a_layout_plan_the_machines_appscale_named() {
    let r = run(
        "appscalefile-lint",
        &["--plan", &fixture("no-layout-disks.yaml")],
        "",
    )
    .expect(0);
    let got: Vec<(String, Value)> = r
        .records()
        .iter()
        .map(|r| (r["node"].as_str().unwrap().to_string(), r["roles"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("node-1".to_string(), serde_json::json!(["controller"])),
            ("node-2".to_string(), serde_json::json!(["servers"]))
        ]
    );
    let r = run(
        "appscalefile-lint",
        &[&fixture("no-layout-disk-unknown-node.yaml")],
        "",
    )
    .expect(1);
    assert!(
        r.stderr.contains(
            "without `ips_layout`, AppScale named the machines node-1 (the controller) to node-N"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn plan_prints_one_record_per_node_with_a_disk() {
    let r = run(
        "appscalefile-lint",
        &["--plan", &fixture("valid-new-ec2-groups.yaml")],
        "",
    )
    .expect(0);
    let recs = r.records();
    let got: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["disk"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("node-0", "vol-0123456789abcdef0"),
            ("node-3", "db-data-1"),
            ("node-4", "db-data-2")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    for r in &recs {
        assert_eq!(r["v"], 1);
        assert_eq!(r["provider"], "ec2");
        assert_eq!(r["zone"], "us-east-1b");
        assert_eq!(r["mountpoint"], "/opt/appscale");
    }
    let r = run(
        "appscalefile-lint",
        &[
            "--plan",
            "--node",
            "node-3",
            "--mountpoint",
            "/srv/{node}",
            &fixture("valid-new-ec2-groups.yaml"),
        ],
        "",
    )
    .expect(0);
    let rec = r.record();
    assert_eq!(
        (rec["node"].as_str(), rec["mountpoint"].as_str()),
        (Some("node-3"), Some("/srv/node-3"))
    );
    let r = run(
        "appscalefile-lint",
        &[
            "--plan",
            "--node",
            "node-1",
            &fixture("valid-new-ec2-groups.yaml"),
        ],
        "",
    )
    .expect(1);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .contains("no disk (nodes with disks: node-0, node-3, node-4)"),
        "{}",
        r.stderr
    );
    let r = run(
        "appscalefile-lint",
        &["--plan", &fixture("valid-old-simple.yaml")],
        "",
    )
    .expect(0);
    assert_eq!(r.records().len(), 3);
    assert_eq!(r.records()[0]["provider"], "euca");
    let r = run(
        "appscalefile-lint",
        &["--plan", &fixture("valid-static-cluster.yaml")],
        "",
    )
    .expect(0);
    let rec = r.record();
    assert_eq!(
        (
            rec["node"].as_str(),
            rec["provider"].as_str(),
            rec["disk"].as_str()
        ),
        (
            Some("192.168.33.10"),
            Some("static"),
            Some("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4")
        )
    );
}

#[test]
fn plan_prints_nothing_when_the_file_has_errors() {
    let r = run(
        "appscalefile-lint",
        &["--plan", &fixture("disk-duplicate.yaml")],
        "",
    )
    .expect(1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn reads_stdin_and_reports_unreadable_files() {
    let src = std::fs::read_to_string(fixture("valid-old-ec2.yaml")).unwrap();
    let r = run("appscalefile-lint", &["--plan", "-"], &src).expect(0);
    assert_eq!(r.record()["disk"], "vol-1234abcd");
    let r = run("appscalefile-lint", &["/nonexistent/AppScalefile"], "").expect(2);
    assert!(
        r.stderr.contains("cannot read /nonexistent/AppScalefile"),
        "{}",
        r.stderr
    );
}

/// No input makes the linter panic or hang: random bytes, and valid files
/// with random mutations, run through the library in-process.
#[test]
fn random_input_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let corpus: Vec<Vec<u8>> = CORPUS
        .iter()
        .map(|(n, _, _)| std::fs::read(fixture(n)).unwrap())
        .collect();
    let alphabet = b" \t\n:-[]{},#&*!|>'\"%@`?0123456789abcdefnode";
    for i in 0..3000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 512) as usize;
            (0..len)
                .map(|_| {
                    if next() % 4 == 0 {
                        next() as u8
                    } else {
                        alphabet[(next() % alphabet.len() as u64) as usize]
                    }
                })
                .collect()
        } else {
            let mut b = corpus[(next() % corpus.len() as u64) as usize].clone();
            for _ in 0..(1 + next() % 8) {
                if b.is_empty() {
                    break;
                }
                let at = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            b
        };
        let (_, lint) = appscale_persist::appscalefile::lint_bytes(&bytes);
        for d in &lint.diagnostics {
            assert!(
                d.pos.line >= 1 && d.pos.col >= 1,
                "positions are 1-based: {d:?} for {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // Pathological shapes: deep nesting, many keys, long lines.
    for src in [
        "- ".repeat(50_000),
        "[".repeat(50_000),
        "{a: ".repeat(10_000),
        format!("zone: {}\n", "x".repeat(1 << 20)),
    ] {
        let (_, lint) = appscale_persist::appscalefile::lint_bytes(src.as_bytes());
        assert!(
            lint.has_errors() || src.starts_with("zone"),
            "{:?}",
            &src[..20]
        );
    }
}

/// Cloud and local records carry the deployment's name (AppScale's
/// `keyname`, else `group`), which scopes their disks' tags, labels, client
/// tokens and (local) owner files; without one they carry none, and the
/// tools fall back to the shared default.
#[test]
fn the_plan_names_the_deployment_after_keyname_else_group() {
    let base = "infrastructure: ec2\nmachine: ami-0123456789abcdef0\nzone: us-east-1b\nips_layout:\n  master: node-1\n  appengine: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: data-1\n";
    let plan = |extra: &str| {
        run(
            "appscalefile-lint",
            &["--plan", "-"],
            &format!("{extra}{base}"),
        )
        .expect(0)
        .record()
    };
    assert_eq!(
        plan("keyname: prod-key\ngroup: prod-group\n")["deployment"],
        "prod-key"
    );
    assert_eq!(plan("group: prod-group\n")["deployment"], "prod-group");
    assert!(plan("").get("deployment").is_none(), "no name: no key");
    let r = run(
        "appscalefile-lint",
        &["--plan", "-"],
        &format!("keyname: [a, b]\n{base}"),
    )
    .expect(1);
    assert!(
        r.stderr.contains("`keyname` must be a name"),
        "{}",
        r.stderr
    );
    // Local disks belong to their deployment too (the owner of their
    // images and snapshots).
    let local = run(
        "appscalefile-lint",
        &["--plan", "-"],
        "keyname: k\ninfrastructure: local\nips_layout:\n  master: node-1\n  database: node-1\n  zookeeper: node-1\ndisks:\n  node-1: data-1\n",
    )
    .expect(0)
    .record();
    assert_eq!(local["deployment"], "k", "{local}");
}
