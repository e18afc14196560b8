//! `disk-create`'s options against EBS's own limits, checked before any
//! call ([`check`]): an error is a usage error, and nothing is done.
//!
//! The limits are those the EC2 API reference gives for CreateVolume
//! (aws-sdk-ec2 1.274): which volume types take `--iops` and
//! `--throughput`, their ranges, and the ratios to size (when `--size` is
//! given: a volume found has its own, and EC2 checks a new one's) and to
//! IOPS. An
//! unknown type is passed on as given, but takes neither flag here: its
//! limits are unknown. Tags: at most 128 characters a key and 256 a value,
//! no `aws:` key (AWS's own), and none of the keys this provider sets
//! itself.

use appscale_persist::record::ProviderKind;
use appscale_persist_cloudkit::DiskSpec;

use crate::DEFAULT_DISK_TYPE;
use crate::owner::{TAG_DEPLOYMENT, TAG_KMS_KEY, TAG_NODE};

/// A volume type's provisioned IOPS.
struct Iops {
    /// Allowed values.
    min: u64,
    max: u64,
    /// At most this many per GiB of size...
    per_gib: u64,
    /// ...above what every volume of the type has (gp3's baseline).
    baseline: u64,
    /// CreateVolume needs it: checked when a volume is to be made
    /// ([`missing_iops`]), as a volume found has its own.
    required: bool,
}

/// What a volume type takes.
struct VolumeType {
    name: &'static str,
    /// Allowed sizes, GiB (CreateVolume's `Size`).
    gib: (u64, u64),
    iops: Option<Iops>,
    /// Allowed throughput, MiB/s, and at most this many MiB/s per 1,000
    /// IOPS.
    throughput: Option<(u64, u64, u64)>,
}

const TYPES: &[VolumeType] = &[
    VolumeType {
        name: "gp3",
        gib: (1, 65_536),
        iops: Some(Iops {
            min: 3_000,
            max: 80_000,
            per_gib: 500,
            baseline: 3_000,
            required: false,
        }),
        throughput: Some((125, 2_000, 250)),
    },
    VolumeType {
        name: "io1",
        gib: (4, 16_384),
        iops: Some(Iops {
            min: 100,
            max: 64_000,
            per_gib: 50,
            baseline: 0,
            required: true,
        }),
        throughput: None,
    },
    VolumeType {
        name: "io2",
        gib: (4, 65_536),
        iops: Some(Iops {
            min: 100,
            max: 256_000,
            per_gib: 1_000,
            baseline: 0,
            required: true,
        }),
        throughput: None,
    },
    VolumeType {
        name: "gp2",
        gib: (1, 16_384),
        iops: None,
        throughput: None,
    },
    VolumeType {
        name: "st1",
        gib: (125, 16_384),
        iops: None,
        throughput: None,
    },
    VolumeType {
        name: "sc1",
        gib: (125, 16_384),
        iops: None,
        throughput: None,
    },
    VolumeType {
        name: "standard",
        gib: (1, 1_024),
        iops: None,
        throughput: None,
    },
];

/// The tags EBS allows on a volume, and the ones this provider sets itself
/// (`Name`, deployment, node, key).
const MAX_TAGS: usize = 50 - 4;

/// Checks `spec` against EBS's limits (on Eucalyptus, against what it
/// takes: [`crate::euca::check`]); the error says which flag and why.
pub fn check(kind: ProviderKind, spec: &DiskSpec) -> Result<(), String> {
    if kind == ProviderKind::Euca {
        return crate::euca::check(spec).and_then(|()| check_tags(&spec.tags));
    }
    if let Some(size) = spec.size {
        size_fits(spec, size.gib())?;
    }
    check_performance(spec)?;
    if let Some(key) = &spec.kms_key
        && (key.is_empty() || key.contains(char::is_whitespace) || key.starts_with("projects/"))
    {
        return Err(format!(
            "--kms-key {key}: an EBS volume takes a KMS key id, alias (alias/NAME) or ARN"
        ));
    }
    check_tags(&spec.tags)
}

