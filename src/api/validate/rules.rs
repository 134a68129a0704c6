//! Semantic rules: what a well-typed object must also satisfy. Each rule names the field
//! path it reports, exactly as `serin check` prints it.

use std::collections::HashSet;

use super::Problem;
use crate::api::alert_provider::AlertProviderSpec;
use crate::api::canary::{CanaryAnalysis, CanarySpec, Provider};
use crate::api::duration::parse_duration;
use crate::api::metric_template::MetricTemplateSpec;

/// Every semantic problem of a Canary spec. `default_provider` applies when `spec.provider`
/// is not set (the controller's `--mesh-provider`).
pub(super) fn canary_spec(spec: &CanarySpec, default_provider: Provider) -> Vec<Problem> {
    let mut problems = Vec::new();
    let p = &mut problems;

    match (&spec.analysis, &spec.canary_analysis) {
        (Some(analysis), _) => analysis_rules(spec, analysis, "spec.analysis", p),
        (None, Some(analysis)) => analysis_rules(spec, analysis, "spec.canaryAnalysis", p),
        (None, None) => p.push(Problem::new(
            "spec.analysis",
            "required field is missing: set the analysis (interval, threshold, and one of \
             stepWeight, stepWeights or iterations)",
        )),
    }

    routing_rules(spec, default_provider, p);
    if let Some(policy) = &spec.service.traffic_policy {
        traffic_policy_rules(policy, p);
    }
    problems
}

/// The `oneOf`s of Flagger's schema for the Istio traffic policy (the CRD says them as CEL
/// rules; checked here too, for `serin check` and for API servers that skip CEL).
fn traffic_policy_rules(policy: &crate::api::canary::TrafficPolicy, p: &mut Vec<Problem>) {
    let Some(lb) = &policy.load_balancer else {
        return;
    };
    let at = "spec.service.trafficPolicy.loadBalancer";
    if lb.simple.is_some() == lb.consistent_hash.is_some() {
        p.push(Problem::new(
            at,
            "set exactly one of simple (an algorithm) and consistentHash (session affinity)",
        ));
    }
    if let Some(hash) = &lb.consistent_hash {
        let set = [
            hash.http_header_name.is_some(),
            hash.http_cookie.is_some(),
            hash.use_source_ip.is_some(),
            hash.http_query_parameter_name.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            p.push(Problem::new(
                format!("{at}.consistentHash"),
                "set exactly one of httpHeaderName, httpCookie, useSourceIp and \
                 httpQueryParameterName",
            ));
        }
    }
}

