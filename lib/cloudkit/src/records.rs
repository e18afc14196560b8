//! The record-side rules both clouds apply the same way: where a record
//! goes, whose it is, one disk for one record, never a detach under a live
//! filesystem, and the device on the node after an attach.

use std::collections::HashMap;
use std::hash::Hash;

use appscale_persist::discover;
use appscale_persist::log;
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::release::identity::{Ec2Instance, GceInstance};
use appscale_persist::release::{self, FORCE_RISK};
use appscale_persist::step::{Failure, StepResult};

use crate::failures;

/// The instance this machine is (`--self`), from the metadata service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThisInstance {
    /// Its id (EC2) or name (Compute Engine).
    pub instance: String,
    /// Its zone.
    pub zone: String,
}

impl From<&Ec2Instance> for ThisInstance {
    fn from(i: &Ec2Instance) -> ThisInstance {
        ThisInstance {
            instance: i.id.clone(),
            zone: i.zone.clone(),
        }
    }
}

impl From<&GceInstance> for ThisInstance {
    fn from(i: &GceInstance) -> ThisInstance {
        ThisInstance {
            instance: i.name.clone(),
            zone: i.zone.clone(),
        }
    }
}

/// Fills in the record's instance and zone when it names none: from this
/// machine (`--self`, `this`), else the flags (`instance`, `zone`). With
/// `--self`, a record naming another instance is refused.
pub fn place(
    r: &mut Record,
    this: Option<&ThisInstance>,
    instance: Option<&str>,
    zone: Option<&str>,
) -> Result<(), Failure> {
    match (this, &r.instance) {
        (Some(this), Some(theirs)) if *theirs != this.instance => {
            return Err(failures::other_instance(theirs, &this.instance));
        }
        (Some(this), None) => r.instance = Some(this.instance.clone()),
        (None, None) => r.instance = instance.map(str::to_string),
        _ => {}
    }
    if r.zone.is_none() {
        r.zone = match this {
            Some(this) => Some(this.zone.clone()),
            None => zone.map(str::to_string),
        };
    }
    Ok(())
}

/// The deployment a record belongs to: its own, else `default` (the flag,
/// or the shared default).
pub fn deployment_of(r: &Record, default: &str) -> String {
    r.deployment
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(default)
        .to_string()
}

/// Fails every record whose `key` is another record's too (two records
/// naming one disk, found out once both are looked up): none of them is
/// acted on. `describe` names the disk for the message.
pub fn refuse_duplicates<T, K: Hash + Eq>(
    records: &[Record],
    found: &mut [Result<T, Failure>],
    key: impl Fn(&T) -> K,
    describe: impl Fn(&K) -> String,
) {
    let mut by_key: HashMap<K, Vec<usize>> = HashMap::new();
    for (i, f) in found.iter().enumerate() {
        if let Ok(t) = f {
            by_key.entry(key(t)).or_default().push(i);
        }
    }
    let mut dups: Vec<(K, Vec<usize>)> = by_key.into_iter().filter(|(_, i)| i.len() > 1).collect();
    dups.sort_by_key(|(_, idx)| idx[0]);
    for (k, idx) in dups {
        let labels: Vec<String> = idx.iter().map(|&i| records[i].label()).collect();
        let f = failures::duplicate_disk(&describe(&k), &labels);
        for i in idx {
            found[i] = Err(f.clone());
        }
    }
}

/// Whether a detach may go ahead, and on what grounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detachable {
    /// Shown free: on the node, nothing here uses it; from elsewhere, the
    /// node's proof that it let go.
    Proven,
    /// No proof, and `--force` said to go ahead anyway.
    Forced,
}

impl Detachable {
    /// What the outcome's message adds.
    pub fn note(self) -> &'static str {
        match self {
            Detachable::Proven => "",
            Detachable::Forced => " (forced: no proof that the node let go of it)",
        }
    }
}

/// Never detach under a live filesystem. `disk` (its id), attached as
/// `attached` says (the instance, the device name, since when), may be
/// detached: on the node (`on_node`), when its device here is found and
/// free ([`release::check_here`]); from elsewhere, when it is not mounted
/// here and the record carries the node's proof that it let go, made during
/// this attachment ([`release::require`]), or with `force` (warned).
pub fn may_detach(
    r: &Record,
    disk: &str,
    attached: release::Attachment<'_>,
    on_node: bool,
    force: bool,
) -> Result<Detachable, Failure> {
    let instance = attached.instance;
    if on_node {
        release::check_here(r, force)?;
        return Ok(Detachable::Proven);
    }
    if r.device.is_some() {
        discover::refuse_if_mounted_here(r)?;
    }
    match release::require(r, disk, attached) {
        Ok(_) => Ok(Detachable::Proven),
        Err(e) if !force => Err(e),
        Err(_) => {
            log::warn(format_args!(
                "{}: detaching {disk} from {instance} without proof that the node let go of it (--force): {FORCE_RISK}",
                r.label()
            ));
            Ok(Detachable::Forced)
        }
    }
}

