//! Bounded concurrency over records.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use appscale_persist::codes;
use appscale_persist::step::Failure;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Runs `call` on every item, at most `limit` at once (at least one), and
/// returns the results in the order of `items`.
///
/// Calls are made in the order of `items`: the next is made when one of
/// those running ends. A call that panics becomes an `internal` failure for its
/// item alone. Must run inside a tokio runtime.
pub async fn concurrently<I, T, F, Fut>(
    limit: usize,
    items: Vec<I>,
    call: F,
) -> Vec<Result<T, Failure>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut running = JoinSet::new();
    let mut index_of = HashMap::new();
    let mut out: Vec<Option<Result<T, Failure>>> = (0..items.len()).map(|_| None).collect();
    for (i, item) in items.into_iter().enumerate() {
        // Taken here, in order, before the call starts: never more than
        // `limit` running, and started in input order.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let fut = call(item);
        let task = running.spawn(async move {
            let result = fut.await;
            drop(permit);
            result
        });
        index_of.insert(task.id(), i);
    }
    while let Some(joined) = running.join_next_with_id().await {
        match joined {
            Ok((id, result)) => out[index_of[&id]] = Some(result),
            Err(e) => {
                let failure =
                    Failure::new(codes::INTERNAL, format!("a call failed to finish: {e}"));
                out[index_of[&e.id()]] = Some(Err(failure));
            }
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(Failure::new(codes::INTERNAL, "a call was never started")))
        })
        .collect()
}

/// The send phase over a plan: for every record whose plan is `Ok` and for
/// which `request` gives a request, runs `call` on it ([`concurrently`], at
/// most `limit` at once). A failed call fails its record (its plan becomes
/// the failure); the values of the calls that succeeded come back at their
/// record's place, `None` elsewhere.
pub async fn call_each<P, Q, T, F, Fut>(
    limit: usize,
    plans: &mut [Result<P, Failure>],
    request: impl Fn(&P) -> Option<Q>,
    call: F,
) -> Vec<Option<T>>
where
    Q: Send + 'static,
    T: Send + 'static,
    F: Fn(Q) -> Fut,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
{
    let (at, requests): (Vec<usize>, Vec<Q>) = plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, request(p.as_ref().ok()?)?)))
        .unzip();
    let mut out: Vec<Option<T>> = (0..plans.len()).map(|_| None).collect();
    for (i, result) in at
        .into_iter()
        .zip(concurrently(limit, requests, call).await)
    {
        match result {
            Ok(v) => out[i] = Some(v),
            Err(f) => plans[i] = Err(f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn at_most_limit_at_once_started_in_order_results_in_order() {
        let rt = crate::runtime().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        // Later items finish first: results still come back in input order.
        let items: Vec<u64> = (0..12).collect();
        let out = rt.block_on(concurrently(3, items, |i| {
            let (running, most) = (running.clone(), most.clone());
            // Made only once a place is free, in order.
            started.lock().unwrap().push(i);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(40 - 3 * i)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if i == 5 {
                    return Err(Failure::new(codes::API_ERROR, "five"));
                }
                Ok(i * 10)
            }
        }));
        assert_eq!(most.load(Ordering::SeqCst), 3, "never more than the limit");
        assert_eq!(
            *started.lock().unwrap(),
            (0..12).collect::<Vec<_>>(),
            "started in order"
        );
        let got: Vec<Result<u64, String>> =
            out.into_iter().map(|r| r.map_err(|f| f.message)).collect();
        let want: Vec<Result<u64, String>> = (0..12)
            .map(|i| {
                if i == 5 {
                    Err("five".to_string())
                } else {
                    Ok(i * 10)
                }
            })
            .collect();
        assert_eq!(got, want, "each result at its item's place");
    }

    #[test]
    fn a_panicking_call_fails_its_item_alone() {
        let rt = crate::runtime().unwrap();
        let out = rt.block_on(concurrently(0, vec![1, 2, 3], |i| async move {
            if i == 2 {
                panic!("boom");
            }
            Ok(i)
        }));
        assert_eq!(out[0], Ok(1));
        assert_eq!(out[1].as_ref().unwrap_err().code, codes::INTERNAL);
        assert_eq!(out[2], Ok(3));
    }

    #[test]
    fn only_the_requested_are_called_and_a_failed_call_fails_its_record() {
        let rt = crate::runtime().unwrap();
        let mut plans: Vec<Result<u32, Failure>> = vec![
            Ok(1),
            Err(Failure::new(codes::NO_SUCH_DISK, "x")),
            Ok(2),
            Ok(3),
            Ok(4),
        ];
        let called = Arc::new(Mutex::new(Vec::new()));
        let values = rt.block_on(call_each(
            2,
            &mut plans,
            |p| (*p != 3).then_some(*p),
            |q| {
                called.lock().unwrap().push(q);
                async move {
                    if q == 4 {
                        return Err(Failure::new(codes::API_ERROR, "refused"));
                    }
                    Ok(q * 100)
                }
            },
        ));
        assert_eq!(*called.lock().unwrap(), [1, 2, 4]);
        assert_eq!(values, [Some(100), None, Some(200), None, None]);
        assert_eq!(plans[3], Ok(3), "not requested: left as planned");
        assert_eq!(plans[4].as_ref().unwrap_err().message, "refused");
    }
}
