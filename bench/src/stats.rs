//! Percentiles of a sample, and rates of events counted per whole second.

use std::collections::BTreeMap;

use serde::Serialize;

/// min, p50, p99 and max of a sample (seconds), with its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Nearest-rank percentiles; an empty sample gives zeros with count 0.
    pub fn of(values: &[f64]) -> Summary {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Summary::default();
        }
        sorted.sort_by(f64::total_cmp);
        Summary {
            count: sorted.len(),
            min: sorted[0],
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// A rate over a span of whole seconds, from counts per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RateSummary {
    /// Whole seconds in the span (first and last included).
    pub seconds: u64,
    pub total: u64,
    /// `total` over `seconds`.
    pub mean_per_second: f64,
    /// The busiest second.
    pub highest_1s: u64,
    /// The busiest 10 consecutive seconds, per second (the whole span over
    /// 10 s when it is shorter).
    pub highest_10s_per_second: f64,
}

impl RateSummary {
    /// The rate of `per_second` (counts by Unix second) over the seconds
    /// `first..=last`; counts outside are ignored.
    pub fn of(per_second: &BTreeMap<i64, u64>, first: i64, last: i64) -> RateSummary {
        if last < first {
            return RateSummary::default();
        }
        let count = |second: i64| per_second.get(&second).copied().unwrap_or(0);
        let span: Vec<u64> = (first..=last).map(count).collect();
        let total: u64 = span.iter().sum();
        let highest_10s = span
            .windows(10.min(span.len()))
            .map(|window| window.iter().sum::<u64>())
            .max()
            .unwrap_or(0);
        RateSummary {
            seconds: span.len() as u64,
            total,
            mean_per_second: total as f64 / span.len() as f64,
            highest_1s: span.iter().copied().max().unwrap_or(0),
            highest_10s_per_second: highest_10s as f64 / 10.0,
        }
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100) of an ascending, non-empty slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&values);
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.p50, s.p99, s.max), (2.0, 3.0, 3.0));
        assert_eq!(Summary::of(&[]).count, 0);
        assert_eq!(Summary::of(&[3.0, -1.0]).min, -1.0);
    }

    #[test]
    fn rates_per_second() {
        // 5 per second for 20 s, a burst of 30 in second 12, nothing after.
        let mut counts: BTreeMap<i64, u64> = (100..120).map(|s| (s, 5)).collect();
        counts.insert(112, 30);
        counts.insert(90, 1000);
        let rate = RateSummary::of(&counts, 100, 124);
        assert_eq!((rate.seconds, rate.total, rate.highest_1s), (25, 125, 30));
        assert!((rate.mean_per_second - 5.0).abs() < 1e-9);
        // Seconds 103..=112 or 112..=121 hold 9 × 5 + 30.
        assert!((rate.highest_10s_per_second - 7.5).abs() < 1e-9);
        let short = RateSummary::of(&counts, 100, 102);
        assert!((short.highest_10s_per_second - 1.5).abs() < 1e-9);
        assert_eq!(RateSummary::of(&counts, 5, 4), RateSummary::default());
    }
}
