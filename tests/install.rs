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

/// The package: a tarball, a .deb and their checksums; the .deb installed
/// into a fresh Debian root (debootstrap: only what a minimal Debian has)
/// gives every command the README shows, and the README's "After install"
/// commands run there as printed.
#[test]
fn package_makes_a_tarball_and_a_deb_that_install_into_a_fresh_root() {
    require_root();
    let t = TempDir::new("package");
    let out = t.join("out");
    let r = script("package", &["--debug", "--out", out.to_str().unwrap()]);
    let files: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(files.len(), 3, "{}", r.stdout);
    assert_eq!(files[2], out.join("SHA256SUMS").to_str().unwrap());
    let sums = finish(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(&out)
            .output()
            .unwrap(),
    )
    .expect(0);
    assert_eq!(sums.stdout.lines().count(), 2, "{}", sums.stdout);
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
        format!("{top}/lib/systemd/system/appscale-persist.service"),
        format!("{top}/lib/systemd/system/appscale-persist-backup.service"),
        format!("{top}/lib/systemd/system/appscale-persist-backup.timer"),
        format!(
            "{top}/share/appscale-persist/contrib/systemd/appscale-controller.service.d/appscale-persist.conf"
        ),
        format!("{top}/share/appscale-persist/contrib/cloud-init/appscale-persist.yaml"),
        format!("{top}/share/appscale-persist/contrib/vagrant/Vagrantfile"),
        format!("{top}/share/appscale-persist/examples/AppScalefile.local"),
        format!("{top}/bin/disk-doctor"),
    ] {
        assert!(listing.lines().any(|l| l == want), "{want} in the tarball");
    }
    assert!(files[1].ends_with(".deb"), "{}", files[1]);
    let info = sh_ok(&["dpkg-deb", "--field", files[1], "Package", "Version"]);
    assert_eq!(info, "Package: appscale-persist\nVersion: 0.1.0\n");
    let recommends = sh_ok(&["dpkg-deb", "--field", files[1], "Recommends"]);
    assert!(recommends.contains("xfsprogs"), "{recommends}");
    let contents = sh_ok(&["dpkg-deb", "--contents", files[1]]);
    for want in [
        "./usr/bin/disk-mount",
        "./usr/share/man/man1/disk-mount.1",
        "./usr/share/fish/vendor_completions.d/disk-mount.fish",
        "./usr/lib/appscale-persist/up",
        "./usr/lib/systemd/system/appscale-persist.service",
        "./usr/lib/systemd/system/appscale-persist-backup.timer",
    ] {
        assert!(contents.contains(want), "{want} in the .deb: {contents}");
    }

    // A fresh root, with the package installed as an operator would.
    let root = fresh_root(&t);
    std::fs::copy(files[1], root.join("tmp/appscale-persist.deb")).unwrap();
    in_root(&root, "dpkg -i /tmp/appscale-persist.deb").expect(0);
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    // Every command the README shows exists: installed ones in the root
    // (and answer --help there), the checkout's in the checkout.
    for cmd in readme_commands(&readme) {
        match cmd.as_str() {
            c if c.starts_with("scripts/") => {
                assert!(
                    repo().join(c).exists(),
                    "README shows {c}, not in the checkout"
                )
            }
            "just" | "cargo" | "export" | "sha256sum" | "apt-get" | "dpkg" | "tar"
            | "ansible-galaxy" | "ansible-playbook" | "cd" => {}
            c => {
                let r = in_root(&root, &format!("command -v {c} && {c} --help >/dev/null"));
                assert_eq!(
                    r.code, 0,
                    "README shows {c}: not installed by the .deb, or no --help: {}{}",
                    r.stdout, r.stderr
                );
            }
        }
    }
    // The "After install" block runs as printed.
    let after = readme
        .split("### After install")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's After install block");
    for line in after.lines().filter(|l| !l.trim().is_empty()) {
        let r = in_root(&root, line);
        assert_eq!(
            r.code, 0,
            "README: `{line}` in a fresh root: {}{}",
            r.stdout, r.stderr
        );
    }
}

/// Runs `script` with bash, chrooted into `root` (a clean environment).
fn in_root(root: &Path, script: &str) -> Run {
    finish(
        Command::new("chroot")
            .arg(root)
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "/bin/bash",
                "-o",
                "pipefail",
                "-c",
                script,
            ])
            .output()
            .unwrap(),
    )
}

/// Every command word of the README's `sh` blocks: the first word of each
/// stage of each command (pipes, `&&`, `;`), continuation lines joined and
/// comments dropped.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for block in readme.split("```sh\n").skip(1) {
        let body = block
            .split("```")
            .next()
            .unwrap_or_default()
            .replace("\\\n", " ");
        for line in body.lines() {
            let line = line.split(" #").next().unwrap_or_default();
            if line.trim_start().starts_with('#') {
                continue;
            }
            // A pipe stands between spaces; `[--from ID|latest]` is one word.
            for stage in line
                .split(" | ")
                .flat_map(|s| s.split(';'))
                .flat_map(|s| s.split("&&"))
            {
                let Some(word) = stage.split_whitespace().find(|w| !w.contains('=')) else {
                    continue;
                };
                if !out.iter().any(|o| o == word) {
                    out.push(word.to_string());
                }
            }
        }
    }
    out
}

/// A fresh minimal Debian root (debootstrap --variant=minbase, with jq the
/// package depends on), made once and kept as a tarball beside the build
/// (target/fresh-root-bookworm.tar), unpacked into the test's directory.
fn fresh_root(t: &TempDir) -> std::path::PathBuf {
    let cache = bin_dir().parent().unwrap().join("fresh-root-bookworm.tar");
    if !cache.exists() {
        let staging = t.join("debootstrap");
        let r = sh(&[
            "debootstrap",
            "--variant=minbase",
            "--include=jq",
            "bookworm",
            staging.to_str().unwrap(),
            "http://deb.debian.org/debian",
        ]);
        assert_eq!(
            r.code, 0,
            "debootstrap (scripts/setup test installs it; it needs Debian's mirror): {}{}",
            r.stdout, r.stderr
        );
        let partial = cache.with_extension("partial");
        sh_ok(&[
            "tar",
            "-C",
            staging.to_str().unwrap(),
            "-cf",
            partial.to_str().unwrap(),
            ".",
        ]);
        std::fs::rename(&partial, &cache).unwrap();
        sh_ok(&["rm", "-rf", staging.to_str().unwrap()]);
    }
    let root = t.join("root");
    std::fs::create_dir_all(&root).unwrap();
    sh_ok(&[
        "tar",
        "-C",
        root.to_str().unwrap(),
        "-xf",
        cache.to_str().unwrap(),
    ]);
    root
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
