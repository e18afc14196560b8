//! How many EBS volumes an instance may carry: its type says
//! (DescribeInstanceTypes' `EbsInfo`), and disk-attach refuses, before any
//! call, the volumes beyond it (`attachment-limit`), rather than leave EC2
//! to refuse them one by one, or a Xen instance to fail its next boot.
//!
//! * A **dedicated** limit (some Nitro types) counts EBS volumes alone.
//! * A **shared** limit (most Nitro types; Xen types say theirs the same
//!   way) is shared with network interfaces and NVMe instance store:
//!   `MaximumEbsAttachments` counts one network interface and the type's
//!   instance store already, and each further network interface takes a
//!   volume's place.
//!
//! The root volume counts. What only EC2 knows (an interface being added
//! meanwhile) may still make it refuse an attach: that refusal
//! (`AttachmentLimitExceeded`) is the same `attachment-limit`. An answer
//! that says no limit (Eucalyptus, a type unknown to DescribeInstanceTypes,
//! or no permission to call it) leaves the names as the only bound.

use std::collections::HashMap;

use appscale_persist::codes;
use appscale_persist::step::Failure;

use crate::instance::InstanceInfo;

/// How many EBS volumes an instance type takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EbsLimit {
    /// `MaximumEbsAttachments`: with one network interface, and the type's
    /// NVMe instance store, counted already.
    pub max: usize,
    /// Shared with network interfaces: each one beyond the first takes a
    /// volume's place.
    pub shared: bool,
}

impl EbsLimit {
    /// How many EBS volumes (the root volume too) `instance` may carry.
    pub fn of(&self, instance: &InstanceInfo) -> usize {
        if self.shared {
            let extra = instance.network_interfaces.saturating_sub(1);
            self.max.saturating_sub(extra)
        } else {
            self.max
        }
    }
}

/// How many more volumes each instance of `instances` may take, for those
/// whose type has a known limit (`limits`, by instance type).
pub fn room(
    instances: &HashMap<String, InstanceInfo>,
    limits: &HashMap<String, EbsLimit>,
) -> HashMap<String, Room> {
    instances
        .iter()
        .filter_map(|(id, info)| {
            let ty = info.instance_type.as_deref()?;
            let limit = limits.get(ty)?.of(info);
            let room = Room {
                instance_type: ty.to_string(),
                limit,
                attached: info.ebs_volumes,
                left: limit.saturating_sub(info.ebs_volumes),
            };
            Some((id.clone(), room))
        })
        .collect()
}

/// An instance's room for volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Its type.
    pub instance_type: String,
    /// How many EBS volumes it may carry, the root volume too.
    pub limit: usize,
    /// How many it carries.
    pub attached: usize,
    /// How many more it may take.
    pub left: usize,
}

impl Room {
    /// The failure of a volume that does not fit on `instance`.
    pub fn full(&self, instance: &str) -> Failure {
        Failure::new(
            codes::ATTACHMENT_LIMIT,
            format!(
                "{instance} ({}) takes at most {} EBS volumes, its root volume too; it carries {}{}: detach a volume it no longer needs, or use an instance type that takes more",
                self.instance_type,
                self.limit,
                self.attached,
                if self.attached < self.limit {
                    ", and this run's other attachments take the rest"
                } else {
                    ""
                }
            ),
        )
    }
}

/// EC2 refused an attach to `instance` for its attachment limit (`why`: its
/// message).
pub fn refused_by_ec2(instance: &str, why: &str) -> Failure {
    Failure::new(
        codes::ATTACHMENT_LIMIT,
        format!(
            "{why}: {instance} carries as many attachments (EBS volumes, network interfaces, instance store) as its type allows; detach a volume it no longer needs, or use an instance type that takes more"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(ty: &str, ebs: usize, enis: usize) -> InstanceInfo {
        InstanceInfo {
            instance_type: Some(ty.into()),
            ebs_volumes: ebs,
            network_interfaces: enis,
            ..InstanceInfo::default()
        }
    }

    #[test]
    fn shared_limits_lose_a_place_to_each_further_interface() {
        let limits = HashMap::from([
            (
                "m5.large".to_string(),
                EbsLimit {
                    max: 27,
                    shared: true,
                },
            ),
            (
                "m7i.48xlarge".to_string(),
                EbsLimit {
                    max: 128,
                    shared: false,
                },
            ),
        ]);
        let instances = HashMap::from([
            ("i-1".to_string(), instance("m5.large", 1, 1)),
            ("i-2".to_string(), instance("m5.large", 1, 3)),
            ("i-3".to_string(), instance("m7i.48xlarge", 1, 3)),
            ("i-4".to_string(), instance("x9.unknown", 1, 1)),
        ]);
        let room = room(&instances, &limits);
        let left = |i: &str| room.get(i).map(|r| r.left);
        assert_eq!(left("i-1"), Some(26));
        assert_eq!(
            left("i-2"),
            Some(24),
            "two more interfaces: two places fewer"
        );
        assert_eq!(
            left("i-3"),
            Some(127),
            "a dedicated limit counts volumes alone"
        );
        assert_eq!(left("i-4"), None, "no known limit: no bound but the names");
        let f = room["i-1"].full("i-1");
        assert_eq!(f.code, codes::ATTACHMENT_LIMIT);
        assert!(
            f.message.starts_with("i-1 (m5.large) takes at most 27"),
            "{}",
            f.message
        );
    }
}
