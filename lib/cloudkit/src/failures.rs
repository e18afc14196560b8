//! The failures both clouds give for the same situation, worded once.
//!
//! `disk` arguments name the disk as the provider says it (`volume
//! vol-0123...`, `disk mydisk`), so messages read the same on both clouds.

use std::fmt::Display;
use std::time::Duration;

use appscale_persist::codes;
use appscale_persist::provider::Size;
use appscale_persist::step::Failure;

/// No disk `id` (of kind `noun`: `volume`, `disk`), in `place` when given.
pub fn no_such_disk(noun: &str, id: &str, place: Option<&str>) -> Failure {
    let place = place.map(|p| format!(" in {p}")).unwrap_or_default();
    Failure::new(codes::NO_SUCH_DISK, format!("no such {noun}: {id}{place}"))
}

/// Two or more records (`labels`) name one disk: none of them is acted on.
pub fn duplicate_disk(disk: &str, labels: &[String]) -> Failure {
    Failure::new(
        codes::DUPLICATE_DISK,
        format!(
            "records {} all name {disk}: one disk belongs to one record; nothing was done to it",
            labels.join(", ")
        ),
    )
}

/// `disk` exists with another size than `--size` asked: smaller (to be
/// grown only with `--grow`), or larger (never shrunk).
pub fn size_mismatch(disk: &str, have: Size, want: Size) -> Failure {
    let how = if have.bytes() < want.bytes() {
        format!("pass --grow to grow it to {want}, ")
    } else {
        "a disk is never shrunk; ".to_string()
    };
    Failure::new(
        codes::SIZE_MISMATCH,
        format!(
            "{disk} exists with size {have}, not {want}: {how}pass --size {have}, or no --size to take it as it is"
        ),
    )
}

/// `disk` exists with another type than `--type` asked.
pub fn type_mismatch(disk: &str, have: &str, want: &str) -> Failure {
    Failure::new(
        codes::TYPE_MISMATCH,
        format!(
            "{disk} exists with type {have}, not {want}: pass --type {have}, or no --type to take it as it is"
        ),
    )
}

/// To attach `disk`, in use by `instance` (as `device`): refused.
pub fn attached_elsewhere(disk: &str, instance: &str, device: Option<&str>) -> Failure {
    let device = device.map(|d| format!(" as {d}")).unwrap_or_default();
    Failure::new(
        codes::ATTACHED_ELSEWHERE,
        format!("{disk} is attached to {instance}{device}: detach it there first"),
    )
}

/// To detach `disk` from `wanted`, attached to `actual` instead: refused.
pub fn attached_to_another(disk: &str, actual: &str, wanted: &str) -> Failure {
    Failure::new(
        codes::ATTACHED_ELSEWHERE,
        format!("{disk} is attached to {actual}, not {wanted}: leaving it alone"),
    )
}

/// `disk` is in zone `have`, where it is wanted in `want` (the instance's
/// zone, or the record's).
pub fn zone_mismatch(disk: &str, have: &str, want: impl Display) -> Failure {
    Failure::new(
        codes::ZONE_MISMATCH,
        format!("{disk} is in {have}, not {want}: a disk attaches only within its zone"),
    )
}

/// The record names no instance to attach to.
pub fn no_instance() -> Failure {
    Failure::new(
        codes::NO_INSTANCE,
        "no instance to attach to: give the record an `instance`, or pass --instance or --self",
    )
}

/// disk-scratch run off the node: a scratch copy is attached to the node
/// that reads it.
pub fn scratch_needs_self() -> Failure {
    Failure::new(
        codes::NO_INSTANCE,
        "disk-scratch runs on the disk's node: pass --self",
    )
}

/// No instance `id`, in `place` when given.
pub fn no_such_instance(id: &str, place: Option<&str>) -> Failure {
    let place = place.map(|p| format!(" in {p}")).unwrap_or_default();
    Failure::new(
        codes::NO_SUCH_INSTANCE,
        format!("no such instance: {id}{place}"),
    )
}

/// With `--self`, a record for `theirs`, run on `this` instance.
pub fn other_instance(theirs: &str, this: &str) -> Failure {
    Failure::new(
        codes::OTHER_INSTANCE,
        format!("the record is for instance {theirs}, but this is {this} (--self): run it there"),
    )
}

/// No zone `for_what` (`to create the volume in`); `flags` say which flags
/// would give one.
pub fn no_zone(for_what: &str, flags: &str) -> Failure {
    Failure::new(
        codes::NO_ZONE,
        format!("no zone {for_what}: set `zone` in the AppScalefile, or pass {flags}"),
    )
}

/// `--self`, and this machine's identity could not be read.
pub fn metadata(e: impl Display) -> Failure {
    Failure::new(codes::METADATA, format!("--self: {e}"))
}

/// `what` did not happen within `timeout`; `last`: the last poll failed so.
pub fn timed_out(what: impl Display, timeout: Duration, last: Option<&Failure>) -> Failure {
    let last = last
        .map(|f| format!("; the last poll failed: {} [{}]", f.message, f.code))
        .unwrap_or_default();
    Failure::new(codes::TIMEOUT, format!("{what} within {timeout:?}{last}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_disk_and_say_what_to_do() {
        assert_eq!(
            no_such_disk("volume", "vol-1", None).message,
            "no such volume: vol-1"
        );
        assert_eq!(
            no_such_disk("disk", "d1", Some("us-central1-a of project p")).message,
            "no such disk: d1 in us-central1-a of project p"
        );
        let f = size_mismatch("volume vol-1", Size(1 << 30), Size(2 << 30));
        assert_eq!(f.code, codes::SIZE_MISMATCH);
        assert!(
            f.message
                .starts_with("volume vol-1 exists with size 1G, not 2G"),
            "{}",
            f.message
        );
        let f = attached_elsewhere("disk d1", "vm-1", None);
        assert_eq!(
            f.message,
            "disk d1 is attached to vm-1: detach it there first"
        );
        assert_eq!(
            timed_out(
                "operation op-1 did not finish",
                Duration::from_secs(2),
                None
            )
            .message,
            "operation op-1 did not finish within 2s"
        );
    }
}
