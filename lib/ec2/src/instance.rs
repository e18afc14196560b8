//! What the provider knows of an instance: read by DescribeInstances
//! ([`crate::api::Api::instances`]), used to choose a device name, count
//! what it carries against its type's limit ([`crate::limits`]) and check
//! it in disk-doctor.

use std::collections::HashSet;

/// What the provider needs to know about an instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// Its availability zone.
    pub zone: String,
    /// Device names in use (normalised: `sdf`, never `xvdf` or `/dev/`).
    pub devices: HashSet<String>,
    /// Its instance type (`m5.large`), when said.
    pub instance_type: Option<String>,
    /// An HVM instance (not paravirtual): the longer name space.
    pub hvm: bool,
    /// EBS volumes attached (the root volume too).
    pub ebs_volumes: usize,
    /// Network interfaces attached.
    pub network_interfaces: usize,
    /// The image (AMI) it was launched from.
    pub image_id: Option<String>,
}
