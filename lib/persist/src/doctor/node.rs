//! `disk-doctor`'s checks of this machine, made with the modules the node
//! tools act with (no cloud SDK): the metadata service `--self` needs
//! ([`metadata`]), the udev links cloud disks are found by
//! ([`udev_links`]), the mountpoint ([`mountpoint`]), the fstab as libmount
//! reads it ([`fstab_file`], [`fstab_entry`]), the state directory's room
//! for snapshots ([`state_dir`]), and whether AppScale would act on the
//! same disks ([`appscale_disks`]).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::appscalefile;
use crate::checks::{self, Check, Flow, Scope};
use crate::discover::{dev_root, sys_root};
use crate::fstab::{self, Fstab};
use crate::mount;
use crate::provider::local::{self, Local};
use crate::record::{DEFAULT_MOUNTPOINT, ProviderKind, Record};
use crate::release::identity::{self, TokenAnswer};
use crate::run::{self, Cmd};

/// The NVMe model of an EBS volume (`/sys/block/nvmeXnY/device/model`).
const EBS_NVME_MODEL: &str = "Amazon Elastic Block Store";

/// The SCSI model of a Compute Engine persistent disk.
const GCE_SCSI_MODEL: &str = "PersistentDisk";

/// The fix when udev's persistent-storage links are missing.
const UDEV_FIX: &str = "install the udev rules that make /dev/disk/by-id links (systemd's 60-persistent-storage.rules: the `udev` package; on Amazon Linux also amazon-ec2-utils), then `udevadm trigger --subsystem-match=block --action=add`";

/// Whether this machine looks like a container (Docker, Podman, a
/// Kubernetes pod, LXC): one more network hop away from the instance's
/// metadata service.
fn in_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::fs::read_to_string("/proc/1/cgroup").is_ok_and(|c| {
            ["docker", "kubepods", "containerd", "lxc", "libpod"]
                .iter()
                .any(|k| c.contains(k))
        })
}

/// Whether the metadata service answers, as `--self` needs it: IMDS (v2,
/// else v1) on EC2 and Eucalyptus, the metadata server on Compute Engine.
/// An IMDSv2 token call that gets no answer is the hop limit seen from a
/// container, and the check says how to raise it.
pub fn metadata(kind: ProviderKind, endpoint: Option<&str>) -> Check {
    let name = checks::METADATA;
    let container = if in_container() {
        " (this machine runs in a container)"
    } else {
        ""
    };
    match kind {
        ProviderKind::Ec2 | ProviderKind::Euca => {
            let token = identity::ec2_token(endpoint);
            let this = identity::ec2(endpoint);
            let hop = "IMDSv2 answers travel one hop by default: a container on the instance is one more. Raise the hop limit: `aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2` (or run on the host's network)";
            match (token, this) {
                (Err(e), _) | (_, Err(e @ identity::IdentityError::Unreachable { .. })) => {
                    Check::fail(
                        name,
                        Scope::Node,
                        format!(
                            "{e}: --self (the boot unit, backup.yml) reads this instance's id and zone there"
                        ),
                        "run on the instance itself, or pass --metadata-endpoint; from elsewhere name the instance (--instance) instead of --self",
                    )
                }
                (Ok(TokenAnswer::NoAnswer(why)), Err(e)) => Check::fail(
                    name,
                    Scope::Node,
                    format!(
                        "the IMDSv2 token call got no answer ({why}){container}, and IMDSv1 did not answer either ({e})"
                    ),
                    hop,
                ),
                (Ok(TokenAnswer::NoAnswer(why)), Ok(this)) => Check::warn(
                    name,
                    Scope::Node,
                    format!(
                        "the IMDSv2 token call got no answer ({why}){container}; IMDSv1 answered: {} in {}",
                        this.id, this.zone
                    ),
                    hop,
                ),
                (Ok(_), Err(e)) => Check::fail(
                    name,
                    Scope::Node,
                    format!("IMDS answered, but not with this instance's identity: {e}"),
                    "check the instance's metadata options (aws ec2 describe-instances: MetadataOptions)",
                ),
                (Ok(TokenAnswer::Issued), Ok(this)) => Check::ok(
                    name,
                    Scope::Node,
                    format!("IMDSv2 answers: {} in {}", this.id, this.zone),
                ),
                (Ok(TokenAnswer::Refused(status)), Ok(this)) => Check::ok(
                    name,
                    Scope::Node,
                    format!(
                        "IMDSv1 answers (the IMDSv2 token call was refused, HTTP {status}, as on Eucalyptus): {} in {}",
                        this.id, this.zone
                    ),
                ),
            }
        }
        ProviderKind::Gce => match identity::gce(endpoint) {
            Ok(this) => Check::ok(
                name,
                Scope::Node,
                format!(
                    "the metadata server answers: {} in {} of project {}",
                    this.name, this.zone, this.project
                ),
            ),
            Err(e) => Check::fail(
                name,
                Scope::Node,
                format!("{e}: --self reads this instance's name, zone and project there"),
                "run on the instance itself, or pass --metadata-endpoint; from elsewhere name the instance (--instance) instead of --self",
            ),
        },
        ProviderKind::Local | ProviderKind::Static => {
            Check::skip(name, Scope::Node, "no metadata service is needed")
        }
    }
}

