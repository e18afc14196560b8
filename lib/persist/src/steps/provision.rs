//! `disk-create`, `disk-attach`, `disk-detach`, `disk-snapshot`, `disk-scratch`: one step each, over whatever
//! providers the records name.
//!
//! Records are grouped by provider; each group goes to its provider in one
//! call (so a cloud provider can batch and run concurrently), and the
//! results are put back in input order. Which providers exist is the
//! caller's business: it passes an `open` function, so this crate needs no
//! cloud SDK to drive them.

use crate::codes;
use std::time::{Duration, Instant};

use crate::provider::Provider;
use crate::record::{ProviderKind, Record};
use crate::step::{Ctx, Failure, Step, StepResult};

/// Which provider operation a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `disk-create`.
    Create,
    /// `disk-attach`.
    Attach,
    /// `disk-detach`.
    Detach,
    /// `disk-snapshot`.
    Snapshot,
    /// `disk-scratch`.
    Scratch(crate::provider::ScratchPhase),
}

/// Opens the provider for a kind, or says why it cannot.
pub type Opener = Box<dyn FnMut(ProviderKind) -> Result<Box<dyn Provider>, Failure>>;

/// A step that runs `op` on each record's provider.
pub struct ProviderStep {
    /// The operation.
    pub op: Op,
    /// Provider for records that name none (`--provider`).
    pub default_provider: Option<ProviderKind>,
    /// Opens providers.
    pub open: Opener,
}

impl Step for ProviderStep {
    fn run(&mut self, records: &mut [Record], cx: Ctx) -> Vec<(StepResult, Duration)> {
        let mut results: Vec<Option<(StepResult, Duration)>> =
            (0..records.len()).map(|_| None).collect();
        let mut groups: Vec<(ProviderKind, Vec<usize>)> = Vec::new();
        for (i, r) in records.iter_mut().enumerate() {
            if r.provider.is_none() {
                r.provider = self.default_provider;
            }
            match r.provider {
                Some(kind) => match groups.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, idx)) => idx.push(i),
                    None => groups.push((kind, vec![i])),
                },
                None => {
                    results[i] = Some((
                        Err(Failure::new(
                            codes::NO_PROVIDER,
                            "the record names no `provider`: pass --provider",
                        )),
                        Duration::ZERO,
                    ))
                }
            }
        }
        for (kind, idx) in groups {
            let started = Instant::now();
            let mut batch: Vec<Record> = idx
                .iter()
                .map(|&i| std::mem::take(&mut records[i]))
                .collect();
            let outcomes: Vec<StepResult> = match (self.open)(kind) {
                Err(f) => batch.iter().map(|_| Err(f.clone())).collect(),
                Ok(mut p) => match self.op {
                    Op::Create => p.create(&mut batch, cx),
                    Op::Attach => p.attach(&mut batch, cx),
                    Op::Detach => p.detach(&mut batch, cx),
                    Op::Snapshot => p.snapshot(&mut batch, cx),
                    Op::Scratch(phase) => p.scratch(&mut batch, phase, cx),
                },
            };
            let took = started.elapsed();
            for ((i, rec), outcome) in idx.into_iter().zip(batch).zip(outcomes) {
                records[i] = rec;
                results[i] = Some((outcome, took));
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    (
                        Err(Failure::new(
                            codes::INTERNAL,
                            "provider returned too few results",
                        )),
                        Duration::ZERO,
                    )
                })
            })
            .collect()
    }
}