// Long on purpose: one rule per field of `spec.analysis`, in the CRD's order, so a field's
// rule is found by reading down; split up, the table would be scattered.
fn analysis_rules(spec: &CanarySpec, a: &CanaryAnalysis, at: &str, p: &mut Vec<Problem>) {
    if let Some(interval) = &a.interval
        && let Err(e) = parse_duration(interval)
    {
        p.push(Problem::new(format!("{at}.interval"), e.to_string()));
    }

    let set: Vec<&str> = [
        ("iterations", a.iterations.is_some()),
        ("stepWeight", a.step_weight.is_some()),
        ("stepWeights", a.step_weights.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    if set.len() > 1 {
        p.push(Problem::new(
            at,
            format!(
                "{} {} set; set only one: iterations (A/B testing, Blue/Green), \
                 stepWeight or stepWeights (canary)",
                set.join(" and "),
                if set.len() == 2 {
                    "are both"
                } else {
                    "are all"
                }
            ),
        ));
    } else if set.is_empty() && spec.skip_analysis != Some(true) {
        p.push(Problem::new(
            at,
            "no release strategy: set one of iterations (A/B testing, Blue/Green), stepWeight \
             or stepWeights (canary), or skipAnalysis: true",
        ));
    }

    if a.r#match.as_ref().is_some_and(|m| !m.is_empty()) && a.iterations.unwrap_or(0) <= 0 {
        p.push(Problem::new(
            format!("{at}.match"),
            "match conditions (A/B testing) need iterations: set iterations to the number of \
             checks to run",
        ));
    }

    if let Some(weights) = &a.step_weights {
        if let Some(w) = weights.iter().find(|w| !(1..=100).contains(*w)) {
            p.push(Problem::new(
                format!("{at}.stepWeights"),
                format!("{w} is not a traffic percentage: every weight must be between 1 and 100"),
            ));
        }
        if let Some(pair) = weights.windows(2).find(|pair| pair[0] >= pair[1]) {
            p.push(Problem::new(
                format!("{at}.stepWeights"),
                format!(
                    "weights must be strictly increasing, but {} follows {}",
                    pair[1], pair[0]
                ),
            ));
        }
    }
    for (field, value) in [("maxWeight", a.max_weight), ("stepWeight", a.step_weight)] {
        if let Some(w) = value
            && !(1..=100).contains(&w)
        {
            p.push(Problem::new(
                format!("{at}.{field}"),
                format!("{w} is not a traffic percentage: use a value between 1 and 100"),
            ));
        }
    }

    let mut names = HashSet::new();
    for (i, m) in a.metrics().iter().enumerate() {
        let mp = format!("{at}.metrics[{i}]");
        if !m.is_builtin() && m.template_ref.is_none() && m.query.is_none() {
            p.push(Problem::new(
                &mp,
                format!(
                    "`{}` is not a builtin metric ({}) and has no templateRef or query: \
                     reference a MetricTemplate with templateRef",
                    m.name,
                    crate::api::canary::CanaryMetric::BUILTIN.join(", ")
                ),
            ));
        }
        // Flagger's API server checks only its pattern: `1min` is a Graphite template's
        // interval; a provider that reads it as a duration says so when it runs.
        if let Some(interval) = &m.interval
            && let Err(e) = parse_duration(interval)
            && !crate::api::duration::matches_crd_pattern(interval)
        {
            p.push(Problem::new(format!("{mp}.interval"), e.to_string()));
        }
        if let Some(query) = &m.query
            && let Err(e) = crate::analysis::template::check_cost(query)
        {
            p.push(Problem::new(format!("{mp}.query"), e.to_string()));
        }
        if let Some(judge) = &m.judge {
            judge_rules(judge, &m.name, &format!("{mp}.judge"), p);
        }
        if let Some(range) = &m.threshold_range
            && let (Some(min), Some(max)) = (range.min, range.max)
            && min > max
        {
            p.push(Problem::new(
                format!("{mp}.thresholdRange"),
                format!("min ({min}) is greater than max ({max}): no value can pass"),
            ));
        }
        if !names.insert(m.name.as_str()) {
            p.push(Problem::new(
                format!("{mp}.name"),
                format!(
                    "duplicate metric name `{}`: metric names must be unique",
                    m.name
                ),
            ));
        }
    }

    for (i, w) in a.webhooks().iter().enumerate() {
        let wp = format!("{at}.webhooks[{i}]");
        if let Some(timeout) = &w.timeout
            && let Err(e) = parse_duration(timeout)
        {
            p.push(Problem::new(format!("{wp}.timeout"), e.to_string()));
        }
        if !is_http_url(&w.url) {
            p.push(Problem::new(
                format!("{wp}.url"),
                format!(
                    "`{}` is not an absolute http:// or https:// URL, e.g. \
                     http://flagger-loadtester.test/",
                    w.url
                ),
            ));
        }
    }

    if let Some(affinity) = &a.session_affinity
        && affinity.primary_cookie_name.as_deref() == Some(affinity.cookie_name.as_str())
    {
        p.push(Problem::new(
            format!("{at}.sessionAffinity.primaryCookieName"),
            format!(
                "`{}` is also the cookieName: the primary and canary cookies need different names",
                affinity.cookie_name
            ),
        ));
    }
}

fn routing_rules(spec: &CanarySpec, default_provider: Provider, p: &mut Vec<Problem>) {
    let provider = spec.provider_or(default_provider);
    let via = if spec.provider.is_some() {
        format!("provider `{provider}`")
    } else {
        format!("the default provider `{provider}`")
    };
    match provider {
        Provider::Nginx | Provider::Skipper if spec.ingress_ref.is_none() => {
            p.push(Problem::new(
                "spec.ingressRef",
                format!("{via} routes through an Ingress: set ingressRef to it"),
            ));
        }
        Provider::Apisix if spec.route_ref.is_none() => p.push(Problem::new(
            "spec.routeRef",
            format!("{via} routes through an ApisixRoute: set routeRef to it"),
        )),
        gw if gw.is_gateway_api()
            && spec.service.gateway_refs.as_ref().is_none_or(Vec::is_empty) =>
        {
            p.push(Problem::new(
                "spec.service.gatewayRefs",
                format!("{via} needs the Gateways the HTTPRoute attaches to: set gatewayRefs"),
            ));
        }
        _ => {}
    }
    // Port 0 is what an absent `service` reads as (a given but broken port is reported by
    // the schema check at the same path).
    if !spec.is_knative_target() && spec.service.port == 0 {
        p.push(Problem::new(
            "spec.service.port",
            "required: set spec.service.port, the port of the Services serin generates (only \
             a Knative Service target goes without spec.service)",
        ));
    }
    if spec.is_knative_target() {
        if provider != Provider::Knative {
            p.push(Problem::new(
                "spec.provider",
                format!(
                    "a Knative Service target is routed by Knative itself, not by {via}: set \
                     provider: knative"
                ),
            ));
        }
        if spec.autoscaler_ref.is_some() {
            p.push(Problem::new(
                "spec.autoscalerRef",
                "a Knative Service scales itself: remove autoscalerRef",
            ));
        }
    } else if provider == Provider::Knative {
        p.push(Problem::new(
            "spec.targetRef",
            "provider knative needs a Knative Service target (kind: Service, apiVersion: \
             serving.knative.dev/v1)",
        ));
    }
}

/// Absolute `http://` or `https://` URL with a host.
fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    let Some(rest) = rest else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    !host.is_empty()
        && !host.starts_with(':')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Semantic problems of a MetricTemplate spec (the schema covers the rest).
pub(super) fn metric_template_spec(spec: &MetricTemplateSpec) -> Vec<Problem> {
    let mut problems: Vec<Problem> = go_template_constructs(&spec.query)
        .iter()
        .map(|construct| Problem::new("spec.query", go_template_message(construct)))
        .collect();
    if problems.is_empty()
        && let Err(e) = crate::analysis::template::check_cost(&spec.query)
    {
        problems.push(Problem::new("spec.query", e.to_string()));
    }
    if let Some(baseline) = &spec.baseline_query
        && let Err(e) = crate::analysis::template::check_cost(baseline)
    {
        problems.push(Problem::new("spec.baselineQuery", e.to_string()));
    }
    problems
}

/// What to tell about a Go template construct in a query.
pub fn go_template_message(construct: &str) -> String {
    format!(
        "`{construct}` is Go text/template syntax (Flagger renders queries with Go templates); \
         serin's queries take only the variables {{{{ name }}}}, {{{{ namespace }}}}, \
         {{{{ target }}}}, {{{{ service }}}}, {{{{ ingress }}}}, {{{{ route }}}}, \
         {{{{ interval }}}} and {{{{ variables.<key> }}}}: write the query with those (a value \
         to compute can come from the Canary's templateVariables)"
    )
}

/// Go text/template actions, functions and field/variable references a Flagger query may
/// use and serin's renderer does not take: each `{{ ... }}` that opens with one, as written.
pub fn go_template_constructs(query: &str) -> Vec<String> {
    const GO_WORDS: &[&str] = &[
        "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
        "printf", "print", "println", "index", "len", "slice", "and", "or", "not", "eq", "ne",
        "lt", "le", "gt", "ge", "call", "html", "js", "urlquery",
    ];
    let mut found = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let inner = after[..end].trim_start_matches('-').trim();
        let first = inner.split_whitespace().next().unwrap_or_default();
        let word = first.trim_end_matches(|c: char| !c.is_alphanumeric());
        if first.starts_with('.') || first.starts_with('$') || GO_WORDS.contains(&word) {
            let shown = format!("{{{{ {} }}}}", inner.trim_end_matches('-').trim());
            if !found.contains(&shown) {
                found.push(shown);
            }
        }
        rest = &after[end + 2..];
    }
    found
}