fn check_performance(spec: &DiskSpec) -> Result<(), String> {
    let name = spec.disk_type.as_deref().unwrap_or(DEFAULT_DISK_TYPE);
    let Some(ty) = TYPES.iter().find(|t| t.name == name) else {
        if spec.iops.is_some() || spec.throughput.is_some() {
            return Err(format!(
                "volume type {name}: its IOPS and throughput limits are unknown here (gp3, io1 and io2 take --iops, gp3 --throughput)"
            ));
        }
        return Ok(());
    };
    // The ratio to size only with --size: a volume found has its own size.
    let gib = spec.size.map(|s| s.gib()).unwrap_or(u64::MAX / 1_000_000);
    let iops = match (&ty.iops, spec.iops) {
        (None, Some(_)) => {
            return Err(format!(
                "--iops: {name} volumes take no provisioned IOPS (gp3, io1 and io2 do)"
            ));
        }
        (Some(l), Some(n)) => {
            if !(l.min..=l.max).contains(&n) {
                return Err(format!(
                    "--iops {n}: {name} volumes take {} to {} IOPS",
                    l.min, l.max
                ));
            }
            if n > l.baseline && n > l.per_gib * gib {
                return Err(format!(
                    "--iops {n}: a {gib} GiB {name} volume takes at most {} IOPS ({} per GiB): pass a larger --size or fewer IOPS",
                    (l.per_gib * gib).max(l.baseline),
                    l.per_gib
                ));
            }
            Some(n)
        }
        (Some(l), None) => Some(l.baseline),
        (None, None) => None,
    };
    match (ty.throughput, spec.throughput) {
        (None, Some(_)) => Err(format!(
            "--throughput: {name} volumes take no provisioned throughput (gp3 does)"
        )),
        (Some((min, max, per_kiops)), Some(t)) => {
            if !(min..=max).contains(&t) {
                return Err(format!(
                    "--throughput {t}: {name} volumes take {min} to {max} MiB/s"
                ));
            }
            let iops = iops.unwrap_or(0);
            if t * 1_000 > per_kiops * iops {
                return Err(format!(
                    "--throughput {t}: with {iops} IOPS a {name} volume takes at most {} MiB/s ({per_kiops} per 1,000 IOPS): pass more --iops",
                    per_kiops * iops / 1_000
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Why a volume of `spec`'s type cannot be `gib` GiB, if it cannot (st1
/// and sc1 start at 125 GiB, standard ends at 1 TiB, ...). A type unknown
/// here is left to EC2.
pub fn size_fits(spec: &DiskSpec, gib: u64) -> Result<(), String> {
    let name = spec.disk_type.as_deref().unwrap_or(DEFAULT_DISK_TYPE);
    let Some(ty) = TYPES.iter().find(|t| t.name == name) else {
        return Ok(());
    };
    let (min, max) = ty.gib;
    if (min..=max).contains(&gib) {
        return Ok(());
    }
    Err(format!(
        "a {name} volume is {min} to {max} GiB, not {gib} GiB: pass --size {}G or another --type",
        gib.clamp(min, max)
    ))
}

/// Why a new volume of `spec` cannot be made without `--iops` (io1, io2),
/// if it cannot.
pub fn missing_iops(spec: &DiskSpec) -> Option<String> {
    let name = spec.disk_type.as_deref().unwrap_or(DEFAULT_DISK_TYPE);
    let l = TYPES.iter().find(|t| t.name == name)?.iops.as_ref()?;
    (l.required && spec.iops.is_none()).then(|| {
        format!(
            "a new {name} volume needs --iops ({} to {}): pass it, nothing was created",
            l.min, l.max
        )
    })
}

fn check_tags(tags: &[(String, String)]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} --tag: an EBS volume takes at most {MAX_TAGS} besides the ones disk-create sets",
            tags.len()
        ));
    }
    for (k, v) in tags {
        let ours = [TAG_DEPLOYMENT, TAG_NODE, TAG_KMS_KEY, "Name"];
        let why = if k.chars().count() > 128 {
            Some("a key is at most 128 characters")
        } else if v.chars().count() > 256 {
            Some("a value is at most 256 characters")
        } else if k.to_ascii_lowercase().starts_with("aws:") {
            Some("keys starting with aws: are AWS's own")
        } else if ours.contains(&k.as_str()) || k.starts_with("appscale-persist:") {
            Some("disk-create sets that key itself")
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
    fn iops_and_throughput_within_the_types_limits() {
        assert_eq!(
            check(ProviderKind::Ec2, &spec("gp3", 10, None, None)),
            Ok(())
        );
        assert_eq!(
            check(ProviderKind::Ec2, &spec("gp3", 10, Some(5_000), Some(500))),
            Ok(())
        );
        assert_eq!(
            check(ProviderKind::Ec2, &spec("gp3", 1, Some(3_000), Some(750))),
            Ok(())
        );
        assert_eq!(
            check(ProviderKind::Ec2, &spec("io2", 10, Some(10_000), None)),
            Ok(())
        );
        let err = |s: DiskSpec| check(ProviderKind::Ec2, &s).unwrap_err();
        assert!(err(spec("gp3", 100, Some(90_000), None)).contains("3000 to 80000"));
        assert!(err(spec("gp3", 10, Some(6_000), None)).contains("at most 5000 IOPS"));
        assert!(err(spec("gp3", 10, None, Some(800))).contains("at most 750 MiB/s"));
        assert!(err(spec("gp3", 10, None, Some(100))).contains("125 to 2000"));
        assert_eq!(
            check(ProviderKind::Ec2, &spec("io1", 10, None, None)),
            Ok(()),
            "a volume found"
        );
        assert!(missing_iops(&spec("io1", 10, None, None)).is_some());
        assert!(missing_iops(&spec("io1", 10, Some(500), None)).is_none());
        assert!(missing_iops(&spec("gp3", 10, None, None)).is_none());
        assert!(err(spec("io1", 10, Some(1_000), None)).contains("at most 500 IOPS"));
        assert!(err(spec("io1", 10, Some(300), Some(200))).contains("gp3 does"));
        assert!(err(spec("gp2", 10, Some(300), None)).contains("no provisioned IOPS"));
        assert!(err(spec("fancy9", 10, Some(300), None)).contains("unknown"));
        assert_eq!(
            check(ProviderKind::Ec2, &spec("fancy9", 10, None, None)),
            Ok(())
        );
    }

    /// Sizes per type (CreateVolume's `Size`): st1 and sc1 start at 125
    /// GiB, before any call.
    #[test]
    fn sizes_are_held_to_the_types_range() {
        assert_eq!(
            check(ProviderKind::Ec2, &spec("st1", 125, None, None)),
            Ok(())
        );
        let e = check(ProviderKind::Ec2, &spec("st1", 10, None, None)).unwrap_err();
        assert!(
            e.contains("125 to 16384 GiB") && e.contains("--size 125G"),
            "{e}"
        );
        assert!(check(ProviderKind::Ec2, &spec("sc1", 100, None, None)).is_err());
        assert!(check(ProviderKind::Ec2, &spec("standard", 2_000, None, None)).is_err());
        assert!(check(ProviderKind::Ec2, &spec("io1", 2, Some(100), None)).is_err());
        assert_eq!(
            check(ProviderKind::Ec2, &spec("fancy9", 1, None, None)),
            Ok(())
        );
        let default_type = DiskSpec::default();
        assert_eq!(size_fits(&default_type, 10), Ok(()));
    }

    #[test]
    fn tags_and_keys_are_checked() {
        let tagged = |k: &str, v: &str| DiskSpec {
            tags: vec![(k.into(), v.into())],
            ..DiskSpec::default()
        };
        assert_eq!(check(ProviderKind::Ec2, &tagged("team", "db")), Ok(()));
        assert!(
            check(ProviderKind::Ec2, &tagged("aws:x", "1"))
                .unwrap_err()
                .contains("AWS's own")
        );
        assert!(
            check(ProviderKind::Ec2, &tagged("Name", "x"))
                .unwrap_err()
                .contains("itself")
        );
        assert!(check(ProviderKind::Ec2, &tagged(TAG_DEPLOYMENT, "x")).is_err());
        assert!(check(ProviderKind::Ec2, &tagged(&"k".repeat(129), "x")).is_err());
        let key = |k: &str| DiskSpec {
            kms_key: Some(k.into()),
            ..DiskSpec::default()
        };
        assert_eq!(check(ProviderKind::Ec2, &key("alias/data")), Ok(()));
        assert!(
            check(
                ProviderKind::Ec2,
                &key("projects/p/locations/l/keyRings/r/cryptoKeys/k")
            )
            .is_err()
        );
    }
}
