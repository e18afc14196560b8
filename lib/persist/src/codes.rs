//! Every `error.code` a record can carry: a contract with the operator's
//! scripts, so each is a constant here, never a string literal at the place
//! that fails, and each is documented (meaning, and what to do) in
//! `docs/protocol.md`, which a test holds to this list.
//!
//! Typed errors give their code beside their message (`code()`, and
//! `impl From<E> for Failure`); the codes they give are listed here too.
//! One meaning, one code: a missing device is [`NO_SUCH_DEVICE`] whichever
//! step finds it missing.
//!
//! Besides these, a cloud API's own error code passes through as the
//! record's code when the API gave one: an AWS error code
//! (`InvalidVolume.NotFound`, `RequestLimitExceeded`), a Compute Engine
//! status (`NOT_FOUND`, `PERMISSION_DENIED`), or `HTTP_<status>`. Those go
//! through [`Code::from_api`], the one way to make a code from text, so
//! the places that pass one through are visible.
//!
//! A code is a [`Code`], which only this module makes from a literal: a
//! typo, or a code not listed here, does not compile.

use std::fmt;

/// A record's `error.code`: one of the constants below, or a code passed
/// through from a cloud API ([`Code::from_api`]). On the wire it is the
/// string itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    /// One of the constants below.
    Ours(&'static str),
    /// A code passed through, never equal as text to one of ours (those
    /// become the constant).
    Api(String),
}

impl Code {
    /// One of ours: only this module writes a code as a literal.
    const fn ours(code: &'static str) -> Code {
        Code(Repr::Ours(code))
    }

    /// A code passed through as it came: a cloud API's own error code
    /// (`InvalidVolume.NotFound`, `NOT_FOUND`, `HTTP_<status>`), or a
    /// record's `error.code` read back. Text equal to one of ours gives
    /// that constant, so two codes are equal exactly when their text is.
    pub fn from_api(code: impl Into<String>) -> Code {
        let code = code.into();
        match ALL.iter().find(|c| c.as_str() == code) {
            Some(ours) => ours.clone(),
            None => Code(Repr::Api(code)),
        }
    }

    /// The code as the record carries it.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Ours(c) => c,
            Repr::Api(c) => c,
        }
    }
}

