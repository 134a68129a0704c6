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
}

/// Renders `query` with `vars`, then collapses whitespace.
pub fn render(query: &str, vars: &TemplateVars) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // A Flagger query written for Go's text/template: name the construct, not the parser.
    if let Some(construct) = crate::api::validate::go_template_constructs(query).first() {
        return Err(TemplateError::Render(
            crate::api::validate::go_template_message(construct),
        ));
    }
    let template = env
        .template_from_str(query)
        .map_err(|e| TemplateError::Render(describe(&e)))?;
    match template.render(vars.context()) {
        Ok(rendered) => Ok(collapse_whitespace(&rendered)),
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
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
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

    #[test]
    fn flagger_templates_render_unchanged_and_collapsed() {
        let query = "sum(rate(requests{namespace=\"{{ namespace }}\",\n    pod=~\"{{ target }}-.*\", \
                     app=\"{{ variables.app }}\"}[{{ interval }}]))\n  / {{ service }} {{ ingress }} {{ name }} {{ route }}";
        assert_eq!(
            render(query, &vars()).unwrap(),
            "sum(rate(requests{namespace=\"test\", pod=~\"podinfo-.*\", app=\"web\"}[1m])) \
             / podinfo-svc podinfo-ing podinfo podinfo"
        );
    }

    #[test]
    fn go_template_syntax_is_named_with_the_fix() {
        let err = render("sum(x{ns=\"{{ .Namespace }}\"})", &vars()).unwrap_err();
        assert!(
            err.to_string()
                .contains("`{{ .Namespace }}` is Go text/template syntax")
                && err.to_string().contains("{{ namespace }}"),
            "{err}"
        );
    }

    #[test]
    fn unknown_variables_are_named() {
        let err = render("x{ns=\"{{ namspace }}\"}", &vars()).unwrap_err();
        assert!(err.to_string().contains("`namspace`"), "{err}");
        let err = render("{{ variables.missing }}", &vars()).unwrap_err();
        assert!(err.to_string().contains("variables.missing"), "{err}");
        assert!(err.to_string().contains("set: app"), "{err}");
    }

    #[test]
    fn defaults_and_tests_of_optional_variables_work() {
        let query = "{{ variables.op | default(\"http.request\") }} {% if variables.env is defined %}x{% endif %}";
        assert_eq!(render(query, &vars()).unwrap(), "http.request");
    }

    #[test]
    fn syntax_errors_are_render_errors() {
        let err = render("{{ namespace ", &vars()).unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err}");
    }

    #[test]
    fn queries_without_templating_pass_through() {
        assert_eq!(
            render("  avg:trace.errors{env:prod}.as_count()  ", &vars()).unwrap(),
            "avg:trace.errors{env:prod}.as_count()"
        );
    }
}
