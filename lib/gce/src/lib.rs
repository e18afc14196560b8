//! The `gce` provider: Compute Engine persistent disks.
#![deny(missing_docs)]

use std::time::Duration;

use appscale_persist::provider::{Provider, Size};
use appscale_persist::tool::Failure;

/// How the provider reaches Compute Engine and what it creates.
#[derive(Debug, Clone)]
pub struct Config {
    /// API endpoint override.
    pub endpoint: Option<String>,
    /// Project id.
    pub project: Option<String>,
    /// Zone for records that name none.
    pub zone: Option<String>,
    /// Instance for records that name none.
    pub instance: Option<String>,
    /// Running on the node (`--self`).
    pub on_node: bool,
    /// Metadata server override.
    pub metadata_host: Option<String>,
    /// Size of new disks.
    pub size: Size,
    /// Type of new disks.
    pub disk_type: String,
    /// Concurrent calls.
    pub concurrency: usize,
    /// Deadline for operations.
    pub timeout: Duration,
}

/// Opens the provider.
pub fn open(_cfg: Config) -> Result<Box<dyn Provider>, Failure> {
    Err(Failure::new("unsupported", "the gce provider is not built yet"))
}
