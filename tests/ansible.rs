//! The tools as Ansible binary modules, run by real ansible-core (from PyPI,
//! in the virtual environment scripts/setup makes): the up and down
//! playbooks on the local provider with three node hosts that are aliases of
//! localhost, ansible-doc on every module, the module protocol directly, and
//! the EC2 flow against moto.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// The module names: the tools' names with `_` for `-`.
fn module_names() -> Vec<String> {
    TOOLS.iter().map(|t| t.replace('-', "_")).collect()
}

/// A copy of the collection (docs, metadata, action plugins) with the debug
/// tools as its modules.
fn collection(t: &TempDir) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else if e.file_name().to_string_lossy().ends_with(".yml")
                || e.file_name().to_string_lossy().ends_with(".md")
                || e.file_name().to_string_lossy().ends_with(".py")
            {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
    let root = t.join("collections");
    copy(
        &repo().join("ansible/ansible_collections"),
        &root.join("ansible_collections"),
    );
    let modules = root.join("ansible_collections/appscale/persist/plugins/modules");
    for m in module_names() {
        let m = m.as_str();
        std::fs::copy(bin_dir().join(m.replace('_', "-")), modules.join(m)).unwrap();
    }
    root
}

/// A deployment of `n` local nodes run through the playbooks.
struct Play {
    t: TempDir,
    collections: PathBuf,
    inventory: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Play {
    fn local(tag: &str, n: usize) -> Play {
        let t = TempDir::new(tag);
        let collections = collection(&t);
        let disks: Vec<String> = (0..n).map(|i| format!("ans-{i}")).collect();
        std::fs::write(
            t.join("AppScalefile"),
            format!("infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: {n}\n    disks: [{}]\n", disks.join(", ")),
        )
        .unwrap();
        let hosts: String = (0..n)
            .map(|i| {
                format!(
                    "    node-{i}:\n      appscale_mountpoint: {}\n      appscale_fstab: {}\n",
                    t.s(&format!("mnt/node-{i}")),
                    t.s(&format!("fstab-{i}"))
                )
            })
            .collect();
        let inventory = t.join("inventory.yml");
        std::fs::write(
            &inventory,
            format!(
                "all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {}\n    appscale_appscalefile: {}\n    appscale_state_dir: {}\n    appscale_size: 64M\n  hosts:\n{hosts}",
                venv().join("bin/python").display(),
                t.s("AppScalefile"),
                t.s("disks")
            ),
        )
        .unwrap();
        Play {
            t,
            collections,
            inventory,
            extra_env: Vec::new(),
        }
    }

    fn ansible(&self, program: &str, args: &[&str]) -> Run {
        let mut c = Command::new(venv().join("bin").join(program));
        c.args(args)
            .env("ANSIBLE_COLLECTIONS_PATH", &self.collections)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_LOCAL_TEMP", self.t.join("ansible-local"))
            .env("ANSIBLE_REMOTE_TEMP", self.t.join("ansible-remote"))
            .env("ANSIBLE_HOME", self.t.join("ansible-home"))
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        finish(c.output().unwrap())
    }

    fn playbook(&self, book: &str, extra: &[&str]) -> Run {
        let path = repo().join("ansible").join(book);
        let mut args = vec![
            "-i",
            self.inventory.to_str().unwrap(),
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ansible("ansible-playbook", &args)
    }

    fn mnt(&self, i: usize) -> PathBuf {
        self.t.join(&format!("mnt/node-{i}"))
    }

    fn loops(&self) -> usize {
        sh_ok(&["losetup", "--list", "--noheadings", "--output", "BACK-FILE"])
            .lines()
            .filter(|l| l.contains(&self.t.s("disks")))
            .count()
    }
}

/// host → (ok, changed, failed) from the play recap.
fn recap(r: &Run) -> BTreeMap<String, (u32, u32, u32)> {
    let mut out = BTreeMap::new();
    let mut in_recap = false;
    for line in r.stdout.lines() {
        if line.starts_with("PLAY RECAP") {
            in_recap = true;
            continue;
        }
        if !in_recap || !line.contains(" : ") {
            continue;
        }
        let (host, rest) = line.split_once(" : ").unwrap();
        let field = |name: &str| -> u32 {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(
            host.trim().to_string(),
            (field("ok"), field("changed"), field("failed")),
        );
    }
    assert!(!out.is_empty(), "no recap in:\n{}\n{}", r.stdout, r.stderr);
    out
}

#[test]
fn playbooks_keep_data_across_down_and_up_and_rerun_unchanged() {
    require_root();
    let p = Play::local("ansible-flow", 3);
    let r = p.playbook("up.yml", &[]);
    let rc = recap(&r);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for (host, (_, changed, failed)) in &rc {
        assert_eq!(*failed, 0, "{host}");
        assert!(*changed > 0, "{host} changed something the first time");
    }
    for i in 0..3 {
        assert!(is_mounted(&p.mnt(i)), "node-{i}");
        assert!(
            std::fs::read_to_string(p.t.join(&format!("fstab-{i}")))
                .unwrap()
                .contains("x-appscale-persist")
        );
    }
    std::fs::write(p.mnt(1).join("precious"), "kept").unwrap();

    let r = p.playbook("up.yml", &[]);
    assert_eq!(r.code, 0);
    for (host, (_, changed, failed)) in recap(&r) {
        assert_eq!(
            (changed, failed),
            (0, 0),
            "{host}: a second run changes nothing\n{}",
            r.stdout
        );
    }

    let r = p.playbook("down.yml", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for i in 0..3 {
        assert!(!is_mounted(&p.mnt(i)));
    }
    assert_eq!(p.loops(), 0, "every loop device detached");
    let r = p.playbook("down.yml", &[]);
    for (host, (_, changed, failed)) in recap(&r) {
        assert_eq!((changed, failed), (0, 0), "{host}: down twice");
    }

    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    assert_eq!(
        std::fs::read_to_string(p.mnt(1).join("precious")).unwrap(),
        "kept"
    );
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
}

/// down.yml with `appscale_keep_attached`: every disk unmounted, none
/// detached; the next up.yml mounts them again with the data.
#[test]
fn down_keep_attached_unmounts_and_leaves_the_disks_attached() {
    require_root();
    let p = Play::local("ansible-keep", 2);
    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    std::fs::write(p.mnt(0).join("precious"), "kept").unwrap();
    let r = p.playbook("down.yml", &["-e", "appscale_keep_attached=true"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for i in 0..2 {
        assert!(!is_mounted(&p.mnt(i)), "node-{i} unmounted");
    }
    assert_eq!(p.loops(), 2, "both disks still attached");
    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    assert_eq!(
        std::fs::read_to_string(p.mnt(0).join("precious")).unwrap(),
        "kept"
    );
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
    assert_eq!(p.loops(), 0);
}

/// `appscale_grow` with a larger `appscale_size` grows the disk, then its
/// filesystem, with the data intact (grown while detached: this container
/// lacks the CAP_SYS_RESOURCE ext4's online resize needs).
#[test]
fn appscale_grow_grows_the_disk_and_its_filesystem() {
    require_root();
    let p = Play::local("ansible-grow", 1);
    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    std::fs::write(p.mnt(0).join("precious"), "kept").unwrap();
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
    let bigger = ["-e", "appscale_size=128M"];
    let r = p.playbook("up.yml", &bigger);
    assert_ne!(r.code, 0, "a larger size without appscale_grow fails");
    assert!(r.stdout.contains("size-mismatch"), "{}", r.stdout);
    let image = p.t.join("disks/ans-0.img");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 << 20);
    assert_eq!(p.playbook("down.yml", &[]).code, 0);

    let r = p.playbook(
        "up.yml",
        &["-e", "appscale_size=128M", "-e", "appscale_grow=true"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 128 << 20);
    let st = nix::sys::statvfs::statvfs(&p.mnt(0)).unwrap();
    assert!(
        st.blocks() * st.fragment_size() > 100 << 20,
        "the filesystem grew"
    );
    assert_eq!(
        std::fs::read_to_string(p.mnt(0).join("precious")).unwrap(),
        "kept"
    );
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
}

/// Ansible's conventions on real ansible-core: `state:` picks the end state
/// (disk_mount unmounted runs disk_unmount, disk_attach detached runs
/// disk_detach, through the collection's action plugins; options only the
/// other module takes are ignored there), booleans are positive
/// (`manage_fstab`, `fsck`), and `fstab` comes once from module_defaults
/// through the `node` action group.
#[test]
fn state_positive_booleans_and_module_defaults() {
    require_root();
    let p = Play::local("ansible-state", 1);
    let r = p.playbook("up.yml", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // up.yml sets the fstab only in module_defaults (group node); so does
    // the play below: disk_unmount finds our entry there (else it leaves
    // the mount alone), and removes it (`remove_fstab`, an option of
    // disk_unmount, passed on by disk_mount's `state: unmounted`).
    assert!(
        std::fs::read_to_string(p.t.join("fstab-0"))
            .unwrap()
            .contains("x-appscale-persist")
    );
    let book = p.t.join("state.yml");
    std::fs::write(
        &book,
        format!(
            r#"- hosts: all
  gather_facts: false
  module_defaults:
    group/appscale.persist.provider:
      state_dir: "{{{{ appscale_state_dir }}}}"
    group/appscale.persist.node:
      fstab: "{{{{ appscale_fstab }}}}"
  tasks:
    - ansible.builtin.import_tasks: {tasks}
    - name: Unmount through disk_mount
      appscale.persist.disk_mount:
        state: unmounted
        records: ["{{{{ appscale_record }}}}"]
        remove_fstab: true
        seed: true
      register: u
    - name: Detach through disk_attach
      appscale.persist.disk_attach:
        state: detached
        records: "{{{{ u.records }}}}"
        size: 64M
      register: d
    - name: Attach again
      appscale.persist.disk_attach:
        records: ["{{{{ appscale_record }}}}"]
      register: a
    - name: Mount without an fstab entry nor fsck
      appscale.persist.disk_mount:
        records: "{{{{ a.records }}}}"
        manage_fstab: false
        fsck: false
      register: m1
    - name: The fstab from module_defaults is left alone
      ansible.builtin.command: grep -c x-appscale-persist {{{{ appscale_fstab }}}}
      register: f1
      failed_when: false
      changed_when: false
    - name: Mounted again, now keeping the entry (the default)
      appscale.persist.disk_mount:
        state: mounted
        records: "{{{{ a.records }}}}"
      register: m2
    - ansible.builtin.assert:
        that:
          - u is changed and u.records[0].state == 'unmounted'
          - d is changed and d.records[0].state == 'detached'
          - a is changed and a.records[0].state == 'attached'
          - m1 is changed and m1.records[0].state == 'mounted'
          - f1.stdout == '0'
          - m2 is changed
"#,
            tasks = repo().join("ansible/tasks/host-record.yml").display(),
        ),
    )
    .unwrap();
    let r = p.ansible(
        "ansible-playbook",
        &["-i", p.inventory.to_str().unwrap(), book.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(recap(&r)["node-0"].2, 0, "{}", r.stdout);
    assert!(is_mounted(&p.mnt(0)));
    assert!(
        std::fs::read_to_string(p.t.join("fstab-0"))
            .unwrap()
            .contains("x-appscale-persist"),
        "the entry is back in module_defaults' fstab"
    );

    // A state the module does not reach, and a typo, fail with a message
    // naming them; disk_mount's own options are checked as before.
    let bad = p.t.join("bad.yml");
    for (task, want) in [
        (
            "state: gone\n        device: /dev/null",
            "state must be one of mounted, unmounted, not 'gone'",
        ),
        (
            "device: /dev/null\n        fsck: maybe",
            "argument fsck must be a boolean",
        ),
        (
            "device: /dev/null\n        no_such: 1",
            "Unsupported parameters for (disk_mount) module: no_such",
        ),
    ] {
        std::fs::write(
            &bad,
            format!("- hosts: all\n  gather_facts: false\n  tasks:\n    - appscale.persist.disk_mount:\n        {task}\n"),
        )
        .unwrap();
        let r = p.ansible(
            "ansible-playbook",
            &["-i", p.inventory.to_str().unwrap(), bad.to_str().unwrap()],
        );
        assert_ne!(r.code, 0, "{task}");
        assert!(r.stdout.contains(want), "{task}: {}", r.stdout);
    }
    assert!(is_mounted(&p.mnt(0)), "nothing done by the failed tasks");
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
    assert_eq!(p.loops(), 0);
}

#[test]
fn check_mode_changes_nothing_and_says_what_would() {
    require_root();
    let p = Play::local("ansible-check", 2);
    let r = p.playbook("up.yml", &["--check"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for (host, (_, changed, failed)) in recap(&r) {
        assert_eq!(failed, 0, "{host}");
        assert!(changed > 0, "{host}: check mode reports what would change");
    }
    assert!(!p.t.join("disks/ans-0.img").exists(), "no image");
    assert_eq!(p.loops(), 0, "no loop device");
    assert!(!p.mnt(0).exists() && !is_mounted(&p.mnt(0)), "no mount");
    assert!(!p.t.join("fstab-0").exists(), "no fstab");
    // For real, with --diff: the fstab change is shown.
    let r = p.playbook("up.yml", &["--diff"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains(&format!("+++ after: {}", p.t.s("fstab-0"))),
        "the fstab diff is shown: {}",
        r.stdout
    );
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
}

#[test]
fn one_host_with_a_bad_disk_fails_alone() {
    require_root();
    let p = Play::local("ansible-bad", 3);
    std::fs::create_dir_all(p.t.join("disks")).unwrap();
    junk_image(&p.t.join("disks/ans-1.img"), 64);
    let r = p.playbook("up.yml", &[]);
    assert_ne!(r.code, 0);
    let rc = recap(&r);
    assert_eq!(rc["node-1"].2, 1, "node-1 failed: {}", r.stdout);
    assert_eq!((rc["node-0"].2, rc["node-2"].2), (0, 0));
    assert!(r.stdout.contains("not blank"), "{}", r.stdout);
    assert!(is_mounted(&p.mnt(0)) && is_mounted(&p.mnt(2)) && !is_mounted(&p.mnt(1)));
    let r = p.playbook("down.yml", &[]);
    assert_eq!(
        r.code, 0,
        "down of the good hosts (and the bad one's unmounted disk): {}",
        r.stdout
    );
    assert_eq!(p.loops(), 0);
}

#[test]
fn status_playbook_prints_one_table_and_fails_on_a_problem() {
    require_root();
    let p = Play::local("ansible-status", 2);
    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    let r = p.playbook("status.yml", &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let table: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("node-0") || l.contains("node-1") || l.contains("PROBLEMS"))
        .filter(|l| l.contains("ans-") || l.contains("PROBLEMS"))
        .collect();
    assert_eq!(table.len(), 3, "one header, one row per node: {}", r.stdout);
    assert!(table[1..].iter().all(|l| l.contains("ok")), "{table:?}");
    assert!(
        recap(&r)
            .values()
            .all(|&(_, changed, failed)| (changed, failed) == (0, 0)),
        "{}",
        r.stdout
    );

    // One node's disk unmounted: that host fails, with the code and the fix.
    sh_ok(&["umount", p.mnt(1).to_str().unwrap()]);
    for extra in [&[][..], &["--check"][..]] {
        let r = p.playbook("status.yml", extra);
        assert_ne!(r.code, 0, "{}", r.stdout);
        assert!(r.stdout.contains("[not-mounted]"), "{}", r.stdout);
        assert!(r.stdout.contains("fix: run disk-mount"), "{}", r.stdout);
        let rc = recap(&r);
        assert_eq!(rc["node-0"].2, 0, "{}", r.stdout);
        assert_eq!(rc["node-1"].2, 1, "{}", r.stdout);
    }
    assert!(!is_mounted(&p.mnt(1)), "status changed nothing");
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
}

#[test]
fn ansible_doc_renders_every_module() {
    let t = TempDir::new("ansible-doc");
    let p = Play {
        collections: collection(&t),
        inventory: PathBuf::new(),
        extra_env: Vec::new(),
        t,
    };
    // Every module in one ansible-doc run (each run is half a CPU-second
    // of Python before it reads a module): its text, a section per module.
    let names: Vec<String> = module_names()
        .iter()
        .map(|m| format!("appscale.persist.{m}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let r = p.ansible("ansible-doc", &names);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut sections = std::collections::BTreeMap::new();
    for section in r.stdout.split("\n> ") {
        let header = section.lines().next().unwrap_or("");
        let name = header
            .split_whitespace()
            .find(|w| w.starts_with("appscale.persist."))
            .unwrap_or_else(|| panic!("a section names no module: {header}"));
        sections.insert(name.to_string(), section);
    }
    for name in &names {
        let section = sections
            .get(*name)
            .unwrap_or_else(|| panic!("{name}: not rendered:\n{}", r.stdout));
        assert!(
            section.contains("OPTIONS")
                && section.contains("EXAMPLES")
                && section.contains("RETURN VALUES"),
            "{name}: {section}"
        );
    }
    let mut args = vec!["--json"];
    args.extend(&names);
    let j = p.ansible("ansible-doc", &args);
    let doc: Value =
        serde_json::from_str(&j.stdout).unwrap_or_else(|e| panic!("{e}: {}", j.stdout));
    for name in &names {
        assert!(
            doc[*name]["doc"]["short_description"].is_string(),
            "{name}: {}",
            doc[*name]
        );
    }
}

/// Long options of a tool, from its --help, minus the ones Ansible sets
/// itself (check) or that only shape terminal output.
fn flags(tool: &str) -> Vec<String> {
    let help = run(tool, &["--help"], "").expect(0).stdout;
    // Option lines look like `  -q, --quiet` or `      --fstab <PATH>`.
    let mut out: Vec<String> = help
        .lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let t = if t.len() > 4
                && t.starts_with('-')
                && !t.starts_with("--")
                && t[2..].starts_with(", ")
            {
                &t[4..]
            } else {
                t
            };
            t.strip_prefix("--")
        })
        .map(|w| {
            w.split([' ', '=', '[', '<', ',', '.'])
                .next()
                .unwrap()
                .replace('-', "_")
        })
        .filter(|w| {
            !w.is_empty() && !["check", "quiet", "verbose", "help", "version"].contains(&w.as_str())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn module_docs_list_exactly_the_tools_options() {
    use appscale_persist::ansible;
    use appscale_persist::appscalefile::yaml;
    for m in module_names() {
        let m = m.as_str();
        let tool = m.replace('_', "-");
        let text = std::fs::read_to_string(repo().join(format!(
            "ansible/ansible_collections/appscale/persist/plugins/modules/{m}.yml"
        )))
        .unwrap();
        let parsed = yaml::parse(&text);
        assert!(parsed.problems.is_empty(), "{m}.yml: {:?}", parsed.problems);
        let doc = &parsed.documents[0];
        let options = doc
            .get("DOCUMENTATION")
            .and_then(|d| d.get("options"))
            .and_then(|o| o.as_map())
            .unwrap();
        let mut documented: Vec<String> = options
            .iter()
            .filter_map(|(k, _)| k.scalar().map(str::to_string))
            .filter(|k| k != "records")
            .collect();
        documented.sort();
        let mut from_help = flags(&tool);
        if tool == "appscalefile-lint" {
            from_help.push("file".into());
            from_help.sort();
        }
        from_help.retain(|f| f != "endpoint");
        // Ansible's conventions: positive booleans for negative flags, and
        // `state:` for the modules that name an end state.
        for f in from_help.iter_mut() {
            let long = f.replace('_', "-");
            if let Some((arg, _)) = ansible::POSITIVE.iter().find(|p| p.1 == long) {
                *f = arg.to_string();
            }
        }
        if ansible::END_STATES.iter().any(|e| e.0 == tool) {
            from_help.push("state".into());
        }
        from_help.sort();
        assert_eq!(documented, from_help, "{m}.yml options vs {tool} --help");
        assert!(
            doc.get("EXAMPLES").and_then(|e| e.scalar()).is_some(),
            "{m}: EXAMPLES"
        );
        assert!(
            doc.get("RETURN").and_then(|e| e.as_map()).is_some(),
            "{m}: RETURN"
        );
    }
}

/// Runs a tool as Ansible does: one argument, the path of a JSON file.
fn as_module(t: &TempDir, tool: &str, args: Value) -> (i32, Value) {
    let path = t.join(&format!("args-{}.json", tool));
    std::fs::write(&path, args.to_string()).unwrap();
    let r = run(tool, &[path.to_str().unwrap()], "");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout: {}", r.stdout);
    (r.code, serde_json::from_str(lines[0]).unwrap())
}

#[test]
fn the_binary_module_protocol() {
    require_root();
    let t = TempDir::new("module");
    let d = LoopDev::new(&t, "disk", 64);
    let base = json!({"_ansible_check_mode": true, "_ansible_diff": false, "_ansible_verbosity": 0, "_ansible_module_name": "disk_ensure_fs", "_ansible_no_log": false});

    let mut args = base.clone();
    args["device"] = json!(d.device);
    let (code, out) = as_module(&t, "disk-ensure-fs", args.clone());
    assert_eq!(
        (code, &out["changed"], &out["failed"]),
        (0, &json!(true), &json!(false)),
        "{out}"
    );
    assert_eq!(
        out["device"],
        d.device.as_str(),
        "the record's fields are at the top level"
    );
    assert!(
        out["msg"].as_str().unwrap().contains("would format"),
        "{out}"
    );
    assert_eq!(
        sh(&["blkid", "-p", &d.device]).code,
        2,
        "check mode formatted nothing"
    );

    args["_ansible_check_mode"] = json!(false);
    let (code, out) = as_module(&t, "disk-ensure-fs", args.clone());
    assert_eq!(
        (code, &out["changed"], &out["state"]),
        (0, &json!(true), &json!("formatted")),
        "{out}"
    );
    let (_, out) = as_module(&t, "disk-ensure-fs", args.clone());
    assert_eq!(out["changed"], false);

    let mut bad = args.clone();
    bad["devise"] = json!("/dev/sdz");
    let (code, out) = as_module(&t, "disk-ensure-fs", bad);
    assert_eq!((code, &out["failed"]), (1, &json!(true)));
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains("Unsupported parameters for (disk_ensure_fs) module: devise")
            && msg.contains("device"),
        "{msg}"
    );

    let mut bad = args.clone();
    bad["grow"] = json!("perhaps");
    let (_, out) = as_module(&t, "disk-ensure-fs", bad);
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("argument grow must be a boolean"),
        "{out}"
    );
    let mut bad = args.clone();
    bad["fstype"] = json!(["ext4"]);
    let (_, out) = as_module(&t, "disk-ensure-fs", bad);
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("argument fstype must be a string"),
        "{out}"
    );
    let mut bad = args.clone();
    bad["fstype"] = json!("zfs");
    let (_, out) = as_module(&t, "disk-ensure-fs", bad);
    assert_eq!(out["failed"], true);
    assert!(out["msg"].as_str().unwrap().contains("zfs"), "{out}");
    let mut bad = args.clone();
    bad["records"] = json!([{"v": 1, "device": 7}]);
    let (_, out) = as_module(&t, "disk-ensure-fs", bad);
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .starts_with("argument records[0]:"),
        "{out}"
    );

    // A refusal is `failed` with the tool's exit status and no stack trace.
    let mut xfs = args.clone();
    xfs["fstype"] = json!("xfs");
    let (code, out) = as_module(&t, "disk-ensure-fs", xfs);
    assert_eq!(
        (code, &out["failed"], &out["rc"]),
        (1, &json!(true), &json!(3))
    );
    assert_eq!(out["error"]["code"], "fs-mismatch");

    // Diff mode returns the fstab change.
    let fstab = t.join("fstab");
    let (code, out) = as_module(
        &t,
        "disk-mount",
        json!({"_ansible_check_mode": true, "_ansible_diff": true, "device": d.device, "mountpoint": t.s("mnt"), "fstab": fstab, "device_timeout": 10}),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["diff"][0]["before"], "");
    assert!(
        out["diff"][0]["after"]
            .as_str()
            .unwrap()
            .contains("x-systemd.device-timeout=10s"),
        "{out}"
    );
    assert!(!fstab.exists());

    // The linter as a module.
    let file = repo().join("tests/fixtures/appscalefile/valid-new-gce.yaml");
    let (code, out) = as_module(
        &t,
        "appscalefile-lint",
        json!({"_ansible_check_mode": false, "file": file, "plan": true}),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["records"][0]["disk"], "mydisk1");
    let file = repo().join("tests/fixtures/appscalefile/disk-duplicate.yaml");
    let (code, out) = as_module(
        &t,
        "appscalefile-lint",
        json!({"_ansible_check_mode": false, "file": file}),
    );
    assert_eq!((code, &out["failed"]), (1, &json!(true)));
    assert_eq!(out["diagnostics"][0]["code"], "disk-duplicate");
    let (_, out) = as_module(
        &t,
        "appscalefile-lint",
        json!({"_ansible_check_mode": false, "records": []}),
    );
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("Unsupported parameters for (appscalefile_lint) module: records"),
        "{out}"
    );
}

#[test]
fn inventory_from_an_appscalefile_works_with_ansible() {
    let t = TempDir::new("inventory");
    let p = Play {
        collections: collection(&t),
        inventory: PathBuf::new(),
        extra_env: Vec::new(),
        t,
    };
    let file = repo().join("tests/fixtures/appscalefile/valid-new-ec2-groups.yaml");
    let inv = run(
        "appscalefile-lint",
        &["--inventory", file.to_str().unwrap()],
        "",
    )
    .expect(0)
    .stdout;
    let path = p.t.join("inventory.json");
    std::fs::write(&path, inv).unwrap();
    let r = p.ansible(
        "ansible-inventory",
        &["-i", path.to_str().unwrap(), "--list"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let listed: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(listed["database"]["hosts"], json!(["node-3", "node-4"]));
    assert_eq!(
        listed["_meta"]["hostvars"]["node-3"]["appscale_disk"],
        "db-data-1"
    );
    assert_eq!(
        listed["_meta"]["hostvars"]["node-3"]["appscale_zone"],
        "us-east-1b"
    );
    assert_eq!(
        listed["_meta"]["hostvars"]["node-0"]["appscale_provider"],
        "ec2"
    );
    // The same through the inventory script.
    let mut script = p;
    script.extra_env = vec![
        ("APPSCALEFILE".into(), file.display().to_string()),
        (
            "PATH".into(),
            format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap()),
        ),
    ];
    let r = script.ansible(
        "ansible-inventory",
        &[
            "-i",
            repo().join("ansible/inventory.sh").to_str().unwrap(),
            "--list",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let via_script: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(via_script["_meta"]["hostvars"], listed["_meta"]["hostvars"]);
    assert_eq!(via_script["database"], listed["database"]);
}

#[test]
fn the_ec2_flow_through_the_playbooks() {
    require_root();
    let moto = Server::moto();
    let t = TempDir::new("ansible-ec2");
    let collections = collection(&t);
    let inst: Vec<String> = moto
        .ec2_admin(&["run-instances", "us-east-1b", "2"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    std::fs::write(
        t.join("AppScalefile"),
        "infrastructure: ec2\nmachine: ami-0123456789abcdef0\ninstance_type: m3.medium\nzone: us-east-1b\nips_layout:\n  - roles: [master, database, zookeeper, appengine]\n    nodes: 1\n    disks: data-a\n  - roles: [database, zookeeper]\n    nodes: 1\n    disks: data-b\n",
    )
    .unwrap();
    // Volumes exist already (tagged by Name), and a loop device stands in for
    // each where udev would link its NVMe device.
    let mut devs = Vec::new();
    for name in ["data-a", "data-b"] {
        let vol = moto
            .ec2_admin(&["create-volume", "us-east-1b", "1", name])
            .as_str()
            .unwrap()
            .to_string();
        let d = LoopDev::new(&t, name, 1024);
        std::fs::create_dir_all(t.join("dev/disk/by-id")).unwrap();
        std::os::unix::fs::symlink(
            &d.device,
            t.join(&format!(
                "dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
                vol.replacen('-', "", 1)
            )),
        )
        .unwrap();
        devs.push((vol, d));
    }
    // Each node learns which instance it is from its own metadata service
    // (both "nodes" are this machine here): down.yml's detach needs each
    // node's proof that it unmounted its disk, from the right instance.
    let imds: Vec<Server> = inst
        .iter()
        .map(|i| Server::python("fake_imds.py", &[i, "us-east-1b"]))
        .collect();
    let hosts: String = (0..2)
        .map(|i| format!("    node-{i}:\n      appscale_instance: {}\n      appscale_metadata_endpoint: {}\n      appscale_mountpoint: {}\n      appscale_fstab: {}\n", inst[i], imds[i].url(), t.s(&format!("mnt/node-{i}")), t.s(&format!("fstab-{i}"))))
        .collect();
    let inventory = t.join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {}\n    appscale_appscalefile: {}\n    appscale_endpoint_url: {}\n  hosts:\n{hosts}",
            venv().join("bin/python").display(),
            t.s("AppScalefile"),
            moto.url()
        ),
    )
    .unwrap();
    let p = Play {
        extra_env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
            ("APPSCALE_PERSIST_DEV_ROOT".into(), t.s("dev")),
        ],
        collections,
        inventory,
        t,
    };
    let r = p.playbook("up.yml", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for (i, (vol, _)) in devs.iter().enumerate() {
        assert!(is_mounted(&p.mnt(i)));
        assert_eq!(
            moto.ec2_admin(&["volume", vol])["attachments"][0]["instance"],
            inst[i].as_str()
        );
    }
    std::fs::write(p.mnt(0).join("precious"), "on EBS").unwrap();
    let r = p.playbook("up.yml", &[]);
    for (host, (_, changed, failed)) in recap(&r) {
        assert_eq!((changed, failed), (0, 0), "{host}\n{}", r.stdout);
    }
    let r = p.playbook("down.yml", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for (vol, _) in &devs {
        assert_eq!(moto.ec2_admin(&["volume", vol])["state"], "available");
    }
    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    assert_eq!(
        std::fs::read_to_string(p.mnt(0).join("precious")).unwrap(),
        "on EBS"
    );
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
}

#[test]
fn backup_and_restore_playbooks_bring_back_a_and_not_b() {
    require_root();
    let p = Play::local("ansible-backup", 2);
    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    for i in 0..2 {
        std::fs::write(p.mnt(i).join("a"), format!("A{i}")).unwrap();
    }
    let r = p.playbook("backup.yml", &["-e", "appscale_keep=2"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for i in 0..2 {
        std::fs::write(p.mnt(i).join("b"), "B").unwrap();
    }
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
    let r = p.playbook("restore.yml", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for i in 0..2 {
        assert_eq!(
            std::fs::read_to_string(p.mnt(i).join("a")).unwrap(),
            format!("A{i}")
        );
        assert!(!p.mnt(i).join("b").exists(), "node-{i}: B is not there");
        assert!(
            p.t.join(&format!("disks/ans-{i}.img")).exists(),
            "old disk kept"
        );
    }
    // The swap: an AppScalefile naming the restored disks takes them down.
    let restored: Vec<String> = (0..2)
        .map(|i| {
            std::fs::read_dir(p.t.join("disks"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with(&format!("ans-{i}-restored-")) && n.ends_with(".img"))
                .unwrap()
                .trim_end_matches(".img")
                .to_string()
        })
        .collect();
    std::fs::write(
        p.t.join("AppScalefile"),
        format!(
            "infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 2\n    disks: [{}]\n",
            restored.join(", ")
        ),
    )
    .unwrap();
    let r = p.playbook("down.yml", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(p.loops(), 0);
}

#[test]
fn archive_and_restore_archive_playbooks_move_the_nodes_data() {
    require_root();
    let p = Play::local("ansible-archive", 2);
    assert_eq!(p.playbook("up.yml", &[]).code, 0);
    for i in 0..2 {
        std::fs::write(p.mnt(i).join("a"), format!("A{i}")).unwrap();
    }
    let pw = p.t.join("archive.key");
    std::fs::write(&pw, "ansible-archive-password\n").unwrap();
    let repo = p.t.s("repo");
    let vars = |more: &str| {
        format!(
            "{{\"appscale_archive_repo\": \"{repo}\", \"appscale_archive_password_file\": \"{}\", \"appscale_archive_environment\": {{\"APPSCALE_PERSIST_ARCHIVE_CACHE\": \"{}\", \"APPSCALE_PERSIST_ARCHIVE_LEDGER\": \"{}\"}}{more}}}",
            pw.display(),
            p.t.s("cache"),
            p.t.s("ledger")
        )
    };
    let r = p.playbook(
        "archive.yml",
        &["-e", &vars(", \"appscale_archive_set\": \"weekly\", \"appscale_archive_lead\": 3, \"appscale_archive_verify\": true")],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // (The set's manifest is what restore-archive.yml reads below.)
    assert!(!r.stdout.contains("ansible-archive-password"));
    // archive.yml made the repository (restic init): from here on, a key
    // as cheap to open as `common::restic_repo`'s (the playbooks below run
    // restic some 60 times).
    cheapen_restic_key(Path::new(&repo), "ansible-archive-password");
    for i in 0..2 {
        std::fs::write(p.mnt(i).join("b"), "B").unwrap();
    }
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
    // The new deployment's disks (and filesystem type): each node's data
    // back from the set.
    std::fs::write(
        p.t.join("AppScalefile"),
        "infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 2\n    disks: [moved-0, moved-1]\n",
    )
    .unwrap();
    let r = p.playbook(
        "restore-archive.yml",
        &["-e", &vars(", \"appscale_restore_from\": \"set:weekly\", \"appscale_fstype\": \"xfs\", \"appscale_size\": \"512M\"")],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for i in 0..2 {
        assert_eq!(
            std::fs::read_to_string(p.mnt(i).join("a")).unwrap(),
            format!("A{i}")
        );
        assert!(
            !p.mnt(i).join("b").exists(),
            "node-{i}: B came after the set"
        );
    }
    // Again: nothing changes.
    let r = p.playbook(
        "restore-archive.yml",
        &["-e", &vars(", \"appscale_restore_from\": \"set:weekly\", \"appscale_fstype\": \"xfs\", \"appscale_size\": \"512M\"")],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        recap(&r).values().all(|(_, changed, _)| *changed == 0),
        "{}",
        r.stdout
    );

    // The timers' playbook writes the units and a root-only environment.
    let etc = p.t.join("etc");
    let r = p.playbook(
        "archive-timer.yml",
        &[
            "-e",
            &vars(&format!(
                ", \"appscale_systemd_dir\": \"{}\", \"appscale_config_dir\": \"{}\", \"appscale_archive_enable\": false, \"appscale_archive_calendar\": \"*-*-* 03:00:00\", \"appscale_archive_environment\": {{\"AWS_SECRET_ACCESS_KEY\": \"timer-secret-value\"}}",
                etc.display(),
                etc.display()
            )),
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("timer-secret-value"), "no_log");
    let env = std::fs::read_to_string(etc.join("archive.env")).unwrap();
    assert!(
        env.contains(&format!("APPSCALE_PERSIST_ARCHIVE_REPO={repo}"))
            && env.contains("AWS_SECRET_ACCESS_KEY=timer-secret-value"),
        "{env}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(etc.join("archive.env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(etc.join("appscale-persist-archive.timer"))
            .unwrap()
            .contains("OnCalendar=*-*-* 03:00:00")
    );
    assert!(etc.join("appscale-persist-archive-verify.service").exists());
    assert_eq!(p.playbook("down.yml", &[]).code, 0);
}

/// ansible/doctor.yml: nothing in the way on a fresh local deployment;
/// then a foreign fstab entry for one node's mountpoint fails that host
/// alone, the failed check named, its fix in the table.
#[test]
fn doctor_playbook_passes_then_fails_the_host_with_a_failed_check() {
    let p = Play::local("ansible-doctor", 2);
    let r = p.playbook("doctor.yml", &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("nothing in the way"), "{}", r.stdout);
    std::fs::write(
        p.t.join("fstab-1"),
        format!("/dev/sdz {} xfs defaults 0 2\n", p.mnt(1).display()),
    )
    .unwrap();
    let r = p.playbook("doctor.yml", &[]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    let rc = recap(&r);
    assert_eq!(rc["node-0"].2, 0, "{}", r.stdout);
    assert_eq!(rc["node-1"].2, 1, "{}", r.stdout);
    assert!(r.stdout.contains("failed: fstab"), "{}", r.stdout);
    assert!(
        r.stdout.contains("fix: remove or change that line"),
        "{}",
        r.stdout
    );
}

/// The collection's README lists every module, each once, with its tool.
#[test]
fn the_collection_readme_lists_every_module() {
    let readme = std::fs::read_to_string(
        repo().join("ansible/ansible_collections/appscale/persist/README.md"),
    )
    .unwrap();
    for m in module_names() {
        let row = format!("| `{m}` | `{}` |", m.replace('_', "-"));
        assert_eq!(
            readme.matches(&row).count(),
            1,
            "{row} in the collection README"
        );
    }
}

/// Every option of the `provider` action group (meta/runtime.yml) is taken
/// by every module in the group, `timeout` too (disk_status and
/// disk_doctor take it without showing it in --help: their calls are
/// bounded by it all the same), as a play's module_defaults gives them.
#[test]
fn the_provider_group_options_reach_every_module_of_the_group() {
    let t = TempDir::new("module-group");
    let runtime = std::fs::read_to_string(
        repo().join("ansible/ansible_collections/appscale/persist/meta/runtime.yml"),
    )
    .unwrap();
    let group: Vec<String> = runtime
        .split("  provider:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("    - "))
        .map(|l| l.trim_start_matches("    - ").to_string())
        .collect();
    assert!(group.contains(&"disk_status".to_string()), "{group:?}");
    for m in &group {
        let args = json!({
            "_ansible_check_mode": true, "_ansible_module_name": m,
            "state_dir": t.s("disks"), "endpoint_url": "http://127.0.0.1:9", "region": "us-east-1",
            "profile": "default", "project": "proj", "timeout": 7, "records": [],
        });
        let (code, out) = as_module(&t, &m.replace('_', "-"), args);
        assert!(
            !out["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("Unsupported parameters"),
            "{m}: {out}"
        );
        assert_eq!((code, &out["failed"]), (0, &json!(false)), "{m}: {out}");
    }
}

/// Each module runs the build for its host's architecture
/// (plugins/plugin_utils/arch.py): the x86_64 build from plugins/modules/,
/// the aarch64 one from plugins/modules/aarch64/ (a stand-in here, that
/// says which it is), and a build the collection lacks fails, naming it.
/// `appscale_module_arch` stands for an aarch64 host's `uname -m`.
#[test]
fn modules_run_the_build_for_the_hosts_architecture() {
    let t = TempDir::new("ansible-arch");
    let collections = collection(&t);
    let aarch64 = collections.join("ansible_collections/appscale/persist/plugins/modules/aarch64");
    std::fs::create_dir_all(&aarch64).unwrap();
    let stub = aarch64.join("disk_status");
    std::fs::write(
        &stub,
        "#!/bin/sh\n# WANT_JSON\necho '{\"changed\": false, \"build\": \"aarch64\"}'\n",
    )
    .unwrap();
    sh_ok(&["chmod", "0755", stub.to_str().unwrap()]);
    let book = t.join("arch.yml");
    std::fs::write(
        &book,
        format!(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - appscale.persist.disk_status:\n        records: []\n      register: s\n    - ansible.builtin.debug:\n        msg: \"BUILD={{{{ s.build | default('x86_64') }}}}\"\n    - appscale.persist.disk_create:\n        records: []\n        state_dir: {}\n      register: c\n      ignore_errors: true\n    - ansible.builtin.debug:\n        msg: \"CREATE={{{{ c.msg if c.failed | default(false) else 'ran' }}}}\"\n",
            t.s("disks")
        ),
    )
    .unwrap();
    let p = Play {
        collections,
        inventory: t.join("inventory.yml"),
        extra_env: Vec::new(),
        t,
    };
    for (arch, build) in [("x86_64", "x86_64"), ("aarch64", "aarch64")] {
        std::fs::write(
            &p.inventory,
            format!(
                "all:\n  hosts:\n    node-0:\n      ansible_connection: local\n      ansible_python_interpreter: {}\n      appscale_module_arch: {arch}\n",
                venv().join("bin/python").display()
            ),
        )
        .unwrap();
        let r = p.ansible(
            "ansible-playbook",
            &["-i", p.inventory.to_str().unwrap(), book.to_str().unwrap()],
        );
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains(&format!("BUILD={build}")),
            "{arch}: {}",
            r.stdout
        );
        if arch == "aarch64" {
            assert!(
                r.stdout.contains("has no aarch64 build of it"),
                "a build the collection lacks is named: {}",
                r.stdout
            );
        } else {
            assert!(r.stdout.contains("CREATE=ran"), "{}", r.stdout);
        }
    }
}
