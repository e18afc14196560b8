//! What `disk-doctor` finds, as it travels in a record's `doctor` key: each
//! check it made (its stable name, its verdict, the flows it gates, what it
//! found, and the fix), and what a provider is asked to check
//! ([`Ask`]). Wire types only: this module imports nothing of this crate,
//! so the record ([`crate::record`]) can name it without importing upward.
//!
//! Check names are stable, like error codes: scripts may match them.
//! [`ALL`] lists them in the order `docs/doctor.md` documents them, and a
//! test holds the two together.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The flows whose calls a check is about: what `scripts/up`, `scripts/down`,
/// `scripts/backup` (with retention) and `scripts/up --grow` need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// Create (or find), attach, format if blank, mount.
    Up,
    /// Unmount, detach.
    Down,
    /// Snapshot, wait, prune older snapshots.
    Backup,
    /// Grow the disk, then its filesystem.
    Grow,
}

impl Flow {
    /// Every flow, in the order the docs list them.
    pub const ALL: [Flow; 4] = [Flow::Up, Flow::Down, Flow::Backup, Flow::Grow];

    /// Its name on the command line and the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Up => "up",
            Flow::Down => "down",
            Flow::Backup => "backup",
            Flow::Grow => "grow",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Flow> {
        Flow::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What came of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing stands in the way.
    Ok,
    /// Not a failure, but worth knowing (the flows may still work).
    Warn,
    /// A flow it gates would fail: the tool exits 1.
    Fail,
    /// Not checked here, and why (the message says).
    Skip,
}

impl Verdict {
    /// Its name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// What a check is about: the provider's account (the same for every
/// record of one provider), this machine, or the record's own disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Credentials, clock, region, access scopes.
    Provider,
    /// This machine: metadata service, udev links, fstab, state directory.
    Node,
    /// The record's disk, its instance, its mountpoint.
    Disk,
}

/// One check of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Its stable name (one of [`ALL`]).
    pub name: String,
    /// What it is about, more precisely: the permission (`ec2:AttachVolume`,
    /// `compute.disks.create`), the file, the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What came of it.
    pub verdict: Verdict,
    /// What it is about.
    pub scope: Scope,
    /// The flows it gates; empty: every flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<Flow>,
    /// What was found.
    pub message: String,
    /// What to do, when the verdict is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A check named `name` about `scope`, with `verdict` and `message`.
    pub fn new(name: &str, scope: Scope, verdict: Verdict, message: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            subject: None,
            verdict,
            scope,
            flows: Vec::new(),
            message: message.into(),
            fix: None,
        }
    }

    /// A passed check.
    pub fn ok(name: &str, scope: Scope, message: impl Into<String>) -> Check {
        Check::new(name, scope, Verdict::Ok, message)
    }

    /// A failed check, with its fix.
    pub fn fail(
        name: &str,
        scope: Scope,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, scope, Verdict::Fail, message).fixed_by(fix)
    }

    /// A warning, with what to do.
    pub fn warn(
        name: &str,
        scope: Scope,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, scope, Verdict::Warn, message).fixed_by(fix)
    }

    /// A check not made, and why.
    pub fn skip(name: &str, scope: Scope, message: impl Into<String>) -> Check {
        Check::new(name, scope, Verdict::Skip, message)
    }

    /// With its subject.
    pub fn about(mut self, subject: impl Into<String>) -> Check {
        self.subject = Some(subject.into());
        self
    }

    /// Gating these flows only.
    pub fn gating(mut self, flows: &[Flow]) -> Check {
        let mut flows = flows.to_vec();
        flows.sort();
        flows.dedup();
        if flows.len() == Flow::ALL.len() {
            flows.clear();
        }
        self.flows = flows;
        self
    }

    /// With `fix` as what to do.
    pub fn fixed_by(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    /// Whether it failed.
    pub fn failed(&self) -> bool {
        self.verdict == Verdict::Fail
    }
}

/// A record's `doctor`: every check made of it, provider checks first,
/// then the node's, then the disk's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Diagnosis {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(Check::failed)
    }
}

/// Whose calls are checked: the split the docs' IAM policies follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The controller (the tools machine, Ansible's controller): the cloud
    /// half of the flows: create, attach (by instance), detach, grow,
    /// snapshots made from there.
    Controller,
    /// A node: the boot unit (its own disk attached with `--self`), its
    /// own snapshots (`backup.yml`), its own detach (`scripts/down --self`).
    Node,
    /// Both: one machine runs every step (`scripts/up -- --self`).
    All,
}

