//! Choosing a device name for an attachment.
//!
//! EC2's documented names for EBS data volumes are `/dev/sdf` ...
//! `/dev/sdz` on every instance, and on HVM instances also `/dev/xvdba` ...
//! `/dev/xvdcz` ([`NameSpace::Hvm`]): 73 names in all, where `sd[f-z]`
//! alone runs out at the 22nd volume. Paravirtual instances and Eucalyptus
//! keep to `sd[f-z]` ([`NameSpace::Short`]). Xen kernels show `sdf` as
//! `/dev/xvdf`, so `sdf` and `xvdf` are one name, and a name taken under
//! either spelling (or with a partition number) is in use.
//!
//! How many volumes an instance may carry is its type's business, not the
//! names': see [`crate::limits::EbsLimit`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// The device names an instance's volumes may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSpace {
    /// `/dev/sdf` to `/dev/sdz`: paravirtual instances, Eucalyptus.
    Short,
    /// Those, then `/dev/xvdba` to `/dev/xvdcz`: HVM instances on EC2.
    Hvm,
}

impl NameSpace {
    /// Every name, in the order they are handed out.
    pub fn names(self) -> Vec<String> {
        let mut names: Vec<String> = ('f'..='z').map(|c| format!("/dev/sd{c}")).collect();
        if self == NameSpace::Hvm {
            for first in ['b', 'c'] {
                names.extend(('a'..='z').map(|c| format!("/dev/xvd{first}{c}")));
            }
        }
        names
    }

    /// The names, for messages: `/dev/sdf to /dev/sdz`.
    pub fn describe(self) -> &'static str {
        match self {
            NameSpace::Short => "/dev/sdf to /dev/sdz",
            NameSpace::Hvm => "/dev/sdf to /dev/sdz, /dev/xvdba to /dev/xvdcz",
        }
    }
}

/// `/dev/xvdf1` → `sdf`; `/dev/xvdba` → `sdba`.
pub fn normalize(name: &str) -> String {
    let base = name.trim_start_matches("/dev/");
    let base = base
        .strip_prefix("xvd")
        .map(|r| format!("sd{r}"))
        .unwrap_or_else(|| base.to_string());
    base.trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

/// The first name of `space` not in `in_use` (normalised names).
pub fn free_name(in_use: &HashSet<String>, space: NameSpace) -> Option<String> {
    space
        .names()
        .into_iter()
        .find(|n| !in_use.contains(&normalize(n)))
}

/// The device names taken on each instance, as one run's attaches take
/// them: what DescribeInstances shows in use, the names the instance's
/// image (AMI) maps (instance store, which DescribeInstances does not
/// show, and EC2 refuses as "already in use"), and the names this run has
/// given out or seen refused. Shared by the concurrent attaches of a run,
/// so a name refused once is never tried again in it.
#[derive(Debug, Clone, Default)]
pub struct Taken(Arc<Mutex<HashMap<String, InstanceNames>>>);

/// One instance's name space, and the names taken in it (normalised).
type InstanceNames = (NameSpace, HashSet<String>);

impl Taken {
    /// Notes `instance`, of name space `space`, with the names `in_use`.
    pub fn instance(&self, instance: &str, space: NameSpace, in_use: HashSet<String>) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.insert(instance.to_string(), (space, in_use));
    }

    /// The first free name on `instance` (known with [`Taken::instance`]),
    /// now taken.
    pub fn take_free(&self, instance: &str) -> Option<String> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (space, used) = all.get_mut(instance)?;
        let name = free_name(used, *space)?;
        used.insert(normalize(&name));
        Some(name)
    }

    /// The name space of `instance`, for messages.
    pub fn space(&self, instance: &str) -> NameSpace {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(instance).map_or(NameSpace::Short, |(s, _)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_partitions_count_as_in_use() {
        assert_eq!(normalize("/dev/xvdf"), "sdf");
        assert_eq!(normalize("/dev/sda1"), "sda");
        assert_eq!(normalize("xvdg2"), "sdg");
        assert_eq!(normalize("/dev/xvdba"), "sdba");
        let used: HashSet<String> = ["/dev/sda1", "/dev/xvdf", "sdg"]
            .iter()
            .map(|s| normalize(s))
            .collect();
        assert_eq!(
            free_name(&used, NameSpace::Short).as_deref(),
            Some("/dev/sdh")
        );
    }

    #[test]
    fn a_run_never_gives_out_a_name_twice() {
        let taken = Taken::default();
        let used: HashSet<String> = ["sda", "sdf"].iter().map(|s| s.to_string()).collect();
        taken.instance("i-1", NameSpace::Short, used);
        assert_eq!(taken.take_free("i-1").as_deref(), Some("/dev/sdg"));
        assert_eq!(taken.take_free("i-1").as_deref(), Some("/dev/sdh"));
        assert_eq!(taken.take_free("i-2"), None, "an instance not noted");
    }

    #[test]
    fn hvm_instances_have_73_names_paravirtual_ones_21() {
        assert_eq!(NameSpace::Short.names().len(), 21);
        let hvm = NameSpace::Hvm.names();
        assert_eq!(hvm.len(), 73);
        assert_eq!(
            (hvm[20].as_str(), hvm[21].as_str(), hvm[72].as_str()),
            ("/dev/sdz", "/dev/xvdba", "/dev/xvdcz")
        );
        let distinct: HashSet<String> = hvm.iter().map(|n| normalize(n)).collect();
        assert_eq!(distinct.len(), 73, "no two names are aliases");
        let short: HashSet<String> = NameSpace::Short
            .names()
            .iter()
            .map(|n| normalize(n))
            .collect();
        assert_eq!(free_name(&short, NameSpace::Short), None);
        assert_eq!(
            free_name(&short, NameSpace::Hvm).as_deref(),
            Some("/dev/xvdba")
        );
        let all: HashSet<String> = distinct;
        assert_eq!(free_name(&all, NameSpace::Hvm), None);
    }
}
