//! What the cloud providers (`appscale-persist-ec2`, `appscale-persist-gce`)
//! share, written once, linking no cloud SDK.
//!
//! Every cloud operation (create, attach, detach) has one shape on both
//! clouds:
//!
//! 1. **plan**: look the records' disks and instances up, then decide, for
//!    each record, what to do (a provider's own enum: nothing, a call, a
//!    wait), or why not (a [`Failure`]). `--check` stops here and describes
//!    the plan: nothing that changes anything is called.
//! 2. **send** the calls, at most `--concurrency` at once ([`call_each`],
//!    [`concurrently`]).
//! 3. **wait** for everything still pending under one deadline
//!    ([`Deadline`], [`poll_until`]): capped backoff, and a poll that fails
//!    for a passing reason ([`Fault::is_transient`]) tried again until the
//!    deadline.
//! 4. **finish** each record: what came of it, in the record and its
//!    outcome.
//!
//! `disk-snapshot` adds a **prune** phase before finish: retention's
//! deletes, all records' at once ([`prune_all`]).
//!
//! This crate holds the plumbing of those phases: the tokio [`runtime`],
//! bounded concurrency, the poll loop, the classification of failed API
//! calls ([`ApiError`], [`Fault`]), values made on first use ([`Lazy`]: the
//! API client, this machine's identity), where a record goes
//! ([`place`], [`deployment_of`]), the refusal of two records for one disk
//! ([`refuse_duplicates`]), the guard before any detach ([`may_detach`]),
//! what `disk-create` asks of a disk ([`spec::DiskSpec`]), and the failures
//! both clouds give ([`failures`]).
//!
//! The node-side tools do not depend on it: they link no async runtime.
#![deny(missing_docs)]

mod bounded;
pub mod failures;
mod fault;
mod lazy;
mod poll;
mod records;
mod snapshots;
pub mod spec;

pub use bounded::{call_each, concurrently};
pub use fault::{ApiError, Fault};
pub use lazy::Lazy;
pub use poll::{Deadline, Unfinished, poll_until, poll_until_with};
pub use records::{
    Detachable, ThisInstance, attached_disk, deployment_of, fail_all, find_devices_here,
    may_detach, place, refuse_duplicates,
};
pub use snapshots::{list_into, prune_all};
pub use spec::DiskSpec;

use appscale_persist::codes;
use appscale_persist::step::Failure;

/// The runtime a provider's calls run on: two worker threads (the calls
/// wait on the network, not on the CPU), timers and I/O enabled.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(codes::INTERNAL, format!("starting the async runtime: {e}")))
}
