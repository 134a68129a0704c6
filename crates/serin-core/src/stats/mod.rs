//! Two-sample statistics for judging a canary against the primary.
//!
//! [`mann_whitney_u`] is the Mann-Whitney U test exactly as
//! `scipy.stats.mannwhitneyu(x, y, alternative, method="asymptotic", use_continuity=True)`
//! computes it: average ranks for ties, tie-corrected variance, continuity correction 0.5.
//! The asymptotic method is used for every sample size so that the answer never jumps when
//! a sample crosses scipy's "auto" threshold. `tests/pure/mann_whitney.rs` checks it against
//! fixtures that scipy produced (`scripts/fixtures/mannwhitneyu.py`).
//!
//! [`permutation_mean_test`] tests the difference of means (see its module for when it sees
//! what a rank test misses).
//!
//! [`rate_ratio_test`] compares two error rates from their counts (errors and requests over
//! the whole window) rather than from per-step samples.
//!
//! [`Checks::alpha`] turns the confidence asked of a whole analysis into each check's level.

mod counts;
mod multiplicity;
mod permutation;

pub use counts::{Counts, rate_ratio_test};
pub use multiplicity::Checks;
pub use permutation::{ROUNDS as PERMUTATION_ROUNDS, permutation_mean_test};

/// The alternative hypothesis, as scipy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternative {
    /// The distributions of `x` and `y` differ.
    TwoSided,
    /// `x` is stochastically less than `y`.
    Less,
    /// `x` is stochastically greater than `y` (e.g. the canary's latencies are higher).
    Greater,
}

/// The outcome of [`mann_whitney_u`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of `x` (scipy's `statistic`, U1), whatever the alternative.
    pub u: f64,
    /// Probability, under the null hypothesis, of a U at least as extreme.
    pub p_value: f64,
    /// Size of `x`.
    pub n_x: usize,
    /// Size of `y`.
    pub n_y: usize,
}

/// Mann-Whitney U test of `x` against `y` with the normal approximation.
///
/// `None` when either sample is empty or holds a NaN (scipy raises for both). When every
/// value is tied the variance is zero and the samples carry no evidence, so `p_value` is 1.
pub fn mann_whitney_u(x: &[f64], y: &[f64], alternative: Alternative) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || has_nan(x) || has_nan(y) {
        return None;
    }
    let (n_x, n_y) = (x.len() as f64, y.len() as f64);
    let (rank_sum_x, tie_term) = rank_sum_and_ties(x, y);
    let u1 = rank_sum_x - n_x * (n_x + 1.0) / 2.0;
    let u2 = n_x * n_y - u1;
    // scipy always takes the upper tail: "less" is the upper tail of U2 by symmetry, and
    // two-sided doubles the upper tail of the larger U.
    let (u_tail, factor) = match alternative {
        Alternative::Greater => (u1, 1.0),
        Alternative::Less => (u2, 1.0),
        Alternative::TwoSided => (u1.max(u2), 2.0),
    };
    let p_value = match z_score(u_tail, n_x, n_y, tie_term) {
        Some(z) => (factor * normal_sf(z)).clamp(0.0, 1.0),
        None => 1.0,
    };
    Some(MannWhitney {
        u: u1,
        p_value,
        n_x: x.len(),
        n_y: y.len(),
    })
}

fn has_nan(xs: &[f64]) -> bool {
    xs.iter().any(|v| v.is_nan())
}

/// Sum of the ranks of `x` in the pooled sample (ties get their average rank) and the tie
/// term `Σ (t³ − t)` over groups of `t` equal values.
fn rank_sum_and_ties(x: &[f64], y: &[f64]) -> (f64, f64) {
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    // total_cmp orders -0.0 just before 0.0, so equal values stay adjacent for chunk_by.
    pooled.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut tie_term, mut start) = (0.0, 0.0, 0usize);
    for group in pooled.chunk_by(|a, b| a.0 == b.0) {
        let t = group.len() as f64;
        // Ranks start+1 ..= start+t; their mean. Half-integers, so the sums stay exact.
        let mean_rank = (2 * start + group.len() + 1) as f64 / 2.0;
        let from_x = group.iter().filter(|(_, is_x)| *is_x).count() as f64;
        rank_sum += mean_rank * from_x;
        tie_term += t * t * t - t;
        start += group.len();
    }
    (rank_sum, tie_term)
}

