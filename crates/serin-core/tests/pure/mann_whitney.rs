//! `stats::mann_whitney_u` against scipy's own answers. The fixture comes from
//! `scripts/fixtures/mannwhitneyu.py` (scipy.stats.mannwhitneyu, method="asymptotic",
//! use_continuity=True); re-run that script to change the cases.

use crate::common;

use std::collections::BTreeSet;

use common::{ScipyFixture, scipy_fixture};
use serde::Deserialize;
use serin_core::stats::{Alternative, mann_whitney_u};

#[derive(Deserialize)]
struct Case {
    name: String,
    alternative: String,
    x: Vec<f64>,
    y: Vec<f64>,
    u: f64,
    p: f64,
}

fn fixture() -> ScipyFixture<Case> {
    scipy_fixture("mannwhitneyu.json")
}

fn alternative(name: &str) -> Alternative {
    match name {
        "two-sided" => Alternative::TwoSided,
        "less" => Alternative::Less,
        "greater" => Alternative::Greater,
        other => panic!("unknown alternative {other:?}"),
    }
}

/// Relative 2e-10, from p near 1 to the far tail (p down to 1e-67): the precision of the
/// normal tail serin computes with statrs' erfc (about 1e-10), far beyond what comparing a
/// p-value with a level of 1e-4 or more needs.
fn p_close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 2e-10 * want.abs()
}

#[test]
fn matches_scipy_asymptotic() {
    let fixture = fixture();
    let names: BTreeSet<&str> = fixture.cases.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.len() >= 20,
        "only {} distinct cases in the fixture",
        names.len()
    );

    let mut failures = Vec::new();
    for case in &fixture.cases {
        let got = mann_whitney_u(&case.x, &case.y, alternative(&case.alternative)).unwrap();
        assert_eq!((got.n_x, got.n_y), (case.x.len(), case.y.len()));
        if (got.u - case.u).abs() > 1e-9 || !p_close(got.p_value, case.p) {
            failures.push(format!(
                "{} {}: u {} vs {}, p {:e} vs {:e}",
                case.name, case.alternative, got.u, case.u, got.p_value, case.p
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "differs from scipy {}:\n{}",
        fixture.scipy_version,
        failures.join("\n")
    );
}
