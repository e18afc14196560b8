//! Shared test harness: find the built tools, run them, make loop devices,
//! temporary directories and servers that clean up after themselves.
//!
//! Everything here cleans up on drop, so a failing test (a panic) still
//! unmounts, detaches and deletes what it made. Three parts, all of them
//! re-exported here (`use common::*`): [`run`] (starting tools, reading
//! their output), [`devices`] (temporary directories, loop devices,
//! mounts), [`servers`] (moto and the fakes, and the environment to reach
//! them).
#![allow(dead_code)]

mod devices;
mod run;
mod servers;

// A test binary uses what it needs of each part.
#[allow(unused_imports)]
pub use devices::*;
#[allow(unused_imports)]
pub use run::*;
#[allow(unused_imports)]
pub use servers::*;

/// Every tool, in pipeline order.
#[allow(unused_imports)]
pub use appscale_persist::TOOLS;
