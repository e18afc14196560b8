//! appscale-persist: everything the tools share that links no cloud SDK.
//!
//! The node-side tools (`disk-ensure-fs`, `disk-mount`, `disk-unmount`) are
//! built from this crate alone; the cloud providers live in their own crates
//! (`appscale-persist-ec2`, `appscale-persist-gce`) so that `cargo tree -p
//! disk-mount` shows no cloud SDK.
//!
//! Modules are named for what they own. Public are those the tools, the
//! provider crates and the tests use; `blockdev`, `mount`, `seed`,
//! `loopdev`, `nvme`, `failure` (re-exported as `step::Failure`), `run`
//! and `manual` are this crate's own, reached through the public ones.
//!
//!
//! * [`record`]: the disk record and its NDJSON wire form (protocol v1),
//!   with the wire types of its `status` key (`record/status.rs`,
//!   re-exported by [`status`]).
//! * [`appscalefile`]: parsing and linting AppScalefiles, planning disks.
//! * `blockdev`: probing block devices; deciding whether one is blank,
//!   and whether one is still in use on this node.
//! * [`filesystem`]: making, checking and growing filesystems.
//! * `mount`: the kernel's mount table, mounting and unmounting.
//! * `seed`: copying a mountpoint's files onto a new filesystem, never
//!   deleting anything.
//! * [`fstab`]: our entries in `/etc/fstab`, written atomically.
//! * [`provider`]: the provider trait, and the `local` and `static` providers.
//! * [`discover`]: a record's disk on this node (finding its device, checking
//!   it is that disk, refusing to let go of one in use); [`release`]: the
//!   node's proof that it let go of a cloud disk.
//! * `loopdev`: loop devices over image files.
//! * [`node_id`]: which node of the plan this machine is (`--node auto`).
//! * [`snapshot`]: what `disk-snapshot` is asked, and retention;
//!   [`freeze`]: freezing a filesystem for a snapshot, always thawed.
//! * [`archive`]: off-site archives in a restic repository
//!   (`disk-archive`, `disk-restore`).
//! * [`codes`]: every `error.code` a record can carry; `failure`: a
//!   record's failure (a code and a message), beneath every module that
//!   can fail.
//! * [`step`]: the step vocabulary (outcome, failure, exit codes) and the
//!   bookkeeping every tool applies to records; [`steps`]: what each tool
//!   does to a record.
//! * [`tool`]: what a tool is (its flags and its step); [`cli`]: the
//!   command-line driver around it; [`ansible`]: the same as an Ansible
//!   module.
//! * [`doctor`]: what `disk-doctor` checks on this node, and its outputs;
//!   [`checks`]: the wire form of its findings (a record's `doctor`).
//! * [`status`]: what `disk-status` reports of a disk (its node part read
//!   here, its cloud part from a provider's describe), and its outputs.
//! * [`interrupt`]: stopping cleanly on SIGINT, SIGTERM, SIGHUP.
//! * [`lock`]: one writer at a time on a node (the node lock, and the
//!   device lock held from the blank check to the end of `mkfs`).
//! * [`files`]: renaming without replacing, flushing a filesystem.
//! * `nvme`: the name a Compute Engine NVMe disk was attached as, from
//!   its Identify data.
//! * `manual`: the man pages' ENVIRONMENT, FILES and SEE ALSO sections
//!   ([`generate`] makes the rest from the clap definitions).
//! * `run`, [`wait`], [`log`]: the one way to run a subprocess, to wait,
//!   and to talk to the operator (log lines, filtered `RUST_LOG`-style,
//!   SDK lines included); [`progress`]: what a long wait shows on stderr;
//!   [`hash`]: stable ids derived from text.
#![deny(missing_docs)]

pub mod ansible;
pub mod appscalefile;
pub mod archive;
mod blockdev;
pub mod checks;
pub mod cli;
pub mod codes;
pub mod discover;
pub mod doctor;
mod failure;
pub mod files;
pub mod filesystem;
pub mod freeze;
pub mod fstab;
pub mod generate;
pub mod hash;
pub mod interrupt;
#[cfg(test)]
mod layers;
pub mod lock;
pub mod log;
mod loopdev;
mod manual;
mod mount;
pub mod node_id;
mod nvme;
pub mod progress;
pub mod provider;
pub mod record;
pub mod release;
mod run;
mod seed;
pub mod snapshot;
pub mod status;
pub mod step;
pub mod steps;
pub mod tool;
pub mod wait;

/// Every tool, in pipeline order: one crate each under `bins/` (a test holds
/// the two together; the scripts list `bins/`).
pub const TOOLS: &[&str] = &[
    "appscalefile-lint",
    "disk-create",
    "disk-attach",
    "disk-ensure-fs",
    "disk-mount",
    "disk-unmount",
    "disk-detach",
    "disk-status",
    "disk-snapshot",
    "disk-archive",
    "disk-scratch",
    "disk-restore",
    "disk-doctor",
];
