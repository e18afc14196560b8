//! `disk-create`'s options against Compute Engine's own rules, checked
//! before any call ([`check`]): an error is a usage error, and nothing is
//! done.
//!
//! * Provisioned IOPS and throughput: only the disk types that take them
//!   (pd-extreme, the hyperdisks), within the ranges Compute Engine's
//!   documentation gives for each (as of 2025), and the ratio to size when
//!   `--size` is given (a disk found has its own); any other type takes
//!   neither.
//! * Labels (`--tag`): keys of 1 to 63 characters starting with a lowercase
//!   letter, keys and values only lowercase letters, digits, `_` and `-`
//!   (values may be empty), at most 64 a disk (two are this provider's own,
//!   whose keys are refused).
//! * `--kms-key`: a Cloud KMS key name
//!   (`projects/P/locations/L/keyRings/R/cryptoKeys/K`); `--encrypted` alone
//!   says nothing here (every persistent disk is encrypted).

use appscale_persist_cloudkit::DiskSpec;

use crate::DEFAULT_DISK_TYPE;
use crate::owner::{LABEL_DEPLOYMENT, LABEL_NODE};

/// What a disk type takes: IOPS (min, max, at most this many per GiB; 0:
/// no ratio) and throughput, MiB/s (min, max, at most IOPS divided by this;
/// 0: no ratio).
struct DiskType {
    name: &'static str,
    iops: Option<(u64, u64, u64)>,
    throughput: Option<(u64, u64, u64)>,
}

const TYPES: &[DiskType] = &[
    DiskType {
        name: "pd-extreme",
        iops: Some((10_000, 120_000, 0)),
        throughput: None,
    },
    DiskType {
        name: "hyperdisk-balanced",
        iops: Some((3_000, 160_000, 500)),
        throughput: Some((140, 2_400, 4)),
    },
    DiskType {
        name: "hyperdisk-extreme",
        iops: Some((2_500, 350_000, 1_000)),
        throughput: None,
    },
    DiskType {
        name: "hyperdisk-throughput",
        iops: None,
        throughput: Some((10, 600, 0)),
    },
    DiskType {
        name: "hyperdisk-ml",
        iops: None,
        throughput: Some((400, 1_200_000, 0)),
    },
];

/// Machine families whose instances take only Hyperdisk (no `pd-*`
/// disk attaches: `UNSUPPORTED_OPERATION`), as Compute Engine's machine
/// series documentation lists them (2025); bare-metal C3 and Z3 shapes
/// (`-metal`) too.
const HYPERDISK_ONLY: &[&str] = &[
    "c4", "c4a", "c4d", "n4", "n4a", "n4d", "x4", "m4", "a4", "a4x", "h4d",
];

/// Machine families whose instances take no Hyperdisk at all.
const NO_HYPERDISK: &[&str] = &["e2", "n1", "f1", "g1"];

/// The family of a machine type: `n2-standard-4` → `n2`.
pub fn family(machine_type: &str) -> &str {
    machine_type.split('-').next().unwrap_or(machine_type)
}

/// Whether a disk of `disk_type` can be attached to an instance of
/// `machine_type`; the error says why not, and which type to take. Only
/// what is certain is refused here: other combinations Compute Engine
/// refuses at the attach (`UNSUPPORTED_OPERATION`), said the same way.
pub fn check_machine(machine_type: &str, disk_type: &str) -> Result<(), String> {
    let fam = family(machine_type);
    let hyperdisk_only = HYPERDISK_ONLY.contains(&fam) || machine_type.ends_with("-metal");
    if hyperdisk_only && disk_type.starts_with("pd-") {
        return Err(format!(
            "{machine_type} ({fam}) instances take only Hyperdisk, not {disk_type}: pass --type hyperdisk-balanced (or another hyperdisk-* type), or use a machine type of an older family (n2, c3, ...)"
        ));
    }
    if NO_HYPERDISK.contains(&fam) && disk_type.starts_with("hyperdisk-") {
        return Err(format!(
            "{machine_type} ({fam}) instances take no Hyperdisk, so not {disk_type}: pass --type pd-balanced (or pd-ssd, pd-standard), or use a machine type of a newer family (n4, c4, ...)"
        ));
    }
    Ok(())
}

