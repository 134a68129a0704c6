//! One chart per metric on a Canary's page: each analysis' value (a point) against its
//! accepted range (dashed lines), as inline SVG. A failed check is a square besides its
//! colour (orange; passes are blue), and every point says its value in words (`<title>`).
//! A judged metric also shows the primary's side of each analysis (hollow grey rings) and
//! the test's p-value in the canary's titles.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::pages::esc;
use super::series::Point;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 160.0;
const PAD: f64 = 28.0;

/// The "Metrics over the release" section, empty when no analysis was seen.
pub fn section(series: &BTreeMap<String, Vec<Point>>) -> String {
    if series.values().all(Vec::is_empty) {
        return String::new();
    }
    let mut out = String::from("<h2>Metrics over the release</h2>");
    for (name, points) in series {
        chart(&mut out, name, points);
    }
    out
}

fn chart(out: &mut String, name: &str, points: &[Point]) {
    let values: Vec<f64> = points
        .iter()
        .flat_map(|p| [p.value, p.min, p.max, p.baseline])
        .flatten()
        .filter(|v| v.is_finite())
        .collect();
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = match (low.is_finite(), high.is_finite()) {
        (true, true) if high > low => (low, high),
        (true, true) => (low - 1.0, high + 1.0),
        _ => (0.0, 1.0),
    };
    let y = |v: f64| HEIGHT - PAD - (v - low) / (high - low) * (HEIGHT - 2.0 * PAD);
    let step = (WIDTH - 2.0 * PAD) / (points.len().max(2) - 1) as f64;
    let x = |i: usize| PAD + step * i as f64;
    let _ = write!(
        out,
        "<figure><figcaption>{}: {} {}</figcaption>\
         <svg class=\"metric\" data-metric=\"{}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{} over the release\">",
        esc(name),
        points.len(),
        if points.len() == 1 {
            "analysis"
        } else {
            "analyses"
        },
        esc(name),
        esc(name)
    );
    // The value axis: its top and bottom, at the right.
    for v in [high, low] {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            WIDTH - 2.0,
            y(v) + 3.0,
            round(v)
        );
    }
    let last = points.last();
    for (bound, label) in [
        (last.and_then(|p| p.min), "min"),
        (last.and_then(|p| p.max), "max"),
    ] {
        if let Some(b) = bound.filter(|b| b.is_finite()) {
            let _ = write!(
                out,
                "<line x1=\"{PAD}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#777\" \
                 stroke-dasharray=\"4 3\"><title>{label} {b}</title></line>\
                 <text x=\"2\" y=\"{y0:.1}\" font-size=\"10\">{label} {b}</text>",
                WIDTH - PAD,
                y0 = y(b)
            );
        }
    }
    for (i, p) in points.iter().enumerate() {
        if let Some(b) = p.baseline.filter(|b| b.is_finite()) {
            let _ = write!(
                out,
                "<circle class=\"baseline\" data-value=\"{b}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" \
                 fill=\"none\" stroke=\"#777\"><title>{} primary {b}</title></circle>",
                x(i),
                y(b),
                p.time.format("%H:%M:%S")
            );
        }
        let Some(v) = p.value.filter(|v| v.is_finite()) else {
            continue;
        };
        let (cx, cy) = (x(i), y(v));
        let verdict = if p.passed { "pass" } else { "fail" };
        let judged = p.p_value.map_or(String::new(), |p| format!(", p = {p:.4}"));
        let title = format!("{} {v} ({verdict}{judged})", p.time.format("%H:%M:%S"));
        if p.passed {
            let _ = write!(
                out,
                "<circle class=\"point pass\" data-value=\"{v}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" \
                 r=\"4\" fill=\"#0b5cad\"><title>{}</title></circle>",
                esc(&title)
            );
        } else {
            let _ = write!(
                out,
                "<rect class=\"point fail\" data-value=\"{v}\" x=\"{:.1}\" y=\"{:.1}\" \
                 width=\"8\" height=\"8\" fill=\"#b35900\"><title>{}</title></rect>",
                cx - 4.0,
                cy - 4.0,
                esc(&title)
            );
        }
    }
    out.push_str("</svg></figure>");
}

/// A value as an axis shows it: at most three decimals, no trailing zeros.
fn round(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn point(second: u32, value: f64, passed: bool) -> Point {
        Point {
            time: Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, second).unwrap(),
            value: Some(value),
            min: None,
            max: Some(1.0),
            passed,
            baseline: None,
            p_value: None,
        }
    }

    #[test]
    fn a_point_per_analysis_with_its_value_and_verdict() {
        let mut series = BTreeMap::new();
        series.insert(
            "<error-rate>".to_string(),
            vec![
                point(1, 0.2, true),
                point(2, 3.5, false),
                point(3, 0.1, true),
            ],
        );
        let html = section(&series);
        assert_eq!(html.matches("class=\"point").count(), 3);
        assert!(html.contains("data-value=\"3.5\""), "{html}");
        assert!(html.contains("08:00:02 3.5 (fail)"), "{html}");
        assert!(html.contains("max 1"), "{html}");
        assert!(
            html.contains(">3.5</text>") && html.contains(">0.1</text>"),
            "{html}"
        );
        assert!(html.contains("&lt;error-rate&gt;: 3 analyses"), "{html}");
        assert!(!html.contains("<error-rate>"));
        assert_eq!(section(&BTreeMap::new()), "");
    }

    #[test]
    fn a_judged_metric_shows_the_primary_and_the_p_value() {
        let judged = Point {
            baseline: Some(0.4),
            p_value: Some(0.0123),
            ..point(1, 0.9, true)
        };
        let html = section(&BTreeMap::from([("latency".to_string(), vec![judged])]));
        assert!(
            html.contains("class=\"baseline\" data-value=\"0.4\""),
            "{html}"
        );
        assert!(html.contains("0.9 (pass, p = 0.0123)"), "{html}");
    }
}
