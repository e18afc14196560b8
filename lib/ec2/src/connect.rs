//! Building the client: where it calls (endpoint, region) and as whom
//! (credentials).
//!
//! * **Region.** On EC2 the zone names the region (`us-west-2b`:
//!   `us-west-2`), and a volume lives in its zone's region: a region from
//!   the environment, the profile or the instance's IMDS never sends a
//!   zone's volume to another region. `--region` naming another region
//!   than the zone's is refused, naming both ([`codes::REGION_MISMATCH`]),
//!   and so is a record whose zone is in another region than the run's
//!   ([`check_region`]). Eucalyptus (one region per cloud, whose zones name
//!   none): `--region`, the chain's, else [`default_region`].
//! * **Credentials.** The AWS default chain (environment, profile, web
//!   identity, container, instance role); when it finds none and the
//!   AppScalefile's keys are given, those. They are resolved once here:
//!   `-v` says which provider gave them, and none is `no-credentials`
//!   saying what would work: on EC2 in a container, IMDSv2's answer needs
//!   the instance's `HttpPutResponseHopLimit` at 2; on Eucalyptus only
//!   environment, profile or AppScalefile keys work (the SDK's instance
//!   profile credentials are IMDSv2-only, which Eucalyptus lacks).

use std::time::Duration;

use appscale_persist::codes;
use appscale_persist::log;
use appscale_persist::record::{ProviderKind, Record};
use appscale_persist::step::Failure;
use aws_config::BehaviorVersion;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{Credentials, ProvideCredentials, Region};

use crate::Config;
use crate::api::{Api, error_chain};

/// Region `us-east-1` from zone `us-east-1b` (or the Local Zone
/// `us-east-1-bos-1a`).
pub fn region_of_zone(zone: &str) -> Option<String> {
    appscale_persist::appscalefile::ec2_region_of_zone(zone).map(str::to_string)
}

/// The region Eucalyptus signs for when none is configured.
pub const EUCA_DEFAULT_REGION: &str = "eucalyptus";

/// The region of an endpoint: the first label of its host shaped like an
/// AWS region (`ec2.us-east-1.amazonaws.com`, `ec2.eu-west-2.example.net`
/// give `us-east-1`, `eu-west-2`), if any.
fn region_of_endpoint(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':', '?', '#']).next().unwrap_or_default();
    host.split('.')
        .find(|label| {
            let words: Vec<&str> = label.split('-').collect();
            words.len() >= 3
                && words[..words.len() - 1]
                    .iter()
                    .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
                && words[words.len() - 1].chars().all(|c| c.is_ascii_digit())
                && !words[words.len() - 1].is_empty()
        })
        .map(str::to_string)
}

/// The region when neither `--region` nor the SDK's chain gives one.
///
/// EC2: the zone's region (`us-east-1b`: `us-east-1`), else the endpoint's.
/// Eucalyptus (one region per cloud, whose name only scopes the request
/// signature): the endpoint's region-shaped host label, else
/// [`EUCA_DEFAULT_REGION`]; without an endpoint, an error saying to set
/// `EC2_URL` (its zones are free-form: they name no region).
fn default_region(cfg: &Config, zone_hint: Option<&str>) -> Result<String, Failure> {
    let endpoint = cfg.endpoint_url.as_deref();
    if cfg.kind == ProviderKind::Euca {
        return match endpoint {
            Some(url) => Ok(region_of_endpoint(url).unwrap_or_else(|| EUCA_DEFAULT_REGION.into())),
            None => Err(Failure::new(
                codes::NO_REGION,
                "Eucalyptus needs its endpoint: set `EC2_URL` in the AppScalefile (and pass --appscalefile), or pass --endpoint-url; the region then defaults from it (or pass --region)",
            )),
        };
    }
    zone_hint
        .and_then(region_of_zone)
        .or_else(|| endpoint.and_then(region_of_endpoint))
        .ok_or_else(|| {
            Failure::new(
                codes::NO_REGION,
                "no AWS region: set AWS_REGION, pass --region, or give the AppScalefile an EC2 `zone` (like us-east-1b); on Eucalyptus use `infrastructure: euca` with `EC2_URL` (its zones name no region)",
            )
        })
}