/// The block devices under the sys root whose `attr` (a path under
/// `/sys/block/NAME/`) reads `want`, with their serial; kernel names that
/// start with `prefix` only.
fn devices_with(prefix: &str, attr: &str, want: &str) -> Vec<(String, String)> {
    let block = sys_root().join("block");
    let Ok(dir) = std::fs::read_dir(&block) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .filter(|n| {
            std::fs::read_to_string(block.join(n).join(attr)).is_ok_and(|m| m.trim() == want)
        })
        .map(|n| {
            let serial = crate::discover::serial_of(&n);
            (n, serial)
        })
        .collect();
    out.sort();
    out
}

/// The names in `/dev/disk/by-id` (under the dev root).
fn by_id_names() -> BTreeSet<String> {
    std::fs::read_dir(dev_root().join("disk/by-id"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the udev links the node tools find `kind`'s disks by are made
/// here: `nvme-Amazon_Elastic_Block_Store_vol...` for every EBS NVMe
/// device (Nitro), `virtio-<serial>` for every virtio disk with a serial
/// (Eucalyptus on KVM), `google-*` or `scsi-0Google_PersistentDisk_*` for
/// Compute Engine's disks (the `google-` names on NVMe machine families
/// come only from the guest environment's rules).
pub fn udev_links(kind: ProviderKind) -> Check {
    let name = checks::UDEV_LINKS;
    let links = by_id_names();
    let by_id = dev_root().join("disk/by-id");
    match kind {
        ProviderKind::Ec2 | ProviderKind::Euca => {
            let mut missing = Vec::new();
            let nvme = devices_with("nvme", "device/model", EBS_NVME_MODEL);
            for (k, serial) in &nvme {
                let base = format!("nvme-Amazon_Elastic_Block_Store_{serial}");
                if serial.is_empty()
                    || !["", "_1", "-ns-1"]
                        .iter()
                        .any(|s| links.contains(&format!("{base}{s}")))
                {
                    missing.push(format!(
                        "{k} ({}: no {}/{base})",
                        nonempty(serial),
                        by_id.display()
                    ));
                }
            }
            let mut virtio = Vec::new();
            if kind == ProviderKind::Euca {
                // Eucalyptus's node controller gives each volume a virtio
                // serial (`euca-vol-...`), which udev links as
                // virtio-<serial>.
                for (k, serial) in serial_only("vd").into_iter().filter(|(_, s)| !s.is_empty()) {
                    if !links.contains(&format!("virtio-{serial}")) {
                        missing.push(format!(
                            "{k} (serial {serial}: no {}/virtio-{serial})",
                            by_id.display()
                        ));
                    }
                    virtio.push(k);
                }
            }
            if !missing.is_empty() {
                return Check::fail(
                    name,
                    Scope::Node,
                    format!(
                        "volumes here have no udev link, so the node tools cannot find them by their volume id: {}",
                        missing.join("; ")
                    ),
                    UDEV_FIX,
                );
            }
            let what = match (nvme.len(), virtio.len()) {
                (0, 0) => "no EBS NVMe or virtio volume here: on Xen a volume is found by its attach name (/dev/sdf, /dev/xvdf)".to_string(),
                (n, 0) => format!("every EBS NVMe volume ({n}) has its /dev/disk/by-id link"),
                (n, v) => format!("every EBS NVMe volume ({n}) and virtio volume with a serial ({v}) has its /dev/disk/by-id link"),
            };
            Check::ok(name, Scope::Node, what)
        }
        ProviderKind::Gce => {
            let scsi = devices_with("sd", "device/model", GCE_SCSI_MODEL);
            let nvme = devices_with("nvme", "device/model", crate::nvme::GOOGLE_PD_MODEL);
            let google = links.iter().any(|l| l.starts_with("google-"));
            let scsi_links = links
                .iter()
                .filter(|l| {
                    l.starts_with("scsi-0Google_PersistentDisk_") || l.starts_with("google-")
                })
                .count();
            if !scsi.is_empty() && scsi_links == 0 {
                return Check::fail(
                    name,
                    Scope::Node,
                    format!(
                        "{} persistent disk(s) here, and no google-* or scsi-0Google_PersistentDisk_* link in {}",
                        scsi.len(),
                        by_id.display()
                    ),
                    UDEV_FIX,
                );
            }
            if !nvme.is_empty() && !google {
                return Check::warn(
                    name,
                    Scope::Node,
                    format!(
                        "{} NVMe persistent disk(s) here (a C3, C4, N4 or other NVMe machine family) and no google-* link: the guest environment's udev rules are missing; the node tools then read each disk's name from its NVMe Identify data, which needs root",
                        nvme.len()
                    ),
                    "install the guest environment (google-guest-configs: 65-gce-disk-naming.rules, google_nvme_id)",
                );
            }
            Check::ok(
                name,
                Scope::Node,
                match (scsi.len(), nvme.len()) {
                    (0, 0) => "no Compute Engine disk here yet".to_string(),
                    (s, n) => format!("{} persistent disk(s) here, named by udev links", s + n),
                },
            )
        }
        ProviderKind::Local | ProviderKind::Static => Check::skip(
            name,
            Scope::Node,
            "local and static disks are found by their image or path",
        ),
    }
}

/// Virtio disks with a `serial` file (older kernels keep it there).
fn serial_only(prefix: &str) -> Vec<(String, String)> {
    let block = sys_root().join("block");
    let Ok(dir) = std::fs::read_dir(&block) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && block.join(n).join("serial").exists())
        .map(|n| {
            let serial = crate::discover::serial_of(&n);
            (n, serial)
        })
        .collect()
}

/// `s`, or a word saying it is empty.
fn nonempty(s: &str) -> &str {
    if s.is_empty() { "no serial" } else { s }
}

/// The record's mountpoint: one disk-mount accepts (absolute, plain, no
/// symbolic link on the way, not a system directory), and, when something
/// is mounted there already, whether the fstab says it is ours.
pub fn mountpoint(rec: &Record, flag: Option<&str>, fstab: Option<&Fstab>) -> Check {
    let name = checks::MOUNTPOINT;
    let mp = rec
        .mountpoint
        .as_deref()
        .or(flag)
        .unwrap_or(DEFAULT_MOUNTPOINT)
        .to_string();
    let path = match mount::check_mountpoint(&mp) {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                name,
                Scope::Disk,
                e.to_string(),
                "choose another mountpoint (--mountpoint): a plain absolute path outside the system's trees",
            )
            .about(&mp)
            .gating(&[Flow::Up]);
        }
    };
    let mounted = mount::Table::read()
        .ok()
        .and_then(|t| t.at(&path).map(|e| e.source.clone()));
    let ours_in_fstab = fstab.is_some_and(|f| {
        f.entries()
            .iter()
            .any(|e| e.is_ours() && fstab::same_target(&e.file, &mp))
    });
    match mounted {
        Some(source) if !ours_in_fstab => Check::warn(
            name,
            Scope::Disk,
            format!("{source} is mounted at {mp}, and no fstab entry of appscale-persist names it: disk-mount refuses a mount that is not the disk's (mountpoint-busy)"),
            "if it is not this disk, unmount it (or move it elsewhere) before scripts/up",
        )
        .about(&mp)
        .gating(&[Flow::Up]),
        Some(source) => Check::ok(name, Scope::Disk, format!("{source} is mounted there, by our fstab entry")).about(&mp),
        None => {
            let held = crate::steps::mount::entries_in(&path);
            let what = if held > 0 {
                format!("usable; it holds {held} entries, which the first disk-mount of a new disk copies onto it (--seed)")
            } else if path.exists() {
                "usable (an empty directory)".to_string()
            } else {
                "usable (disk-mount makes the directory)".to_string()
            };
            Check::ok(name, Scope::Disk, what).about(&mp)
        }
    }
}

