//! Releasing a cloud disk from its node: the proof that the node let go.
//!
//! A controller cannot see a node's mounts, so it must not detach a disk
//! on the cloud's word alone: the node may still have its filesystem
//! mounted, or lazily unmounted and still alive. The node says so instead:
//! `disk-unmount`, run there, calls [`stamp`], which writes
//! an [`UnmountProof`] into the record (`unmount_proof`) when
//!
//! * the disk's device is on this machine, shown to be the record's disk by
//!   its own identity (udev links, serial, size: [`discover`]),
//! * nothing uses it any more ([`discover::refuse_if_in_use`]: no mount, no
//!   holder, and an exclusive open succeeds),
//! * and this machine's instance is known ([`identity`]).
//!
//! `disk-detach` from elsewhere then calls [`require`]: the proof must be
//! for this disk, from the instance the cloud says the disk is attached to,
//! made during the attachment the cloud shows now (not before it: a disk
//! detached and attached again may be mounted again), on a record whose
//! last step was that unmount, and recent ([`MAX_AGE`]). Anything less is
//! refused unless `--force` says otherwise.

pub mod identity;

use crate::codes;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::blockdev::Device;
use crate::discover;
use crate::log;
use crate::mount::Entry;
pub use crate::record::UnmountProof;
use crate::record::{ProviderKind, Record, State};
use crate::step::Failure;

/// A proof older than this is not taken: the node may have mounted the
/// disk again since.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(3600);

/// How far a proof's time may be ahead of this machine's clock (clocks of
/// two machines differ a little).
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What `--force` risks, for messages and `--help`.
pub const FORCE_RISK: &str = "the node may still have the filesystem mounted: writes it has not flushed are lost, and the filesystem can be left corrupt";

/// `f` for `/dev/xvdf`, `/dev/sdf`, `xvdf`: the letters EC2 and a Xen
/// guest share for one attachment.
fn xen_letters(name: &str) -> Option<&str> {
    let base = name.trim_start_matches("/dev/");
    let rest = base
        .strip_prefix("xvd")
        .or_else(|| base.strip_prefix("sd"))?;
    (!rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase())).then_some(rest)
}

/// Why a record's proof is not enough to detach its disk from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The record carries no proof.
    #[error("the record carries no `unmount_proof`")]
    Missing,
    /// A later step acted on the record after the unmount.
    #[error("the record's last step left it {0}, not unmounted, after its proof was made")]
    NotUnmounted(String),
    /// The proof is for another disk.
    #[error("its `unmount_proof` is for {proved}, not {disk}")]
    OtherDisk {
        /// The disk the proof is for.
        proved: String,
        /// The disk being detached.
        disk: String,
    },
    /// The proof comes from another instance than the one the disk is on.
    #[error("its `unmount_proof` comes from {proved}, but the disk is attached to {attached}")]
    OtherInstance {
        /// Where the proof was made.
        proved: String,
        /// Where the cloud says the disk is.
        attached: String,
    },
    /// The proof is too old (or from a clock far ahead).
    #[error("its `unmount_proof` is {age}")]
    Stale {
        /// How old, in words.
        age: String,
    },
    /// The proof was made before the disk's present attachment: it speaks
    /// of an earlier one, and the node may have mounted the disk since.
    #[error(
        "its `unmount_proof` was made {ago} s before the disk was attached as it is now: it speaks of an earlier attachment, and the node may have mounted the disk since"
    )]
    EarlierAttachment {
        /// How long before the attachment, in seconds.
        ago: u64,
    },
}

impl ProofError {
    /// The record error code for this refusal.
    pub fn code(&self) -> codes::Code {
        match self {
            ProofError::Missing | ProofError::NotUnmounted(_) => codes::NO_UNMOUNT_PROOF,
            ProofError::OtherDisk { .. } | ProofError::OtherInstance { .. } => {
                codes::UNMOUNT_PROOF_MISMATCH
            }
            ProofError::Stale { .. } | ProofError::EarlierAttachment { .. } => {
                codes::UNMOUNT_PROOF_STALE
            }
        }
    }
}

fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Where the cloud says a disk is attached: the instance, the device name,
/// and since when (seconds since the Unix epoch, when it says).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attachment<'a> {
    /// The instance (EC2 id, GCE name).
    pub instance: &'a str,
    /// The device name it is attached as (EC2 `/dev/sdf`).
    pub device: Option<&'a str>,
    /// When it was attached (EC2 `AttachTime`, Compute Engine
    /// `lastAttachTimestamp`).
    pub since: Option<u64>,
}

