//! The ec2 provider against a real EC2 emulator (moto's server on
//! 127.0.0.1), and, where moto refuses nothing, a local proxy injecting what
//! real EC2 does (errors, throttling, slow attachments).
//!
//! One test binary, a module per operation or concern: [`pipeline`] (the
//! whole pipeline, up and down), [`create`], [`attach`], [`detach`],
//! [`grow`], [`ownership`] (whose disk is it), [`node`] (identity on the
//! node), [`limits`] (volumes per instance, request limits), [`iam`]
//! (docs/ec2.md's policies), [`credentials`]. Each runs the tools through
//! `common::Ec2`.

// `ndjson(&[rec.clone()])` reads better in tests than `slice::from_ref`.
#![allow(clippy::cloned_ref_to_slice_refs)]

#[path = "../common/mod.rs"]
mod common;

mod attach;
mod create;
mod credentials;
mod detach;
mod grow;
mod iam;
mod limits;
mod node;
mod ownership;
mod pipeline;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn rec(node: &str, disk: &str) -> Value {
    json!({"v": 1, "node": node, "provider": "ec2", "zone": "us-east-1b", "disk": disk})
}

/// Creates 1G volumes for `recs` (`disk-create`, which must succeed).
fn create(ec2: &Ec2, recs: &[Value]) -> Vec<Value> {
    ec2.create(&["--size", "1G"], recs).expect(0).records()
}

/// A loop device the size of a volume, linked where udev would link the
/// volume's NVMe device.
fn stand_in(t: &TempDir, vol: &str) -> LoopDev {
    let d = LoopDev::new(t, vol, 1024);
    let by_id = t.join("dev/disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    let link = by_id.join(format!(
        "nvme-Amazon_Elastic_Block_Store_{}",
        vol.replacen('-', "", 1)
    ));
    std::os::unix::fs::symlink(&d.device, link).unwrap();
    d
}

fn error_code(r: &Value) -> &str {
    r["error"]["code"].as_str().unwrap_or("none")
}

/// `n` records of one node each, all for `inst`.
fn recs_for(inst: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut r = rec(&format!("node-{i}"), &format!("data-{i}"));
            r["instance"] = json!(inst);
            r
        })
        .collect()
}

/// The calls the moto recorder saw of `action` since `record-start`.
fn calls(ec2: &Ec2, action: &str) -> u64 {
    ec2.recorded()
        .get(action)
        .and_then(Value::as_u64)
        .unwrap_or(0)
}
