//! Random draws for `traffic.noise`, from one seeded `fastrand::Rng`: standard normals
//! (Box-Muller), Poisson counts and binomial error counts.
//!
//! Poisson: Knuth's multiplication method, exact, in chunks of mean at most 30 (so
//! `exp(-mean)` stays far from underflow) up to a mean of 1,000 (cost linear in the mean,
//! like the per-request latency draws that follow); above that a normal approximation,
//! N(mean, mean) rounded and clamped at 0. Binomial: `n` Bernoulli draws up to `n` = 1,000,
//! above that N(np, np(1-p)) rounded and clamped to 0..n. At the world's rates (tens of
//! requests per flow per second) both are exact.

use fastrand::Rng;

/// A standard normal draw (Box-Muller, one of the pair).
pub fn normal(rng: &mut Rng) -> f64 {
    // 1 - [0, 1) is (0, 1]: ln never sees 0.
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Poisson draw with this mean (0 for a mean that is not positive).
pub fn poisson(rng: &mut Rng, mean: f64) -> u64 {
    if !(mean > 0.0 && mean.is_finite()) {
        return 0;
    }
    if mean > 1000.0 {
        return (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u64;
    }
    let mut left = mean;
    let mut n = 0;
    while left > 0.0 {
        let chunk = left.min(30.0);
        left -= chunk;
        let limit = (-chunk).exp();
        let mut p = rng.f64();
        while p > limit {
            n += 1;
            p *= rng.f64();
        }
    }
    n
}

/// Successes among `n` trials of probability `p`.
pub fn binomial(rng: &mut Rng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if n > 1000 {
        let mean = n as f64 * p;
        let sd = (mean * (1.0 - p)).sqrt();
        return (mean + sd * normal(rng)).round().clamp(0.0, n as f64) as u64;
    }
    (0..n).filter(|_| rng.f64() < p).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        (
            m,
            xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0),
        )
    }

    #[test]
    fn poisson_has_its_mean_and_variance() {
        let mut rng = Rng::with_seed(7);
        for mean in [0.5, 20.0, 75.0, 5000.0] {
            let xs: Vec<f64> = (0..4000).map(|_| poisson(&mut rng, mean) as f64).collect();
            let (m, v) = mean_var(&xs);
            // 4000 draws: the sample mean's standard error is sqrt(mean / 4000).
            assert!(
                (m - mean).abs() < 5.0 * (mean / 4000.0).sqrt(),
                "{mean}: {m}"
            );
            assert!((v / mean - 1.0).abs() < 0.15, "{mean}: variance {v}");
        }
        assert_eq!(poisson(&mut rng, 0.0), 0);
        assert_eq!(poisson(&mut rng, f64::NAN), 0);
    }

    #[test]
    fn binomial_and_normal() {
        let mut rng = Rng::with_seed(8);
        for (n, p) in [(20, 0.05), (5000, 0.3)] {
            let xs: Vec<f64> = (0..4000).map(|_| binomial(&mut rng, n, p) as f64).collect();
            let (m, v) = mean_var(&xs);
            let (want_m, want_v) = (n as f64 * p, n as f64 * p * (1.0 - p));
            assert!(
                (m - want_m).abs() < 5.0 * (want_v / 4000.0).sqrt(),
                "{n} {p}: {m}"
            );
            assert!((v / want_v - 1.0).abs() < 0.15, "{n} {p}: variance {v}");
        }
        assert_eq!(binomial(&mut rng, 10, 1.0), 10);
        assert_eq!(binomial(&mut rng, 10, 0.0), 0);
        let zs: Vec<f64> = (0..10_000).map(|_| normal(&mut rng)).collect();
        let (m, v) = mean_var(&zs);
        assert!(m.abs() < 0.05 && (v - 1.0).abs() < 0.05, "{m} {v}");
    }
}
