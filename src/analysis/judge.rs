//! The canary-vs-primary judge: a metric's samples from both versions over the same window,
//! compared with a one-sided Mann-Whitney U test and an effect-size tolerance.
//!
//! Why compare with the primary: a threshold cannot tell "the canary is worse" from "the
//! whole service is having a bad minute" (both versions fail alike in an incident), and a
//! small regression hides under a threshold set loose enough not to flap. Why Mann-Whitney:
//! per-step samples of rates and latency quantiles are skewed, bounded and full of ties
//! (seconds without errors), so a rank test that assumes no distribution is the safe choice
//! (it is Kayenta's too). The test alone would fail a canary for a real but negligible
//! difference at high traffic, hence the tolerance on the difference of the means.

use serin_core::stats::{self, Alternative, Checks, Counts};

use crate::api::canary::{JudgeTest, MetricJudge, Worse};

/// A judge's settings, defaults applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub test: JudgeTest,
    /// Asked of the whole analysis.
    pub confidence: f64,
    /// This check's significance level: the share of `1 - confidence` of one check (see
    /// [`Checks::alpha`]).
    pub alpha: f64,
    pub min_samples: usize,
    pub tolerance: f64,
    pub worse: Worse,
}

impl Settings {
    /// From the spec; `worse` falls back to `default_worse` (the builtin's direction);
    /// `checks`: how often the release's judged metrics are asked.
    pub fn of(judge: &MetricJudge, default_worse: Worse, checks: Checks) -> Settings {
        let confidence = judge.confidence.unwrap_or(MetricJudge::DEFAULT_CONFIDENCE);
        Settings {
            test: judge.test.unwrap_or_default(),
            confidence,
            alpha: checks.alpha(confidence),
            min_samples: judge
                .min_samples
                .unwrap_or(MetricJudge::DEFAULT_MIN_SAMPLES) as usize,
            tolerance: judge.tolerance.unwrap_or(MetricJudge::DEFAULT_TOLERANCE),
            worse: judge.worse.unwrap_or(default_worse),
        }
    }
}

/// What the samples showed.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub canary_mean: f64,
    pub primary_mean: f64,
    /// One-sided: the probability of a difference at least this unfavourable by chance.
    pub p_value: f64,
    /// The p-value below which the check fails (the settings' `alpha`).
    pub alpha: f64,
    /// How much worse the canary's mean is (positive: worse), in the metric's unit.
    pub effect: f64,
    /// The largest effect tolerated.
    pub allowed: f64,
    /// What `test: counts` counted: the canary's and the primary's errors and requests.
    pub counts: Option<(Counts, Counts)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    Pass(Summary),
    Fail(Summary),
    /// Fewer samples than asked on one side or both.
    NotEnough {
        canary: usize,
        primary: usize,
    },
}

/// Judges `canary` against `primary`. Fails only when the canary is worse with the asked
/// confidence *and* by more than `tolerance` × the primary's mean.
pub fn judge(canary: &[f64], primary: &[f64], settings: &Settings) -> Judgement {
    let enough = |n: usize| n >= settings.min_samples.max(1);
    if !enough(canary.len()) || !enough(primary.len()) {
        return Judgement::NotEnough {
            canary: canary.len(),
            primary: primary.len(),
        };
    }
    let alternative = match settings.worse {
        Worse::Higher => Alternative::Greater,
        Worse::Lower => Alternative::Less,
    };
    let p_value = match settings.test {
        JudgeTest::MannWhitney => {
            stats::mann_whitney_u(canary, primary, alternative).map(|t| t.p_value)
        }
        JudgeTest::Permutation => stats::permutation_mean_test(canary, primary, alternative),
        // Counts are judged from counts (`judge_counts`), never from samples.
        JudgeTest::Counts => None,
    };
    let (Some(p_value), Some(canary_mean), Some(primary_mean)) =
        (p_value, mean(canary), mean(primary))
    else {
        // NaN samples are dropped when read; an empty side was caught above.
        return Judgement::NotEnough {
            canary: canary.len(),
            primary: primary.len(),
        };
    };
    verdict(
        settings,
        settings.worse,
        (canary_mean, primary_mean),
        p_value,
        None,
    )
}

/// Judges the canary's errors against the primary's over the window (`test: counts`): the
/// error rates in percent, compared with the tolerance built into the test (see
/// `stats::rate_ratio_test`). `min_samples` is the requests each version needs.
pub fn judge_counts(canary: Counts, primary: Counts, settings: &Settings) -> Judgement {
    let need = settings.min_samples.max(1) as u64;
    let not_enough = Judgement::NotEnough {
        canary: canary.requests as usize,
        primary: primary.requests as usize,
    };
    if canary.requests < need || primary.requests < need {
        return not_enough;
    }
    let Some(p_value) = stats::rate_ratio_test(canary, primary, 1.0 + settings.tolerance) else {
        return not_enough;
    };
    let means = (canary.rate() * 100.0, primary.rate() * 100.0);
    // Error rates: higher is worse, whichever way the metric's own query (a success rate)
    // counts.
    verdict(
        settings,
        Worse::Higher,
        means,
        p_value,
        Some((canary, primary)),
    )
}

