//! Rendering of metric queries (MetricTemplate `spec.query`, inline `query`, builtins).
//!
//! Flagger's templates are Go `text/template` with niladic functions (`{{ namespace }}`,
//! `{{ variables.key }}`); the same text is a Jinja expression, so minijinja renders every
//! Flagger template unchanged. An unknown variable is an error that names it, as Go's
//! `missingkey=error` is, instead of an empty string in the query. The result is
//! whitespace-collapsed, as Flagger does, so a multi-line YAML query is one line on the wire.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior, Value};

use crate::api::Canary;

/// The variables a query can use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateVars {
    /// Canary name.
    pub name: String,
    pub namespace: String,
    /// `spec.targetRef.name`.
    pub target: String,
    /// `spec.service.name`, else the target.
    pub service: String,
    /// `spec.ingressRef.name`, else the target.
    pub ingress: String,
    /// `spec.routeRef.name`, else the target (Knative: the latest created revision).
    pub route: String,
    /// The metric's interval, e.g. `1m`.
    pub interval: String,
    /// `templateVariables`.
    pub variables: BTreeMap<String, String>,
}

/// Top-level names a query may use.
const KNOWN: [&str; 8] = [
    "name",
    "namespace",
    "target",
    "service",
    "ingress",
    "route",
    "interval",
    "variables",
];

impl TemplateVars {
    /// The variables of `canary` for a metric with this interval and these variables.
    pub fn new(
        canary: &Canary,
        interval: &str,
        variables: Option<&BTreeMap<String, String>>,
    ) -> TemplateVars {
        let spec = &canary.spec;
        let target = spec.target_ref.name.clone();
        let or_target = |name: Option<&String>| {
            name.filter(|n| !n.is_empty())
                .cloned()
                .unwrap_or_else(|| target.clone())
        };
        TemplateVars {
            name: canary.metadata.name.clone().unwrap_or_default(),
            namespace: canary
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            service: or_target(spec.service.name.as_ref()),
            ingress: or_target(spec.ingress_ref.as_ref().map(|r| &r.name)),
            route: or_target(spec.route_ref.as_ref().map(|r| &r.name)),
            target,
            interval: interval.to_string(),
            variables: variables.cloned().unwrap_or_default(),
        }
    }

    fn context(&self) -> Value {
        let mut context: BTreeMap<&str, Value> = BTreeMap::new();
        context.insert("name", Value::from(self.name.as_str()));
        context.insert("namespace", Value::from(self.namespace.as_str()));
        context.insert("target", Value::from(self.target.as_str()));
        context.insert("service", Value::from(self.service.as_str()));
        context.insert("ingress", Value::from(self.ingress.as_str()));
        context.insert("route", Value::from(self.route.as_str()));
        context.insert("interval", Value::from(self.interval.as_str()));
        context.insert("variables", Value::from(self.variables.clone()));
        Value::from(context)
    }
}

/// A query that could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template variable `{name}` (known: {known})")]
    UnknownVariable { name: String, known: String },
    #[error("template variable `variables.{key}` is not in templateVariables ({have})")]
    UnknownTemplateVariable { key: String, have: String },
    #[error("cannot render the query: {0}")]
    Render(String),
    #[error(
        "the query template is too costly to render: {0}; a query template substitutes \
         variables ({{{{ namespace }}}}, {{{{ variables.<key> }}}}, ...), it does not compute"
    )]
    TooCostly(String),
}

/// Instructions a query template may take to render. Flagger's queries substitute a handful of
/// variables (tens of instructions); the budget leaves two orders of magnitude for
/// `default`, `replace` and small loops while stopping a template bomb (nested loops over
/// `range()`) in milliseconds: the template is a tenant's text, rendered inside the
/// controller on every analysis of every Canary.
const FUEL: u64 = 20_000;

/// The longest rendered query: far beyond any real PromQL, NRQL or Datadog query, and
/// small enough that rendering never holds much memory.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

fn environment(undefined: UndefinedBehavior) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(undefined);
    env.set_fuel(Some(FUEL));
    env
}