/// Standardised U with scipy's continuity correction (it always subtracts 0.5 because it
/// always takes the upper tail). `None` when the variance is zero (all values tied).
fn z_score(u: f64, n_x: f64, n_y: f64, tie_term: f64) -> Option<f64> {
    let n = n_x + n_y;
    let mean = n_x * n_y / 2.0;
    // Same operation order as scipy so results agree to the last few bits.
    let variance = n_x * n_y / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return None;
    }
    Some((u - mean - 0.5) / variance.sqrt())
}

/// Upper tail `P(Z > z)` of the standard normal distribution.
///
/// Computed as `erfc(z/√2)/2` with statrs' erfc, so it keeps its relative precision (about
/// 1e-10) far into the tail (`normal_sf(17.0)` ≈ 4e-65), which `1 − Φ(z)` would round to 0.
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    0.5 * statrs::function::erf::erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_samples_give_none() {
        assert_eq!(mann_whitney_u(&[], &[1.0], Alternative::TwoSided), None);
        assert_eq!(mann_whitney_u(&[1.0], &[], Alternative::Greater), None);
    }

    #[test]
    fn nan_gives_none() {
        assert_eq!(
            mann_whitney_u(&[1.0, f64::NAN], &[2.0], Alternative::Less),
            None
        );
        assert_eq!(
            mann_whitney_u(&[1.0], &[f64::NAN], Alternative::TwoSided),
            None
        );
    }

    #[test]
    fn all_ties_give_p_one() {
        for alternative in [
            Alternative::TwoSided,
            Alternative::Less,
            Alternative::Greater,
        ] {
            let r = mann_whitney_u(&[0.0; 5], &[0.0; 3], alternative).unwrap();
            assert_eq!(r.p_value, 1.0, "{alternative:?}");
            assert_eq!(r.u, 7.5);
            assert_eq!((r.n_x, r.n_y), (5, 3));
        }
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        let a = mann_whitney_u(&[-0.0, 1.0], &[0.0, 2.0], Alternative::TwoSided).unwrap();
        let b = mann_whitney_u(&[0.0, 1.0], &[0.0, 2.0], Alternative::TwoSided).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn u_counts_pairs_where_x_wins() {
        // x = [1, 4], y = [2, 3]: x wins 2 of 4 pairs (4 > 2, 4 > 3).
        let r = mann_whitney_u(&[1.0, 4.0], &[2.0, 3.0], Alternative::Greater).unwrap();
        assert_eq!(r.u, 2.0);
    }

    #[test]
    #[allow(clippy::excessive_precision, reason = "mpmath digits, verbatim")]
    fn normal_sf_matches_mpmath() {
        // mpmath.ncdf(-z) at 40 digits.
        let cases = [
            (-3.0, 0.998_650_101_968_369_905_47),
            (-1.0, 0.841_344_746_068_542_948_59),
            (-0.25, 0.598_706_325_682_923_724_24),
            (0.0, 0.5),
            (0.3, 0.382_088_577_811_047_366_93),
            (1.0, 0.158_655_253_931_457_051_41),
            (1.959_963_984_540_054, 0.025_000_000_000_000_010_876),
            (2.5, 0.006_209_665_325_776_135_167),
            (4.0, 3.167_124_183_311_992_125_4e-5),
            (6.0, 9.865_876_450_376_981_407e-10),
            (8.5, 9.479_534_822_203_318_354_2e-18),
            (12.0, 1.776_482_112_077_678_997_7e-33),
            (17.25, 5.594_968_394_904_884_945_2e-67),
        ];
        // 2e-10: statrs' erfc is good to about 1e-10 relative (at most 8.6e-11 on these
        // points), in the far tail too; a p-value is compared with a level of 1e-4 or more,
        // so eight digits are plenty.
        for (z, want) in cases {
            let got = normal_sf(z);
            assert!(
                ((got - want) / want).abs() < 2e-10,
                "z={z}: {got} vs {want}"
            );
        }
        assert_eq!(normal_sf(f64::INFINITY), 0.0);
        assert_eq!(normal_sf(f64::NEG_INFINITY), 1.0);
    }
}
