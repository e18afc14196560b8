//! The disk record: protocol v1, one JSON object per line.
//!
//! Every tool reads records on stdin and writes them, enriched, on stdout,
//! one per line, so `a | b | c` composes. The full specification is
//! `docs/protocol.md`; the JSON Schema is `docs/record.schema.json`. In short:
//!
//! * Every key the protocol defines is a typed field, checked on input like
//!   the others; tools add to a record and never drop keys they do not know
//!   ([`Record::extra`] carries those, and only those, through untouched).
//! * A record carrying [`Record::error`] passes through every later tool
//!   untouched and unacted on.
//! * Input is read whole before any record is acted on: one malformed line
//!   stops the tool with [`InputError`] (exit 2) and nothing is done.
//!
//! The wire form is this struct as serde writes it; the optional keys are
//! omitted when absent, so a record stays as small as what is known.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) mod status;

/// The protocol version this crate reads and writes.
pub const VERSION: u32 = 1;

/// The deployment name of last resort, shared by every deployment that
/// names none (AppScale's own default `keyname`).
pub const DEFAULT_DEPLOYMENT: &str = "appscale";

/// The mountpoint used when a record names none.
pub const DEFAULT_MOUNTPOINT: &str = "/opt/appscale";

/// One disk of one node, as it moves through the tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Protocol version; always [`VERSION`] on output. Absent on input means 1.
    #[serde(default = "default_version")]
    pub v: u32,
    /// Node id from the AppScalefile (`node-1`, or an IP in cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Which provider owns the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// Availability zone (clouds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Volume id, disk name, image name or device path, by provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// The instance (VM) the disk is, or is to be, attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Block device path on the node, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The filesystem on the device, once probed or made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<Fs>,
    /// Where the filesystem is mounted; [`DEFAULT_MOUNTPOINT`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    /// The last state a tool established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Whether the last tool changed anything (in `--check` mode: would have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Set by the first tool that failed on this record; later tools pass it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordError>,
    /// With `error`: the tool refused to touch data (disk-ensure-fs, exit 3),
    /// rather than failed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub refused: bool,
    /// Set once a tool ran with `--check`: `state` is what would be.
    #[serde(default, skip_serializing_if = "is_false")]
    pub check: bool,
    /// One entry per tool that acted on the record, in order; the flows'
    /// summary reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepLog>,
    /// The node's roles, from the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The deployment the disk belongs to: AppScale's `keyname`, else
    /// `group`, else `--deployment`; scopes cloud tags, labels and tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The provider's id for the disk when it differs from `disk`: the
    /// volume id behind an EBS Name tag, a local image's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    /// The disk's size in bytes as the cloud reports it, checked against
    /// the device on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The device name the cloud attached the disk as (EC2 `/dev/sdf`, GCE
    /// `deviceName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_as: Option<String>,
    /// The disk was made by hand, and this deployment took it (tagging or
    /// labelling it as its own).
    #[serde(default, skip_serializing_if = "is_false")]
    pub adopted: bool,
    /// The node's word that it let go of the disk ([`UnmountProof`]), which a
    /// detach from elsewhere needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmount_proof: Option<UnmountProof>,
    /// What disk-status found: the cloud's and the node's view of the disk,
    /// and its problems ([`status::Status`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<status::Status>,
    /// What disk-doctor found: every check it made of the disk's flows,
    /// each with its verdict and fix ([`crate::checks::Diagnosis`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor: Option<crate::checks::Diagnosis>,
    /// The snapshot disk-snapshot took of the disk (or, with `--list`, one
    /// of the disk's snapshots; with `--check`, the one it would take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    /// The snapshot this disk was made from (`disk-create --from-snapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// With `disk-snapshot --list`, the disk's snapshots, newest first: never
    /// on the wire, as the driver writes one record per snapshot instead
    /// ([`crate::tool::run`]).
    #[serde(skip)]
    pub listed: Vec<Snapshot>,
    /// The archive disk-archive made of the disk (or, with `--list`, one of
    /// its archives), or the one disk-restore filled it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archive>,
    /// With `disk-archive --list`, the disk's archives, newest first: never
    /// on the wire, one record per archive instead, as for [`Record::listed`].
    #[serde(skip)]
    pub listed_archives: Vec<Archive>,
    /// A cloud disk's scratch copy while disk-archive reads it
    /// (`disk-scratch`): its snapshot, then the disk made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<Scratch>,
    /// Every key this version does not know, kept in order and passed on.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One tool's entry in a record's `steps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLog {
    /// The tool (`disk-mount`).
    pub tool: String,
    /// Whether it changed anything (in `--check`: would have).
    pub changed: bool,
    /// How long it spent on the record, in milliseconds.
    pub ms: u64,
}