/// An output that refuses to grow past [`MAX_QUERY_BYTES`].
#[derive(Default)]
struct Capped {
    out: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > MAX_QUERY_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("query output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders within the budget; the output, or the engine's error, or [`TemplateError::TooCostly`].
fn render_bounded(
    template: &minijinja::Template<'_, '_>,
    context: Value,
) -> Result<Result<String, minijinja::Error>, TemplateError> {
    let mut out = Capped::default();
    let rendered = template.render_captured_to(context, &mut out).map(|_| ());
    if out.overflowed {
        return Err(TemplateError::TooCostly(format!(
            "it renders more than {} KiB",
            MAX_QUERY_BYTES / 1024
        )));
    }
    match rendered {
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(TemplateError::TooCostly(
            format!("it takes more than {FUEL} rendering steps"),
        )),
        Err(e) => Ok(Err(e)),
        Ok(()) => Ok(Ok(String::from_utf8_lossy(&out.out).into_owned())),
    }
}

/// Whether `query` renders within the budget whatever the variables hold (undefined values
/// render empty here), for `serin check` and validation; other rendering errors are left to
/// the analysis, which knows the Canary's variables.
pub fn check_cost(query: &str) -> Result<(), TemplateError> {
    let env = environment(UndefinedBehavior::Lenient);
    let Ok(template) = env.template_from_str(query) else {
        return Ok(());
    };
    render_bounded(&template, TemplateVars::default().context()).map(|_| ())
}

/// Renders `query` with `vars`, then collapses whitespace.
pub fn render(query: &str, vars: &TemplateVars) -> Result<String, TemplateError> {
    render_raw(query, vars).map(|rendered| collapse_whitespace(&rendered))
}

/// Renders a program whose statements end at line breaks (a Splunk SignalFlow program), as
/// Flagger sends every query but Prometheus' and Graphite's: line breaks and indentation
/// kept; only blank lines around it and spaces at line ends go.
pub fn render_program(query: &str, vars: &TemplateVars) -> Result<String, TemplateError> {
    let rendered = render_raw(query, vars)?;
    let lines: Vec<&str> = rendered.lines().map(str::trim_end).collect();
    let first = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let last = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(first, |i| i + 1);
    Ok(lines.get(first..last).unwrap_or_default().join("\n"))
}

/// Renders `query` with `vars`, as written.
fn render_raw(query: &str, vars: &TemplateVars) -> Result<String, TemplateError> {
    let env = environment(UndefinedBehavior::Strict);
    // A Flagger query written for Go's text/template: name the construct, not the parser.
    if let Some(construct) = crate::api::validate::go_template_constructs(query).first() {
        return Err(TemplateError::Render(
            crate::api::validate::go_template_message(construct),
        ));
    }
    let template = env
        .template_from_str(query)
        .map_err(|e| TemplateError::Render(describe(&e)))?;
    match render_bounded(&template, vars.context())? {
        Ok(rendered) => Ok(rendered),
        Err(error) => {
            // Only now look for the culprit, so that `{{ variables.x | default("y") }}` and
            // `{% if variables.x is defined %}` keep working.
            if error.kind() == minijinja::ErrorKind::UndefinedError {
                check_variables(&template.undeclared_variables(true), vars)?;
            }
            Err(TemplateError::Render(describe(&error)))
        }
    }
}

/// Names the first unknown variable: minijinja's own undefined error says where, not which.
fn check_variables(
    used: &std::collections::HashSet<String>,
    vars: &TemplateVars,
) -> Result<(), TemplateError> {
    let used: BTreeSet<&String> = used.iter().collect();
    for name in used {
        let (root, key) = match name.split_once('.') {
            Some((root, key)) => (root, Some(key)),
            None => (name.as_str(), None),
        };
        if root == "variables" {
            if let Some(key) = key
                && !vars.variables.contains_key(key)
            {
                let have = if vars.variables.is_empty() {
                    "none are set".to_string()
                } else {
                    format!(
                        "set: {}",
                        vars.variables
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(TemplateError::UnknownTemplateVariable {
                    key: key.to_string(),
                    have,
                });
            }
        } else if !KNOWN.contains(&root) && !JINJA_GLOBALS.contains(&root) {
            return Err(TemplateError::UnknownVariable {
                name: root.to_string(),
                known: KNOWN.join(", "),
            });
        }
    }
    Ok(())
}

/// minijinja's builtin global functions (also reported as undeclared variables).
const JINJA_GLOBALS: [&str; 3] = ["range", "dict", "debug"];

fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    if let Some(detail) = error.detail()
        && !text.contains(detail)
    {
        text.push_str(": ");
        text.push_str(detail);
    }
    text
}

/// Flagger sends `strings.Join(strings.Fields(query), " ")`.
pub fn collapse_whitespace(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
impl TemplateVars {
    /// Canary `test/podinfo` over one minute, with `app=web`; its service and ingress are
    /// named apart from the target, so a test sees which name a query used.
    pub(crate) fn example() -> TemplateVars {
        TemplateVars {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo-svc".into(),
            ingress: "podinfo-ing".into(),
            route: "podinfo".into(),
            interval: "1m".into(),
            variables: BTreeMap::from([("app".to_string(), "web".to_string())]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagger_templates_render_unchanged_and_collapsed() {
        let query = "sum(rate(requests{namespace=\"{{ namespace }}\",\n    pod=~\"{{ target }}-.*\", \
                     app=\"{{ variables.app }}\"}[{{ interval }}]))\n  / {{ service }} {{ ingress }} {{ name }} {{ route }}";
        assert_eq!(
            render(query, &TemplateVars::example()).unwrap(),
            "sum(rate(requests{namespace=\"test\", pod=~\"podinfo-.*\", app=\"web\"}[1m])) \
             / podinfo-svc podinfo-ing podinfo podinfo"
        );
    }

    #[test]
    fn programs_keep_their_line_breaks() {
        let program = "\n  \ntotal = data('n', filter=filter('sf_service', '{{ target }}')).sum()  \n\n\
                       (total * {{ variables.app | length }}).publish()\n   \n";
        assert_eq!(
            render_program(program, &TemplateVars::example()).unwrap(),
            "total = data('n', filter=filter('sf_service', 'podinfo')).sum()\n\n\
             (total * 3).publish()"
        );
        assert_eq!(
            render_program(" \n ", &TemplateVars::example()).unwrap(),
            ""
        );
        assert!(render_program("{{ .Target }}", &TemplateVars::example()).is_err());
    }

    #[test]
    fn go_template_syntax_is_named_with_the_fix() {
        let err = render("sum(x{ns=\"{{ .Namespace }}\"})", &TemplateVars::example()).unwrap_err();
        assert!(
            err.to_string()
                .contains("`{{ .Namespace }}` is Go text/template syntax")
                && err.to_string().contains("{{ namespace }}"),
            "{err}"
        );
    }

    #[test]
    fn unknown_variables_are_named() {
        let err = render("x{ns=\"{{ namspace }}\"}", &TemplateVars::example()).unwrap_err();
        assert!(err.to_string().contains("`namspace`"), "{err}");
        let err = render("{{ variables.missing }}", &TemplateVars::example()).unwrap_err();
        assert!(err.to_string().contains("variables.missing"), "{err}");
        assert!(err.to_string().contains("set: app"), "{err}");
    }

    #[test]
    fn defaults_and_tests_of_optional_variables_work() {
        let query = "{{ variables.op | default(\"http.request\") }} {% if variables.env is defined %}x{% endif %}";
        assert_eq!(
            render(query, &TemplateVars::example()).unwrap(),
            "http.request"
        );
    }

    #[test]
    fn syntax_errors_are_render_errors() {
        let err = render("{{ namespace ", &TemplateVars::example()).unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err}");
    }

    #[test]
    fn queries_without_templating_pass_through() {
        assert_eq!(
            render(
                "  avg:trace.errors{env:prod}.as_count()  ",
                &TemplateVars::example()
            )
            .unwrap(),
            "avg:trace.errors{env:prod}.as_count()"
        );
    }

    /// Nested loops over `range()`: minutes and gigabytes without a budget.
    const LOOP_BOMB: &str = "{% for a in range(100000) %}{% for b in range(100000) %}\
                             {{ a }}{% endfor %}{% endfor %}";

    #[test]
    fn template_bombs_are_refused_in_milliseconds() {
        let bombs = [
            LOOP_BOMB.to_string(),
            "{{ \"x\" * 100000000 }}".to_string(),
            "{{ range(100000) | join(\",\") }}{{ range(100000) | join(\",\") }}".to_string(),
            format!("{{{{ namespace }}}}{}", "y".repeat(MAX_QUERY_BYTES + 1)),
        ];
        for bomb in &bombs {
            let started = std::time::Instant::now();
            let err = render(bomb, &TemplateVars::example()).unwrap_err();
            assert!(matches!(err, TemplateError::TooCostly(_)), "{err}");
            assert!(err.to_string().contains("does not compute"), "{err}");
            let took = started.elapsed();
            assert!(took < std::time::Duration::from_millis(100), "{took:?}");
            assert!(check_cost(bomb).is_err(), "{bomb:.40}");
        }
    }

    #[test]
    fn real_queries_are_within_the_budget() {
        let ok = [
            "{{ variables.op | default(\"http.request\") }}",
            "{% for s in [\"a\", \"b\"] %}{{ s }}{% endfor %}",
            "sum(rate(x{ns=\"{{ namespace }}\"}[{{ interval }}]))",
        ];
        for query in ok {
            assert!(check_cost(query).is_ok(), "{query}");
        }
        // Unknown variables are the analysis' business, not the cost check's.
        assert!(check_cost("{{ nope }}").is_ok());
    }
}
