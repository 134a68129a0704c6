//! One chart per metric of the release: each analysis' value (a point) against its accepted
//! range (dashed lines), as inline SVG. A failed check is a square besides its colour
//! (orange; passes are blue), and every point says its value in words (`<title>`). A judged
//! metric also shows the primary's side of each analysis (hollow grey rings), the test's
//! p-value in the canary's titles, and a second chart of the samples its last analysis
//! compared: the canary's (blue dots, joined) against the primary's (grey rings, dashed).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::esc;
use super::series::{Point, Series};
use crate::api::canary::JudgedSamples;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 160.0;
const PAD: f64 = 28.0;

/// The "Metrics over the release" section, empty when no analysis is in the release.
pub fn section(series: &BTreeMap<String, Series>) -> String {
    if series.values().all(|s| s.points.is_empty()) {
        return String::new();
    }
    let mut out = String::from("<h2>Metrics over the release</h2>");
    for (name, s) in series {
        chart(&mut out, name, s);
        if let Some(samples) = &s.samples {
            samples_chart(&mut out, name, samples);
        }
    }
    out
}

/// The value axis' bottom and top for `values` (finite ones), never empty.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match (low.is_finite(), high.is_finite()) {
        (true, true) if high > low => (low, high),
        (true, true) => (low - 1.0, high + 1.0),
        _ => (0.0, 1.0),
    }
}

/// The figure's opening, its caption and the value axis' two labels.
fn open(out: &mut String, class: &str, name: &str, caption: &str, label: &str, axis: (f64, f64)) {
    let _ = write!(
        out,
        "<figure><figcaption>{}</figcaption>\
         <svg class=\"{class}\" data-metric=\"{}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{}\">",
        esc(caption),
        esc(name),
        esc(label)
    );
    let (low, high) = axis;
    for v in [high, low] {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            WIDTH - 2.0,
            scale_y(v, axis) + 3.0,
            round(v)
        );
    }
}

fn scale_y(v: f64, (low, high): (f64, f64)) -> f64 {
    HEIGHT - PAD - (v - low) / (high - low) * (HEIGHT - 2.0 * PAD)
}

/// The x of the `i`th of `n` points.
fn scale_x(i: usize, n: usize) -> f64 {
    PAD + (WIDTH - 2.0 * PAD) / (n.max(2) - 1) as f64 * i as f64
}

fn chart(out: &mut String, name: &str, s: &Series) {
    let points = &s.points;
    let axis = bounds(
        points
            .iter()
            .flat_map(|p| [p.value, p.baseline])
            .chain([s.min, s.max])
            .flatten(),
    );
    let y = |v: f64| scale_y(v, axis);
    let x = |i: usize| scale_x(i, points.len());
    let count = match points.len() {
        1 => "1 analysis".to_string(),
        n => format!("{n} analyses"),
    };
    let caption = format!("{name}: {count}");
    let label = format!("{name} over the release");
    open(out, "metric", name, &caption, &label, axis);
    for (bound, label) in [(s.min, "min"), (s.max, "max")] {
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
        point(out, p, x(i), y);
    }
    out.push_str("</svg></figure>");
}

/// One analysis: the primary's ring (judged metrics), then the canary's mark.
fn point(out: &mut String, p: &Point, cx: f64, y: impl Fn(f64) -> f64) {
    if let Some(b) = p.baseline.filter(|b| b.is_finite()) {
        let _ = write!(
            out,
            "<circle class=\"baseline\" data-value=\"{b}\" cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"5\" \
             fill=\"none\" stroke=\"#777\"><title>{} primary {b}</title></circle>",
            y(b),
            p.time.format("%H:%M:%S")
        );
    }
    let Some(v) = p.value.filter(|v| v.is_finite()) else {
        return;
    };
    let cy = y(v);
    let verdict = if p.passed { "pass" } else { "fail" };
    let judged = p.p_value.map_or(String::new(), |p| format!(", p = {p:.4}"));
    let title = esc(&format!(
        "{} {v} ({verdict}{judged})",
        p.time.format("%H:%M:%S")
    ));
    if p.passed {
        let _ = write!(
            out,
            "<circle class=\"point pass\" data-value=\"{v}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" \
             r=\"4\" fill=\"#0b5cad\"><title>{title}</title></circle>"
        );
    } else {
        let _ = write!(
            out,
            "<rect class=\"point fail\" data-value=\"{v}\" x=\"{:.1}\" y=\"{:.1}\" \
             width=\"8\" height=\"8\" fill=\"#b35900\"><title>{title}</title></rect>",
            cx - 4.0,
            cy - 4.0
        );
    }
}

