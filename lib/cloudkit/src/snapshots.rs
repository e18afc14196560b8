//! What `disk-snapshot` does the same way on either cloud: a record's
//! `--list`, and retention's deletes for a whole run (every record's chosen
//! snapshots deleted at most `--concurrency` at once, and what came of them
//! told per record, [`Pruned`]).

use std::future::Future;

use appscale_persist::record::{Record, Snapshot, State};
use appscale_persist::snapshot::{NotPruned, Pruned};
use appscale_persist::step::{Failure, Outcome, StepResult};

use crate::concurrently;

/// `--list`: the record's disk's snapshots (newest first) into its
/// `listed`; the driver makes one record of each.
pub fn list_into(r: &mut Record, snaps: Vec<Snapshot>) -> StepResult {
    let n = snaps.len();
    r.listed = snaps;
    Ok(Outcome::unchanged(
        r.state.unwrap_or(State::Created),
        format!("{n} snapshot(s)"),
    ))
}

/// Deletes the snapshots retention chose for each record (`chosen`, in the
/// records' order), all records' at once, at most `limit` calls running
/// ([`concurrently`]); what came of each record's, in the same order.
///
/// `delete` is called with the record's index in `chosen` and the
/// snapshot's id, and says whether the snapshot is gone (`Ok(true)`), kept on
/// purpose and said so (`Ok(false)`: EC2 keeps a snapshot an image uses),
/// or why its delete failed: every failure is reported, none stops the
/// others.
pub async fn prune_all<F, Fut>(limit: usize, chosen: Vec<Vec<String>>, delete: F) -> Vec<Pruned>
where
    F: Fn(usize, String) -> Fut,
    Fut: Future<Output = Result<bool, Failure>> + Send + 'static,
{
    let owners: Vec<(usize, String)> = chosen
        .iter()
        .enumerate()
        .flat_map(|(i, ids)| ids.iter().map(move |id| (i, id.clone())))
        .collect();
    let done = concurrently(limit, owners.clone(), |(i, id)| delete(i, id)).await;
    let mut out: Vec<Pruned> = chosen.iter().map(|_| Pruned::default()).collect();
    for ((i, id), result) in owners.into_iter().zip(done) {
        match result {
            Ok(true) => out[i].deleted.push(id),
            Ok(false) => {}
            Err(failure) => out[i].failed.push(NotPruned { id, failure }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use appscale_persist::codes;

    #[test]
    fn each_record_gets_its_own_deletes_and_failures() {
        let rt = crate::runtime().unwrap();
        let chosen = vec![
            vec!["a1".to_string(), "a2".to_string()],
            vec![],
            vec!["c1".to_string(), "in-use".to_string(), "c3".to_string()],
        ];
        let pruned = rt.block_on(prune_all(2, chosen, |_, id| async move {
            match id.as_str() {
                "a2" => Err(Failure::new(codes::PRUNE_FAILED, "no")),
                "in-use" => Ok(false),
                _ => Ok(true),
            }
        }));
        assert_eq!(pruned.len(), 3);
        assert_eq!(pruned[0].deleted, ["a1"]);
        assert_eq!(pruned[0].failed.len(), 1);
        assert_eq!(pruned[0].failed[0].id, "a2");
        assert_eq!(pruned[1], Pruned::default());
        assert_eq!(pruned[2].deleted, ["c1", "c3"]);
        assert!(pruned[2].failed.is_empty());
    }
}
