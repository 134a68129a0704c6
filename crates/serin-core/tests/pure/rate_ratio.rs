//! `stats::rate_ratio_test` against scipy's own answers. The fixture comes from
//! `scripts/fixtures/rate_ratio.py` (scipy.stats.binomtest, alternative="greater", on the
//! errors of both versions); re-run that script to change the cases.

use crate::common;

use common::{ScipyFixture, scipy_fixture};
use serde::Deserialize;
use serin_core::stats::{Counts, rate_ratio_test};

#[derive(Deserialize)]
struct Case {
    name: String,
    x_errors: u64,
    x_requests: u64,
    y_errors: u64,
    y_requests: u64,
    ratio: f64,
    p: f64,
}

fn fixture() -> ScipyFixture<Case> {
    scipy_fixture("rate_ratio.json")
}

/// Relative 1e-9 (statrs' incomplete beta and scipy's differ in the last digits), absolute
/// 1e-12 near 0.
fn p_close(got: f64, want: f64) -> bool {
    let diff = (got - want).abs();
    diff <= 1e-12 || diff <= 1e-9 * want.abs()
}

#[test]
fn matches_scipy_binomtest() {
    let fixture = fixture();
    assert!(fixture.cases.len() >= 12, "{} cases", fixture.cases.len());
    let mut wrong = Vec::new();
    for case in &fixture.cases {
        let x = Counts {
            errors: case.x_errors,
            requests: case.x_requests,
        };
        let y = Counts {
            errors: case.y_errors,
            requests: case.y_requests,
        };
        let got = rate_ratio_test(x, y, case.ratio).unwrap();
        if !p_close(got, case.p) {
            wrong.push(format!("{}: got {got:e}, scipy {:e}", case.name, case.p));
        }
    }
    assert!(
        wrong.is_empty(),
        "against scipy {}:\n{}",
        fixture.scipy_version,
        wrong.join("\n")
    );
}

#[test]
fn the_fixture_spans_clear_passes_and_clear_failures() {
    let ps: Vec<f64> = fixture().cases.iter().map(|c| c.p).collect();
    assert!(ps.iter().any(|p| *p < 1e-10), "{ps:?}");
    assert!(ps.iter().any(|p| *p > 0.9), "{ps:?}");
}
