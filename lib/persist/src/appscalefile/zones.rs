//! Zones: whether `zone` can be a zone of the file's cloud, with a
//! "did you mean" hint (the seed page's own `us-central-1a` is not a
//! Compute Engine zone: `us-central1-a`).
//!
//! Two findings. `zone-invalid` (an error) when the name cannot be a zone of
//! that cloud at all, by its shape: every Compute Engine zone is
//! `<region>-<letter>` with the region ending in a digit (`us-central1-a`),
//! every EC2 zone `<region>-<digit><letter>` (`us-east-1b`), or a Local Zone
//! under a region (`us-east-1-bos-1a`). `zone-unknown` (a warning) when the
//! shape is right but the zone is not in the tables below: a typo, or a zone
//! newer than the tables.
//!
//! The tables need upkeep: they list the regions and zones the providers
//! published as of 2026-11 (Compute Engine: "Regions and zones",
//! cloud.google.com/compute/docs/regions-zones, or `gcloud compute zones
//! list`; EC2: "Regions and Zones" in the EC2 user guide, or `aws ec2
//! describe-availability-zones --all-availability-zones` per region). A new
//! region only costs a warning until it is added here. Eucalyptus zones are
//! whatever the cloud's administrator named them, so they are not checked.
//!
//! EC2 zone letters are mapped per account (`us-east-1a` is not the same
//! data centre for two accounts), so the EC2 table holds each region's
//! letters, not zone ids.

use super::Checker;
use super::codes;
use super::keys::did_you_mean;
use super::yaml::Node;

/// Compute Engine regions and their zone letters.
pub(super) const GCE_ZONES: &[(&str, &str)] = &[
    ("africa-south1", "abc"),
    ("asia-east1", "abc"),
    ("asia-east2", "abc"),
    ("asia-northeast1", "abc"),
    ("asia-northeast2", "abc"),
    ("asia-northeast3", "abc"),
    ("asia-south1", "abc"),
    ("asia-south2", "abc"),
    ("asia-southeast1", "abc"),
    ("asia-southeast2", "abc"),
    ("australia-southeast1", "abc"),
    ("australia-southeast2", "abc"),
    ("europe-central2", "abc"),
    ("europe-north1", "abc"),
    ("europe-north2", "abc"),
    ("europe-southwest1", "abc"),
    ("europe-west1", "bcd"),
    ("europe-west2", "abc"),
    ("europe-west3", "abc"),
    ("europe-west4", "abc"),
    ("europe-west6", "abc"),
    ("europe-west8", "abc"),
    ("europe-west9", "abc"),
    ("europe-west10", "abc"),
    ("europe-west12", "abc"),
    ("me-central1", "abc"),
    ("me-central2", "abc"),
    ("me-west1", "abc"),
    ("northamerica-northeast1", "abc"),
    ("northamerica-northeast2", "abc"),
    ("northamerica-south1", "abc"),
    ("southamerica-east1", "abc"),
    ("southamerica-west1", "abc"),
    ("us-central1", "abcf"),
    ("us-east1", "bcd"),
    ("us-east4", "abc"),
    ("us-east5", "abc"),
    ("us-south1", "abc"),
    ("us-west1", "abc"),
    ("us-west2", "abc"),
    ("us-west3", "abc"),
    ("us-west4", "abc"),
];

/// EC2 regions and the zone letters accounts see in them.
pub(super) const EC2_ZONES: &[(&str, &str)] = &[
    ("af-south-1", "abc"),
    ("ap-east-1", "abc"),
    ("ap-east-2", "abc"),
    ("ap-northeast-1", "abcd"),
    ("ap-northeast-2", "abcd"),
    ("ap-northeast-3", "abc"),
    ("ap-south-1", "abc"),
    ("ap-south-2", "abc"),
    ("ap-southeast-1", "abc"),
    ("ap-southeast-2", "abc"),
    ("ap-southeast-3", "abc"),
    ("ap-southeast-4", "abc"),
    ("ap-southeast-5", "abc"),
    ("ap-southeast-7", "abc"),
    ("ca-central-1", "abd"),
    ("ca-west-1", "abc"),
    ("cn-north-1", "abd"),
    ("cn-northwest-1", "abc"),
    ("eu-central-1", "abc"),
    ("eu-central-2", "abc"),
    ("eu-north-1", "abc"),
    ("eu-south-1", "abc"),
    ("eu-south-2", "abc"),
    ("eu-west-1", "abc"),
    ("eu-west-2", "abc"),
    ("eu-west-3", "abc"),
    ("il-central-1", "abc"),
    ("me-central-1", "abc"),
    ("me-south-1", "abc"),
    ("mx-central-1", "abc"),
    ("sa-east-1", "abc"),
    ("us-east-1", "abcdef"),
    ("us-east-2", "abc"),
    ("us-gov-east-1", "abc"),
    ("us-gov-west-1", "abc"),
    ("us-west-1", "abc"),
    ("us-west-2", "abcd"),
];

/// Every zone name of a table.
fn names(table: &[(&str, &str)]) -> Vec<String> {
    table
        .iter()
        .flat_map(|(region, letters)| letters.chars().map(move |l| format!("{region}-{l}")))
        .collect()
}

/// Every EC2 zone name (`us-east-1b`: the region and the letter, no dash).
fn ec2_names() -> Vec<String> {
    EC2_ZONES
        .iter()
        .flat_map(|(region, letters)| letters.chars().map(move |l| format!("{region}{l}")))
        .collect()
}

