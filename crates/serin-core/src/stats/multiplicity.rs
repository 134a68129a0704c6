//! From the confidence a user asks of a release to the significance level of each check.
//!
//! A release runs its judged metrics many times: every analysis step, for every metric. A
//! check that fails by chance with probability `alpha` fails some release sooner or later if
//! it is asked often enough: with 48 checks at `alpha = 0.02`, a release exactly as good as
//! its primary is rolled back far more often than 2 % of the time. So the judge's
//! `confidence` is read as a property of the whole analysis, and each check gets a share of
//! the allowed error.
//!
//! Why this split is sound whatever the checks' dependence: let `F` be the number of checks
//! that fail by chance over the analysis. Each of the `checks × metrics` checks fails with
//! probability at most `alpha`, so `E[F] <= checks × metrics × alpha` (linearity holds for
//! dependent checks too, and overlapping windows make them very dependent). A rollback needs
//! `threshold` failed steps, so `F >= threshold`, and by Markov's inequality
//! `P(F >= threshold) <= E[F] / threshold`. Choosing
//! `alpha = threshold × (1 - confidence) / (checks × metrics)` bounds that by
//! `1 - confidence`. With `threshold = 1` this is Bonferroni's correction. It is
//! conservative (windows that overlap fail together, so the true rate is lower), which costs
//! some power on short analyses; a sequential test would recover some of it.

/// The analysis' shape that decides how often a release is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    /// Analysis steps a release runs when every check passes (see
    /// [`crate::simulate::analyses`]).
    pub planned: u32,
    /// Failed steps that roll a release back (`analysis.threshold`, at least 1).
    pub threshold: u32,
    /// Metrics judged at each step.
    pub metrics: u32,
}

impl Checks {
    /// One check of one metric: the asked confidence applies as it is.
    pub const SINGLE: Checks = Checks {
        planned: 1,
        threshold: 1,
        metrics: 1,
    };

    /// The most checks a release can run before it is promoted or rolled back: each failed
    /// step repeats the step, so up to `threshold - 1` more than planned.
    pub fn most(&self) -> u32 {
        self.planned
            .max(1)
            .saturating_add(self.threshold.max(1) - 1)
    }

    /// The significance level of one check such that the judged metrics roll back a release
    /// as good as its primary with probability at most `1 - confidence`. Never looser than
    /// `1 - confidence` itself.
    pub fn alpha(&self, confidence: f64) -> f64 {
        let allowed = (1.0 - confidence).clamp(0.0, 1.0);
        let spread = f64::from(self.most()) * f64::from(self.metrics.max(1));
        (f64::from(self.threshold.max(1)) * allowed / spread).min(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(planned: u32, threshold: u32, metrics: u32) -> Checks {
        Checks {
            planned,
            threshold,
            metrics,
        }
    }

    #[test]
    fn the_allowed_error_is_shared_by_every_check() {
        let cases = [
            // (planned, threshold, metrics, confidence, alpha)
            (1, 1, 1, 0.98, 0.02),
            (10, 1, 1, 0.99, 0.001),
            (10, 1, 2, 0.99, 0.0005),
            // Two failures needed: twice the level, over one more possible check.
            (7, 2, 2, 0.99, 2.0 * 0.01 / 16.0),
            (48, 2, 2, 0.98, 2.0 * 0.02 / 98.0),
            // Five failures over at most six checks.
            (2, 5, 1, 0.98, 5.0 * 0.02 / 6.0),
            // A threshold above the checks cannot make one check looser than asked.
            (1, 3, 1, 0.98, 0.02),
            // Nonsense shapes are read as one check.
            (0, 0, 0, 0.98, 0.02),
        ];
        for (planned, threshold, metrics, confidence, want) in cases {
            let got = checks(planned, threshold, metrics).alpha(confidence);
            assert!(
                (got - want).abs() < 1e-12,
                "{planned} {threshold} {metrics} {confidence}: {got} != {want}"
            );
        }
    }

    /// `P(Binomial(n, p) >= k)`, exactly.
    fn at_least(k: u32, n: u32, p: f64) -> f64 {
        (k..=n)
            .map(|i| {
                let choose: f64 = (0..i)
                    .map(|j| f64::from(n - j) / f64::from(j + 1))
                    .product();
                choose * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32)
            })
            .sum()
    }

    /// Two extremes of dependence: independent checks (a binomial count of failures) and
    /// checks that always fail together (one failure is all of them). Both stay within the
    /// asked confidence.
    #[test]
    fn a_release_as_good_as_its_primary_is_rolled_back_at_most_one_minus_confidence() {
        for (planned, threshold, metrics) in [(6, 1, 1), (7, 2, 2), (48, 2, 2), (20, 5, 3)] {
            let c = checks(planned, threshold, metrics);
            let alpha = c.alpha(0.99);
            let independent = at_least(threshold, c.most() * metrics, alpha);
            let together = alpha;
            for p in [independent, together] {
                assert!(p <= 0.01, "{c:?}: rolled back with probability {p}");
            }
        }
        // Without the split, 48 independent checks at 0.01 roll back 38 % of such releases.
        assert!(at_least(1, 48, 0.01) > 0.38);
    }
}
