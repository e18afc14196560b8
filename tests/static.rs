//! The shipped binaries start on any node: static (no program interpreter,
//! no libc to match) and able to run in an empty root. scripts/test builds
//! them (scripts/build-static --debug) before running the tests.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Where scripts/build-static put the binaries for `target` (debug).
fn static_dir(target: &str) -> PathBuf {
    let dir = target_dir().join(target).join("debug");
    assert!(
        dir.join("disk-mount").exists(),
        "{} has no static build: run `scripts/build-static --debug` (scripts/test does)",
        dir.display()
    );
    dir
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader):
/// a static binary has no PT_INTERP program header.
fn has_interpreter(bin: &Path) -> bool {
    let b = std::fs::read(bin).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{}", bin.display());
    assert_eq!(b[4], 2, "64-bit");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == 3)
}

/// Runs `argv` (paths inside `root`) chrooted into `root`.
fn in_root(root: &Path, argv: &[&str]) -> Run {
    let mut args = vec!["chroot", root.to_str().unwrap()];
    args.extend_from_slice(argv);
    sh(&args)
}

#[test]
fn every_tool_starts_alone_in_an_empty_root() {
    require_root();
    let dir = static_dir("x86_64-unknown-linux-musl");
    let t = TempDir::new("static-x86_64");
    for &tool in TOOLS {
        let bin = dir.join(tool);
        assert!(!has_interpreter(&bin), "{tool} is static");
        std::fs::copy(&bin, t.join(tool)).unwrap();
        let r = in_root(&t.path, &[&format!("/{tool}"), "--version"]).expect(0);
        assert_eq!(r.stdout, format!("{tool} 0.1.0\n"), "{tool}");
    }
    // And does its work there: the linter reads a file, the node tools
    // refuse a missing device with a record, not a crash.
    std::fs::write(
        t.join("AppScalefile"),
        "infrastructure: local\nips_layout:\n  - roles: [master, database, zookeeper]\n    nodes: 1\n    disks: d\n",
    )
    .unwrap();
    let r = in_root(&t.path, &["/appscalefile-lint", "--plan", "/AppScalefile"]).expect(0);
    assert!(r.stdout.contains(r#""disk":"d""#), "{}", r.stdout);
    let r = in_root(
        &t.path,
        &["/disk-ensure-fs", "--check", "--device", "/dev/none"],
    )
    .expect(1);
    assert!(r.stdout.contains("no-such-device"), "{}", r.stdout);
}

/// An empty root holding qemu-aarch64 alone (as `/qemu`), to start the
/// aarch64 builds in.
fn aarch64_root(tag: &str) -> TempDir {
    require_root();
    let qemu = PathBuf::from("/usr/bin/qemu-aarch64-static");
    assert!(
        qemu.exists(),
        "qemu-user-static is installed (scripts/setup test)"
    );
    let t = TempDir::new(tag);
    std::fs::copy(&qemu, t.join("qemu")).unwrap();
    t
}

/// Puts the static aarch64 `tool` of `dir` into `root` and starts it
/// there under qemu: `--version` answers its name and version; with
/// `help`, `--help` its usage too.
fn starts_under_qemu(root: &TempDir, dir: &Path, tool: &str, help: bool) {
    let bin = dir.join(tool);
    assert!(
        bin.exists(),
        "{} is not built: APPSCALE_PERSIST_AARCH64_CLOUD=1 scripts/build-static --debug --arch aarch64",
        bin.display()
    );
    assert!(!has_interpreter(&bin), "{tool} is static");
    std::fs::copy(&bin, root.join(tool)).unwrap();
    let r = in_root(&root.path, &["/qemu", &format!("/{tool}"), "--version"]).expect(0);
    assert_eq!(r.stdout, format!("{tool} 0.1.0\n"), "{tool}");
    if help {
        let r = in_root(&root.path, &["/qemu", &format!("/{tool}"), "--help"]).expect(0);
        assert!(r.stdout.contains("Usage:"), "{tool}: {}", r.stdout);
    }
}

#[test]
fn the_aarch64_node_tools_start_alone_in_an_empty_root() {
    let dir = static_dir("aarch64-unknown-linux-musl");
    let root = aarch64_root("static-aarch64");
    for tool in [
        "appscalefile-lint",
        "disk-ensure-fs",
        "disk-mount",
        "disk-unmount",
        "disk-archive",
        "disk-restore",
    ] {
        starts_under_qemu(&root, &dir, tool, false);
    }
}

/// Every tool's static aarch64 build starts under qemu-user alone in an
/// empty root (`--version`, `--help`). The cloud tools' aarch64 build is a
/// whole second SDK build (7 to 18 min of wall time on 2 cores), so CI
/// does not make it by default: run it with
/// `APPSCALE_PERSIST_AARCH64_CLOUD=1 scripts/test --test static --run-ignored all`
/// (scripts/build-static then builds every tool for aarch64). The node
/// tools' run above is always made.
#[test]
#[ignore = "opt-in: a full aarch64 SDK build; APPSCALE_PERSIST_AARCH64_CLOUD=1 scripts/test --test static --run-ignored all"]
fn every_aarch64_tool_starts_alone_in_an_empty_root() {
    let dir = static_dir("aarch64-unknown-linux-musl");
    let root = aarch64_root("static-aarch64-all");
    for &tool in TOOLS {
        starts_under_qemu(&root, &dir, tool, true);
    }
}