/// The region the run's client signs for: on EC2 the zone's (`zone_hint`,
/// the first record's) over the SDK chain's (`chain`: environment,
/// profile, IMDS), and `--region` only when it agrees with the zone's.
fn choose_region(
    cfg: &Config,
    zone_hint: Option<&str>,
    chain: Option<&str>,
) -> Result<String, Failure> {
    let from_zone = (cfg.kind == ProviderKind::Ec2)
        .then(|| zone_hint.and_then(region_of_zone))
        .flatten();
    match (&cfg.region, from_zone, chain) {
        (Some(asked), Some(zone), _) if *asked != zone => Err(mismatch(
            zone_hint.unwrap_or_default(),
            &zone,
            &format!("--region {asked}"),
        )),
        (Some(asked), _, _) => Ok(asked.clone()),
        (None, Some(zone), Some(chain)) => {
            if zone != chain {
                log::debug(format_args!(
                    "zone {} is in region {zone}: using it, not the configured {chain} (AWS_REGION, the profile or IMDS)",
                    zone_hint.unwrap_or_default()
                ));
            }
            Ok(zone)
        }
        (None, Some(zone), None) => Ok(zone),
        (None, None, Some(chain)) => Ok(chain.to_string()),
        (None, None, None) => default_region(cfg, zone_hint),
    }
}

/// A zone in another region than the run's `region` (`where_from`: what
/// set it).
fn mismatch(zone: &str, zone_region: &str, where_from: &str) -> Failure {
    Failure::new(
        codes::REGION_MISMATCH,
        format!(
            "zone {zone} is in region {zone_region}, but this run calls {where_from}: a volume is made and found only in its zone's region. Drop --region (the zone decides), or run the records of each region separately"
        ),
    )
}

/// On EC2, a record whose zone is in another region than the run's client
/// (`region`) fails before any call: its volume would be looked for, or
/// made, in the wrong region.
pub fn check_region(kind: ProviderKind, region: &str, r: &Record) -> Result<(), Failure> {
    let Some(zone) = r.zone.as_deref().filter(|_| kind == ProviderKind::Ec2) else {
        return Ok(());
    };
    match region_of_zone(zone) {
        Some(theirs) if theirs != region => Err(mismatch(
            zone,
            &theirs,
            &format!("region {region} (this run's)"),
        )),
        _ => Ok(()),
    }
}

/// What to do about missing credentials, on `kind`.
fn credentials_hint(kind: ProviderKind) -> String {
    if kind == ProviderKind::Euca {
        return "on Eucalyptus only environment keys (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), a profile (AWS_PROFILE, --profile) or the AppScalefile's EC2_ACCESS_KEY/EC2_SECRET_KEY (with --appscalefile) work: the SDK reads instance-profile credentials over IMDSv2 only, which Eucalyptus lacks".into();
    }
    let imds = if std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
    {
        ""
    } else {
        "; for an instance role from a container on EC2, IMDSv2's answer must reach the container: set the instance's metadata hop limit to 2 (aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2)"
    };
    format!(
        "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, pass --appscalefile with EC2_ACCESS_KEY/EC2_SECRET_KEY, or run with an instance role{imds}"
    )
}

/// The `provider_name` the SDK gave credentials (`Environment`,
/// `ProfileFile`, `IMDSv2`, `AppScalefile`): only their `Debug` form says
/// it, and never shows the secret.
fn provider_name(c: &Credentials) -> String {
    let text = format!("{c:?}");
    text.split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(
            || "an unnamed provider".to_string(),
            |(name, _)| name.into(),
        )
}