/// What a node found when `disk-unmount` ran there: the proof a controller
/// needs before detaching the disk ([`crate::release`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountProof {
    /// The instance it ran on (EC2 instance id, GCE instance name).
    pub instance: String,
    /// The disk it found free there (EBS volume id, GCE disk name); empty
    /// when only [`xen_name`](UnmountProof::xen_name) tells.
    pub disk: String,
    /// The device it checked.
    pub device: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    /// On a Xen instance, where a volume has neither serial nor udev link,
    /// the device's kernel name (`xvdf`): the volume EC2 attached as
    /// `/dev/sdf` there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xen_name: Option<String>,
}

/// A snapshot of a disk, as `disk-snapshot` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The provider's id for it (EBS `snap-...`, GCE snapshot name, local
    /// `<disk>@<time>`): what `disk-create --from-snapshot` takes.
    pub id: String,
    /// When it was taken, RFC 3339 in UTC (`2026-11-27T02:35:12.123Z`).
    pub time: String,
    /// The size of the disk it was taken of, in bytes.
    pub size: u64,
    /// `completed`, `pending` (a cloud still copying), `error`, or
    /// `planned` (`--check`).
    pub state: String,
    /// How the filesystem was kept consistent: `frozen` (fsfreeze while the
    /// snapshot was taken), `not-mounted` (nothing to freeze), `not-frozen`
    /// (`--no-freeze`: crash-consistent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<String>,
    /// Local snapshots: `reflink` (blocks shared) or `sparse` (a copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The older snapshots of the same disk and deployment that retention
    /// (`--keep`, `--keep-within`) deleted (with `--check`: would delete).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

impl Snapshot {
    /// A snapshot as a provider lists it: `id`, taken at `time` (RFC 3339),
    /// of a disk of `size` bytes, in `state`; no freeze, method or pruning
    /// said yet.
    pub fn listed(id: &str, time: String, size: u64, state: &str) -> Snapshot {
        Snapshot {
            id: id.to_string(),
            time,
            size,
            state: state.to_string(),
            freeze: None,
            method: None,
            pruned: Vec::new(),
        }
    }
}

/// Where a restored disk came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredFrom {
    /// The snapshot's id.
    pub snapshot: String,
    /// The disk the snapshot was taken of.
    pub disk: String,
}

/// An archive of a disk's files in a restic repository, as `disk-archive`
/// and `disk-restore` report it (docs/archive.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    /// The archive's id: the restic snapshot id (what `disk-restore --from`
    /// takes; a unique prefix of 8 or more characters will do).
    pub id: String,
    /// The moment archived (when the filesystem was frozen, or the disk
    /// copied), RFC 3339 in UTC.
    pub time: String,
    /// The repository it is in (never a credential).
    pub repository: String,
    /// `completed`; `planned` (`--check`); `restored` (disk-restore filled
    /// the disk from it); `verified` (a restore drill matched it).
    pub state: String,
    /// The node whose disk it is an archive of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The disk it is an archive of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// The archived filesystem's type (`ext4`, `xfs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<String>,
    /// Bytes of the files archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Files archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Bytes this archive added to the repository (after deduplication and
    /// compression): small for an archive of a disk little changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<u64>,
    /// How the moment was kept: `frozen` (the mounted filesystem frozen for
    /// the copy or snapshot it was archived from), `not-mounted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<String>,
    /// The set it belongs to: the archives of a deployment's disks taken at
    /// one moment (`--set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// The older archives of the same disk and deployment that retention
    /// (`--keep`, `--keep-within`) deleted (with `--check`: would delete).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// When a restore drill last matched it (`--drill`), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
}