/// Semantic problems of an AlertProvider spec.
pub(super) fn alert_provider_spec(spec: &AlertProviderSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if spec.address.is_none() && spec.secret_ref.is_none() {
        problems.push(Problem::new(
            "spec",
            "nowhere to send alerts: set address, or secretRef to a Secret with an `address` key",
        ));
    }
    problems
}

/// `metrics[].judge`: each setting within its meaning.
fn judge_rules(j: &crate::api::canary::MetricJudge, metric: &str, at: &str, p: &mut Vec<Problem>) {
    use crate::api::canary::{JudgeTest, Worse};
    if j.test == Some(JudgeTest::Counts) {
        if metric == "request-duration" {
            p.push(Problem::new(
                format!("{at}.test"),
                "counts compares error rates and request-duration is a latency: use \
                 mannWhitney (the default) or permutation",
            ));
        }
        if j.worse == Some(Worse::Lower) {
            p.push(Problem::new(
                format!("{at}.worse"),
                "counts compares error rates, where higher is always worse: remove `worse`",
            ));
        }
    }
    if let Some(c) = j.confidence
        && !(c > 0.0 && c < 1.0)
    {
        p.push(Problem::new(
            format!("{at}.confidence"),
            format!("{c} is not a probability between 0 and 1 (exclusive): e.g. 0.99"),
        ));
    }
    if let Some(t) = j.tolerance
        && !(t >= 0.0 && t.is_finite())
    {
        p.push(Problem::new(
            format!("{at}.tolerance"),
            format!("{t} is not a fraction >= 0: e.g. 0.1 tolerates a canary 10 % worse"),
        ));
    }
    if let Some(n) = j.min_samples
        && n < 3
    {
        p.push(Problem::new(
            format!("{at}.minSamples"),
            format!("{n} samples cannot show a difference: use at least 3 (20 or more is sound)"),
        ));
    }
    if let Some(step) = &j.step {
        match parse_duration(step) {
            Err(e) => p.push(Problem::new(format!("{at}.step"), e.to_string())),
            Ok(d) if d.is_zero() => p.push(Problem::new(
                format!("{at}.step"),
                "must be above 0: e.g. `10s`, at least twice Prometheus' scrape interval",
            )),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_http_url;

    #[test]
    fn go_template_constructs_are_named_as_written() {
        assert_eq!(
            super::go_template_constructs(
                "x{a=\"{{- if .Dev }}dev{{ end -}}\"} {{ printf \"%s\" target }} {{ target }} {{ end }}"
            ),
            ["{{ if .Dev }}", "{{ end }}", "{{ printf \"%s\" target }}"]
        );
        assert!(super::go_template_constructs("{{ variables.x | default(\"y\") }}").is_empty());
    }

    #[test]
    fn http_urls() {
        for ok in [
            "http://flagger-loadtester.test/",
            "https://example.com",
            "HTTP://a:8080/x?y#z",
            "http://user@host/",
        ] {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "flagger-loadtester.test/",
            "ftp://x/",
            "http://",
            "http:///path",
            "http://:80/",
            "http://a b/",
            "",
            "/relative",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn judge_settings_are_checked_field_by_field() {
        let judge = crate::api::canary::MetricJudge {
            test: None,
            confidence: Some(1.5),
            min_samples: Some(2),
            tolerance: Some(-0.1),
            step: Some("0s".into()),
            worse: None,
        };
        let mut p = Vec::new();
        super::judge_rules(&judge, "latency", "spec.analysis.metrics[0].judge", &mut p);
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.analysis.metrics[0].judge.confidence",
                "spec.analysis.metrics[0].judge.tolerance",
                "spec.analysis.metrics[0].judge.minSamples",
                "spec.analysis.metrics[0].judge.step",
            ]
        );
        let mut p = Vec::new();
        super::judge_rules(&Default::default(), "latency", "j", &mut p);
        assert!(p.is_empty(), "the defaults are valid: {p:?}");
    }

    #[test]
    fn counts_judge_error_rates_only() {
        use crate::api::canary::{JudgeTest, MetricJudge, Worse};
        let counts = MetricJudge {
            test: Some(JudgeTest::Counts),
            worse: Some(Worse::Lower),
            ..Default::default()
        };
        let mut p = Vec::new();
        super::judge_rules(&counts, "request-duration", "j", &mut p);
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["j.test", "j.worse"], "{p:?}");
        let mut p = Vec::new();
        let plain = MetricJudge {
            test: Some(JudgeTest::Counts),
            ..Default::default()
        };
        super::judge_rules(&plain, "request-success-rate", "j", &mut p);
        assert!(p.is_empty(), "{p:?}");
    }
}