/// Checks the record's proof for detaching `disk` from the instance of
/// `attached` (attached as its device, since its time).
pub fn check(
    rec: &Record,
    disk: &str,
    attached: Attachment<'_>,
    now: SystemTime,
) -> Result<UnmountProof, ProofError> {
    let (attached_to, attached_as) = (attached.instance, attached.device);
    let proof = rec.unmount_proof.clone().ok_or(ProofError::Missing)?;
    if rec.state != Some(State::Unmounted) {
        return Err(ProofError::NotUnmounted(
            rec.state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "with no state".into()),
        ));
    }
    let same = if proof.disk.is_empty() {
        match (
            proof.xen_name.as_deref().and_then(xen_letters),
            attached_as.and_then(xen_letters),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    } else {
        proof.disk == disk
    };
    if !same {
        let proved = match (&proof.xen_name, proof.disk.is_empty()) {
            (Some(x), true) => format!("device {x}"),
            _ => proof.disk,
        };
        return Err(ProofError::OtherDisk {
            proved,
            disk: format!("{disk} ({})", attached_as.unwrap_or("?")),
        });
    }
    if proof.instance != attached_to {
        return Err(ProofError::OtherInstance {
            proved: proof.instance,
            attached: attached_to.to_string(),
        });
    }
    // Made before this attachment: of an earlier one. The node's clock and
    // the cloud's are compared with no allowance: a proof made in the
    // seconds after an attach is refused, and the unmount run again.
    if let Some(since) = attached.since
        && proof.at < since
    {
        return Err(ProofError::EarlierAttachment {
            ago: since - proof.at,
        });
    }
    let now = now_secs(now);
    if proof.at > now + CLOCK_SKEW.as_secs() {
        return Err(ProofError::Stale {
            age: format!("dated {} s in the future", proof.at - now),
        });
    }
    let age = now.saturating_sub(proof.at);
    if age > MAX_AGE.as_secs() {
        return Err(ProofError::Stale {
            age: format!(
                "{} min old (at most {} min is taken: the node may have mounted it again since)",
                age / 60,
                MAX_AGE.as_secs() / 60
            ),
        });
    }
    Ok(proof)
}

/// [`check`] now, as a record failure that says how to do it right.
pub fn require(
    rec: &Record,
    disk: &str,
    attached: Attachment<'_>,
) -> Result<UnmountProof, Failure> {
    let attached_to = attached.instance;
    check(rec, disk, attached, SystemTime::now()).map_err(|e| {
        let node = rec.node.as_deref().unwrap_or("NODE");
        Failure::new(
            e.code(),
            format!(
                "{disk} is attached to {attached_to}, and nothing proves that node let go of it: {e}. \
                 Unmount it on the node and pass the records on (disk-unmount there stamps them): \
                 run `scripts/down --node {node} AppScalefile -- --self` on the node, or the Ansible down.yml playbook; \
                 or pass --force to detach anyway ({FORCE_RISK})"
            ),
        )
    })
}

/// How long a detach on the node itself waits for the disk's device to show.
pub(crate) const HERE_WAIT: Duration = Duration::from_secs(2);

/// On the node itself (`--self`), right before detaching the record's disk
/// from this instance: refuses while its device here is in use (mounted,
/// held, or open exclusively, as a lazily unmounted filesystem keeps it),
/// `force` or not; and when no device here can be shown to be the disk
/// (then nothing can be checked), unless `force`.
pub fn check_here(rec: &Record, force: bool) -> Result<(), Failure> {
    discover::refuse_if_mounted_here(rec)?;
    match discover::find(rec, HERE_WAIT) {
        Ok(path) => discover::refuse_if_in_use(&path),
        Err(f) if force => {
            log::warn(format_args!(
                "{}: detaching without checking this machine (--force): {}; {FORCE_RISK}",
                rec.label(),
                f.message
            ));
            Ok(())
        }
        Err(f) => Err(Failure::new(
            f.code,
            format!(
                "{}; so nothing shows that this machine let go of the disk: run disk-attach --self here if it should be here, or pass --force to detach anyway ({FORCE_RISK})",
                f.message
            ),
        )),
    }
}

/// Drops any proof from the record (a disk attached again is in use again).
pub fn forget(rec: &mut Record) {
    rec.unmount_proof = None;
}

/// Called by `disk-unmount` after a successful unmount: stamps the record
/// with an [`UnmountProof`] when this machine can show that the record's
/// disk is here and free (see the module docs); otherwise says why not on
/// stderr, and leaves no proof (an older one is dropped either way).
/// `unmounted` is what the mount table showed at the mountpoint before the
/// unmount. Records of other providers, and `--check` runs, get nothing.
pub fn stamp(rec: &mut Record, unmounted: Option<&Entry>, check: bool) {
    forget(rec);
    let Some(kind) = rec.provider.filter(|k| k.is_cloud()) else {
        return;
    };
    if check {
        return;
    }
    match prove(rec, kind, unmounted) {
        Ok(p) => {
            log::info(format_args!(
                "{}: {} is free on {} ({}): disk-detach may detach it from elsewhere",
                rec.label(),
                p.disk,
                p.instance,
                p.device
            ));
            rec.unmount_proof = Some(p);
        }
        Err(why) => log::warn(format_args!(
            "{}: no unmount proof ({why}); disk-detach will detach it only from the node itself (--self) or with --force",
            rec.label()
        )),
    }
}