/// A scratch copy of a cloud disk at one moment, made for an archive by
/// `disk-scratch` on the disk's node and deleted again after: the
/// provider's snapshot, and the disk made from it, attached here. Both are
/// tagged (EBS) or labelled (GCE) with [`Scratch::owner`]: nothing else
/// deletes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scratch {
    /// Whose they are: this instance and the disk's archive key.
    pub owner: String,
    /// The snapshot (EBS `snap-...`, a GCE snapshot's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// When the snapshot was taken (its moment), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The scratch disk made from it (EBS `vol-...`, a GCE disk's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Its device on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

fn default_version() -> u32 {
    VERSION
}

impl Default for Record {
    /// An empty record of the current protocol version.
    fn default() -> Record {
        Record {
            v: VERSION,
            node: None,
            provider: None,
            zone: None,
            disk: None,
            instance: None,
            device: None,
            fs: None,
            mountpoint: None,
            state: None,
            changed: None,
            error: None,
            refused: false,
            check: false,
            steps: Vec::new(),
            roles: None,
            deployment: None,
            disk_id: None,
            size_bytes: None,
            attached_as: None,
            adopted: false,
            unmount_proof: None,
            status: None,
            doctor: None,
            snapshot: None,
            restored_from: None,
            listed: Vec::new(),
            archive: None,
            listed_archives: Vec::new(),
            scratch: None,
            extra: Map::new(),
        }
    }
}

/// A disk provider, as named in records and AppScalefiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Amazon EC2 (EBS volumes).
    Ec2,
    /// Eucalyptus: the EC2 API at another endpoint.
    Euca,
    /// Google Compute Engine (persistent disks).
    Gce,
    /// Sparse image files on loop devices: the embedded default.
    Local,
    /// Existing block devices (VirtualBox, bare metal).
    Static,
}

impl ProviderKind {
    /// All providers, in the order the docs list them.
    pub const ALL: [ProviderKind; 5] = [
        ProviderKind::Ec2,
        ProviderKind::Euca,
        ProviderKind::Gce,
        ProviderKind::Local,
        ProviderKind::Static,
    ];

    /// The name used on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Ec2 => "ec2",
            ProviderKind::Euca => "euca",
            ProviderKind::Gce => "gce",
            ProviderKind::Local => "local",
            ProviderKind::Static => "static",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether the provider is a cloud API (disks live in a zone).
    pub fn is_cloud(self) -> bool {
        matches!(
            self,
            ProviderKind::Ec2 | ProviderKind::Euca | ProviderKind::Gce
        )
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The states a record moves through, up then down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The disk exists (disk-create).
    Created,
    /// The disk is attached and its device known (disk-attach).
    Attached,
    /// A blank device was just formatted (disk-ensure-fs).
    Formatted,
    /// The device already held the wanted filesystem (disk-ensure-fs).
    HasFs,
    /// The filesystem is mounted at the mountpoint (disk-mount).
    Mounted,
    /// Nothing of ours is mounted at the mountpoint (disk-unmount).
    Unmounted,
    /// The disk is attached to nothing (disk-detach).
    Detached,
}

impl State {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Attached => "attached",
            State::Formatted => "formatted",
            State::HasFs => "has-fs",
            State::Mounted => "mounted",
            State::Unmounted => "unmounted",
            State::Detached => "detached",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The filesystem found or made on a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fs {
    /// `ext4`, `xfs`, ...
    #[serde(rename = "type")]
    pub fstype: String,
    /// Filesystem UUID as blkid reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Filesystem label, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// True when disk-ensure-fs made this filesystem in this run.
    #[serde(default)]
    pub formatted: bool,
}

/// Why a tool failed on a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordError {
    /// The tool that failed (`disk-mount`).
    pub tool: String,
    /// A stable, machine-readable code (`not-blank`, `InvalidVolume.NotFound`).
    pub code: String,
    /// What went wrong, for a human.
    pub message: String,
}

impl Record {
    /// The mountpoint, or [`DEFAULT_MOUNTPOINT`].
    pub fn mountpoint(&self) -> &str {
        self.mountpoint.as_deref().unwrap_or(DEFAULT_MOUNTPOINT)
    }

