//! Whose volume is it: the deployment and node tags decide.
//!
//! Volumes this provider creates carry [`TAG_DEPLOYMENT`] and [`TAG_NODE`].
//! A volume found for a record is
//!
//! * **ours** when tagged for the record's deployment (and, when both are
//!   known, its node);
//! * **made by hand** when it carries no deployment tag: found by its Name
//!   tag it may be adopted only while `available` and in the record's zone;
//!   named by its id, the operator chose it, and only the usual checks
//!   (attached elsewhere, zone) apply. Either way, adopting it tags it, so
//!   no other deployment can take it afterwards;
//! * **another deployment's** (or another node's): never used; an error
//!   naming the owner.

use appscale_persist::codes;
use aws_sdk_ec2::types::{Volume, VolumeState};

use appscale_persist::step::Failure;

/// The deployment a volume belongs to.
pub const TAG_DEPLOYMENT: &str = "appscale-persist:deployment";
/// The node a volume is for.
pub const TAG_NODE: &str = "appscale-persist:node";
/// The KMS key a volume was created with, as `--kms-key` named it: EC2
/// says a volume's key by its ARN only, so a key named by an alias is
/// confirmed by this tag.
pub const TAG_KMS_KEY: &str = "appscale-persist:kms-key";

/// Whose a found volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Tagged for this deployment (and node).
    Ours,
    /// No deployment tag; found by its Name tag.
    HandMadeByName,
    /// No deployment tag; named by its volume id.
    HandMadeById,
}

impl Owner {
    /// Made by hand: using it adopts it (tags it).
    pub fn hand_made(self) -> bool {
        self != Owner::Ours
    }
}

/// A record's volume, and whose it is.
#[derive(Debug, Clone)]
pub struct Found {
    /// The volume, as DescribeVolumes returned it.
    pub vol: Volume,
    /// Whose it is.
    pub owner: Owner,
}

/// The value of tag `key` on `v`, when set and not empty.
pub fn tag<'a>(v: &'a Volume, key: &str) -> Option<&'a str> {
    v.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .filter(|s| !s.is_empty())
}

fn id(v: &Volume) -> &str {
    v.volume_id().unwrap_or("?")
}

fn other_deployment(what: &str, theirs: &[&str], ours: &str) -> Failure {
    Failure::new(
        codes::OTHER_DEPLOYMENT,
        format!(
            "{what} belongs to deployment {} (tag {TAG_DEPLOYMENT}), not {ours}: never used by another deployment. Give this disk another name, or pass --deployment if this is that deployment",
            theirs.join(", ")
        ),
    )
}

fn other_node(what: &str, theirs: &[&str], deployment: &str, node: &str) -> Failure {
    Failure::new(
        codes::OTHER_NODE,
        format!(
            "{what} is node {}'s disk in deployment {deployment} (tag {TAG_NODE}), not {node}'s: leaving it alone",
            theirs.join(", ")
        ),
    )
}

/// Whether a volume tagged for `deployment` is for `node` (a volume or
/// record without a node matches any).
fn for_node(v: &Volume, node: Option<&str>) -> bool {
    match (tag(v, TAG_NODE), node) {
        (Some(have), Some(want)) => have == want,
        _ => true,
    }
}

/// The volume named `vol-...` by a record, checked for ownership.
pub fn by_id(v: Volume, deployment: &str, node: Option<&str>) -> Result<Found, Failure> {
    let what = format!("volume {}", id(&v));
    match tag(&v, TAG_DEPLOYMENT) {
        None => Ok(Found {
            vol: v,
            owner: Owner::HandMadeById,
        }),
        Some(d) if d != deployment => Err(other_deployment(&what, &[d], deployment)),
        Some(_) if !for_node(&v, node) => Err(other_node(
            &what,
            &[tag(&v, TAG_NODE).unwrap_or("?")],
            deployment,
            node.unwrap_or("?"),
        )),
        Some(_) => Ok(Found {
            vol: v,
            owner: Owner::Ours,
        }),
    }
}

