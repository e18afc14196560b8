//! Which node of the plan this instance is, as Compute Engine says it
//! (`--node auto` with `--self`, when the node could not tell by itself):
//! the node label of a disk of the deployment attached to it.

use appscale_persist::codes;
use appscale_persist::node_id::Found;
use appscale_persist::record::Record;
use appscale_persist::step::{Ctx, Failure};

use crate::Gce;
use crate::api::Location;
use crate::owner::{LABEL_DEPLOYMENT, LABEL_NODE, label_value};

/// This instance's node among `records`'.
pub(crate) fn this_node(p: &mut Gce, records: &[Record]) -> Result<Option<Found>, Failure> {
    let this = p.this_instance()?;
    let mut recs = records.to_vec();
    let (run, _) = p.start(&mut recs, Ctx { check: true })?;
    let deployment = records
        .iter()
        .find_map(|r| r.deployment.clone())
        .unwrap_or_else(|| run.cfg.deployment.clone());
    let at = Location {
        project: run.cfg.project.clone().unwrap_or(this.project.clone()),
        zone: this.zone.clone(),
    };
    let api = run.api.clone();
    let found: Vec<(String, String)> = p.rt.block_on(async {
        let info = api.instance(&at, &this.name).await?;
        let mut found = Vec::new();
        for a in info.disks {
            let Some(d) = api.disk(&at, &a.disk).await? else {
                continue;
            };
            if d.labels.get(LABEL_DEPLOYMENT) != Some(&label_value(&deployment)) {
                continue;
            }
            if let Some(node) = d.labels.get(LABEL_NODE) {
                found.push((node.clone(), d.name.clone()));
            }
        }
        Ok::<_, appscale_persist_cloudkit::ApiError>(found)
    })?;
    // Labels fold names; the plan's node whose label this is.
    let node_of = |label: &str| {
        records
            .iter()
            .filter_map(|r| r.node.clone())
            .find(|n| label_value(n) == label)
    };
    match found.as_slice() {
        [] => Ok(None),
        [(label, disk), rest @ ..] if rest.iter().all(|(l, _)| l == label) => {
            match node_of(label) {
                Some(node) => Ok(Some(Found {
                    node,
                    how: format!("disk {disk} of deployment {deployment}, attached here"),
                })),
                None => Err(Failure::new(
                    codes::OTHER_NODE,
                    format!(
                        "disk {disk} attached here is labelled for node `{label}`, which is not a node of the plan"
                    ),
                )),
            }
        }
        _ => Err(Failure::new(
            codes::IDENTITY_MISMATCH,
            format!(
                "disks of several nodes are attached to {}: {}",
                this.name,
                found
                    .iter()
                    .map(|(n, d)| format!("{d} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