    /// A short name for messages: the node and disk, else the disk, the
    /// device or the mountpoint.
    pub fn label(&self) -> String {
        match (&self.node, &self.disk) {
            (Some(n), Some(d)) => format!("{n} ({d})"),
            (Some(n), None) => n.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => self
                .device
                .clone()
                .or_else(|| self.mountpoint.clone())
                .unwrap_or_else(|| "record".into()),
        }
    }

    /// Whether this record was produced in `--check` mode by an earlier tool
    /// (its state is what *would* be, not what is).
    pub fn is_check(&self) -> bool {
        self.check
    }

    /// The provider's id for the disk: `disk_id`, else `disk`.
    pub fn disk_id(&self) -> Option<&str> {
        self.disk_id.as_deref().or(self.disk.as_deref())
    }

    /// Serializes the record as one line of JSON (no trailing newline).
    pub fn to_line(&self) -> String {
        // A Record holds only strings, numbers, bools and maps: it cannot fail.
        serde_json::to_string(self).expect("a record always serializes")
    }
}

/// A line of input that is not a valid record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// The input could not be read at all.
    #[error("reading {source_name}: {error}")]
    Read {
        /// Where input came from (`stdin`).
        source_name: String,
        /// The I/O error.
        error: io::Error,
    },
    /// A line is not JSON, not an object, or has a key of the wrong type.
    #[error("{source_name} line {line}: {message}")]
    Malformed {
        /// Where input came from (`stdin`).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong, with the column when serde knows it.
        message: String,
    },
}

/// The longest input line a tool accepts. A disk record is a few hundred
/// bytes; a longer line is not one, and is refused without being read whole.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The most input a tool takes in all: a deployment's records are a few
/// hundred bytes each (a few KiB with `status`); input beyond this is not
/// disk records, and is refused before it is all held in memory.
pub(crate) const MAX_INPUT: usize = 16 << 20;

