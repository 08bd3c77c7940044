//! `param_average`: the averaging round of data-parallel training across workers and processes.
//!
//! Every worker's [`ParamShare`] of epoch `t` is exchanged to worker 0, which, once the frontier has passed `t`,
//! emits at `t` one [`AveragedParams`]: the mean of the shares weighted by the events each worker trained on since
//! the previous round (a round whose shares all weigh zero emits nothing: no replica moved). The caller broadcasts
//! it and feeds it back to the trainers one epoch later (a feedback edge with summary 1), so a trainer applies the
//! round's average before it trains on epoch `t + 1` and no local update is lost between share and apply.
//!
//! The version of the average is the largest version shared plus one, the same on every worker afterwards.

use crate::epoch_stash::EpochStash;
use crate::trainer::{AveragedParams, ParamShare};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

/// Builds the operator (its output lives on worker 0: broadcast it).
pub fn param_average<'s>(
    shares: Stream<'s, u64, Vec<ParamShare>>,
) -> Stream<'s, u64, Vec<AveragedParams>> {
    shares.unary_frontier(
        Exchange::new(|_: &ParamShare| 0u64),
        "ParamAverage",
        move |_cap, _info| {
            let mut stash = EpochStash::<ParamShare>::default();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a time");
                    stash.add(t, || cap.retain_least(0).expect("a capability"), data);
                });
                while let Some((_, cap, shares)) = stash.pop_closed(frontier) {
                    if let Some(avg) = average(&shares.collect::<Vec<_>>()) {
                        output.session(&cap).give(avg);
                    }
                }
            }
        },
    )
}

/// The weighted mean of the shares; `None` when every weight is zero or the shares disagree in length (a replica
/// of another configuration: a bug, reported loudly).
pub fn average(shares: &[ParamShare]) -> Option<AveragedParams> {
    let total: f64 = shares.iter().map(|s| s.weight.max(0.0)).sum();
    if shares.is_empty() || total <= 0.0 {
        return None;
    }
    let len = shares[0].params.len();
    if let Some(bad) = shares.iter().find(|s| s.params.len() != len) {
        panic!(
            "parameter averaging: worker {} shared {} parameters, worker {} shared {}",
            bad.worker,
            bad.params.len(),
            shares[0].worker,
            len
        );
    }
    let mut acc = vec![0f64; len];
    for s in shares {
        let w = s.weight.max(0.0) / total;
        if w == 0.0 {
            continue;
        }
        for (a, p) in acc.iter_mut().zip(&s.params) {
            *a += w * *p as f64;
        }
    }
    Some(AveragedParams {
        version: shares.iter().map(|s| s.version).max().unwrap_or(0) + 1,
        params: acc.into_iter().map(|x| x as f32).collect(),
        workers: shares.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(worker: usize, version: u64, weight: f64, params: Vec<f32>) -> ParamShare {
        ParamShare {
            worker,
            version,
            weight,
            params,
        }
    }

    #[test]
    fn weighted_mean_and_version() {
        let a = average(&[
            share(0, 10, 3.0, vec![1.0, 0.0]),
            share(1, 12, 1.0, vec![5.0, 4.0]),
        ])
        .unwrap();
        assert_eq!(a.params, vec![2.0, 1.0]);
        assert_eq!(a.version, 13);
        assert_eq!(a.workers, 2);
    }

    #[test]
    fn zero_weights_are_ignored_or_skip_the_round() {
        let a = average(&[share(0, 1, 1.0, vec![7.0]), share(1, 1, 0.0, vec![-100.0])]).unwrap();
        assert_eq!(a.params, vec![7.0]);
        assert!(average(&[share(0, 1, 0.0, vec![1.0])]).is_none());
    }
}
