//! A test of two error rates from their counts: is `x`'s rate (errors per request) higher than
//! `ratio` times `y`'s?
//!
//! Why beside the sample tests: the judge's other tests compare per-step samples of the
//! error *rate*, which loses how many requests each step held and spreads a burst of errors
//! over a few samples among many clean ones (an intermittent fault: its average doubles the
//! error rate, its ranks barely move). Counting every error and request of the window uses
//! all the evidence there is: at 20 requests a second, two minutes hold 2,400 requests per
//! version.
//!
//! The test is the exact conditional one for two Poisson counts (Przyborowski and Wilenski):
//! given `k` errors in all, each error is `x`'s with probability
//! `π = n_x·ratio / (n_x·ratio + n_y)` when `x`'s rate is `ratio` times `y`'s, so the p-value
//! of "x is worse than that" is the upper tail `P(K_x ≥ e_x)` of `Binomial(k, π)`: exactly
//! `scipy.stats.binomtest(e_x, k, π, alternative="greater").pvalue`. A `ratio` above 1 builds
//! the tolerance into the hypothesis: only a rate worse than the tolerated one is evidence.

use statrs::distribution::{Binomial, DiscreteCDF};

/// Errors and requests of one version over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    pub errors: u64,
    pub requests: u64,
}

impl Counts {
    /// Errors per request; 0 without requests.
    pub fn rate(self) -> f64 {
        match self.requests {
            0 => 0.0,
            n => self.errors as f64 / n as f64,
        }
    }
}

/// One-sided p-value that `x`'s error rate exceeds `ratio` × `y`'s. `None` when a version
/// has no requests, a count of errors exceeds its requests, or `ratio` is not positive.
/// Without any error the samples carry no evidence: 1.
pub fn rate_ratio_test(x: Counts, y: Counts, ratio: f64) -> Option<f64> {
    let valid = |c: Counts| c.requests > 0 && c.errors <= c.requests;
    if !(valid(x) && valid(y) && ratio.is_finite() && ratio > 0.0) {
        return None;
    }
    let total = x.errors.checked_add(y.errors)?;
    if x.errors == 0 {
        return Some(1.0);
    }
    let weighted = x.requests as f64 * ratio;
    let share = weighted / (weighted + y.requests as f64);
    let binomial = Binomial::new(share, total).ok()?;
    // P(K ≥ e) = P(K > e - 1).
    Some(binomial.sf(x.errors - 1).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn counts(errors: u64, requests: u64) -> Counts {
        Counts { errors, requests }
    }

    #[test]
    fn invalid_counts_give_none() {
        assert_eq!(rate_ratio_test(counts(1, 0), counts(1, 10), 1.0), None);
        assert_eq!(rate_ratio_test(counts(1, 10), counts(0, 0), 1.0), None);
        assert_eq!(rate_ratio_test(counts(11, 10), counts(1, 10), 1.0), None);
        assert_eq!(rate_ratio_test(counts(1, 10), counts(1, 10), 0.0), None);
        assert_eq!(
            rate_ratio_test(counts(1, 10), counts(1, 10), f64::NAN),
            None
        );
    }

    #[test]
    fn no_error_on_the_tested_side_is_no_evidence() {
        assert_eq!(
            rate_ratio_test(counts(0, 100), counts(9, 100), 1.0),
            Some(1.0)
        );
        assert_eq!(
            rate_ratio_test(counts(0, 100), counts(0, 100), 1.0),
            Some(1.0)
        );
    }

    #[test]
    fn all_errors_on_one_side_of_equal_traffic_halve_per_error() {
        // k errors, all x's, π = 1/2: P = 2^-k.
        let p = rate_ratio_test(counts(6, 1000), counts(0, 1000), 1.0).unwrap();
        assert!((p - 1.0 / 64.0).abs() < 1e-12, "{p}");
    }

    #[test]
    fn the_tolerance_ratio_weakens_the_evidence() {
        let strict = rate_ratio_test(counts(30, 2400), counts(15, 2400), 1.0).unwrap();
        let tolerant = rate_ratio_test(counts(30, 2400), counts(15, 2400), 1.5).unwrap();
        assert!(strict < tolerant, "{strict} {tolerant}");
    }

    /// The chance that the test, at `alpha`, sees a doubled error rate (0.5 % to 1 %, 10 %
    /// tolerated) with `n` requests per version: the sum over Poisson error counts of both.
    fn power_to_see_doubled_errors(n: u64, alpha: f64) -> f64 {
        use statrs::distribution::{Discrete, Poisson};
        let (canary, primary) = (0.01 * n as f64, 0.005 * n as f64);
        let bound = |mean: f64| (mean + 8.0 * mean.sqrt() + 10.0) as u64;
        let (c, p) = (
            Poisson::new(canary).unwrap(),
            Poisson::new(primary).unwrap(),
        );
        let mut power = 0.0;
        for errors_c in 1..bound(canary) {
            for errors_p in 0..bound(primary) {
                let pv = rate_ratio_test(counts(errors_c, n), counts(errors_p, n), 1.1).unwrap();
                if pv < alpha {
                    power += c.pmf(errors_c) * p.pmf(errors_p);
                }
            }
        }
        power
    }

    /// The guidance on release length in docs/metrics.md. One check at 0.02: 2,400 requests per
    /// version (2 minutes at 20 rps) see a doubled error rate about a third of the time,
    /// 9,000 nine times in ten. One check of a release of 10 analyses, threshold 2 and two
    /// judged metrics at the default 0.99 (its share: 2 × 0.01 / 22): 9,000 requests see it
    /// a little over half the time, 20,000 nearly always. scipy's binomtest over the same
    /// sums gives 0.311, 0.893, 0.565 and 0.969.
    #[test]
    fn the_power_to_see_a_doubled_error_rate_grows_with_the_requests() {
        let release = crate::stats::Checks {
            planned: 10,
            threshold: 2,
            metrics: 2,
        }
        .alpha(0.99);
        let cases = [
            (2_400, 0.02, 0.311),
            (9_000, 0.02, 0.893),
            (9_000, release, 0.565),
            (20_000, release, 0.969),
        ];
        for (requests, alpha, want) in cases {
            let power = power_to_see_doubled_errors(requests, alpha);
            assert!(
                (power - want).abs() < 0.005,
                "{requests} at {alpha}: {power}"
            );
        }
    }

    #[test]
    fn the_rate_is_errors_per_request() {
        assert_eq!(counts(5, 1000).rate(), 0.005);
        assert_eq!(counts(0, 0).rate(), 0.0);
    }
}