/// Labels a disk may carry, besides this provider's two.
const MAX_LABELS: usize = 64 - 2;

/// Checks `spec` against Compute Engine's rules; the error says which flag
/// and why.
pub fn check(spec: &DiskSpec) -> Result<(), String> {
    check_performance(spec)?;
    if let Some(key) = &spec.kms_key {
        let parts: Vec<&str> = key.split('/').collect();
        let shape = [
            "projects",
            "",
            "locations",
            "",
            "keyRings",
            "",
            "cryptoKeys",
            "",
        ];
        let ok = parts.len() == shape.len()
            && parts
                .iter()
                .zip(shape)
                .all(|(p, s)| if s.is_empty() { !p.is_empty() } else { *p == s });
        if !ok {
            return Err(format!(
                "--kms-key {key}: a Compute Engine disk takes a Cloud KMS key name, projects/P/locations/L/keyRings/R/cryptoKeys/K"
            ));
        }
    }
    check_labels(&spec.tags)
}

fn check_performance(spec: &DiskSpec) -> Result<(), String> {
    let name = spec.disk_type.as_deref().unwrap_or(DEFAULT_DISK_TYPE);
    let ty = TYPES.iter().find(|t| t.name == name);
    // The ratio to size only with --size: a disk found has its own size.
    let gib = spec.size.map(|s| s.gib()).unwrap_or(u64::MAX / 1_000_000);
    let takes = "pd-extreme, hyperdisk-balanced and hyperdisk-extreme take --iops; hyperdisk-balanced, hyperdisk-throughput and hyperdisk-ml --throughput";
    if let Some(n) = spec.iops {
        let Some((min, max, per_gib)) = ty.and_then(|t| t.iops) else {
            return Err(format!(
                "--iops: {name} disks take no provisioned IOPS ({takes})"
            ));
        };
        if !(min..=max).contains(&n) {
            return Err(format!("--iops {n}: {name} disks take {min} to {max} IOPS"));
        }
        if per_gib > 0 && n > min && n > per_gib * gib {
            return Err(format!(
                "--iops {n}: a {gib} GiB {name} disk takes at most {} IOPS ({per_gib} per GiB): pass a larger --size or fewer IOPS",
                (per_gib * gib).max(min)
            ));
        }
    }
    if let Some(t) = spec.throughput {
        let Some((min, max, iops_per)) = ty.and_then(|t| t.throughput) else {
            return Err(format!(
                "--throughput: {name} disks take no provisioned throughput ({takes})"
            ));
        };
        if !(min..=max).contains(&t) {
            return Err(format!(
                "--throughput {t}: {name} disks take {min} to {max} MiB/s"
            ));
        }
        let iops = spec
            .iops
            .or_else(|| ty.and_then(|t| t.iops).map(|i| i.0))
            .unwrap_or(0);
        if iops_per > 0 && t * iops_per > iops {
            return Err(format!(
                "--throughput {t}: with {iops} IOPS a {name} disk takes at most {} MiB/s (one per {iops_per} IOPS): pass more --iops",
                iops / iops_per
            ));
        }
    }
    Ok(())
}

