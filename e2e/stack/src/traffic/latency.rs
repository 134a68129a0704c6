//! Latency distributions. By default requests are counted fractionally (expected values, no
//! sampling), so histograms get each bucket's expected share from the distribution's CDF and
//! the figures read back from Prometheus or the emulators are exact, not noisy. Under
//! `traffic.noise` the world draws one latency per request instead (`Latency::sample`).

/// How a version of a workload answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Fraction of requests answered 500.
    pub error_rate: f64,
    pub latency: Latency,
    /// An intermittent fault: `error_rate` holds only while the duty cycle is on.
    pub intermittent: Option<Duty>,
}

/// A duty cycle in world seconds: on during `[k × period, k × period + on)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Duty {
    pub period: f64,
    pub on: f64,
}

impl Duty {
    pub fn is_on(&self, t: f64) -> bool {
        t.rem_euclid(self.period) < self.on
    }

    /// The cycle's switching times strictly inside `(from, to)`, pushed onto `out`.
    pub fn edges(&self, from: f64, to: f64, out: &mut Vec<f64>) {
        if self.period <= 0.0 {
            return;
        }
        let mut start = (from / self.period).floor() * self.period;
        while start < to {
            for t in [start, start + self.on] {
                if t > from && t < to {
                    out.push(t);
                }
            }
            start += self.period;
        }
    }
}

impl Profile {
    /// The error rate at world time `t` (0 while an intermittent fault is off).
    pub fn error_rate_at(&self, t: f64) -> f64 {
        match self.intermittent {
            Some(d) if !d.is_on(t) => 0.0,
            _ => self.error_rate,
        }
    }
}

/// A latency distribution in seconds: a fixed value, or log-normal given its median and P99.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    median: f64,
    /// Standard deviation of ln(latency); 0 for a fixed latency.
    sigma: f64,
}

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874_040_841;

impl Latency {
    pub fn new(median: f64, p99: Option<f64>) -> Latency {
        let median = median.max(1e-6);
        let sigma = match p99 {
            Some(p) if p > median => (p / median).ln() / Z99,
            _ => 0.0,
        };
        Latency { median, sigma }
    }

    pub fn fixed(secs: f64) -> Latency {
        Latency::new(secs, None)
    }

    /// Fraction of requests that take at most `x` seconds.
    pub fn cdf(&self, x: f64) -> f64 {
        if self.sigma == 0.0 {
            return if x >= self.median { 1.0 } else { 0.0 };
        }
        if x <= 0.0 {
            return 0.0;
        }
        normal_cdf((x / self.median).ln() / self.sigma)
    }

    /// Whether every request takes exactly the median.
    pub fn is_fixed(&self) -> bool {
        self.sigma == 0.0
    }

    /// The same shape with every latency multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Latency {
        Latency {
            median: (self.median * factor).max(1e-6),
            sigma: self.sigma,
        }
    }

    /// One request's latency given a standard normal draw `z`: exp(ln(median) + sigma × z)
    /// (exactly the median for a fixed latency).
    pub fn sample(&self, z: f64) -> f64 {
        if self.is_fixed() {
            return self.median;
        }
        (self.median.ln() + self.sigma * z).exp()
    }

    pub fn mean(&self) -> f64 {
        self.median * (self.sigma * self.sigma / 2.0).exp()
    }
}

/// The `q` quantile of a mixture of distributions weighted by request counts (bisection on
/// the mixture's CDF). `None` without requests.
pub fn mixture_quantile(parts: &[(f64, Latency)], q: f64) -> Option<f64> {
    let total: f64 = parts.iter().map(|(n, _)| n).sum();
    if total <= 0.0 {
        return None;
    }
    let cdf = |x: f64| parts.iter().map(|(n, l)| n * l.cdf(x)).sum::<f64>() / total;
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while cdf(hi) < q && hi < 1e6 {
        hi *= 2.0;
    }
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) >= q { hi = mid } else { lo = mid }
    }
    Some(hi)
}

/// Φ(z) via erf (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_latency_is_a_step() {
        let l = Latency::fixed(0.05);
        assert_eq!(l.cdf(0.049), 0.0);
        assert_eq!(l.cdf(0.05), 1.0);
        assert_eq!(l.mean(), 0.05);
    }

    #[test]
    fn log_normal_hits_its_median_and_p99() {
        let l = Latency::new(0.1, Some(0.5));
        assert!((l.cdf(0.1) - 0.5).abs() < 1e-6);
        assert!((l.cdf(0.5) - 0.99).abs() < 1e-4);
        let p99 = mixture_quantile(&[(10.0, l)], 0.99).unwrap();
        assert!((p99 - 0.5).abs() < 0.005, "{p99}");
    }

    #[test]
    fn duty_cycle_edges_and_state() {
        let d = Duty {
            period: 10.0,
            on: 2.5,
        };
        assert!(d.is_on(0.0) && d.is_on(12.4) && !d.is_on(2.5) && !d.is_on(19.9));
        let mut edges = Vec::new();
        d.edges(1.0, 21.0, &mut edges);
        assert_eq!(edges, [2.5, 10.0, 12.5, 20.0]);
    }

    #[test]
    fn samples_and_scaling() {
        let l = Latency::new(0.1, Some(0.5));
        assert!((l.sample(0.0) - 0.1).abs() < 1e-12);
        assert!((l.sample(Z99) - 0.5).abs() < 1e-9);
        assert_eq!(Latency::fixed(0.05).sample(3.0), 0.05);
        assert!((l.scaled(3.0).cdf(1.5) - 0.99).abs() < 1e-4);
    }

    #[test]
    fn mixture_quantile_weights_by_requests() {
        let fast = Latency::fixed(0.05);
        let slow = Latency::fixed(1.5);
        // 2 % slow requests: the P99 is slow, the P97 is fast.
        let parts = [(98.0, fast), (2.0, slow)];
        assert!((mixture_quantile(&parts, 0.99).unwrap() - 1.5).abs() < 1e-6);
        assert!((mixture_quantile(&parts, 0.97).unwrap() - 0.05).abs() < 1e-6);
        assert_eq!(mixture_quantile(&[], 0.99), None);
    }
}
