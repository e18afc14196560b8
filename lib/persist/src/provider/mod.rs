//! Disk providers: one trait, one implementation per place disks come from.
//!
//! [`Provider`] works on batches of records so that a cloud provider can run
//! attaches concurrently and poll all of them with one API call; the
//! `local` and `static` providers here simply loop. The cloud providers
//! (`appscale-persist-ec2`, `appscale-persist-gce`) implement the same trait
//! in their own crates, so this crate links no cloud SDK.
//!
//! Every operation is idempotent: creating a disk that exists, attaching one
//! attached here, detaching one attached nowhere are successes with
//! `changed: false`. Attached elsewhere, in another zone, or mounted on this
//! node are errors, reported before any change is made.

pub mod local;
pub mod static_disk;

use crate::codes;

use crate::checks::{Ask, Check};
pub use crate::discover::disk_of;
use crate::record::{ProviderKind, Record};
use crate::step::{Ctx, Failure, StepResult};

/// What a provider knows about one disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStatus {
    /// The provider's id for it (volume id, disk name, image path, device).
    pub id: String,
    /// Its zone, for cloud disks.
    pub zone: Option<String>,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// What it is attached to: instance ids, or loop devices for images.
    pub attached_to: Vec<String>,
    /// The device name its (first) attachment gives it (EC2 `/dev/sdf`, GCE
    /// `deviceName`), when the provider says.
    pub attached_as: Option<String>,
    /// Its type (`gp3`, `pd-balanced`), for cloud disks.
    pub disk_type: Option<String>,
    /// Whether it is encrypted, when the provider says.
    pub encrypted: Option<bool>,
    /// Its state as the provider words it (EC2 `in-use`, GCE `READY`).
    pub state: Option<String>,
    /// The deployment its tag or label names.
    pub deployment: Option<String>,
    /// The node its tag or label names.
    pub node: Option<String>,
    /// When it was made (RFC 3339), when the provider says.
    pub created: Option<String>,
    /// The instance the record is for, once placed (its own, `--instance`,
    /// or this machine's with `--self`): what "attached elsewhere" is judged
    /// against.
    pub instance: Option<String>,
}

/// A place disks come from.
pub trait Provider {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Creates each record's disk unless it exists (`changed: false` then).
    fn create(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult>;

    /// Looks each record's disk up without changing anything; an absent disk
    /// is a failure with code `no-such-disk`.
    fn describe(&mut self, records: &[Record]) -> Vec<Result<DiskStatus, Failure>>;

    /// Attaches each record's disk to its instance (or this machine) and sets
    /// `device` when the device is visible here. Attached here already:
    /// `changed: false`; attached elsewhere: an error.
    fn attach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult>;

    /// Detaches each record's disk and waits until it is detached. Refuses a
    /// disk whose device is mounted on this node; not attached is success.
    fn detach(&mut self, records: &mut [Record], cx: Ctx) -> Vec<StepResult>;

    /// Takes a snapshot of each record's disk (`snapshot` set) and applies
    /// retention, or, as the provider was opened to, lists each disk's
    /// snapshots (`listed` set) ([`crate::snapshot`]). A provider that
    /// cannot fails each record with `snapshot-unsupported`.
    fn snapshot(&mut self, records: &mut [Record], _cx: Ctx) -> Vec<StepResult> {
        let kind = self.kind();
        records
            .iter()
            .map(|_| {
                Err(Failure::new(
                    codes::SNAPSHOT_UNSUPPORTED,
                    format!("the {kind} provider cannot take snapshots"),
                ))
            })
            .collect()
    }

    /// Runs `phase` of each record's scratch copy (`record.scratch`; see
    /// [`ScratchPhase`]), on the disk's node. A provider that cannot fails
    /// each record with `snapshot-unsupported`.
    fn scratch(
        &mut self,
        records: &mut [Record],
        _phase: ScratchPhase,
        _cx: Ctx,
    ) -> Vec<StepResult> {
        let kind = self.kind();
        records
            .iter()
            .map(|_| {
                Err(Failure::new(
                    codes::SNAPSHOT_UNSUPPORTED,
                    format!("the {kind} provider makes no scratch copies"),
                ))
            })
            .collect()
    }

    /// `disk-doctor`'s checks of this provider for each record, changing
    /// nothing: whether the calls the flows in `ask` would make are
    /// allowed, and what stands in their way (credentials, clock, region,
    /// zones, instances, the disks and whose they are), each check with
    /// its fix ([`crate::checks`]). One list per record, in order. The
    /// node's own checks (devices, fstab, mountpoint) are not the
    /// provider's: [`crate::doctor`] makes them. A provider without an
    /// account to check has nothing to say.
    fn preflight(&mut self, records: &[Record], _ask: &Ask) -> Vec<Vec<Check>> {
        records.iter().map(|_| Vec::new()).collect()
    }

    /// This machine's node among `records`', as only the cloud API can say
    /// it (`--node auto` with `--self`, after the sources
    /// [`crate::node_id::resolve`] reads without one): the instance's tag,
    /// or the node tag of a volume of the records' deployment attached to
    /// this instance. `Ok(None)` when it cannot say.
    fn this_node(&mut self, _records: &[Record]) -> Result<Option<crate::node_id::Found>, Failure> {
        Ok(None)
    }
}

/// Which part of a scratch copy's life `disk-scratch` runs (for
/// `disk-archive` on a cloud disk's node; docs/archive.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchPhase {
    /// Start a snapshot of the record's disk (its moment is fixed when this
    /// returns: the caller holds the filesystem frozen meanwhile), after
    /// deleting what a killed run of the same owner left.
    Snapshot,
    /// Make a disk from that snapshot, attach it to this node (read-only
    /// where the cloud can) and find its device.
    Attach,
    /// Detach and delete the scratch disk and its snapshot, and anything
    /// else of the same owner.
    Drop,
}

/// A disk size: `10G`, `512M`, `1T`, `20GiB`; a bare number is GiB, as the
/// clouds count. Units are binary (1G = 2^30 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Whole GiB, rounded up (what EC2 and Compute Engine take).
    pub fn gib(self) -> u64 {
        self.0.div_ceil(1 << 30)
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (like 10G, 512M, 1T)"))?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "" | "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(format!("`{s}`: unknown unit (use K, M, G or T)")),
        };
        let bytes = n
            .checked_mul(1 << shift)
            .ok_or_else(|| format!("`{s}` is too large"))?;
        if bytes == 0 {
            return Err("a disk cannot be empty".into());
        }
        Ok(Size(bytes))
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            b if b % (1 << 40) == 0 => write!(f, "{}T", b >> 40),
            b if b % (1 << 30) == 0 => write!(f, "{}G", b >> 30),
            b if b % (1 << 20) == 0 => write!(f, "{}M", b >> 20),
            b => write!(f, "{b}B"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("10G".parse::<Size>().unwrap().bytes(), 10 << 30);
        assert_eq!("10".parse::<Size>().unwrap().gib(), 10);
        assert_eq!("512MiB".parse::<Size>().unwrap().bytes(), 512 << 20);
        assert_eq!("1500M".parse::<Size>().unwrap().gib(), 2, "rounded up");
        assert!("0".parse::<Size>().is_err());
        assert!("ten".parse::<Size>().is_err());
        assert!("5X".parse::<Size>().is_err());
        assert_eq!("64M".parse::<Size>().unwrap().to_string(), "64M");
    }
}
