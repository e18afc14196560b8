//! The boot unit and cloud-init snippet in contrib/: systemd accepts them
//! (`systemd-analyze verify`, which needs no running systemd), they carry
//! the ordering docs/appscale.md promises, and the pipeline they run names
//! tools and flags that exist.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{TempDir, bin, repo, venv};

/// `section -> key -> values` of a unit file (keys may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            out.entry(section.clone()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not `key=value`: {line}", i + 1));
        assert!(
            !section.is_empty(),
            "line {}: a key outside a section",
            i + 1
        );
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

fn unit() -> String {
    std::fs::read_to_string(repo().join("contrib/systemd/appscale-persist.service")).unwrap()
}

#[test]
fn the_boot_unit_runs_once_before_appscale_with_its_mounts() {
    let u = parse_unit(&unit());
    let get = |s: &str, k: &str| -> String {
        u.get(s)
            .and_then(|s| s.get(k))
            .unwrap_or_else(|| panic!("[{s}] {k} missing"))
            .join(" ")
    };
    assert_eq!(get("Service", "Type"), "oneshot");
    assert_eq!(get("Service", "RemainAfterExit"), "yes");
    let before = get("Unit", "Before");
    for service in [
        "appscale-controller.service",
        "cassandra.service",
        "zookeeper.service",
    ] {
        assert!(before.contains(service), "Before= lacks {service}");
    }
    assert!(get("Unit", "RequiresMountsFor").contains("/var/lib/appscale-persist"));
    assert!(
        !get("Unit", "RequiresMountsFor").contains("/opt/appscale"),
        "the unit makes /opt/appscale: it cannot require its mount"
    );
    assert!(get("Unit", "After").contains("network-online.target"));
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");

    // The AppController's drop-in waits for the unit and the mount.
    let dropin = std::fs::read_to_string(
        repo().join("contrib/systemd/appscale-controller.service.d/appscale-persist.conf"),
    )
    .unwrap();
    let d = parse_unit(&dropin);
    assert_eq!(d["Unit"]["Requires"], ["appscale-persist.service"]);
    assert_eq!(d["Unit"]["After"], ["appscale-persist.service"]);
    assert_eq!(d["Unit"]["RequiresMountsFor"], ["/opt/appscale"]);
}

#[test]
fn the_boot_pipeline_names_tools_and_flags_that_exist() {
    let u = parse_unit(&unit());
    let exec = u["Service"]["ExecStart"].join(" ");
    assert!(exec.starts_with("/bin/bash -o pipefail -c "), "{exec}");
    // `$$` is systemd's literal `$`: no value of node.env is pasted in.
    assert!(!exec.contains("${APPSCALE") || exec.contains("$${APPSCALE"));
    let script = exec
        .split_once(" -c '")
        .and_then(|(_, s)| s.strip_suffix('\''))
        .expect("a single-quoted script");
    stages_exist(script);
}

/// Each stage of a unit's script names a tool (or an installed flow,
/// `appscale-persist-up`: scripts/up here) and flags it has.
fn stages_exist(script: &str) {
    for stage in script.split('|') {
        let words: Vec<&str> = stage
            .split_whitespace()
            .skip_while(|w| *w == "exec")
            .take_while(|w| !w.starts_with('>'))
            .collect();
        let tool = words[0];
        let program = match tool.strip_prefix("appscale-persist-") {
            Some(flow) => repo().join("scripts").join(flow),
            None => bin(tool),
        };
        // A flow's provider options (after `--`) go to the tool it passes
        // them to.
        let (own, passed) = match words.iter().position(|w| *w == "--") {
            Some(i) => (&words[..i], &words[i + 1..]),
            None => (&words[..], &[][..]),
        };
        let receiver = match tool {
            "appscale-persist-up" => "disk-attach",
            "appscale-persist-backup" => "disk-snapshot",
            "appscale-persist-down" => "disk-detach",
            other => other,
        };
        for (program, flags) in [(program, own), (bin(receiver), passed)] {
            let help = Command::new(&program).arg("--help").output().unwrap();
            assert!(help.status.success(), "{} --help", program.display());
            let help = String::from_utf8_lossy(&help.stdout);
            for flag in flags.iter().filter(|w| w.starts_with("--")) {
                assert!(help.contains(*flag), "{} has no {flag}", program.display());
            }
        }
    }
}

#[test]
fn the_backup_timer_starts_the_backup_service_daily() {
    let service =
        std::fs::read_to_string(repo().join("contrib/systemd/appscale-persist-backup.service"))
            .unwrap();
    let u = parse_unit(&service);
    assert_eq!(u["Service"]["Type"], ["oneshot"]);
    let exec = u["Service"]["ExecStart"].join(" ");
    let script = exec
        .split_once(" -c '")
        .and_then(|(_, s)| s.strip_suffix('\''))
        .expect("a single-quoted script");
    stages_exist(script);
    let timer = parse_unit(
        &std::fs::read_to_string(repo().join("contrib/systemd/appscale-persist-backup.timer"))
            .unwrap(),
    );
    assert_eq!(timer["Timer"]["OnCalendar"], ["daily"]);
    assert_eq!(timer["Install"]["WantedBy"], ["timers.target"]);
}

