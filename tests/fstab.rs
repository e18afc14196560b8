//! fstab as the system reads it: every line we do not own survives byte for
//! byte (comments, tabs, escapes, CRLF, Latin-1, no final newline), our line
//! is one findmnt accepts, and a foreign entry naming our disk or
//! mountpoint however it is written is a conflict, never a second mount.

mod common;

use std::path::Path;

use common::*;

fn mkfs(dev: &str) -> String {
    sh_ok(&["mkfs.ext4", "-q", "-F", "-L", "appscale", dev]);
    sh_ok(&["blkid", "-p", "-s", "UUID", "-o", "value", dev])
        .trim()
        .to_string()
}

fn mount_with(dev: &str, mp: &Path, fstab: &Path) -> Run {
    run(
        "disk-mount",
        &[
            "--no-fsck",
            "--device",
            dev,
            "--mountpoint",
            mp.to_str().unwrap(),
            "--fstab",
            fstab.to_str().unwrap(),
        ],
        "",
    )
}

/// The findmnt --verify section for `target`, and the summary line.
fn verify(fstab: &Path, target: &Path) -> (Vec<String>, String) {
    let out = sh(&[
        "findmnt",
        "--verify",
        "--verbose",
        "--tab-file",
        fstab.to_str().unwrap(),
    ]);
    let text = format!("{}{}", out.stdout, out.stderr);
    let mut section = Vec::new();
    let mut inside = false;
    for l in text.lines() {
        if !l.starts_with(' ') {
            inside = l == target.to_str().unwrap();
            continue;
        }
        if inside {
            section.push(l.trim().to_string());
        }
    }
    let summary = text
        .lines()
        .find(|l| l.contains("parse errors") || l.starts_with("Success"))
        .unwrap_or_default()
        .to_string();
    (section, summary)
}

#[test]
fn real_world_fstabs_keep_every_line_but_ours_byte_for_byte() {
    require_root();
    let t = TempDir::new("fstab-corpus");
    let d = LoopDev::new(&t, "disk", 64);
    let uuid = mkfs(&d.device);
    let mp = t.join("mnt");
    let corpus = repo().join("tests/fixtures/fstab");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the corpus is there");
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let original = std::fs::read(&f).unwrap();
        let fstab = t.join("fstab");
        std::fs::write(&fstab, &original).unwrap();
        let r = mount_with(&d.device, &mp, &fstab).expect(0);
        assert_eq!(r.record()["state"], "mounted", "{name}");
        // A file whose last line has no line ending gets one before ours.
        let mut base = original.clone();
        if !base.is_empty() && !base.ends_with(b"\n") {
            base.push(b'\n');
        }
        let after = std::fs::read(&fstab).unwrap();
        assert!(after.starts_with(&base), "{name}: every line kept");
        let ours = String::from_utf8(after[base.len()..].to_vec()).unwrap();
        assert!(
            ours.starts_with(&format!("UUID={uuid} {} ext4 ", mp.display()))
                && ours.ends_with("x-appscale-persist 0 2\n")
                && ours.lines().count() == 1,
            "{name}: one line of ours at the end: {ours:?}"
        );
        let (section, summary) = verify(&fstab, &mp);
        assert!(
            summary.starts_with("0 parse errors") || summary.starts_with("Success"),
            "{name}: findmnt reads the file: {summary}"
        );
        assert!(
            !section.is_empty() && section.iter().all(|l| l.starts_with("[ ]")),
            "{name}: findmnt finds nothing wrong with our line: {section:#?}"
        );
        run(
            "disk-unmount",
            &[
                "--device",
                &d.device,
                "--mountpoint",
                mp.to_str().unwrap(),
                "--fstab",
                fstab.to_str().unwrap(),
                "--remove-fstab",
            ],
            "",
        )
        .expect(0);
        assert_eq!(
            std::fs::read(&fstab).unwrap(),
            base,
            "{name}: removing our line gives the file back"
        );
    }
}

#[test]
fn a_foreign_entry_naming_our_disk_however_written_conflicts() {
    require_root();
    let t = TempDir::new("fstab-resolve");
    let d = LoopDev::new(&t, "disk", 64);
    let uuid = mkfs(&d.device);
    let mp = t.join("mnt");
    // As udev would name it under /dev/disk/by-uuid.
    let by_uuid = t.join("by-uuid-link");
    std::os::unix::fs::symlink(&d.device, &by_uuid).unwrap();
    for foreign in [
        format!("{} /data ext4 defaults 0 2", d.device),
        format!("{} /data ext4 defaults 0 2", by_uuid.display()),
        format!("UUID={} /data ext4 defaults 0 2", uuid.to_uppercase()),
        "LABEL=appscale /data ext4 defaults 0 2".to_string(),
        format!("/dev/sdz1 {}/ ext4 defaults 0 2", mp.display()),
    ] {
        let fstab = t.join("fstab");
        let text = format!("# theirs\n{foreign}\n");
        std::fs::write(&fstab, &text).unwrap();
        let r = mount_with(&d.device, &mp, &fstab).expect(1);
        assert_eq!(
            r.record()["error"]["code"],
            "fstab-conflict",
            "{foreign}: {}",
            r.stderr
        );
        assert!(!is_mounted(&mp), "{foreign}: nothing mounted");
        assert_eq!(std::fs::read_to_string(&fstab).unwrap(), text, "{foreign}");
    }
}