/// Fails only when the difference is significant *and* the canary is worse (the way `worse`
/// says) by more than `tolerance` × the primary's mean.
fn verdict(
    settings: &Settings,
    worse: Worse,
    (canary_mean, primary_mean): (f64, f64),
    p_value: f64,
    counts: Option<(Counts, Counts)>,
) -> Judgement {
    let effect = match worse {
        Worse::Higher => canary_mean - primary_mean,
        Worse::Lower => primary_mean - canary_mean,
    };
    let summary = Summary {
        canary_mean,
        primary_mean,
        p_value,
        alpha: settings.alpha,
        effect,
        allowed: settings.tolerance * primary_mean.abs(),
        counts,
    };
    if p_value < settings.alpha && summary.effect > summary.allowed {
        Judgement::Fail(summary)
    } else {
        Judgement::Pass(summary)
    }
}

/// Small p-values in scientific notation: 0.00012 must not read as 0.0001 beside a level of
/// 0.0003, nor 3e-9 as 0.0000.
fn significant(p: f64) -> String {
    if p >= 0.001 || p == 0.0 {
        format!("{p:.4}")
    } else {
        format!("{p:.3e}")
    }
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

impl Summary {
    /// For the status and the events: the means, the difference, the p-value.
    pub fn describe(&self, name: &str) -> String {
        let counted = match self.counts {
            Some((c, p)) => format!(
                "; {} errors in {} requests vs {} in {}",
                c.errors, c.requests, p.errors, p.requests
            ),
            None => String::new(),
        };
        format!(
            "{name}: canary {:.3} vs primary {:.3} (worse by {:.3}, tolerated {:.3}; p = {}, \
             fails below {}{counted})",
            self.canary_mean,
            self.primary_mean,
            self.effect,
            self.allowed,
            significant(self.p_value),
            significant(self.alpha)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(worse: Worse) -> Settings {
        Settings {
            test: JudgeTest::MannWhitney,
            confidence: 0.98,
            alpha: 0.02,
            min_samples: 10,
            tolerance: 0.1,
            worse,
        }
    }

    /// Error percentages per step: mostly zeros, some errors.
    fn errors(rate_per_mille: usize, n: usize, phase: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                if (i * 7 + phase) % 1000 < rate_per_mille * 10 {
                    5.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn a_clearly_worse_canary_fails() {
        let primary: Vec<f64> = (0..30).map(|i| 100.0 + (i % 5) as f64).collect();
        let canary: Vec<f64> = (0..30).map(|i| 160.0 + (i % 5) as f64).collect();
        let Judgement::Fail(s) = judge(&canary, &primary, &settings(Worse::Higher)) else {
            panic!("expected a failure");
        };
        assert!(s.p_value < 1e-6, "{s:?}");
        assert!((s.effect - 60.0).abs() < 1e-9);
        assert!((s.allowed - 10.2).abs() < 1e-9);
    }

    #[test]
    fn the_same_distribution_passes_even_when_both_are_bad() {
        // An incident: both versions at 5 % errors in alternate steps.
        let both = errors(50, 40, 0);
        assert!(matches!(
            judge(&both, &both, &settings(Worse::Higher)),
            Judgement::Pass(_)
        ));
    }

    #[test]
    fn significant_but_within_tolerance_passes() {
        let primary: Vec<f64> = (0..50).map(|i| 100.0 + (i % 3) as f64 * 0.01).collect();
        let canary: Vec<f64> = primary.iter().map(|v| v + 5.0).collect();
        let Judgement::Pass(s) = judge(&canary, &primary, &settings(Worse::Higher)) else {
            panic!("5 % worse is within a 10 % tolerance");
        };
        assert!(s.p_value < 0.02, "significant: {s:?}");
    }

    #[test]
    fn lower_is_worse_looks_the_other_way() {
        let primary: Vec<f64> = (0..30).map(|i| 100.0 + (i % 4) as f64).collect();
        let better: Vec<f64> = primary.iter().map(|v| v * 2.0).collect();
        let worse: Vec<f64> = primary.iter().map(|v| v / 2.0).collect();
        let s = settings(Worse::Lower);
        assert!(matches!(judge(&better, &primary, &s), Judgement::Pass(_)));
        assert!(matches!(judge(&worse, &primary, &s), Judgement::Fail(_)));
        // And higher-is-worse reverses both.
        let s = settings(Worse::Higher);
        assert!(matches!(judge(&better, &primary, &s), Judgement::Fail(_)));
        assert!(matches!(judge(&worse, &primary, &s), Judgement::Pass(_)));
    }

    #[test]
    fn the_permutation_test_catches_what_ranks_miss() {
        // An intermittent fault: 6 of 24 steps much worse, the rest as the primary.
        let primary: Vec<f64> = (0..24).map(|i| 0.5 + ((i * 7) % 5) as f64 * 0.05).collect();
        let mut canary = primary.clone();
        for i in [2, 6, 10, 14, 18, 22] {
            canary[i] = 5.0;
        }
        let ranks = settings(Worse::Higher);
        let means = Settings {
            test: JudgeTest::Permutation,
            ..ranks
        };
        assert!(matches!(
            judge(&canary, &primary, &ranks),
            Judgement::Pass(_)
        ));
        assert!(matches!(
            judge(&canary, &primary, &means),
            Judgement::Fail(_)
        ));
        assert!(matches!(
            judge(&primary, &primary, &means),
            Judgement::Pass(_)
        ));
    }

    #[test]
    fn too_few_samples_is_not_a_verdict() {
        let s = settings(Worse::Higher);
        assert_eq!(
            judge(&[1.0; 9], &[1.0; 30], &s),
            Judgement::NotEnough {
                canary: 9,
                primary: 30
            }
        );
        assert!(matches!(judge(&[], &[], &s), Judgement::NotEnough { .. }));
    }

    fn counts(errors: u64, requests: u64) -> Counts {
        Counts { errors, requests }
    }

    #[test]
    fn counts_catch_a_doubled_error_rate_in_bursts_and_spare_an_incident() {
        let s = Settings {
            test: JudgeTest::Counts,
            ..settings(Worse::Higher)
        };
        // 200 requests a second for 2 minutes: 1 % errors against 0.5 %, however they fell.
        let Judgement::Fail(doubled) = judge_counts(counts(240, 24_000), counts(120, 24_000), &s)
        else {
            panic!("a doubled error rate over 24,000 requests");
        };
        assert!((doubled.canary_mean - 1.0).abs() < 1e-9, "{doubled:?}");
        assert!((doubled.primary_mean - 0.5).abs() < 1e-9);
        assert!((doubled.allowed - 0.05).abs() < 1e-9);
        assert!(
            doubled
                .describe("errors")
                .ends_with("; 240 errors in 24000 requests vs 120 in 24000)"),
            "{}",
            doubled.describe("errors")
        );
        // Both versions at 5.5 %: not the canary's fault.
        assert!(matches!(
            judge_counts(counts(1330, 24_000), counts(1310, 24_000), &s),
            Judgement::Pass(_)
        ));
        // Two errors against one in 120 requests each is no evidence.
        assert!(matches!(
            judge_counts(counts(2, 120), counts(1, 120), &s),
            Judgement::Pass(_)
        ));
    }

    #[test]
    fn counts_need_min_samples_requests_on_each_side() {
        let s = Settings {
            test: JudgeTest::Counts,
            ..settings(Worse::Higher)
        };
        assert_eq!(
            judge_counts(counts(3, 9), counts(0, 500), &s),
            Judgement::NotEnough {
                canary: 9,
                primary: 500
            }
        );
        assert!(matches!(
            judge_counts(counts(0, 500), counts(0, 0), &s),
            Judgement::NotEnough { .. }
        ));
    }

    #[test]
    fn settings_default_as_documented() {
        let s = Settings::of(&MetricJudge::default(), Worse::Lower, Checks::SINGLE);
        assert!((s.alpha - 0.01).abs() < 1e-12, "{s:?}");
        assert_eq!(
            s,
            Settings {
                test: JudgeTest::MannWhitney,
                confidence: 0.99,
                alpha: s.alpha,
                min_samples: 20,
                tolerance: 0.1,
                worse: Worse::Lower
            }
        );
    }

    /// Ten steps of two judged metrics: each check fails only below a twentieth of the
    /// allowed error, and says so.
    #[test]
    fn each_check_gets_its_share_of_the_confidence() {
        let judge = MetricJudge {
            confidence: Some(0.98),
            test: Some(JudgeTest::Counts),
            ..MetricJudge::default()
        };
        let checks = Checks {
            planned: 10,
            threshold: 1,
            metrics: 2,
        };
        let s = Settings::of(&judge, Worse::Higher, checks);
        assert!((s.alpha - 0.001).abs() < 1e-12, "{s:?}");
        // 0.9 % against 0.5 % over 10,000 requests each: p is about 0.003, a failure for
        // one check at 0.98, not for one of twenty.
        let (canary, primary) = (counts(90, 10_000), counts(50, 10_000));
        let single = Settings::of(&judge, Worse::Higher, Checks::SINGLE);
        let Judgement::Fail(alone) = judge_counts(canary, primary, &single) else {
            panic!("a single check at 0.98");
        };
        assert!(alone.p_value > 0.001 && alone.p_value < 0.02, "{alone:?}");
        let Judgement::Pass(shared) = judge_counts(canary, primary, &s) else {
            panic!("one of twenty checks");
        };
        assert!(
            shared
                .describe("errors")
                .contains("p = 0.0029, fails below 0.0010"),
            "{}",
            shared.describe("errors")
        );
    }
}
