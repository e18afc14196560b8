//! A record's `status` key, as `disk-status` writes it: what the cloud and
//! the node say of the disk, and what is wrong with it. The wire types
//! alone, beside the record that carries them; [`crate::status`] reads the
//! cloud and the node into them, gives each [`Problem`] its fix
//! (`Problem::new`) and renders them (a table, metrics). It re-exports them
//! under their old paths (`status::Status`, ...).

use serde::{Deserialize, Serialize};

/// A record's `status`: what the cloud and the node say of its disk, and
/// what is wrong.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// What the disk's provider says (absent for a record naming only a
    /// device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudPart>,
    /// What this node says (absent unless run on the node: `--self`, a
    /// local or static disk, or `--device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodePart>,
    /// What is wrong; empty when the disk is healthy.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// What this node remembers of the disk's archives (disk-archive),
    /// when it archived it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchivePart>,
}

/// What the disk's provider says of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudPart {
    /// Whether the disk exists (absent when the provider could not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The provider's id (volume id, disk name, image path, device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Disk type (`gp3`, `pd-balanced`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<String>,
    /// Zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Whether it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// The provider's word for its state (`in-use`, `READY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Instances (or loop devices) it is attached to.
    #[serde(default)]
    pub attached_to: Vec<String>,
    /// The device name it is attached as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_as: Option<String>,
    /// The deployment its tag or label names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The node its tag or label names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// What this node says of the disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodePart {
    /// The device found for the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// How the device was confirmed to be the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The device's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The filesystem on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<NodeFs>,
    /// Where it is mounted (the record's mountpoint when it is mounted
    /// there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounted_at: Option<String>,
    /// The mount's options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<String>,
    /// Bytes used, when mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Bytes free (for unprivileged users), when mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Percentage used, as `df` counts it, when mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_percent: Option<u8>,
    /// The fstab entry for the disk or its mountpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstab: Option<FstabPart>,
    /// Processes holding the mount (`--holders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<String>>,
}

/// The filesystem on the node's device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFs {
    /// `ext4`, `xfs`, ...
    #[serde(rename = "type")]
    pub fstype: String,
    /// UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Whether the superblock says it needs no fsck (ext4 and XFS only):
    /// mounted, no errors recorded; unmounted, also left clean (no journal
    /// to replay). False is the problem `needs-fsck`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean: Option<bool>,
}

/// The fstab entry for the disk or its mountpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FstabPart {
    /// An entry mounts the mountpoint, or names the filesystem.
    pub present: bool,
    /// The entry for the mountpoint names the disk's filesystem.
    pub matching: bool,
    /// The entry has `nofail` (boot goes on without the disk).
    pub nofail: bool,
    /// The entry, as a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
}

/// One thing wrong with a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Its code, from [`crate::codes`] (or a cloud API's own).
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// What to do, in one line.
    pub fix: String,
}

/// What this node remembers of a disk's archives: one disk's entry in
/// disk-archive's ledger ([`crate::archive::ledger`], which calls it `Entry`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivePart {
    /// The repository of the last archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The last archive's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
    /// Its moment, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
    /// Bytes of files it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_size: Option<u64>,
    /// Bytes it added to the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_added: Option<u64>,
    /// When a restore drill last matched an archive of the disk, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<String>,
    /// The archive it matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_id: Option<String>,
}