/// The lines libmount (`findmnt --verify`) reports it cannot parse in
/// `path`, when findmnt is installed.
fn libmount_parse_errors(path: &Path) -> Option<BTreeSet<usize>> {
    if !run::installed("findmnt") || !path.exists() {
        return None;
    }
    let out = Cmd::new("findmnt")
        .args(["--verify", "--tab-file"])
        .arg(path)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .ok()?;
    let text = format!("{}\n{}", out.stdout, out.stderr);
    Some(
        text.lines()
            .filter_map(|l| {
                l.split_once("parse error at line ")?
                    .1
                    .split_whitespace()
                    .next()
            })
            .filter_map(|n| n.parse().ok())
            .collect(),
    )
}

/// The fstab as a whole: it reads, and its lines are read as libmount
/// reads them (a line mount(8) and systemd ignore is said; a line our
/// reader and libmount read differently fails, as disk-mount's conflict
/// checks would then miss an entry). Returns the fstab for the per-record
/// checks when it reads.
pub fn fstab_file(path: &Path) -> (Check, Option<Fstab>) {
    let name = checks::FSTAB;
    let shown = path.display().to_string();
    let f = match Fstab::load(path) {
        Ok(f) => f,
        Err(e) => {
            let check = Check::fail(
                name,
                Scope::Node,
                e.to_string(),
                "make the fstab readable by root (or pass --fstab)",
            )
            .about(&shown)
            .gating(&[Flow::Up, Flow::Down]);
            return (check, None);
        }
    };
    let ignored: BTreeSet<usize> = f
        .numbered()
        .into_iter()
        .filter(|(_, _, e)| e.is_none())
        .map(|(n, _, _)| n)
        .collect();
    let libmount = libmount_parse_errors(path);
    let check = match &libmount {
        Some(lm) if *lm != ignored => {
            let list = |s: &BTreeSet<usize>| {
                if s.is_empty() {
                    "none".to_string()
                } else {
                    s.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            Check::fail(
                name,
                Scope::Node,
                format!(
                    "libmount and appscale-persist read it differently: libmount ignores line(s) {}, appscale-persist line(s) {}",
                    list(lm),
                    list(&ignored)
                ),
                "rewrite those lines as plain `SPEC MOUNTPOINT TYPE OPTIONS DUMP PASS` entries (and report the line: it is a bug)",
            )
        }
        _ if !ignored.is_empty() => Check::warn(
            name,
            Scope::Node,
            format!(
                "line(s) {} are not fstab entries: mount(8) and systemd ignore them{}",
                ignored
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                if libmount.is_some() {
                    " (libmount: parse error)"
                } else {
                    ""
                }
            ),
            "fix or remove those lines (`findmnt --verify` shows them)",
        ),
        _ => Check::ok(
            name,
            Scope::Node,
            format!(
                "{} entr{} read as libmount reads them{}",
                f.entries().len(),
                if f.entries().len() == 1 { "y" } else { "ies" },
                if libmount.is_some() {
                    " (checked with findmnt --verify)"
                } else {
                    ""
                }
            ),
        ),
    };
    (check.about(&shown), Some(f))
}

/// The fstab's entries for the record's mountpoint: one disk-mount would
/// not replace (not ours) fails; ours without `nofail` warns.
pub fn fstab_entry(rec: &Record, flag: Option<&str>, f: &Fstab) -> Option<Check> {
    let mp = rec
        .mountpoint
        .as_deref()
        .or(flag)
        .unwrap_or(DEFAULT_MOUNTPOINT);
    let shown = f.path.display().to_string();
    for (line, text, entry) in f.numbered() {
        let Some(e) = entry else { continue };
        if !fstab::same_target(&e.file, mp) {
            continue;
        }
        if !e.is_ours() {
            return Some(
                Check::fail(
                    checks::FSTAB,
                    Scope::Disk,
                    format!("{shown}:{line}: an entry not managed by appscale-persist already mounts {mp}: `{text}`; disk-mount refuses it (fstab-conflict)"),
                    "remove or change that line, or choose another mountpoint",
                )
                .about(format!("{shown}:{line}"))
                .gating(&[Flow::Up]),
            );
        }
        if !e.options.split(',').any(|o| o == "nofail") {
            return Some(
                Check::warn(
                    checks::FSTAB,
                    Scope::Disk,
                    format!("{shown}:{line}: our entry for {mp} lacks nofail: a boot without the disk would stop in emergency mode"),
                    "rerun disk-mount, which writes the entry with nofail",
                )
                .about(format!("{shown}:{line}")),
            );
        }
    }
    None
}

/// The state directory of the local records: safe to trust (root's,
/// written by nobody else), and with room for a snapshot of each image (a
/// copy of its allocated blocks where the filesystem has no reflinks).
pub fn state_dir(dir: &Path, records: &[&Record]) -> Check {
    let name = checks::STATE_DIR;
    let shown = dir.display().to_string();
    if let Err(f) = local::check_state_dir(dir, false) {
        return Check::fail(name, Scope::Node, f.message, "see the message").about(&shown);
    }
    if !dir.exists() {
        return Check::ok(
            name,
            Scope::Node,
            "not made yet: the first disk-create makes it (0700)",
        )
        .about(&shown);
    }
    let provider = Local::new(dir.to_path_buf(), None);
    let need: u64 = records
        .iter()
        .filter_map(|r| provider.image(r).ok())
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum();
    // statvfs's counts are u64 on the targets shipped, not on every one.
    #[allow(clippy::unnecessary_cast)]
    let free = match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => st.blocks_available() as u64 * st.fragment_size() as u64,
        Err(e) => {
            return Check::warn(
                name,
                Scope::Node,
                format!("statvfs: {e}"),
                "see the message",
            )
            .about(&shown);
        }
    };
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    if free < need {
        Check::fail(
            name,
            Scope::Node,
            format!(
                "{} free; a snapshot of the images ({}) copies their allocated blocks where the filesystem has no reflinks",
                gib(free),
                gib(need)
            ),
            "free space there, or put the state directory on a filesystem with reflinks (XFS, Btrfs: snapshots then share blocks)",
        )
        .about(&shown)
        .gating(&[Flow::Backup])
    } else {
        Check::ok(
            name,
            Scope::Node,
            format!(
                "{} free; a snapshot of the images needs at most {}",
                gib(free),
                gib(need)
            ),
        )
        .about(&shown)
    }
}

/// Whether the AppScalefile `appscale up` reads (`path`) would make
/// AppScale attach, format and mount disks itself (`disks:`, top level or
/// in a group), the same disks appscale-persist manages.
pub fn appscale_disks(path: &Path) -> Check {
    let name = checks::APPSCALE_DISKS;
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Check::fail(
                name,
                Scope::Node,
                format!("{shown}: {e}"),
                "pass the AppScalefile `appscale up` reads (--appscale-file)",
            )
            .about(&shown);
        }
    };
    let (_, lint) = appscalefile::lint_bytes(&bytes);
    appscalefile::cloud::register_secret_looking_values(&String::from_utf8_lossy(&bytes));
    let disks = &lint.deployment.disks;
    if disks.is_empty() {
        return Check::ok(
            name,
            Scope::Node,
            "no `disks:`: AppScale leaves the disks to appscale-persist",
        )
        .about(&shown);
    }
    let listed: Vec<String> = disks
        .iter()
        .map(|d| format!("{} {} (line {})", d.node, d.disk, d.pos.line))
        .collect();
    Check::fail(
        name,
        Scope::Node,
        format!(
            "`appscale up` reading {shown} would attach, format (mkfs on any mount error) and mount these disks itself, beside appscale-persist: {}",
            listed.join(", ")
        ),
        format!("give `appscale up` the file `appscalefile-lint --for-appscale {shown}` writes (disks: moved out), and keep {shown} for appscale-persist (docs/appscale.md)"),
    )
    .about(&shown)
    .gating(&[Flow::Up])
}

/// The state directory local records use.
pub fn local_state_dir(flag: Option<PathBuf>) -> PathBuf {
    Local::state_dir(flag)
}