impl Api {
    /// Builds a client from the standard AWS configuration chain and `cfg`,
    /// for the region [`choose_region`] picks, and resolves its credentials
    /// once (see the module doc).
    pub async fn connect(cfg: &Config, zone_hint: Option<&str>) -> Result<Api, Failure> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &cfg.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let Some((id, secret)) = &cfg.file_credentials {
            let mut chain = DefaultCredentialsChain::builder();
            if let Some(p) = &cfg.profile {
                chain = chain.profile_name(p);
            }
            if let Some(r) = &cfg.region {
                chain = chain.region(Region::new(r.clone()));
            }
            let chain = chain.build().await;
            // Asked once, here: whatever keeps the chain from giving
            // credentials (none configured, or a metadata service that
            // answers 403, which ends the chain with an error rather than
            // "none here") leaves the file's.
            match chain.provide_credentials().await {
                Ok(_) => loader = loader.credentials_provider(chain),
                Err(e) => {
                    log::debug(format_args!(
                        "the AWS credential chain gave none ({}): using the AppScalefile's EC2_ACCESS_KEY",
                        error_chain(&e)
                    ));
                    let from_file =
                        Credentials::new(id, secret.expose(), None, None, "AppScalefile");
                    loader = loader.credentials_provider(from_file);
                }
            }
        }
        let sdk = loader.load().await;
        let chain = if cfg.region.is_none() {
            sdk.region().map(|r| r.as_ref().to_string())
        } else {
            None
        };
        let region = choose_region(cfg, zone_hint, chain.as_deref())?;
        log::debug(format_args!("EC2 region {region}"));
        if let Some(provider) = sdk.credentials_provider() {
            match provider.provide_credentials().await {
                Ok(c) => log::debug(format_args!("credentials from {}", provider_name(&c))),
                Err(e) => {
                    return Err(Failure::new(
                        codes::NO_CREDENTIALS,
                        format!(
                            "no credentials for the EC2 API: {}; {}",
                            error_chain(&e),
                            credentials_hint(cfg.kind)
                        ),
                    ));
                }
            }
        }
        let conf = aws_sdk_ec2::config::Builder::from(&sdk).region(Region::new(region.clone()));
        Ok(Api {
            client: Client::from_conf(conf.build()),
            credentials: sdk.credentials_provider(),
            kind: cfg.kind,
            region,
            endpoint: cfg.endpoint_url.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_zones() {
        assert_eq!(region_of_zone("us-east-1b").as_deref(), Some("us-east-1"));
        assert_eq!(
            region_of_zone("eu-central-1a").as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(region_of_zone("euca"), None);
    }

    #[test]
    fn eucalyptus_regions_come_from_the_endpoint() {
        let euca = |url: Option<&str>| Config {
            kind: ProviderKind::Euca,
            endpoint_url: url.map(str::to_string),
            ..Config::default()
        };
        let region = |c: &Config, zone: Option<&str>| default_region(c, zone);
        assert_eq!(
            region(
                &euca(Some("http://10.1.2.3:8773/services/compute")),
                Some("euca-zone-1")
            )
            .unwrap(),
            EUCA_DEFAULT_REGION
        );
        assert_eq!(
            region(
                &euca(Some("https://ec2.us-west-9.cloud.example.com/")),
                None
            )
            .unwrap(),
            "us-west-9"
        );
        let e = region(&euca(None), Some("euca-zone-1")).unwrap_err();
        assert_eq!(e.code, codes::NO_REGION);
        assert!(e.message.contains("EC2_URL"), "{}", e.message);
        let ec2 = Config::default();
        assert_eq!(region(&ec2, Some("us-east-1b")).unwrap(), "us-east-1");
        let e = region(&ec2, Some("euca-zone-1")).unwrap_err();
        assert!(e.message.contains("infrastructure: euca"), "{}", e.message);
        let private = Config {
            endpoint_url: Some("https://ec2.eu-west-2.amazonaws.com".into()),
            ..Config::default()
        };
        assert_eq!(region(&private, None).unwrap(), "eu-west-2");
    }

    /// The zone's region wins over the environment's (AWS_REGION, the
    /// profile, IMDS); `--region` naming another is refused, naming both.
    #[test]
    fn the_zone_names_the_region() {
        let ec2 = Config::default();
        assert_eq!(
            choose_region(&ec2, Some("us-west-2b"), Some("us-east-1")).unwrap(),
            "us-west-2"
        );
        assert_eq!(
            choose_region(&ec2, None, Some("us-east-1")).unwrap(),
            "us-east-1"
        );
        let asked = Config {
            region: Some("us-east-1".into()),
            ..Config::default()
        };
        let e = choose_region(&asked, Some("us-west-2b"), None).unwrap_err();
        assert_eq!(e.code, codes::REGION_MISMATCH);
        assert!(
            e.message.contains("us-west-2") && e.message.contains("--region us-east-1"),
            "{}",
            e.message
        );
        let euca = Config {
            kind: ProviderKind::Euca,
            endpoint_url: Some("http://10.0.0.1:8773/".into()),
            ..Config::default()
        };
        assert_eq!(
            choose_region(&euca, Some("cluster01"), Some("eucalyptus")).unwrap(),
            "eucalyptus"
        );
        let r = Record {
            zone: Some("eu-west-1a".into()),
            ..Record::default()
        };
        assert_eq!(
            check_region(ProviderKind::Ec2, "us-east-1", &r)
                .unwrap_err()
                .code,
            codes::REGION_MISMATCH
        );
        assert!(check_region(ProviderKind::Euca, "us-east-1", &r).is_ok());
    }

    #[test]
    fn the_provider_name_is_read_without_the_secret() {
        let c = Credentials::new("AKIDEXAMPLE", "s3cret", None, None, "Environment");
        assert_eq!(provider_name(&c), "Environment");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