/// The samples a judge compared in its last analysis, both sides over the same window.
fn samples_chart(out: &mut String, name: &str, samples: &JudgedSamples) {
    if samples.canary.is_empty() && samples.primary.is_empty() {
        return;
    }
    let axis = bounds(samples.canary.iter().chain(&samples.primary).copied());
    let caption = format!(
        "{name}, last analysis: {} canary and {} primary samples",
        samples.canary.len(),
        samples.primary.len()
    );
    let label = format!("{name}: the samples the judge compared");
    open(out, "samples", name, &caption, &label, axis);
    for (side, values, line) in [
        (
            "primary",
            &samples.primary,
            "stroke=\"#777\" stroke-dasharray=\"4 3\"",
        ),
        ("canary", &samples.canary, "stroke=\"#0b5cad\""),
    ] {
        let n = values.len();
        let path: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", scale_x(i, n), scale_y(*v, axis)))
            .collect();
        let _ = write!(
            out,
            "<polyline points=\"{}\" fill=\"none\" {line}><title>{side}</title></polyline>",
            path.join(" ")
        );
        for (i, v) in values.iter().enumerate() {
            let (cx, cy) = (scale_x(i, n), scale_y(*v, axis));
            let fill = if side == "canary" {
                "fill=\"#0b5cad\""
            } else {
                "fill=\"none\" stroke=\"#777\""
            };
            let _ = write!(
                out,
                "<circle class=\"sample {side}\" data-value=\"{v}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" \
                 r=\"3\" {fill}><title>{side} {v}</title></circle>"
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
            passed,
            baseline: None,
            p_value: None,
        }
    }

    fn one(
        name: &str,
        points: Vec<Point>,
        samples: Option<JudgedSamples>,
    ) -> BTreeMap<String, Series> {
        BTreeMap::from([(
            name.to_string(),
            Series {
                points,
                min: None,
                max: Some(1.0),
                samples,
            },
        )])
    }

    #[test]
    fn a_point_per_analysis_with_its_value_and_verdict() {
        let points = vec![
            point(1, 0.2, true),
            point(2, 3.5, false),
            point(3, 0.1, true),
        ];
        let html = section(&one("<error-rate>", points, None));
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
        assert!(!html.contains("class=\"samples\""), "no judge, no samples");
        assert_eq!(section(&BTreeMap::new()), "");
    }

    #[test]
    fn a_judged_metric_shows_the_primary_the_p_value_and_the_samples() {
        let judged = Point {
            baseline: Some(0.4),
            p_value: Some(0.0123),
            ..point(1, 0.9, true)
        };
        let samples = JudgedSamples {
            canary: vec![0.8, 1.0, 0.9],
            primary: vec![0.4, 0.5],
        };
        let html = section(&one("latency", vec![judged], Some(samples)));
        assert!(
            html.contains("class=\"baseline\" data-value=\"0.4\""),
            "{html}"
        );
        assert!(html.contains("0.9 (pass, p = 0.0123)"), "{html}");
        assert!(html.contains("3 canary and 2 primary samples"), "{html}");
        assert_eq!(html.matches("class=\"sample canary\"").count(), 3);
        assert_eq!(html.matches("class=\"sample primary\"").count(), 2);
        assert!(html.contains("<title>canary 1</title>"), "{html}");
    }
}