/// Whether `c` may be in a label: a lowercase letter (international ones
/// too), a digit, `_` or `-`.
fn label_char(c: char) -> bool {
    c.is_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

fn check_labels(tags: &[(String, String)]) -> Result<(), String> {
    if tags.len() > MAX_LABELS {
        return Err(format!(
            "{} --tag: a Compute Engine disk takes at most {MAX_LABELS} labels besides the ones disk-create sets",
            tags.len()
        ));
    }
    for (k, v) in tags {
        let why = if k.chars().count() > 63 || v.chars().count() > 63 {
            Some("label keys and values are at most 63 characters")
        } else if !k.chars().next().is_some_and(char::is_lowercase) {
            Some("a label key starts with a lowercase letter")
        } else if !k.chars().all(label_char) || !v.chars().all(label_char) {
            Some("label keys and values hold only lowercase letters, digits, `_` and `-`")
        } else if [LABEL_DEPLOYMENT, LABEL_NODE].contains(&k.as_str()) {
            Some("disk-create sets that label itself")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!("--tag {k}={v}: {why}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use appscale_persist::provider::Size;

    fn spec(ty: &str, gib: u64, iops: Option<u64>, throughput: Option<u64>) -> DiskSpec {
        DiskSpec {
            size: Some(Size(gib << 30)),
            disk_type: Some(ty.into()),
            iops,
            throughput,
            ..DiskSpec::default()
        }
    }

    #[test]
    fn provisioned_performance_only_where_the_type_takes_it() {
        let err = |s: DiskSpec| check(&s).unwrap_err();
        assert_eq!(check(&spec("pd-balanced", 10, None, None)), Ok(()));
        assert_eq!(check(&spec("pd-extreme", 500, Some(20_000), None)), Ok(()));
        assert_eq!(
            check(&spec("hyperdisk-balanced", 10, Some(5_000), Some(500))),
            Ok(())
        );
        assert!(err(spec("pd-balanced", 10, Some(5_000), None)).contains("no provisioned IOPS"));
        assert!(err(spec("pd-ssd", 10, None, Some(200))).contains("no provisioned throughput"));
        assert!(err(spec("pd-extreme", 500, Some(5_000), None)).contains("10000 to 120000"));
        assert!(err(spec("hyperdisk-balanced", 10, Some(6_000), None)).contains("at most 5000"));
        assert!(
            err(spec("hyperdisk-balanced", 10, Some(3_000), Some(1_000))).contains("at most 750")
        );
        assert!(err(spec("pd-extreme", 500, None, Some(200))).contains("no provisioned"));
    }

    #[test]
    fn hyperdisk_only_families_and_families_without_it() {
        assert_eq!(check_machine("n2-standard-4", "pd-balanced"), Ok(()));
        assert_eq!(check_machine("n2-standard-4", "hyperdisk-extreme"), Ok(()));
        assert_eq!(check_machine("c4-standard-8", "hyperdisk-balanced"), Ok(()));
        let e = check_machine("c4-standard-8", "pd-balanced").unwrap_err();
        assert!(e.contains("--type hyperdisk-balanced"), "{e}");
        assert!(check_machine("c3-highcpu-192-metal", "pd-ssd").is_err());
        assert_eq!(check_machine("c3-standard-4", "pd-ssd"), Ok(()));
        let e = check_machine("e2-medium", "hyperdisk-balanced").unwrap_err();
        assert!(e.contains("--type pd-balanced"), "{e}");
    }

    #[test]
    fn label_rules_and_key_names() {
        let labelled = |k: &str, v: &str| DiskSpec {
            tags: vec![(k.into(), v.into())],
            ..DiskSpec::default()
        };
        assert_eq!(check(&labelled("team", "db-1")), Ok(()));
        assert_eq!(check(&labelled("team", "")), Ok(()));
        assert!(
            check(&labelled("Team", "db"))
                .unwrap_err()
                .contains("lowercase")
        );
        assert!(check(&labelled("1team", "db")).is_err());
        assert!(check(&labelled("team", "DB")).is_err());
        assert!(check(&labelled("team", "a.b")).is_err());
        assert!(check(&labelled(&"k".repeat(64), "x")).is_err());
        assert!(
            check(&labelled(LABEL_NODE, "x"))
                .unwrap_err()
                .contains("itself")
        );
        let key = |k: &str| DiskSpec {
            kms_key: Some(k.into()),
            ..DiskSpec::default()
        };
        assert_eq!(
            check(&key("projects/p/locations/us/keyRings/r/cryptoKeys/k")),
            Ok(())
        );
        assert!(check(&key("alias/data")).is_err());
        assert!(check(&key("projects/p/locations/us/keyRings/r/cryptoKeys/")).is_err());
    }
}