impl std::ops::Deref for Code {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Code> for str {
    fn eq(&self, other: &Code) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Code> for &str {
    fn eq(&self, other: &Code) -> bool {
        *self == other.as_str()
    }
}

impl From<Code> for String {
    fn from(c: Code) -> String {
        match c.0 {
            Repr::Ours(c) => c.to_string(),
            Repr::Api(c) => c,
        }
    }
}

// The record and its input.
/// The record names no provider.
pub const NO_PROVIDER: Code = Code::ours("no-provider");
/// The record names no disk.
pub const NO_DISK: Code = Code::ours("no-disk");
/// The record has no device, and none can be found for it here.
pub const NO_DEVICE: Code = Code::ours("no-device");
/// A signal stopped the run before this record was finished.
pub const INTERRUPTED: Code = Code::ours("interrupted");
/// A bug: something that cannot happen did.
pub const INTERNAL: Code = Code::ours("internal");

// Locks.
/// Another run held the node lock for the whole wait.
pub const NODE_LOCKED: Code = Code::ours("node-locked");
/// Another tool held the device's lock for the whole wait.
pub const DEVICE_LOCKED: Code = Code::ours("device-locked");
/// A lock file could not be opened, created or locked.
pub const LOCK_FAILED: Code = Code::ours("lock-failed");

// Devices.
/// The device path does not exist.
pub const NO_SUCH_DEVICE: Code = Code::ours("no-such-device");
/// The path is not a block device.
pub const NOT_A_BLOCK_DEVICE: Code = Code::ours("not-a-block-device");
/// The device has no media (size 0).
pub const NO_MEDIA: Code = Code::ours("no-media");
/// The device could not be opened or read.
pub const DEVICE_UNREADABLE: Code = Code::ours("device-unreadable");
/// Another user holds the device exclusively.
pub const DEVICE_BUSY: Code = Code::ours("device-busy");
/// A probing tool (blkid, wipefs) failed.
pub const PROBE_FAILED: Code = Code::ours("probe-failed");
/// A cloud disk's device did not appear on the node within the wait.
pub const DEVICE_NOT_FOUND: Code = Code::ours("device-not-found");
/// The device is not the disk the record names.
pub const IDENTITY_MISMATCH: Code = Code::ours("identity-mismatch");
/// Nothing on the node confirms which disk the device is.
pub const IDENTITY_UNCONFIRMED: Code = Code::ours("identity-unconfirmed");

// Formatting (disk-ensure-fs).
/// The device holds data: refused (exit 3).
pub const NOT_BLANK: Code = Code::ours("not-blank");
/// The device holds another filesystem than the one asked: refused (exit 3).
pub const FS_MISMATCH: Code = Code::ours("fs-mismatch");
/// mkfs failed, or made no filesystem.
pub const MKFS_FAILED: Code = Code::ours("mkfs-failed");
/// Growing the filesystem failed.
pub const GROW_FAILED: Code = Code::ours("grow-failed");
/// The run's state under /run/appscale-persist could not be written.
pub const RUN_STATE: Code = Code::ours("run-state");

// Mounting (disk-mount).
/// The mountpoint is refused (not absolute, a system tree, a symlink).
pub const BAD_MOUNTPOINT: Code = Code::ours("bad-mountpoint");
/// Something else is mounted at the mountpoint.
pub const MOUNTPOINT_BUSY: Code = Code::ours("mountpoint-busy");
/// The device is mounted somewhere else.
pub const MOUNTED_ELSEWHERE: Code = Code::ours("mounted-elsewhere");
/// The device holds no filesystem.
pub const NO_FILESYSTEM: Code = Code::ours("no-filesystem");
/// fsck left errors uncorrected.
pub const FSCK_FAILED: Code = Code::ours("fsck-failed");
/// fsck was stopped part-way (it may have left a repair half done).
pub const FSCK_INTERRUPTED: Code = Code::ours("fsck-interrupted");
/// mount failed, or the mountpoint does not show the device after it.
pub const MOUNT_FAILED: Code = Code::ours("mount-failed");
/// The kernel's mount table could not be read.
pub const MOUNT_TABLE: Code = Code::ours("mount-table");
/// The fstab could not be read or written.
pub const FSTAB: Code = Code::ours("fstab");
/// An fstab entry we do not own claims the mountpoint or filesystem.
pub const FSTAB_CONFLICT: Code = Code::ours("fstab-conflict");
/// An interrupted seed's staging directory sits beside other data.
pub const SEED_MARKER: Code = Code::ours("seed-marker");
/// A finished seed's entry is already at the top of the filesystem.
pub const SEED_CONFLICT: Code = Code::ours("seed-conflict");
/// Copying or moving the seed failed.
pub const SEED_FAILED: Code = Code::ours("seed-failed");

// Unmounting (disk-unmount).
/// What is mounted at the mountpoint is not the record's disk.
pub const NOT_OURS: Code = Code::ours("not-ours");
/// Another device than the record's is mounted at the mountpoint.
pub const MOUNTPOINT_OTHER_DEVICE: Code = Code::ours("mountpoint-other-device");
/// Processes keep the mount busy.
pub const BUSY: Code = Code::ours("busy");
/// umount failed.
pub const UNMOUNT_FAILED: Code = Code::ours("unmount-failed");
/// Unmounted, but the filesystem is still alive (lazily unmounted, in use).
pub const STILL_IN_USE: Code = Code::ours("still-in-use");

// Detaching on the node.
/// The device (or something on it) is mounted here.
pub const MOUNTED: Code = Code::ours("mounted");
/// The device is held here (a holder, or an exclusive open fails).
pub const IN_USE: Code = Code::ours("in-use");

// The local provider.
/// The disk name is not valid for the provider.
pub const BAD_DISK_NAME: Code = Code::ours("bad-disk-name");
/// The state directory could not be used.
pub const STATE_DIR: Code = Code::ours("state-dir");
/// The state directory may be written by others than root.
pub const STATE_DIR_UNSAFE: Code = Code::ours("state-dir-unsafe");
/// The image is a symbolic link or not a regular file.
pub const UNSAFE_IMAGE: Code = Code::ours("unsafe-image");
/// Creating the disk failed.
pub const CREATE_FAILED: Code = Code::ours("create-failed");
/// Attaching the disk failed.
pub const ATTACH_FAILED: Code = Code::ours("attach-failed");
/// Detaching the disk failed.
pub const DETACH_FAILED: Code = Code::ours("detach-failed");
/// losetup failed, or its answer could not be read.
pub const LOOP_FAILED: Code = Code::ours("loop-failed");
/// The disk is not attached.
pub const NOT_ATTACHED: Code = Code::ours("not-attached");

// Disks in a provider.
/// The disk does not exist.
pub const NO_SUCH_DISK: Code = Code::ours("no-such-disk");
/// Several disks answer to the record's name.
pub const AMBIGUOUS_DISK: Code = Code::ours("ambiguous-disk");
/// Two records name the same disk.
pub const DUPLICATE_DISK: Code = Code::ours("duplicate-disk");
/// The disk exists with another size than asked.
pub const SIZE_MISMATCH: Code = Code::ours("size-mismatch");
/// The disk exists with another type than asked.
pub const TYPE_MISMATCH: Code = Code::ours("type-mismatch");
/// The disk is attached to another instance (or loop device).
pub const ATTACHED_ELSEWHERE: Code = Code::ours("attached-elsewhere");
/// The disk and its instance are in different zones.
pub const ZONE_MISMATCH: Code = Code::ours("zone-mismatch");
/// The disk belongs to another deployment.
pub const OTHER_DEPLOYMENT: Code = Code::ours("other-deployment");
/// The disk belongs to another node of this deployment.
pub const OTHER_NODE: Code = Code::ours("other-node");
/// A disk made by hand cannot be taken: in use, or in another zone.
pub const NOT_ADOPTABLE: Code = Code::ours("not-adoptable");
/// The record names another instance than the one this tool runs on.
pub const OTHER_INSTANCE: Code = Code::ours("other-instance");

// Where and how to reach the cloud.
/// No zone for the disk.
pub const NO_ZONE: Code = Code::ours("no-zone");
/// No AWS region.
pub const NO_REGION: Code = Code::ours("no-region");
/// The AppScalefile given with `--appscalefile` cannot be read, or has errors.
pub const APPSCALEFILE: Code = Code::ours("appscalefile");
/// No Google Cloud project.
pub const NO_PROJECT: Code = Code::ours("no-project");
/// No instance to attach to.
pub const NO_INSTANCE: Code = Code::ours("no-instance");
/// The instance does not exist.
pub const NO_SUCH_INSTANCE: Code = Code::ours("no-such-instance");
/// The instance has no free device name.
pub const NO_DEVICE_NAME: Code = Code::ours("no-device-name");
/// No credentials for the cloud API.
pub const NO_CREDENTIALS: Code = Code::ours("no-credentials");
/// The API endpoint could not be reached.
pub const UNREACHABLE: Code = Code::ours("unreachable");
/// The API failed in another way, without a code of its own.
pub const API_ERROR: Code = Code::ours("api-error");
/// This instance's identity could not be read from the metadata service.
pub const METADATA: Code = Code::ours("metadata");

// Waiting on the cloud.
/// The wait's deadline passed.
pub const TIMEOUT: Code = Code::ours("timeout");
/// What was waited for ended in a state that cannot become the wanted one.
pub const WAIT_FAILED: Code = Code::ours("wait-failed");
/// A cloud operation finished with an error.
pub const OPERATION_FAILED: Code = Code::ours("operation-failed");
/// An attachment stayed `attaching`: it was undone.
pub const STUCK_ATTACHING: Code = Code::ours("stuck-attaching");

// Detaching from elsewhere.
/// The record carries no proof that the node let go of the disk.
pub const NO_UNMOUNT_PROOF: Code = Code::ours("no-unmount-proof");
/// The proof is for another disk, or from another instance.
pub const UNMOUNT_PROOF_MISMATCH: Code = Code::ours("unmount-proof-mismatch");
/// The proof is too old.
pub const UNMOUNT_PROOF_STALE: Code = Code::ours("unmount-proof-stale");

// Added later, each listed last in `docs/protocol.md`'s table too.
/// The instance carries as many EBS volumes as its type allows.
pub const ATTACHMENT_LIMIT: Code = Code::ours("attachment-limit");
/// The disk exists encrypted otherwise than asked (not at all, or with
/// another key).
pub const ENCRYPTION_MISMATCH: Code = Code::ours("encryption-mismatch");
/// The disk exists with other provisioned IOPS or throughput than asked.
pub const PERFORMANCE_MISMATCH: Code = Code::ours("performance-mismatch");
/// Growing the disk itself failed (the image, the loop device, the cloud
/// volume's modification).
pub const RESIZE_FAILED: Code = Code::ours("resize-failed");

// Problems disk-status finds (besides codes above that mean the same:
// `no-such-disk`, `attached-elsewhere`, `zone-mismatch`, `other-deployment`,
// `not-attached`, `device-not-found`, `identity-mismatch`,
// `mounted-elsewhere`, `no-filesystem`).
/// The filesystem is not mounted at the record's mountpoint, nor anywhere.
pub const NOT_MOUNTED: Code = Code::ours("not-mounted");
/// The filesystem is mounted, but no fstab entry mounts it at boot.
pub const NO_FSTAB_ENTRY: Code = Code::ours("no-fstab-entry");
/// The fstab entry for the mountpoint names another filesystem than the
/// disk's (or the disk's filesystem is entered for another mountpoint).
pub const FSTAB_MISMATCH: Code = Code::ours("fstab-mismatch");
/// An fstab entry mounts the record's mountpoint, but its disk is not here.
pub const FSTAB_STALE: Code = Code::ours("fstab-stale");
/// The filesystem is fuller than the threshold (`--full-percent`).
pub const DISK_FULL: Code = Code::ours("disk-full");
/// The superblock says the filesystem is not clean: it needs fsck.
pub const NEEDS_FSCK: Code = Code::ours("needs-fsck");
/// The filesystem is frozen (a snapshot's freeze whose holder died, or
/// someone else's): every writer hangs; never unmounted so.
pub const FROZEN: Code = Code::ours("frozen");
/// The mountpoint is inside another record's of the run, whose mount
/// failed: not mounted (the parent's mount, made later, would hide it).
pub const PARENT_NOT_MOUNTED: Code = Code::ours("parent-not-mounted");

// Snapshots (disk-snapshot, disk-create --from-snapshot).
/// The provider cannot take snapshots: a static disk has no provider to
/// snapshot it with.
pub const SNAPSHOT_UNSUPPORTED: Code = Code::ours("snapshot-unsupported");
/// The mounted filesystem could not be flushed or frozen: no snapshot taken.
pub const FREEZE_FAILED: Code = Code::ours("freeze-failed");
/// The snapshot took longer than the freeze may last: abandoned, thawed.
pub const FREEZE_TIMEOUT: Code = Code::ours("freeze-timeout");
/// Taking the snapshot failed: nothing kept, the filesystem thawed.
pub const SNAPSHOT_FAILED: Code = Code::ours("snapshot-failed");
/// The snapshot was started but not complete within `--wait-timeout`:
/// left to complete (never deleted), nothing pruned for it.
pub const SNAPSHOT_PENDING: Code = Code::ours("snapshot-pending");
/// Retention could not delete an old snapshot (the new one was taken).
pub const PRUNE_FAILED: Code = Code::ours("prune-failed");
/// The snapshot to restore from does not exist (or the disk has none).
pub const NO_SUCH_SNAPSHOT: Code = Code::ours("no-such-snapshot");
/// The disk a snapshot was taken of is still attached: a disk restored
/// from it would carry a filesystem of the same UUID beside it.
pub const ORIGINAL_ATTACHED: Code = Code::ours("original-attached");
/// A local copy (a snapshot, a restored image) would take room a live
/// disk image may still claim: not made.
pub const NO_SPACE: Code = Code::ours("no-space");

// Compute Engine as it answers (issue 26), each listed last in
// `docs/protocol.md`'s table too.
/// The access token lacks the cloud's API scope (a Compute Engine VM with
/// the default access scopes).
pub const INSUFFICIENT_SCOPE: Code = Code::ours("insufficient-scope");
/// The disk type cannot be attached to the instance's machine type
/// (Hyperdisk-only machine families, families without Hyperdisk).
pub const DISK_TYPE_UNSUPPORTED: Code = Code::ours("disk-type-unsupported");
/// A regional disk of the record's name exists: another resource than the
/// zonal disk the record names, never shadowed by a new empty one.
pub const REGIONAL_DISK: Code = Code::ours("regional-disk");
/// The disk was snapshotted too recently (Compute Engine: about once per
/// 10 minutes a disk; EBS: a volume's snapshots some seconds apart):
/// nothing taken, try later.
pub const SNAPSHOT_TOO_SOON: Code = Code::ours("snapshot-too-soon");
/// The node's disks are NVMe and nothing names them (the guest
/// environment's udev rules are missing, the device name unreadable).
pub const NO_DISK_NAMING: Code = Code::ours("no-disk-naming");
// Archives (disk-archive, disk-restore).
/// restic, which archives are made with, is not installed.
pub const NO_RESTIC: Code = Code::ours("no-restic");
/// There is no repository at the location given (and `--init` was not).
pub const NO_REPOSITORY: Code = Code::ours("no-repository");
/// The repository's password is missing, or not its password.
pub const REPOSITORY_PASSWORD: Code = Code::ours("repository-password");
/// Another run held the repository's lock (restic's) for the whole wait.
pub const REPOSITORY_LOCKED: Code = Code::ours("repository-locked");
/// The archive to restore does not exist, or the disk has none.
pub const NO_SUCH_ARCHIVE: Code = Code::ours("no-such-archive");
/// Archiving failed: nothing new is in the repository.
pub const ARCHIVE_FAILED: Code = Code::ours("archive-failed");
/// A restore was refused: the filesystem is not one this flow just formatted.
pub const NOT_FRESH: Code = Code::ours("not-fresh");
/// Filling the disk from the archive failed; nothing mounted.
pub const RESTORE_FAILED: Code = Code::ours("restore-failed");
/// `restic check` or a restore drill found a difference or damage.
pub const VERIFY_FAILED: Code = Code::ours("verify-failed");

// EC2 and Eucalyptus as they answer (issue 26), listed last too.
/// The volume's last modification is not `completed` yet, or it was
/// modified 4 times in the last 24 hours (EBS): nothing changed, try
/// later.
pub const RESIZE_TOO_SOON: Code = Code::ours("resize-too-soon");
/// The disk's zone is in another region than the run calls (`--region`,
/// or the run's other records' zone).
pub const REGION_MISMATCH: Code = Code::ours("region-mismatch");

/// Every code above, in the order `docs/protocol.md` lists them.
pub const ALL: &[Code] = &[
    NO_PROVIDER,
    NO_DISK,
    NO_DEVICE,
    INTERRUPTED,
    INTERNAL,
    NODE_LOCKED,
    DEVICE_LOCKED,
    LOCK_FAILED,
    NO_SUCH_DEVICE,
    NOT_A_BLOCK_DEVICE,
    NO_MEDIA,
    DEVICE_UNREADABLE,
    DEVICE_BUSY,
    PROBE_FAILED,
    DEVICE_NOT_FOUND,
    IDENTITY_MISMATCH,
    IDENTITY_UNCONFIRMED,
    NOT_BLANK,
    FS_MISMATCH,
    MKFS_FAILED,
    GROW_FAILED,
    RUN_STATE,
    BAD_MOUNTPOINT,
    MOUNTPOINT_BUSY,
    MOUNTED_ELSEWHERE,
    NO_FILESYSTEM,
    FSCK_FAILED,
    FSCK_INTERRUPTED,
    MOUNT_FAILED,
    MOUNT_TABLE,
    FSTAB,
    FSTAB_CONFLICT,
    SEED_MARKER,
    SEED_CONFLICT,
    SEED_FAILED,
    NOT_OURS,
    MOUNTPOINT_OTHER_DEVICE,
    BUSY,
    UNMOUNT_FAILED,
    STILL_IN_USE,
    MOUNTED,
    IN_USE,
    BAD_DISK_NAME,
    STATE_DIR,
    STATE_DIR_UNSAFE,
    UNSAFE_IMAGE,
    CREATE_FAILED,
    ATTACH_FAILED,
    DETACH_FAILED,
    LOOP_FAILED,
    NOT_ATTACHED,
    NO_SUCH_DISK,
    AMBIGUOUS_DISK,
    DUPLICATE_DISK,
    SIZE_MISMATCH,
    TYPE_MISMATCH,
    ATTACHED_ELSEWHERE,
    ZONE_MISMATCH,
    OTHER_DEPLOYMENT,
    OTHER_NODE,
    NOT_ADOPTABLE,
    OTHER_INSTANCE,
    NO_ZONE,
    NO_REGION,
    APPSCALEFILE,
    NO_PROJECT,
    NO_INSTANCE,
    NO_SUCH_INSTANCE,
    NO_DEVICE_NAME,
    NO_CREDENTIALS,
    UNREACHABLE,
    API_ERROR,
    METADATA,
    TIMEOUT,
    WAIT_FAILED,
    OPERATION_FAILED,
    STUCK_ATTACHING,
    NO_UNMOUNT_PROOF,
    UNMOUNT_PROOF_MISMATCH,
    UNMOUNT_PROOF_STALE,
    ATTACHMENT_LIMIT,
    ENCRYPTION_MISMATCH,
    PERFORMANCE_MISMATCH,
    RESIZE_FAILED,
    NOT_MOUNTED,
    NO_FSTAB_ENTRY,
    FSTAB_MISMATCH,
    FSTAB_STALE,
    DISK_FULL,
    NEEDS_FSCK,
    SNAPSHOT_UNSUPPORTED,
    FREEZE_FAILED,
    FREEZE_TIMEOUT,
    SNAPSHOT_FAILED,
    SNAPSHOT_PENDING,
    PRUNE_FAILED,
    NO_SUCH_SNAPSHOT,
    INSUFFICIENT_SCOPE,
    DISK_TYPE_UNSUPPORTED,
    REGIONAL_DISK,
    SNAPSHOT_TOO_SOON,
    NO_DISK_NAMING,
    NO_RESTIC,
    NO_REPOSITORY,
    REPOSITORY_PASSWORD,
    REPOSITORY_LOCKED,
    NO_SUCH_ARCHIVE,
    ARCHIVE_FAILED,
    NOT_FRESH,
    RESTORE_FAILED,
    VERIFY_FAILED,
    RESIZE_TOO_SOON,
    REGION_MISMATCH,
    ORIGINAL_ATTACHED,
    NO_SPACE,
    FROZEN,
    PARENT_NOT_MOUNTED,
];

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::ALL;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The codes in docs/protocol.md's table, in order.
    fn documented() -> Vec<String> {
        let text = std::fs::read_to_string(workspace().join("docs/protocol.md")).unwrap();
        let table = text
            .split("## Error codes")
            .nth(1)
            .expect("docs/protocol.md has an `## Error codes` section");
        table
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_code_is_documented_once_and_nothing_else() {
        let docs = documented();
        let want: Vec<String> = ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(docs, want, "docs/protocol.md's error codes, in order");
        let mut unique = want.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), want.len(), "a code listed twice");
    }

    /// Rust sources under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with("target") {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn no_code_is_a_literal_at_the_place_that_fails() {
        let mut files = Vec::new();
        sources(&workspace().join("lib"), &mut files);
        sources(&workspace().join("bins"), &mut files);
        let mut bad = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for pat in ["Failure::new(\"", "Failure::refused(\""] {
                if flat.contains(pat) {
                    bad.push(format!("{}: {pat}", f.display()));
                }
            }
            // The compiler refuses a literal where a `Code` goes; the one
            // way from text, `from_api`, is for codes that are not ours.
            for pat in ["from_api(\"", "Failure::api(\""] {
                for rest in flat.split(pat).skip(1) {
                    let lit = rest.split('"').next().unwrap_or_default();
                    if ALL.iter().any(|c| *c == lit) {
                        bad.push(format!("{}: {pat}{lit}", f.display()));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "codes written as literals: {bad:#?}");
    }
}
