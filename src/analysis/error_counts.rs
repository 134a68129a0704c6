//! The judge's `counts` test: a success-rate query `ok / total * 100` split into its two
//! rates, each run for the canary and the primary over the metric's whole window, turned into
//! counts of errors and requests, and the two error rates compared (`judge::judge_counts`).
//!
//! Why split the query rather than ask for two more: the builtin `request-success-rate` of
//! every provider, and the templates users write in its image, already hold both rates;
//! the counts follow from them (`rate × window`) with no new field to fill in.

use super::builtin::Builtin;
use super::comparison::{At, queries};
use super::judge::{self, Settings};
use super::provider::{QueryError, Reading};
use super::{Analyzer, MetricCheck};
use serin_core::stats::Counts;

/// `(ok, total)` of a query `ok / total` or `ok / total * 100`; `None` for any other shape.
pub(super) fn split_ratio(query: &str) -> Option<(String, String)> {
    let [slash] = top_level(query, '/')[..] else {
        return None;
    };
    let (ok, rest) = (query[..slash].trim(), query[slash + 1..].trim());
    let total = match top_level(rest, '*')[..] {
        [] => rest,
        [star] if rest[star + 1..].trim() == "100" => rest[..star].trim(),
        _ => return None,
    };
    let plain = |s: &str| !s.is_empty() && top_level(s, '*').is_empty();
    (plain(ok) && plain(total)).then(|| (ok.to_string(), total.to_string()))
}

/// Byte positions of `wanted` outside brackets and quotes (label values hold `/` and `*`).
fn top_level(query: &str, wanted: char) -> Vec<usize> {
    let (mut depth, mut quote, mut found) = (0i32, None, Vec::new());
    for (i, c) in query.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => depth -= 1,
            (None, c) if c == wanted && depth == 0 => found.push(i),
            _ => {}
        }
    }
    found
}

/// Requests and errors of one version from its rates (per second) over `seconds`.
fn counts(ok_rate: f64, total_rate: f64, seconds: f64) -> Counts {
    let requests = (total_rate.max(0.0) * seconds).round() as u64;
    let errors = ((total_rate - ok_rate).max(0.0) * seconds).round() as u64;
    Counts {
        errors: errors.min(requests),
        requests,
    }
}

impl Analyzer {
    pub(super) async fn compare_counts(
        &self,
        mut result: MetricCheck,
        at: At<'_>,
        settings: Settings,
    ) -> MetricCheck {
        let wrong_shape = || {
            QueryError::config(
                "judge.test counts: the query must be a success rate `ok / total * 100` (as \
                 the builtin request-success-rate); use mannWhitney or permutation for others",
            )
        };
        if at.resolved.provider != "prometheus"
            || at.resolved.builtin == Some(Builtin::RequestDuration)
        {
            return result.failed(&wrong_shape());
        }
        let seconds = at.window.as_secs_f64();
        let (canary_query, primary_query) = match queries(&at, &format!("{}s", at.window.as_secs()))
        {
            Ok(q) => q,
            Err(e) => return result.failed(&e),
        };
        let (Some(canary), Some(primary)) =
            (split_ratio(&canary_query), split_ratio(&primary_query))
        else {
            return result.failed(&wrong_shape());
        };
        result.query = Some(canary_query.clone());
        let backend = &at.resolved.backend;
        let sent = std::time::Instant::now();
        let (c_ok, c_total, p_ok, p_total) = futures::join!(
            backend.query(&self.http, at.query(&canary.0)),
            backend.query(&self.http, at.query(&canary.1)),
            backend.query(&self.http, at.query(&primary.0)),
            backend.query(&self.http, at.query(&primary.1)),
        );
        result.latency = Some(sent.elapsed());
        // No series is no request (total) or no success (ok: every request failed).
        let rate = |r: Result<Reading, QueryError>| match r {
            Ok(Reading::Value(v)) if v.is_finite() => Ok(v),
            Ok(_) => Ok(0.0),
            Err(e) => Err(e),
        };
        let rates = (rate(c_ok), rate(c_total), rate(p_ok), rate(p_total));
        let (c_ok, c_total, p_ok, p_total) = match rates {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => {
                return result.query_failed(at.metric, &e);
            }
        };
        let judged = judge::judge_counts(
            counts(c_ok, c_total, seconds),
            counts(p_ok, p_total, seconds),
            &settings,
        );
        result.observation.threshold_min = None;
        result.observation.threshold_max = None;
        result.verdict(at.metric, judged, settings.min_samples, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_success_rate_splits_into_two_rates() {
        for observer in <super::super::builtin::Observer as strum::IntoEnumIterator>::iter() {
            let query = super::super::builtin::query(observer, Builtin::RequestSuccessRate)
                .expect("builtin");
            let (ok, total) = split_ratio(query).unwrap_or_else(|| panic!("{query}"));
            assert!(
                ok.starts_with("sum(") && ok.ends_with(')'),
                "{observer:?}: {ok}"
            );
            assert!(
                total.starts_with("sum(") && total.ends_with(')'),
                "{observer:?}: {total}"
            );
            assert!(!total.contains("100"), "{observer:?}: {total}");
        }
    }

    #[test]
    fn a_slash_in_a_label_or_a_second_division_is_not_the_ratio() {
        let q =
            r#"sum(rate(x{path="/a/b", code!~"5.*"}[1m])) / sum(rate(x{path="/a/b"}[1m])) * 100"#;
        let (ok, total) = split_ratio(q).unwrap();
        assert_eq!(ok, r#"sum(rate(x{path="/a/b", code!~"5.*"}[1m]))"#);
        assert_eq!(total, r#"sum(rate(x{path="/a/b"}[1m]))"#);
        assert_eq!(split_ratio("a / b / c"), None);
        assert_eq!(
            split_ratio("histogram_quantile(0.99, sum(rate(x[1m])) by (le))"),
            None
        );
        assert_eq!(split_ratio("a / b * 1000"), None);
    }

    #[test]
    fn rates_become_counts_over_the_window() {
        // 20 requests a second, 19.9 of them fine, over 2 minutes.
        assert_eq!(
            counts(19.9, 20.0, 120.0),
            Counts {
                errors: 12,
                requests: 2400
            }
        );
        // A success rate above the total (scrapes out of step) is no error, not negative.
        assert_eq!(counts(20.5, 20.0, 10.0).errors, 0);
        assert_eq!(counts(0.0, 0.0, 60.0).requests, 0);
    }
}