/// `f` for every record: what an operation that could not start (no
/// client, no identity) gives.
pub fn fail_all<T>(records: &[Record], f: Failure) -> Vec<Result<T, Failure>> {
    records.iter().map(|_| Err(f.clone())).collect()
}

/// After an attach on the node itself (`--self`): finds each attached
/// disk's device here ([`discover::find`]), sets the record's `device` and
/// says it in the outcome; a device that does not show, or is not the disk,
/// fails the record.
pub fn find_devices_here(records: &mut [Record], results: Vec<StepResult>) -> Vec<StepResult> {
    records
        .iter_mut()
        .zip(results)
        .map(|(r, o)| find_device_here(r, o))
        .collect()
}

/// [`find_devices_here`] for one record.
fn find_device_here(r: &mut Record, result: StepResult) -> StepResult {
    let mut outcome = result?;
    let path = discover::find(r, discover::DEVICE_WAIT)?;
    outcome
        .message
        .push_str(&format!(", device {}", path.display()));
    r.device = Some(path.display().to_string());
    Ok(outcome)
}

/// A disk no record names (a scratch copy, disk-scratch's), as a record:
/// enough to find its device here ([`discover::find`],
/// [`discover::refuse_if_mounted_here`]) by its id, its attach name
/// (EC2 `/dev/sdf`, a GCE device name), its size, and its instance.
pub fn attached_disk(
    kind: ProviderKind,
    id: &str,
    attached_as: Option<&str>,
    size_bytes: Option<u64>,
    instance: &str,
) -> Record {
    Record {
        provider: Some(kind),
        disk: Some(id.to_string()),
        disk_id: Some(id.to_string()),
        attached_as: attached_as.map(str::to_string),
        size_bytes,
        instance: Some(instance.to_string()),
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appscale_persist::codes;

    fn rec(disk: &str) -> Record {
        Record {
            node: Some("n".into()),
            disk: Some(disk.into()),
            ..Record::default()
        }
    }

    #[test]
    fn the_record_wins_then_this_machine_then_the_flags() {
        let this = ThisInstance {
            instance: "i-1".into(),
            zone: "z-here".into(),
        };
        let mut r = rec("d");
        place(&mut r, Some(&this), Some("i-flag"), Some("z-flag")).unwrap();
        assert_eq!(
            (r.instance.as_deref(), r.zone.as_deref()),
            (Some("i-1"), Some("z-here"))
        );
        let mut r = rec("d");
        place(&mut r, None, Some("i-flag"), Some("z-flag")).unwrap();
        assert_eq!(
            (r.instance.as_deref(), r.zone.as_deref()),
            (Some("i-flag"), Some("z-flag"))
        );
        let mut r = rec("d");
        r.instance = Some("i-2".into());
        r.zone = Some("z-own".into());
        assert_eq!(
            place(&mut r, Some(&this), None, None).unwrap_err().code,
            codes::OTHER_INSTANCE
        );
        place(&mut r, None, Some("i-flag"), Some("z-flag")).unwrap();
        assert_eq!(
            (r.instance.as_deref(), r.zone.as_deref()),
            (Some("i-2"), Some("z-own"))
        );
    }

    #[test]
    fn two_records_for_one_disk_both_fail_others_go_on() {
        let records = [rec("a"), rec("vol-1"), rec("b"), rec("vol-1")];
        let mut found: Vec<Result<&str, Failure>> = vec![
            Ok("vol-1"),
            Ok("vol-1"),
            Ok("vol-2"),
            Err(Failure::new(codes::NO_SUCH_DISK, "x")),
        ];
        refuse_duplicates(
            &records,
            &mut found,
            |v| v.to_string(),
            |v| format!("volume {v}"),
        );
        for i in [0, 1] {
            let f = found[i].as_ref().unwrap_err();
            assert_eq!(f.code, codes::DUPLICATE_DISK);
            assert!(
                f.message
                    .starts_with("records n (a), n (vol-1) all name volume vol-1"),
                "{}",
                f.message
            );
        }
        assert_eq!(found[2], Ok("vol-2"));
        assert_eq!(found[3].as_ref().unwrap_err().code, codes::NO_SUCH_DISK);
    }

    #[test]
    fn deployments_come_from_the_record_else_the_default() {
        let mut r = rec("d");
        assert_eq!(deployment_of(&r, "appscale"), "appscale");
        r.deployment = Some(String::new());
        assert_eq!(deployment_of(&r, "appscale"), "appscale");
        r.deployment = Some("prod".into());
        assert_eq!(deployment_of(&r, "appscale"), "prod");
    }
}
