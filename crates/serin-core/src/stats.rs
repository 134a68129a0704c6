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
/// Computed as `erfc(z/√2)/2`, so it keeps its relative precision far into the tail
/// (`normal_sf(17.0)` ≈ 4e-65), which `1 − Φ(z)` would round to 0. Rounding `z/√2` costs
/// about `z²·2e-16` relative there (3e-14 at z = 17), the same as scipy's `ndtr`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function after W. J. Cody, "Rational Chebyshev approximations for
/// the error function", Math. Comp. 23 (1969), as in his SPECFUN routine CALERF (1990):
/// three rational approximations on |x| ≤ 0.46875, ≤ 4 and > 4, designed to relative
/// error below 1e-17, so in f64 only rounding is left: within 6.5e-16 relative of mpmath
/// on a 3,900-point grid over [−6, 26] (erfc underflows beyond 26.5).
fn erfc(x: f64) -> f64 {
    let ax = x.abs();
    if ax <= 0.46875 {
        return 1.0 - erf_near_zero(x);
    }
    let upper = if ax <= 4.0 {
        erfc_middle(ax)
    } else {
        erfc_tail(ax)
    };
    if x < 0.0 { 2.0 - upper } else { upper }
}

// Cody's published coefficients, kept digit for digit so they can be checked against the
// paper; the lint would round them to what an f64 holds anyway.
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, verbatim"
)]
mod cody {
    pub const A: [f64; 5] = [
        3.16112374387056560e00,
        1.13864154151050156e02,
        3.77485237685302021e02,
        3.20937758913846947e03,
        1.85777706184603153e-1,
    ];
    pub const B: [f64; 4] = [
        2.36012909523441209e01,
        2.44024637934444173e02,
        1.28261652607737228e03,
        2.84423683343917062e03,
    ];
    pub const C: [f64; 9] = [
        5.64188496988670089e-1,
        8.88314979438837594e00,
        6.61191906371416295e01,
        2.98635138197400131e02,
        8.81952221241769090e02,
        1.71204761263407058e03,
        2.05107837782607147e03,
        1.23033935479799725e03,
        2.15311535474403846e-8,
    ];
    pub const D: [f64; 8] = [
        1.57449261107098347e01,
        1.17693950891312499e02,
        5.37181101862009858e02,
        1.62138957456669019e03,
        3.29079923573345963e03,
        4.36261909014324716e03,
        3.43936767414372164e03,
        1.23033935480374942e03,
    ];
    pub const P: [f64; 6] = [
        3.05326634961232344e-1,
        3.60344899949804439e-1,
        1.25781726111229246e-1,
        1.60837851487422766e-2,
        6.58749161529837803e-4,
        1.63153871373020978e-2,
    ];
    pub const Q: [f64; 5] = [
        2.56852019228982242e00,
        1.87295284992346047e00,
        5.27905102951428412e-1,
        6.05183413124413191e-2,
        2.33520497626869185e-3,
    ];
}

/// erf(x) for |x| ≤ 0.46875, where erfc = 1 − erf loses nothing.
fn erf_near_zero(x: f64) -> f64 {
    let (a, b) = (&cody::A, &cody::B);
    let x2 = x * x;
    let (mut num, mut den) = (a[4] * x2, x2);
    for i in 0..3 {
        num = (num + a[i]) * x2;
        den = (den + b[i]) * x2;
    }
    x * (num + a[3]) / (den + b[3])
}

/// erfc(y) for 0.46875 < y ≤ 4.
fn erfc_middle(y: f64) -> f64 {
    let (c, d) = (&cody::C, &cody::D);
    let (mut num, mut den) = (c[8] * y, y);
    for i in 0..7 {
        num = (num + c[i]) * y;
        den = (den + d[i]) * y;
    }
    (num + c[7]) / (den + d[7]) * exp_minus_square(y)
}

/// erfc(y) for y > 4, an asymptotic-style expansion in 1/y².
fn erfc_tail(y: f64) -> f64 {
    // Beyond this erfc underflows f64; also keeps y = ∞ from producing ∞ − ∞.
    if y >= 26.543 {
        return 0.0;
    }
    let (p, q) = (&cody::P, &cody::Q);
    let inv2 = 1.0 / (y * y);
    let (mut num, mut den) = (p[5] * inv2, inv2);
    for i in 0..4 {
        num = (num + p[i]) * inv2;
        den = (den + q[i]) * inv2;
    }
    let frac_1_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI / 2.0;
    let ratio = inv2 * (num + p[4]) / (den + q[4]);
    (frac_1_sqrt_pi - ratio) / y * exp_minus_square(y)
}

/// exp(−y²) without the rounding error of y² itself: y is split at a multiple of 1/16 whose
/// square is exact, as Cody does; matters for relative precision when y is large.
fn exp_minus_square(y: f64) -> f64 {
    let head = (y * 16.0).trunc() / 16.0;
    let rest = (y - head) * (y + head);
    (-head * head).exp() * (-rest).exp()
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
        // 1e-13: erfc is good to a few ulps, but rounding z/√2 costs ~z²·2e-16 in the tail.
        for (z, want) in cases {
            let got = normal_sf(z);
            assert!(
                ((got - want) / want).abs() < 1e-13,
                "z={z}: {got} vs {want}"
            );
        }
        assert_eq!(normal_sf(f64::INFINITY), 0.0);
        assert_eq!(normal_sf(f64::NEG_INFINITY), 1.0);
    }
}
