//! Which node of the plan this instance is, as EC2 says it (`--node auto`
//! with `--self`, when the node could not tell by itself): the instance's
//! own tag `appscale-persist:node` (DescribeInstances), else the node tag
//! of a volume of the deployment attached to it (DescribeVolumes).

use appscale_persist::codes;
use appscale_persist::node_id::{EC2_TAG, Found};
use appscale_persist::record::Record;
use appscale_persist::step::{Ctx, Failure};
use aws_sdk_ec2::types::Filter;

use crate::Ec2;
use crate::api::api_error;
use crate::owner::{TAG_DEPLOYMENT, TAG_NODE};

/// This instance's node among `records`'.
pub(crate) fn this_node(p: &mut Ec2, records: &[Record]) -> Result<Option<Found>, Failure> {
    let this = p.this_instance()?;
    let mut recs = records.to_vec();
    let (run, _) = p.start(&mut recs, Ctx { check: true })?;
    let deployment = records
        .iter()
        .find_map(|r| r.deployment.clone())
        .unwrap_or_else(|| run.cfg.deployment.clone());
    let nodes: Vec<&str> = records.iter().filter_map(|r| r.node.as_deref()).collect();
    let client = run.api.client.clone();
    let found = p.rt.block_on(async {
        let out = client
            .describe_instances()
            .instance_ids(&this.instance)
            .send()
            .await
            .map_err(|e| api_error("DescribeInstances", e).failure)?;
        let tag = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.tags())
            .find(|t| t.key() == Some(EC2_TAG))
            .and_then(|t| t.value())
            .map(str::to_string);
        if let Some(node) = tag {
            return Ok(Some(Found {
                node,
                how: format!("the instance's tag {EC2_TAG} (DescribeInstances)"),
            }));
        }
        let out = client
            .describe_volumes()
            .filters(
                Filter::builder()
                    .name("attachment.instance-id")
                    .values(&this.instance)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name(format!("tag:{TAG_DEPLOYMENT}"))
                    .values(&deployment)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| api_error("DescribeVolumes", e).failure)?;
        let tagged: Vec<(String, String)> = out
            .volumes()
            .iter()
            .filter_map(|v| {
                let node = crate::owner::tag(v, TAG_NODE)?;
                Some((node.to_string(), crate::volume::id(v).to_string()))
            })
            .collect();
        Ok::<_, Failure>(match tagged.as_slice() {
            [] => None,
            [(node, vol), rest @ ..] if rest.iter().all(|(n, _)| n == node) => Some(Found {
                node: node.clone(),
                how: format!("volume {vol} of deployment {deployment}, attached here"),
            }),
            _ => {
                return Err(Failure::new(
                    codes::IDENTITY_MISMATCH,
                    format!(
                        "volumes of several nodes are attached to {}: {}",
                        this.instance,
                        tagged
                            .iter()
                            .map(|(n, v)| format!("{v} ({n})"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        })
    })?;
    match found {
        Some(f) if !nodes.contains(&f.node.as_str()) => Err(Failure::new(
            codes::OTHER_NODE,
            format!(
                "{} says `{}`, which is not a node of the plan",
                f.how, f.node
            ),
        )),
        other => Ok(other),
    }
}
