//! Eucalyptus's dialect of the EC2 API: what it takes, and what this
//! provider sends it.
//!
//! Eucalyptus binds query parameters strictly (`ComputeQueryBinding`,
//! `UnknownParameterStrategy.ERROR`): a request carrying any parameter its
//! action does not bind fails as a whole ("Failed to bind the following
//! fields", HTTP 400), and nothing is done. What 4.4 binds
//! (`VmBlockDevice.groovy`): CreateVolume `Size, SnapshotId,
//! AvailabilityZone, VolumeType, Iops, Encrypted` (5.x adds `KmsKeyId`,
//! `TagSpecification`), CreateSnapshot `VolumeId, Description`; no
//! version takes `ClientToken`. It has no ModifyVolume and no
//! DescribeVolumesModifications, its DescribeInstanceTypes is another
//! (administrator's) API, and every volume is type `standard`. CreateTags,
//! and tag filters on DescribeVolumes and DescribeSnapshots, work.
//!
//! So on Eucalyptus:
//!
//! * the options it lacks are refused before any call ([`check`]: usage
//!   error, exit 2);
//! * CreateVolume carries `Size`, `AvailabilityZone` and `SnapshotId` only:
//!   the client token the SDK adds by itself is taken out
//!   ([`without_client_token`]); the tags follow in CreateTags, with a note
//!   kept meanwhile ([`crate::pending`]) so that a run killed between the
//!   two calls leaks no volume;
//! * CreateSnapshot carries `VolumeId` and `Description` only; the
//!   description says whose the snapshot is ([`crate::snapshot`]), so one
//!   left untagged (a run killed before its CreateTags, a retried call's
//!   twin) is found and tagged by the next listing;
//! * attachment limits are not read, device names keep to `/dev/sdf` to
//!   `/dev/sdz`, and the node finds the volume by its virtio serial
//!   ([`appscale_persist::discover`]).

use appscale_persist_cloudkit::DiskSpec;
use aws_sdk_ec2::config::http::HttpRequest;

/// The one volume type Eucalyptus makes.
pub const VOLUME_TYPE: &str = "standard";

/// Refuses, before any call, what `disk-create` cannot ask of Eucalyptus;
/// the error says why.
pub fn check(spec: &DiskSpec) -> Result<(), String> {
    let lacks = [
        (
            spec.grow,
            "--grow: Eucalyptus has no ModifyVolume, so a volume cannot grow; make a larger one from a snapshot (disk-snapshot, then disk-create --from-snapshot latest --size SIZE)",
        ),
        (
            spec.kms_key.is_some(),
            "--kms-key: Eucalyptus takes no KMS key",
        ),
        (
            spec.encrypted,
            "--encrypted: Eucalyptus does not encrypt volumes",
        ),
        (
            spec.iops.is_some(),
            "--iops: every Eucalyptus volume is type standard, which takes no provisioned IOPS",
        ),
        (
            spec.throughput.is_some(),
            "--throughput: every Eucalyptus volume is type standard, which takes no provisioned throughput",
        ),
    ];
    if let Some((_, why)) = lacks.iter().find(|(given, _)| *given) {
        return Err(why.to_string());
    }
    match spec.disk_type.as_deref() {
        Some(t) if t != VOLUME_TYPE => Err(format!(
            "--type {t}: every Eucalyptus volume is type {VOLUME_TYPE}"
        )),
        _ => Ok(()),
    }
}

/// Takes the `ClientToken` the SDK puts in every CreateVolume out of the
/// request body (Eucalyptus binds none: with it, nothing would be made).
/// Runs before signing.
pub fn without_client_token(req: &mut HttpRequest) {
    let Some(text) = req.body().bytes().and_then(|b| std::str::from_utf8(b).ok()) else {
        return;
    };
    let kept: Vec<&str> = text
        .split('&')
        .filter(|p| !p.starts_with("ClientToken="))
        .collect();
    let body = kept.join("&");
    if body.len() == text.len() {
        return;
    }
    req.headers_mut()
        .insert("Content-Length", body.len().to_string());
    *req.body_mut() = body.into();
}

#[cfg(test)]
mod tests {
    use super::*;
    use appscale_persist::provider::Size;

    #[test]
    fn what_eucalyptus_lacks_is_refused_saying_why() {
        let ok = DiskSpec {
            size: Some(Size(20 << 30)),
            disk_type: Some("standard".into()),
            tags: vec![("team".into(), "db".into())],
            ..DiskSpec::default()
        };
        assert_eq!(check(&ok), Ok(()));
        let refused = |s: DiskSpec| check(&s).unwrap_err();
        let grow = refused(DiskSpec {
            grow: true,
            ..ok.clone()
        });
        assert!(grow.contains("no ModifyVolume"), "{grow}");
        assert!(
            refused(DiskSpec {
                disk_type: Some("gp3".into()),
                ..ok.clone()
            })
            .contains("type standard")
        );
        assert!(
            refused(DiskSpec {
                kms_key: Some("alias/k".into()),
                ..ok.clone()
            })
            .starts_with("--kms-key")
        );
        assert!(
            refused(DiskSpec {
                iops: Some(3000),
                ..ok.clone()
            })
            .starts_with("--iops")
        );
    }
}