impl Role {
    /// Every role, in the order the docs list them.
    pub const ALL: [Role; 3] = [Role::Controller, Role::Node, Role::All];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Node => "node",
            Role::All => "all",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a call made in `role` is one this role makes.
    pub fn covers(self, role: Role) -> bool {
        self == Role::All || role == Role::All || self == role
    }
}

/// What a provider is asked to check ([`crate::provider::Provider::preflight`]).
#[derive(Debug, Clone)]
pub struct Ask {
    /// The flows to check for.
    pub flows: Vec<Flow>,
    /// Whose calls: the controller's, a node's, or both.
    pub role: Role,
    /// Run on the node itself (`--self`): instance and zone from the
    /// metadata service.
    pub on_node: bool,
    /// A clock further than this from the service's is a failure.
    pub max_skew: Duration,
}

impl Ask {
    /// Whether any of `flows` is asked.
    pub fn any(&self, flows: &[Flow]) -> bool {
        flows.iter().any(|f| self.flows.contains(f))
    }

    /// Those of `flows` that are asked.
    pub fn of(&self, flows: &[Flow]) -> Vec<Flow> {
        flows
            .iter()
            .copied()
            .filter(|f| self.flows.contains(f))
            .collect()
    }
}

impl Default for Ask {
    fn default() -> Ask {
        Ask {
            flows: Flow::ALL.to_vec(),
            role: Role::Controller,
            on_node: false,
            max_skew: MAX_SKEW,
        }
    }
}

/// The most a clock may differ from the service's: AWS Signature Version 4
/// refuses requests signed more than 5 minutes off (EC2 itself allows 15:
/// `RequestExpired`; STS and other endpoints the tools' credentials pass
/// through refuse at 5), and the tools' own times (unmount proofs,
/// snapshot times) must agree with the cloud's.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// Which credentials the SDK found, and whether they work.
pub const CREDENTIALS: &str = "credentials";
/// This machine's clock against the service's `Date` header.
pub const CLOCK: &str = "clock";
/// The configured region agrees with the disks' zones.
pub const REGION: &str = "region";
/// The access scopes of the VM's service account (Compute Engine).
pub const SCOPES: &str = "access-scopes";
/// One permission (an EC2 action by `DryRun`, a Compute Engine permission
/// by `testIamPermissions`) a flow's calls need.
pub const PERMISSION: &str = "permission";
/// The disk and its instance are in the record's zone.
pub const ZONE: &str = "zone";
/// The instance the disk goes to exists.
pub const INSTANCE: &str = "instance";
/// The instance has room for another volume (its type's attachment limit).
pub const ATTACHMENT_ROOM: &str = "attachment-room";
/// The disk exists, or can be made.
pub const DISK: &str = "disk";
/// The disk is this deployment's (and this node's), or free to adopt.
pub const OWNER: &str = "owner";
/// The metadata service answers (instance identity for `--self`).
pub const METADATA: &str = "metadata";
/// The udev links the node tools find cloud disks by exist.
pub(crate) const UDEV_LINKS: &str = "udev-links";
/// The record's mountpoint is usable (not a system directory, no symlink,
/// nothing foreign mounted there).
pub(crate) const MOUNTPOINT: &str = "mountpoint";
/// The fstab parses as libmount parses it, and no foreign entry claims the
/// mountpoint.
pub const FSTAB: &str = "fstab";
/// The state directory has room for snapshots of the local images.
pub const STATE_DIR: &str = "state-dir";
/// The AppScalefile `appscale up` reads does not make AppScale attach,
/// format or mount the same disks itself (`disks:`).
pub(crate) const APPSCALE_DISKS: &str = "appscale-disks";

/// Every check name, in the order `docs/doctor.md` documents them.
pub const ALL: &[&str] = &[
    CREDENTIALS,
    CLOCK,
    REGION,
    SCOPES,
    PERMISSION,
    ZONE,
    INSTANCE,
    ATTACHMENT_ROOM,
    DISK,
    OWNER,
    METADATA,
    UDEV_LINKS,
    MOUNTPOINT,
    FSTAB,
    STATE_DIR,
    APPSCALE_DISKS,
];