fn prove(
    rec: &Record,
    kind: ProviderKind,
    unmounted: Option<&Entry>,
) -> Result<UnmountProof, String> {
    let dev = released_device(rec, unmounted)?;
    let (disk, xen_name) = match identify(rec, kind, &dev) {
        Ok(d) => (d, None),
        // A Xen guest names the volume by its attachment alone: say which
        // name, and let the controller match it against the attachment.
        Err(why) => match (kind, kernel_name(&dev)) {
            (ProviderKind::Ec2 | ProviderKind::Euca, Some(k))
                if k.starts_with("xvd") && xen_letters(&k).is_some() =>
            {
                (String::new(), Some(k))
            }
            _ => return Err(why),
        },
    };
    discover::refuse_if_in_use(&dev.path).map_err(|f| f.message)?;
    let instance = match kind {
        ProviderKind::Gce => identity::gce(None).map(|i| i.name),
        _ => identity::ec2(None).map(|i| i.id),
    }
    .map_err(|e| format!("cannot tell which instance this is: {e}"))?;
    Ok(UnmountProof {
        instance,
        disk,
        device: dev.path.display().to_string(),
        at: now_secs(SystemTime::now()),
        xen_name,
    })
}

fn kernel_name(dev: &Device) -> Option<String> {
    Some(dev.real.file_name()?.to_string_lossy().into_owned())
}

/// The device the unmount let go of: what was mounted at the mountpoint,
/// else the record's `device`, else the disk's device found here.
fn released_device(rec: &Record, unmounted: Option<&Entry>) -> Result<Device, String> {
    if let Some(e) = unmounted {
        for p in [
            e.source.clone(),
            format!("/dev/block/{}:{}", e.major, e.minor),
        ] {
            if let Ok(d) = Device::open(Path::new(&p))
                && (d.major, d.minor) == (e.major, e.minor)
            {
                return Ok(d);
            }
        }
        return Err(format!("cannot open {}, which was mounted there", e.source));
    }
    if let Some(d) = &rec.device {
        return Device::open(Path::new(d)).map_err(|e| e.to_string());
    }
    let path = discover::find(rec, Duration::ZERO).map_err(|f| {
        if f.code == codes::DEVICE_NOT_FOUND {
            "its device is not on this machine".to_string()
        } else {
            f.message
        }
    })?;
    Device::open(&path).map_err(|e| e.to_string())
}

/// The disk `dev` is shown to be: the record's disk when the record names
/// it by id and this machine confirms it; else (an EBS Name tag) the volume
/// the device itself names, by its serial or udev link.
fn identify(rec: &Record, kind: ProviderKind, dev: &Device) -> Result<String, String> {
    let named = match kind {
        ProviderKind::Gce => rec.disk_id().map(str::to_string),
        _ => rec
            .disk_id()
            .filter(|id| id.starts_with("vol-"))
            .map(str::to_string),
    };
    if let Some(id) = named {
        discover::verify_device(rec, dev).map_err(|f| f.message)?;
        return Ok(id);
    }
    let vol = volume_named_by(dev).ok_or_else(|| {
        format!(
            "nothing on this machine says which volume {} is",
            dev.path.display()
        )
    })?;
    let mut known = rec.clone();
    known.disk_id = Some(vol.clone());
    discover::check_identity(&known, dev).map_err(|f| f.message)?;
    Ok(vol)
}