/// Reads every record from `input`, failing on the first malformed line.
///
/// Blank lines are skipped. Nothing is returned unless every line is valid,
/// so a caller never acts on part of a broken input. A line longer than
/// [`MAX_LINE`] is refused as soon as that much of it has been read, and
/// input longer than [`MAX_INPUT`] in all as soon as that much has.
pub(crate) fn read_all(
    mut input: impl BufRead,
    source_name: &str,
) -> Result<Vec<Record>, InputError> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut total = 0usize;
    for line_no in 1.. {
        buf.clear();
        let malformed = |message: String| InputError::Malformed {
            source_name: source_name.to_string(),
            line: line_no,
            message,
        };
        // Read at most one byte past the limit: enough to know.
        let n = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|error| InputError::Read {
                source_name: source_name.to_string(),
                error,
            })?;
        if n == 0 {
            break;
        }
        total += n;
        if total > MAX_INPUT {
            return Err(malformed(format!(
                "more than {} MiB of input in all ({MAX_INPUT} bytes): not disk records",
                MAX_INPUT >> 20
            )));
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE {
            return Err(malformed(format!(
                "longer than 1 MiB ({MAX_LINE} bytes): not a disk record"
            )));
        }
        let line =
            std::str::from_utf8(&buf).map_err(|e| malformed(format!("not valid UTF-8: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(line).map_err(malformed)?);
    }
    Ok(out)
}

/// Parses one line into a record, or says what is wrong with it.
pub(crate) fn parse_line(line: &str) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    from_value(value)
}

/// Turns a JSON value into a record, or says what is wrong with it.
pub fn from_value(value: Value) -> Result<Record, String> {
    if !value.is_object() {
        return Err(format!(
            "expected a JSON object, found {}",
            json_kind(&value)
        ));
    }
    let record: Record = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if record.v != VERSION {
        return Err(format!(
            "protocol version {} is not supported (this tool speaks v{VERSION})",
            record.v
        ));
    }
    Ok(record)
}

/// Writes records as NDJSON and flushes.
pub fn write_all<'a>(
    mut out: impl Write,
    records: impl IntoIterator<Item = &'a Record>,
) -> io::Result<()> {
    for r in records {
        out.write_all(r.to_line().as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A word for the JSON type of a value, for messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let line = r#"{"v":1,"node":"node-1","x-ours":{"a":[1,2]},"zzz":true}"#;
        let r = parse_line(line).unwrap();
        assert_eq!(r.node.as_deref(), Some("node-1"));
        assert_eq!(r.extra["x-ours"], serde_json::json!({"a": [1, 2]}));
        let back = r.to_line();
        assert!(back.contains(r#""x-ours":{"a":[1,2]}"#), "{back}");
        assert!(back.contains(r#""zzz":true"#), "{back}");
    }

    #[test]
    fn missing_version_means_one_and_others_are_refused() {
        assert_eq!(parse_line(r#"{"device":"/dev/loop3"}"#).unwrap().v, 1);
        let e = parse_line(r#"{"v":2}"#).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
    }

    #[test]
    fn malformed_line_is_named_and_nothing_is_returned() {
        let input = "{\"v\":1}\n\n{\"v\":1,\"device\":5}\n";
        match read_all(input.as_bytes(), "stdin") {
            Err(InputError::Malformed { line, message, .. }) => {
                assert_eq!(line, 3);
                assert!(message.contains("invalid type"), "{message}");
            }
            other => panic!("expected a malformed-line error, got {other:?}"),
        }
        let e = read_all("[1]\n".as_bytes(), "stdin").unwrap_err();
        assert!(
            e.to_string()
                .contains("stdin line 1: expected a JSON object"),
            "{e}"
        );
    }

    #[test]
    fn an_overlong_line_is_refused_after_reading_only_the_limit() {
        let line = format!("{{\"v\":1,\"x\":\"{}\"}}\n", "y".repeat(MAX_LINE));
        let input = format!("{{\"v\":1}}\n{line}");
        let mut reader = std::io::BufReader::new(input.as_bytes());
        let e = read_all(&mut reader, "stdin").unwrap_err().to_string();
        assert!(e.contains("stdin line 2: longer than 1 MiB"), "{e}");
        // Exactly at the limit is still read (and here fails as JSON).
        let at_limit = format!("{}\n", "z".repeat(MAX_LINE));
        let e = read_all(at_limit.as_bytes(), "stdin")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn input_is_capped_in_all_not_only_per_line() {
        let line = format!("{{\"v\":1,\"x\":\"{}\"}}\n", "y".repeat(MAX_LINE - 20));
        let input = line.repeat(MAX_INPUT / line.len() + 1);
        let e = read_all(input.as_bytes(), "stdin").unwrap_err().to_string();
        assert!(e.contains("more than 16 MiB of input"), "{e}");
        assert!(read_all(line.repeat(3).as_bytes(), "stdin").is_ok());
    }

    #[test]
    fn protocol_keys_are_typed_and_checked_on_input() {
        let r = parse_line(
            r#"{"steps":[{"tool":"disk-create","changed":true,"ms":3}],"check":true,"roles":["master"],"disk_id":"vol-1","size_bytes":1024,"attached_as":"/dev/sdf","deployment":"d","adopted":true,"mine":1}"#,
        )
        .unwrap();
        assert_eq!(r.steps[0].tool, "disk-create");
        assert!(r.check && r.adopted);
        assert_eq!(r.size_bytes, Some(1024));
        assert_eq!(r.extra.len(), 1, "only unknown keys are extra");
        for bad in [
            r#"{"steps":5}"#,
            r#"{"size_bytes":"big"}"#,
            r#"{"check":"yes"}"#,
            r#"{"unmount_proof":{"instance":1}}"#,
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
        let back = r.to_line();
        assert!(
            back.contains(r#""disk_id":"vol-1""#) && back.contains(r#""mine":1"#),
            "{back}"
        );
    }

    #[test]
    fn states_and_providers_use_their_wire_names() {
        let r = parse_line(
            r#"{"provider":"gce","state":"has-fs","fs":{"type":"ext4","formatted":false}}"#,
        )
        .unwrap();
        assert_eq!(r.provider, Some(ProviderKind::Gce));
        assert_eq!(r.state, Some(State::HasFs));
        assert!(parse_line(r#"{"provider":"azure"}"#).is_err());
        assert!(parse_line(r#"{"state":"mounting"}"#).is_err());
    }
}