/// systemd's own parser, without a running systemd: unknown keys and
/// sections, bad values and missing executables are errors or warnings on
/// stderr.
#[test]
fn systemd_accepts_the_unit_and_the_drop_in() {
    let t = TempDir::new("systemd");
    std::fs::create_dir_all(t.join("appscale-controller.service.d")).unwrap();
    std::fs::copy(
        repo().join("contrib/systemd/appscale-persist.service"),
        t.join("appscale-persist.service"),
    )
    .unwrap();
    std::fs::copy(
        repo().join("contrib/systemd/appscale-controller.service.d/appscale-persist.conf"),
        t.join("appscale-controller.service.d/appscale-persist.conf"),
    )
    .unwrap();
    // A stand-in for AppScale's own unit, to which the drop-in applies.
    std::fs::write(
        t.join("appscale-controller.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let verify = |unit: &str| {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(t.join(unit))
            .env("SYSTEMD_UNIT_PATH", format!("{}:", t.s("")))
            .output()
            .expect("systemd-analyze (apt-get install systemd) runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{unit}: {stderr}");
        // Lines about the machine it runs on (no systemd running here) are
        // not about the unit.
        let about_unit: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("appscale-") && !l.contains("Failed to"))
            .collect();
        assert!(about_unit.is_empty(), "{unit}: {stderr}");
    };
    verify("appscale-persist.service");
    verify("appscale-controller.service");
    for unit in [
        "appscale-persist-backup.service",
        "appscale-persist-backup.timer",
    ] {
        std::fs::copy(repo().join("contrib/systemd").join(unit), t.join(unit)).unwrap();
        verify(unit);
    }

    // And a broken copy is caught, so the check can fail.
    let broken = unit().replace("RemainAfterExit=yes", "RemainAfterExt=yes");
    std::fs::write(t.join("appscale-persist.service"), broken).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(t.join("appscale-persist.service"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("RemainAfterExt"));
}

#[test]
fn the_cloud_init_snippet_is_cloud_config() {
    let path = repo().join("contrib/cloud-init/appscale-persist.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#cloud-config\n"));
    let out = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = doc["write_files"][0]["content"].as_str().unwrap();
    assert!(env.contains("APPSCALE_NODE=") && env.contains("APPSCALEFILE="));
    assert_eq!(
        doc["write_files"][0]["path"],
        "/etc/appscale-persist/node.env"
    );
    let enable = doc["runcmd"].to_string();
    assert!(enable.contains("appscale-persist.service"), "{enable}");
}

/// The archive and verify units: systemd accepts them and their timers,
/// their pipelines name tools and flags that exist, and their values come
/// from the environment files, never pasted in.
#[test]
fn the_archive_units_are_sound() {
    let t = TempDir::new("systemd-archive");
    for name in [
        "appscale-persist-archive.service",
        "appscale-persist-archive.timer",
        "appscale-persist-archive-verify.service",
        "appscale-persist-archive-verify.timer",
    ] {
        std::fs::copy(repo().join("contrib/systemd").join(name), t.join(name)).unwrap();
    }
    for name in [
        "appscale-persist-archive.service",
        "appscale-persist-archive-verify.service",
    ] {
        let text = std::fs::read_to_string(t.join(name)).unwrap();
        let u = parse_unit(&text);
        assert_eq!(u["Service"]["Type"], ["oneshot"], "{name}");
        assert!(
            u["Service"]["EnvironmentFile"]
                .contains(&"/etc/appscale-persist/archive.env".to_string())
        );
        let exec = u["Service"]["ExecStart"].join(" ");
        assert!(
            !exec.contains("${APPSCALE") || exec.contains("$${APPSCALE"),
            "{exec}"
        );
        let script = exec
            .split_once(" -c '")
            .and_then(|(_, s)| s.strip_suffix('\''))
            .expect("a single-quoted script");
        for stage in script.split('|') {
            let words: Vec<&str> = stage.split_whitespace().collect();
            let help = Command::new(bin(words[0])).arg("--help").output().unwrap();
            let help = String::from_utf8_lossy(&help.stdout);
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                assert!(help.contains(*flag), "{} has no {flag}", words[0]);
            }
        }
    }
    for name in [
        "appscale-persist-archive.timer",
        "appscale-persist-archive-verify.timer",
    ] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(t.join(name))
            .env("SYSTEMD_UNIT_PATH", format!("{}:", t.s("")))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{name}: {stderr}");
        let about: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("appscale-") && !l.contains("Failed to"))
            .collect();
        assert!(about.is_empty(), "{name}: {stderr}");
    }
}