/// `<word>(-<word>)*<digits>-<letter>`: a Compute Engine zone's shape.
fn gce_shape(zone: &str) -> bool {
    let Some((region, letter)) = zone.rsplit_once('-') else {
        return false;
    };
    letter.len() == 1
        && letter.chars().all(|c| c.is_ascii_lowercase())
        && region.ends_with(|c: char| c.is_ascii_digit())
        && region.split('-').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && region.split('-').count() >= 2
        && region
            .split('-')
            .all(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// The region of an EC2 zone by its shape: `us-east-1` of `us-east-1b`,
/// and of the Local Zone `us-east-1-bos-1a`.
pub fn ec2_region_of_zone(zone: &str) -> Option<&str> {
    let words: Vec<&str> = zone.split('-').collect();
    // The first word ending in digits+letter, or made of digits, ends the
    // region part.
    let region_end = words.iter().position(|w| {
        let digits = w.trim_end_matches(|c: char| c.is_ascii_lowercase());
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    })?;
    if region_end < 2
        || !words[..region_end]
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
    {
        return None;
    }
    let last = words[region_end];
    let digits_len = last
        .trim_end_matches(|c: char| c.is_ascii_lowercase())
        .len();
    let region_len: usize = words[..region_end]
        .iter()
        .map(|w| w.len() + 1)
        .sum::<usize>()
        + digits_len;
    let region = &zone[..region_len];
    let rest = &zone[region_len..];
    // Either one letter (a zone), or `-<place>-<digit><letter>` (a Local Zone).
    let zone_letter = rest.len() == 1 && rest.chars().all(|c| c.is_ascii_lowercase());
    let tail = &words[region_end + 1..];
    let local = digits_len == last.len()
        && tail.len() >= 2
        && tail.iter().all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && tail
            .last()
            .is_some_and(|w| w.ends_with(|c: char| c.is_ascii_lowercase()));
    (zone_letter || local).then_some(region)
}

impl Checker {
    /// Checks `zone` against the tables of `cloud` (`ec2`, `gce`; other
    /// clouds name their zones freely).
    pub(super) fn zone_rules(&mut self, cloud: &str, zone: &str, at: &Node) {
        let (shape_ok, known, candidates, what) = match cloud {
            "gce" => {
                let all = names(GCE_ZONES);
                (
                    gce_shape(zone),
                    all.iter().any(|z| z == zone),
                    all,
                    "a Compute Engine zone (`<region>-<letter>`, like `us-central1-a`)",
                )
            }
            "ec2" => {
                let region = ec2_region_of_zone(zone);
                let all = ec2_names();
                let known = all.iter().any(|z| z == zone)
                    || region.is_some_and(|r| {
                        zone.len() > r.len() + 1 && EC2_ZONES.iter().any(|(name, _)| *name == r)
                    });
                (
                    region.is_some(),
                    known,
                    all,
                    "an EC2 availability zone (`<region><letter>`, like `us-east-1b`)",
                )
            }
            _ => return,
        };
        if known {
            return;
        }
        let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let hint = did_you_mean(zone, &refs).map(|s| format!("did you mean `{s}`?"));
        if !shape_ok {
            self.error(
                codes::ZONE_INVALID,
                format!("`{zone}` is not {what}"),
                at,
                hint.or_else(|| Some(list_hint(cloud))),
            );
        } else {
            self.warning(
                codes::ZONE_UNKNOWN,
                format!(
                    "`{zone}` is not {} zone this linter knows",
                    if cloud == "gce" { "a Compute Engine" } else { "an EC2" }
                ),
                at,
                hint.or_else(|| {
                    Some(format!(
                        "{}; a zone newer than this linter's table (docs/appscalefile-lint.md) is fine",
                        list_hint(cloud)
                    ))
                }),
            );
        }
    }
}

/// Where to see a cloud's real zones.
fn list_hint(cloud: &str) -> String {
    match cloud {
        "gce" => "`gcloud compute zones list` shows the zones of your project".into(),
        _ => "`aws ec2 describe-availability-zones --region REGION` shows a region's zones".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gce_shapes() {
        assert!(gce_shape("us-central1-a"));
        assert!(gce_shape("northamerica-northeast1-b"));
        assert!(gce_shape("europe-west10-c"));
        assert!(!gce_shape("us-central-1a"));
        assert!(!gce_shape("us-east-1b"));
        assert!(!gce_shape("us-central1"));
    }

    #[test]
    fn ec2_zone_regions() {
        assert_eq!(ec2_region_of_zone("us-east-1b"), Some("us-east-1"));
        assert_eq!(ec2_region_of_zone("us-gov-west-1a"), Some("us-gov-west-1"));
        assert_eq!(ec2_region_of_zone("us-east-1-bos-1a"), Some("us-east-1"));
        assert_eq!(ec2_region_of_zone("my-zone-1b"), Some("my-zone-1"));
        assert_eq!(ec2_region_of_zone("us-central1-a"), None);
        assert_eq!(ec2_region_of_zone("us-east-1"), None);
        assert_eq!(ec2_region_of_zone("euca-zone"), None);
    }

    #[test]
    fn the_seeds_zone_gets_the_real_one() {
        let gce: Vec<String> = names(GCE_ZONES);
        let refs: Vec<&str> = gce.iter().map(String::as_str).collect();
        assert_eq!(did_you_mean("us-central-1a", &refs), Some("us-central1-a"));
        let ec2 = ec2_names();
        let refs: Vec<&str> = ec2.iter().map(String::as_str).collect();
        assert_eq!(did_you_mean("us-est-1b", &refs), Some("us-east-1b"));
    }
}