/// The EBS volume a device names itself: its serial, else an
/// `nvme-Amazon_Elastic_Block_Store_vol...` link to it.
fn volume_named_by(dev: &Device) -> Option<String> {
    let from = |s: &str| -> Option<String> {
        // Eucalyptus: `euca-vol-1234abcd-dev-sdf`, cut to 20 characters,
        // names the volume only when its id was not cut.
        let (s, whole) = match s.strip_prefix("euca-") {
            Some(rest) => (rest, false),
            None => (s, true),
        };
        let rest = s.strip_prefix("vol-").or_else(|| s.strip_prefix("vol"))?;
        let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        let ended = whole || rest[hex.len()..].starts_with('-');
        (hex.len() >= 8 && ended).then(|| format!("vol-{hex}"))
    };
    let name = dev.real.file_name()?.to_string_lossy().into_owned();
    if let Some(v) = from(&discover::serial_of(&name)) {
        return Some(v);
    }
    let by_id = discover::dev_root().join("disk/by-id");
    std::fs::read_dir(by_id).ok()?.flatten().find_map(|e| {
        let link = e.file_name().to_string_lossy().into_owned();
        let v = from(link.strip_prefix("nvme-Amazon_Elastic_Block_Store_")?)?;
        let d = Device::open(&e.path()).ok()?;
        ((d.major, d.minor) == (dev.major, dev.minor)).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(proof: serde_json::Value, state: State) -> Record {
        Record {
            node: Some("node-1".into()),
            state: Some(state),
            unmount_proof: serde_json::from_value(proof).unwrap(),
            ..Record::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Attached to `instance` as `device`.
    fn on<'a>(instance: &'a str, device: Option<&'a str>) -> Attachment<'a> {
        Attachment {
            instance,
            device,
            since: None,
        }
    }

    #[test]
    fn a_proof_holds_only_for_its_disk_instance_state_and_time() {
        let p = json!({"instance": "i-a", "disk": "vol-1", "device": "/dev/x", "at": 1000});
        let ok = rec(p.clone(), State::Unmounted);
        assert!(check(&ok, "vol-1", on("i-a", None), at(1100)).is_ok());
        assert_eq!(
            check(&ok, "vol-2", on("i-a", None), at(1100))
                .unwrap_err()
                .code(),
            "unmount-proof-mismatch"
        );
        assert_eq!(
            check(&ok, "vol-1", on("i-b", None), at(1100))
                .unwrap_err()
                .code(),
            "unmount-proof-mismatch"
        );
        assert_eq!(
            check(&ok, "vol-1", on("i-a", None), at(1000 + 3601))
                .unwrap_err()
                .code(),
            "unmount-proof-stale"
        );
        assert_eq!(
            check(&ok, "vol-1", on("i-a", None), at(100))
                .unwrap_err()
                .code(),
            "unmount-proof-stale",
            "from the future"
        );
        let mounted_again = rec(p, State::Mounted);
        assert_eq!(
            check(&mounted_again, "vol-1", on("i-a", None), at(1100))
                .unwrap_err()
                .code(),
            "no-unmount-proof"
        );
        let mut none = ok.clone();
        forget(&mut none);
        assert_eq!(
            check(&none, "vol-1", on("i-a", None), at(1100)),
            Err(ProofError::Missing)
        );
        // A malformed proof never gets this far: the record is refused on
        // input, nothing done.
        assert!(crate::record::from_value(json!({"unmount_proof": "yes"})).is_err());
    }

    /// A proof made before the disk's present attachment speaks of an
    /// earlier one (detached, attached again, perhaps mounted again): it
    /// was taken for up to an hour.
    #[test]
    fn a_proof_holds_only_for_the_attachment_it_was_made_in() {
        let p = json!({"instance": "i-a", "disk": "vol-1", "device": "/dev/x", "at": 1000});
        let r = rec(p, State::Unmounted);
        let since = |t| Attachment {
            since: Some(t),
            ..on("i-a", None)
        };
        assert!(check(&r, "vol-1", since(900), at(1100)).is_ok());
        assert!(check(&r, "vol-1", since(1000), at(1100)).is_ok());
        let e = check(&r, "vol-1", since(1050), at(1100)).unwrap_err();
        assert_eq!(e.code(), "unmount-proof-stale");
        assert!(e.to_string().contains("earlier attachment"), "{e}");
    }

    #[test]
    fn on_xen_the_kernel_name_stands_for_the_attachment() {
        let p = json!({"instance": "i-a", "disk": "", "device": "/dev/xvdf", "at": 1000, "xen_name": "xvdf"});
        let r = rec(p, State::Unmounted);
        assert!(check(&r, "vol-1", on("i-a", Some("/dev/sdf")), at(1100)).is_ok());
        assert!(check(&r, "vol-1", on("i-a", Some("/dev/xvdf")), at(1100)).is_ok());
        assert_eq!(
            check(&r, "vol-1", on("i-a", Some("/dev/sdg")), at(1100))
                .unwrap_err()
                .code(),
            "unmount-proof-mismatch"
        );
        assert!(check(&r, "vol-1", on("i-a", None), at(1100)).is_err());
    }

    #[test]
    fn refusals_say_how_to_do_it_right() {
        let r = rec(json!(null), State::Unmounted);
        let mut r = r;
        forget(&mut r);
        let f = require(&r, "vol-1", on("i-a", None)).unwrap_err();
        assert_eq!(f.code, "no-unmount-proof");
        assert!(
            f.message.contains("--self") && f.message.contains("--force"),
            "{}",
            f.message
        );
    }
}
