//! Whose disk is it: the deployment and node labels decide.
//!
//! Disks this provider creates carry [`LABEL_DEPLOYMENT`] and
//! [`LABEL_NODE`]. A disk found by name is
//!
//! * **ours** when labelled for the record's deployment (and, when both are
//!   known, its node);
//! * **made by hand** when it carries no deployment label: it may be adopted
//!   only while no instance uses it (a zonal disk is in its zone by being
//!   found there), and adopting it labels it, so that no other deployment
//!   takes it afterwards;
//! * **another deployment's** (or another node's): never used; an error
//!   naming the owner.
//!
//! Label values allow only `[a-z0-9_-]`, at most 63 characters: other
//! names are written in that alphabet with a hash of the original, so two
//! names never share a label ([`label_value`]).

use appscale_persist::codes;
use appscale_persist::step::Failure;

use crate::api::DiskInfo;

/// The deployment a disk belongs to.
pub const LABEL_DEPLOYMENT: &str = "appscale-persist-deployment";
/// The node a disk is for.
pub const LABEL_NODE: &str = "appscale-persist-node";

/// Whose a found disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Labelled for this deployment (and node).
    Ours,
    /// No deployment label: adopting it labels it.
    HandMade,
}

/// `name` as a label value: itself when it is one already, else its
/// characters folded into `[a-z0-9_-]` followed by a hash of the original.
pub fn label_value(name: &str) -> String {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if name.len() <= 63 && name.chars().all(ok) {
        return name.to_string();
    }
    let folded: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if ok(c) { c } else { '-' })
        .take(54)
        .collect();
    let h = appscale_persist::hash::fnv1a64(0, name.as_bytes()) as u32;
    format!("{folded}-{h:08x}")
}

/// The labels a disk of `deployment` for `node` carries.
pub fn labels(deployment: &str, node: Option<&str>) -> Vec<(String, String)> {
    let mut l = vec![(LABEL_DEPLOYMENT.to_string(), label_value(deployment))];
    if let Some(n) = node {
        l.push((LABEL_NODE.to_string(), label_value(n)));
    }
    l
}

/// Whose `disk` is, for a record of `deployment` and `node`.
pub fn check(disk: &DiskInfo, deployment: &str, node: Option<&str>) -> Result<Owner, Failure> {
    let label = |k: &str| {
        disk.labels
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    match label(LABEL_DEPLOYMENT) {
        None => Ok(Owner::HandMade),
        Some(d) if d != label_value(deployment) => Err(Failure::new(
            codes::OTHER_DEPLOYMENT,
            format!(
                "disk {} belongs to deployment {d} (label {LABEL_DEPLOYMENT}), not {deployment}: never used by another deployment. Give this disk another name, or pass --deployment if this is that deployment",
                disk.name
            ),
        )),
        Some(_) => match (label(LABEL_NODE), node) {
            (Some(have), Some(want)) if have != label_value(want) => Err(Failure::new(
                codes::OTHER_NODE,
                format!(
                    "disk {} is node {have}'s disk in deployment {deployment} (label {LABEL_NODE}), not {want}'s: leaving it alone",
                    disk.name
                ),
            )),
            _ => Ok(Owner::Ours),
        },
    }
}

/// A disk made by hand may be adopted only while no instance uses it.
pub fn check_adoptable(disk: &DiskInfo, owner: Owner) -> Result<(), Failure> {
    match (owner, disk.users.first()) {
        (Owner::HandMade, Some(user)) => Err(Failure::new(
            codes::NOT_ADOPTABLE,
            format!(
                "disk {} was made by hand and carries no {LABEL_DEPLOYMENT} label, and {user} uses it: a hand-made disk is adopted only while no instance uses it. Detach it there, or label it for this deployment (gcloud compute disks add-labels)",
                disk.name
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(labels: &[(&str, &str)], users: &[&str]) -> DiskInfo {
        DiskInfo {
            name: "d".into(),
            size_gb: 1,
            disk_type: "pd-balanced".into(),
            zone: "z".into(),
            status: "READY".into(),
            users: users.iter().map(|u| u.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            kms_key: None,
            iops: None,
            throughput: None,
            created: None,
            last_attach: None,
        }
    }

    #[test]
    fn labels_decide_whose_a_disk_is() {
        let ours = disk(&[(LABEL_DEPLOYMENT, "a"), (LABEL_NODE, "node-1")], &[]);
        assert_eq!(check(&ours, "a", Some("node-1")).unwrap(), Owner::Ours);
        assert_eq!(
            check(&ours, "a", Some("node-2")).unwrap_err().code,
            "other-node"
        );
        assert_eq!(
            check(&ours, "b", None).unwrap_err().code,
            "other-deployment"
        );
        let hand = disk(&[], &["vm-1"]);
        assert_eq!(check(&hand, "a", None).unwrap(), Owner::HandMade);
        assert_eq!(
            check_adoptable(&hand, Owner::HandMade).unwrap_err().code,
            "not-adoptable"
        );
    }

    #[test]
    fn label_values_keep_names_apart() {
        assert_eq!(label_value("prod-1"), "prod-1");
        let a = label_value("Prod.Key");
        let b = label_value("prod-key");
        assert_ne!(a, b);
        assert!(a.starts_with("prod-key-") && a.len() <= 63, "{a}");
        assert!(label_value(&"x".repeat(100)).len() <= 63);
    }
}
