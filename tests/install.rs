//! scripts/install and scripts/package, with the debug static build: the
//! installed tree has the tools, man pages that render, completions bash
//! can load, flows that find the installed tools, and an Ansible collection
//! tarball that ansible-galaxy installs offline; the package holds the same.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs a script of this checkout with `args` (ansible-galaxy from the test
/// virtual environment), and checks it succeeded.
fn script(name: &str, args: &[&str]) -> Run {
    let out = Command::new(repo().join("scripts").join(name))
        .args(args)
        .env("APPSCALE_PERSIST_VENV", venv())
        .output()
        .unwrap_or_else(|e| panic!("scripts/{name}: {e}"));
    finish(out).expect(0)
}

fn assert_file(path: &Path) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(meta.len() > 0, "{} is empty", path.display());
}

#[test]
fn install_lays_out_a_working_tree() {
    require_root();
    let t = TempDir::new("install");
    let stage = t.join("stage");
    script(
        "install",
        &[
            "--debug",
            "--prefix",
            "/opt/ap",
            "--destdir",
            stage.to_str().unwrap(),
        ],
    );
    let root = stage.join("opt/ap");
    let has_man = sh(&["sh", "-c", "command -v man"]).code == 0;
    for &tool in TOOLS {
        let bin = root.join("bin").join(tool);
        let r = sh(&[bin.to_str().unwrap(), "--version"]).expect(0);
        assert_eq!(r.stdout, format!("{tool} 0.1.0\n"));

        let page = root.join(format!("share/man/man1/{tool}.1"));
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(text.contains(&format!(".TH {tool} 1")), "{tool}.1 header");
        if has_man {
            let r = finish(
                Command::new("man")
                    .args(["-l", page.to_str().unwrap()])
                    .env("MANPAGER", "cat")
                    .env("MANWIDTH", "80")
                    .output()
                    .unwrap(),
            )
            .expect(0);
            assert!(
                r.stdout.contains("NAME") && r.stdout.contains("OPTIONS"),
                "{tool}: {}",
                r.stdout
            );
            assert!(r.stderr.is_empty(), "man -l {tool}.1 warned: {}", r.stderr);
        }

        let bash = root.join(format!("share/bash-completion/completions/{tool}"));
        let r = sh(&[
            "bash",
            "-c",
            &format!("set -e; source {}; complete -p {tool}", bash.display()),
        ])
        .expect(0);
        assert!(
            r.stdout.contains(tool),
            "bash completion for {tool}: {}",
            r.stdout
        );
        assert!(
            r.stderr.is_empty(),
            "sourcing {}: {}",
            bash.display(),
            r.stderr
        );
        assert_file(&root.join(format!("share/zsh/site-functions/_{tool}")));
        assert_file(&root.join(format!("share/fish/vendor_completions.d/{tool}.fish")));
    }

    // The flows run from the installed tree, through their bin/ links, and
    // use the tools installed beside them (not this checkout's, not PATH's).
    for flow in [
        "up",
        "down",
        "status",
        "backup",
        "restore",
        "archive",
        "restore-archive",
    ] {
        let bin = root.join(format!("bin/appscale-persist-{flow}"));
        let r = sh(&[bin.to_str().unwrap(), "--help"]).expect(0);
        assert!(r.stdout.contains("Usage:"), "{flow} --help: {}", r.stdout);
    }
    std::fs::write(
        t.join("AppScalefile"),
        "infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 1\n    disks: inst\n",
    )
    .unwrap();
    let status = root.join("bin/appscale-persist-status");
    let r = finish(
        Command::new(&status)
            .args([
                t.s("AppScalefile").as_str(),
                "--",
                "--state-dir",
                t.s("disks").as_str(),
            ])
            .env_remove("APPSCALE_PERSIST_BIN")
            .env_remove("CARGO_TARGET_DIR")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir(&t.path)
            .output()
            .unwrap(),
    );
    assert!(
        r.code == 0 || r.code == 1,
        "status from the installed tree: {}\n{}",
        r.stdout,
        r.stderr
    );
    // disk-status ran: the disk was never created.
    assert!(
        r.stdout.contains("no-such-disk"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );

    // The collection: built by ansible-galaxy, installed from the file
    // alone (no network), with the binary modules and the action plugins.
    let tarball = root.join("share/appscale-persist/appscale-persist-0.1.0.tar.gz");
    assert_file(&tarball);
    let into = t.join("collections");
    let r = finish(
        Command::new(venv().join("bin/ansible-galaxy"))
            .args(["collection", "install", "--offline", "-p"])
            .arg(&into)
            .arg(&tarball)
            .env("ANSIBLE_HOME", t.join("ansible-home"))
            .output()
            .unwrap(),
    )
    .expect(0);
    let persist = into.join("ansible_collections/appscale/persist");
    for m in ["disk_mount", "disk_create", "appscalefile_lint"] {
        let module = persist.join("plugins/modules").join(m);
        let r = sh(&[module.to_str().unwrap(), "--version"]).expect(0);
        assert!(r.stdout.starts_with(&m.replace('_', "-")), "{}", r.stdout);
    }
    assert_file(&persist.join("plugins/action/disk_mount.py"));
    assert_file(&persist.join("meta/runtime.yml"));
    assert!(r.stdout.contains("appscale.persist"), "{}", r.stdout);
    assert_file(&root.join("share/appscale-persist/playbooks/up.yml"));
}

#[test]
fn package_makes_a_tarball_and_a_deb() {
    require_root();
    let t = TempDir::new("package");
    let out = t.join("out");
    let r = script("package", &["--debug", "--out", out.to_str().unwrap()]);
    let files: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(files.len(), 2, "{}", r.stdout);
    let arch = sh_ok(&["uname", "-m"]).trim().to_string();
    let top = format!("appscale-persist-0.1.0-{arch}");
    assert_eq!(
        files[0],
        out.join(format!("{top}.tar.gz")).to_str().unwrap()
    );
    let listing = sh_ok(&["tar", "-tzf", files[0]]);
    for want in [
        format!("{top}/bin/disk-mount"),
        format!("{top}/bin/appscale-persist-up"),
        format!("{top}/lib/appscale-persist/lib.sh"),
        format!("{top}/share/man/man1/disk-mount.1"),
        format!("{top}/share/bash-completion/completions/disk-mount"),
        format!("{top}/share/appscale-persist/appscale-persist-0.1.0.tar.gz"),
        format!("{top}/share/doc/appscale-persist/README.md"),
    ] {
        assert!(listing.lines().any(|l| l == want), "{want} in the tarball");
    }
    assert!(files[1].ends_with(".deb"), "{}", files[1]);
    let info = sh_ok(&["dpkg-deb", "--field", files[1], "Package", "Version"]);
    assert_eq!(info, "Package: appscale-persist\nVersion: 0.1.0\n");
    let contents = sh_ok(&["dpkg-deb", "--contents", files[1]]);
    for want in [
        "./usr/bin/disk-mount",
        "./usr/share/man/man1/disk-mount.1",
        "./usr/share/fish/vendor_completions.d/disk-mount.fish",
        "./usr/lib/appscale-persist/up",
    ] {
        assert!(contents.contains(want), "{want} in the .deb: {contents}");
    }
}

/// scripts/install touches only the files it installs. It chmodded every
/// man page and completion under the prefix (other packages' too, and
/// through symbolic links, files outside the prefix). Now another
/// package's file keeps its mode, a link planted at one of its names is
/// replaced (its target left byte for byte, mode and all), and a directory
/// that leads out of the prefix through a link is refused, nothing written
/// there (the run stops there: its last directory, so one run shows all).
#[test]
fn install_touches_only_its_own_files() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let t = TempDir::new("install-own");
    let stage = t.join("stage");
    let root = stage.join("opt/ap");
    let completions = root.join("share/bash-completion/completions");
    let man = root.join("share/man/man1");
    std::fs::create_dir_all(&completions).unwrap();
    std::fs::create_dir_all(&man).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let theirs = completions.join("other-tool");
    std::fs::write(&theirs, "complete -F _other other-tool\n").unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o600)).unwrap();
    let victim = t.join("victim");
    std::fs::write(&victim, "not the installer's").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&victim, man.join("disk-mount.1")).unwrap();
    let outside = t.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("share/appscale-persist")).unwrap();
    let out = Command::new(repo().join("scripts/install"))
        .args([
            "--debug",
            "--prefix",
            "/opt/ap",
            "--destdir",
            stage.to_str().unwrap(),
        ])
        .env("APPSCALE_PERSIST_VENV", venv())
        .output()
        .unwrap();
    let r = finish(out);
    assert_eq!(
        mode(&theirs),
        0o600,
        "another package's file keeps its mode"
    );
    assert_eq!(mode(&victim), 0o600);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "not the installer's"
    );
    let page = std::fs::symlink_metadata(man.join("disk-mount.1")).unwrap();
    assert!(page.is_file(), "the planted link is replaced by the page");
    assert_eq!(mode(&man.join("disk-mount.1")), 0o644);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("leads out of"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written out there"
    );
}
