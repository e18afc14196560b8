//! What `disk-create` asks of a cloud disk beyond its name, said once for
//! both clouds ([`DiskSpec`]), and how a disk found is held to it: its size
//! ([`DiskSpec::size_change`]: equal, grown with `--grow`, never shrunk),
//! and the tags `--retag` adds ([`DiskSpec::missing_tags`]). Each cloud
//! checks the values against its own limits before any call (`--iops` for
//! the volume type, label rules), and compares encryption and performance
//! in its own terms, with the failures here.

use appscale_persist::codes;
use appscale_persist::provider::Size;
use appscale_persist::step::Failure;

/// What a cloud disk must be: made so when created; when found, held to it
/// (size, type, encryption, performance: a difference is an error, but a
/// smaller size is grown with `grow`), and given the tags with `retag`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskSpec {
    /// Size of a new disk; when given, a disk found with another size is an
    /// error (or, smaller, grown with [`DiskSpec::grow`]).
    pub size: Option<Size>,
    /// Type of a new disk; when given, a disk found with another type is an
    /// error.
    pub disk_type: Option<String>,
    /// Grow a disk found smaller than [`DiskSpec::size`] (never shrink one).
    pub grow: bool,
    /// Encrypted (EBS; Compute Engine encrypts every disk): a disk found
    /// unencrypted is an error.
    pub encrypted: bool,
    /// The customer-managed key to encrypt with (implies
    /// [`DiskSpec::encrypted`]); a disk found with another key is an error.
    pub kms_key: Option<String>,
    /// Provisioned IOPS.
    pub iops: Option<u64>,
    /// Provisioned throughput, MiB/s.
    pub throughput: Option<u64>,
    /// Tags (EBS) or labels (Compute Engine) of new disks, and, with
    /// [`DiskSpec::retag`], of disks found.
    pub tags: Vec<(String, String)>,
    /// Give disks found the tags they lack.
    pub retag: bool,
}

impl DiskSpec {
    /// Whether the disk must be encrypted.
    pub fn wants_encryption(&self) -> bool {
        self.encrypted || self.kms_key.is_some()
    }

    /// What becomes of the size of `disk` (its name for messages), found
    /// with `have_gib` GiB: nothing (`None`: no size asked, or the size
    /// asked), grown to the size asked (`Some(GiB)`, with `--grow`), or an
    /// error: smaller without `--grow`, or larger (a disk is never shrunk).
    pub fn size_change(&self, disk: &str, have_gib: u64) -> Result<Option<u64>, Failure> {
        let Some(want) = self.size.map(Size::gib) else {
            return Ok(None);
        };
        if want == have_gib {
            Ok(None)
        } else if want > have_gib && self.grow {
            Ok(Some(want))
        } else {
            Err(crate::failures::size_mismatch(
                disk,
                Size(have_gib << 30),
                Size(want << 30),
            ))
        }
    }

    /// The tags of [`DiskSpec::tags`] a disk found lacks, or has with
    /// another value (`has`: its value of a key), to give it with
    /// [`DiskSpec::retag`]; none without.
    pub fn missing_tags<'a>(&self, has: impl Fn(&str) -> Option<&'a str>) -> Vec<(String, String)> {
        if !self.retag {
            return Vec::new();
        }
        self.tags
            .iter()
            .filter(|(k, v)| has(k) != Some(v.as_str()))
            .cloned()
            .collect()
    }
}

/// What a disk found is given to hold it to a [`DiskSpec`]: a new size
/// ([`DiskSpec::size_change`]), the tags it lacks
/// ([`DiskSpec::missing_tags`]; Compute Engine calls them labels).
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Grow it to this size, in the cloud's unit (`--grow`).
    pub grow: Option<u64>,
    /// The tags it lacks (`--retag`).
    pub tags: Vec<(String, String)>,
}

impl Change {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.grow.is_none() && self.tags.is_empty()
    }

    /// What it does, for messages, in the cloud's words: `have` is the
    /// disk's size now in `unit` (`GiB`, `GB`), `tag` what a tag is called
    /// (`tag`, `label`): `grow from 10 GiB to 20 GiB, tag team=db`.
    pub fn describe(&self, have: impl std::fmt::Display, unit: &str, tag: &str) -> String {
        let mut parts = Vec::new();
        if let Some(want) = self.grow {
            parts.push(format!("grow from {have} {unit} to {want} {unit}"));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("{tag} {}", tags.join(" ")));
        }
        parts.join(", ")
    }
}

/// `disk` is encrypted otherwise than asked (`why` says how).
pub fn encryption_mismatch(disk: &str, why: impl std::fmt::Display) -> Failure {
    Failure::new(
        codes::ENCRYPTION_MISMATCH,
        format!(
            "{disk} {why}: a disk's encryption cannot be changed in place; name another disk, or copy this one to a disk encrypted as asked"
        ),
    )
}

/// `disk` has `have` of `what` (`provisioned IOPS`), where `want` was asked.
pub fn performance_mismatch(disk: &str, what: &str, have: Option<u64>, want: u64) -> Failure {
    let have = have.map_or_else(|| "none".to_string(), |h| h.to_string());
    Failure::new(
        codes::PERFORMANCE_MISMATCH,
        format!(
            "{disk} exists with {what} {have}, not {want}: pass the value it has, or none to take it as it is (or change it with the cloud's own tools)"
        ),
    )
}

/// `KEY=VALUE` (a tag, a label), for a flag's parser: the key must not be
/// empty; the value may be.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_found_disk_is_grown_only_when_asked_and_never_shrunk() {
        let mut spec = DiskSpec {
            size: Some(Size(2 << 30)),
            ..DiskSpec::default()
        };
        assert_eq!(spec.size_change("disk d", 2), Ok(None));
        let f = spec.size_change("disk d", 1).unwrap_err();
        assert_eq!(f.code, codes::SIZE_MISMATCH);
        assert!(f.message.contains("--grow"), "{}", f.message);
        spec.grow = true;
        assert_eq!(spec.size_change("disk d", 1), Ok(Some(2)));
        let f = spec.size_change("disk d", 3).unwrap_err();
        assert_eq!(f.code, codes::SIZE_MISMATCH);
        assert!(f.message.contains("never shrunk"), "{}", f.message);
        assert_eq!(DiskSpec::default().size_change("disk d", 7), Ok(None));
    }

    #[test]
    fn retag_adds_what_is_missing_or_different() {
        let mut spec = DiskSpec {
            tags: vec![("team".into(), "db".into()), ("tier".into(), "".into())],
            ..DiskSpec::default()
        };
        let has = |k: &str| (k == "team").then_some("web");
        assert!(spec.missing_tags(has).is_empty(), "only with --retag");
        spec.retag = true;
        assert_eq!(spec.missing_tags(has), spec.tags);
        let all = |k: &str| match k {
            "team" => Some("db"),
            "tier" => Some(""),
            _ => None,
        };
        assert!(spec.missing_tags(all).is_empty());
        assert_eq!(parse_tag("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_tag("a="), Ok(("a".into(), "".into())));
        assert!(parse_tag("=b").is_err() && parse_tag("ab").is_err());
    }
}