/// The one volume tagged `Name=name` that a record of `deployment` and
/// `node` may use: its own; else one made by hand; never another
/// deployment's or node's.
pub fn by_name(
    name: &str,
    volumes: &[Volume],
    deployment: &str,
    node: Option<&str>,
) -> Result<Found, Failure> {
    let what = format!("the volume tagged Name={name}");
    let ambiguous = |many: &[&Volume]| {
        Failure::new(
            codes::AMBIGUOUS_DISK,
            format!(
                "several volumes are tagged Name={name} ({}): name the one to use by its id",
                many.iter().map(|v| id(v)).collect::<Vec<_>>().join(", ")
            ),
        )
    };
    let ours: Vec<&Volume> = volumes
        .iter()
        .filter(|v| tag(v, TAG_DEPLOYMENT) == Some(deployment))
        .collect();
    let (mine, other_nodes): (Vec<&Volume>, Vec<&Volume>) =
        ours.into_iter().partition(|v| for_node(v, node));
    let hand: Vec<&Volume> = volumes
        .iter()
        .filter(|v| tag(v, TAG_DEPLOYMENT).is_none())
        .collect();
    match (mine.as_slice(), hand.as_slice()) {
        ([v], _) => {
            return Ok(Found {
                vol: (*v).clone(),
                owner: Owner::Ours,
            });
        }
        ([_, _, ..], _) => return Err(ambiguous(&mine)),
        ([], [v]) => {
            return Ok(Found {
                vol: (*v).clone(),
                owner: Owner::HandMadeByName,
            });
        }
        ([], [_, _, ..]) => return Err(ambiguous(&hand)),
        ([], []) => {}
    }
    if !other_nodes.is_empty() {
        let nodes: Vec<&str> = other_nodes
            .iter()
            .filter_map(|v| tag(v, TAG_NODE))
            .collect();
        return Err(other_node(&what, &nodes, deployment, node.unwrap_or("?")));
    }
    let mut theirs: Vec<&str> = volumes
        .iter()
        .filter_map(|v| tag(v, TAG_DEPLOYMENT))
        .collect();
    theirs.sort();
    theirs.dedup();
    if !theirs.is_empty() {
        return Err(other_deployment(&what, &theirs, deployment));
    }
    Err(Failure::new(
        codes::NO_SUCH_DISK,
        format!("no volume is tagged Name={name}: run disk-create first"),
    ))
}

/// A volume made by hand and found by its Name tag may be adopted only
/// while nothing uses it (`available`) and in the zone the record's disk
/// must be in (`zone`, when known).
pub fn check_adoptable(f: &Found, zone: Option<&str>) -> Result<(), Failure> {
    if f.owner != Owner::HandMadeByName {
        return Ok(());
    }
    let v = &f.vol;
    let why = if v.state() != Some(&VolumeState::Available) {
        Some(format!(
            "it is {}",
            v.state()
                .map(|s| s.as_str())
                .unwrap_or("in an unknown state")
        ))
    } else {
        match (zone, v.availability_zone()) {
            (None, _) => Some("the zone its disk must be in is not known".to_string()),
            (Some(want), Some(have)) if want != have => {
                Some(format!("it is in {have}, not {want}"))
            }
            _ => None,
        }
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Failure::new(
            codes::NOT_ADOPTABLE,
            format!(
                "volume {} (tagged Name={}) was made by hand and carries no {TAG_DEPLOYMENT} tag, and {why}: a hand-made volume is adopted only while available and in the zone. Name it by its id if it is this node's, or tag it for this deployment",
                id(v),
                tag(v, "Name").unwrap_or("?")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::Tag;

    fn vol(id: &str, tags: &[(&str, &str)]) -> Volume {
        let mut b = Volume::builder()
            .volume_id(id)
            .state(VolumeState::Available)
            .availability_zone("z1");
        for (k, v) in tags {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    }

    #[test]
    fn a_name_finds_ours_else_a_hand_made_one_never_another_deployments() {
        let ours = vol(
            "vol-1",
            &[("Name", "d"), (TAG_DEPLOYMENT, "a"), (TAG_NODE, "n1")],
        );
        let hand = vol("vol-2", &[("Name", "d")]);
        let theirs = vol("vol-3", &[("Name", "d"), (TAG_DEPLOYMENT, "b")]);
        let all = [theirs.clone(), hand.clone(), ours.clone()];
        let f = by_name("d", &all, "a", Some("n1")).unwrap();
        assert_eq!((f.vol.volume_id(), f.owner), (Some("vol-1"), Owner::Ours));
        let f = by_name("d", &[theirs.clone(), hand], "a", Some("n1")).unwrap();
        assert_eq!(f.owner, Owner::HandMadeByName);
        let e = by_name("d", std::slice::from_ref(&theirs), "a", Some("n1")).unwrap_err();
        assert_eq!(e.code, "other-deployment");
        assert!(e.message.contains("deployment b"), "{}", e.message);
        let e = by_name("d", std::slice::from_ref(&ours), "a", Some("n2")).unwrap_err();
        assert_eq!(e.code, "other-node");
        assert_eq!(
            by_name("d", &[], "a", None).unwrap_err().code,
            "no-such-disk"
        );
        assert_eq!(
            by_id(theirs, "a", None).unwrap_err().code,
            "other-deployment"
        );
    }
}
