//! Offline validation of Canary, MetricTemplate and AlertProvider objects.
//!
//! Two layers:
//! - [`object`] takes an untyped manifest (as `serde_json::Value`), checks it against serin's
//!   own CRD schema (what the API server and `kubectl apply` would reject: types, enums,
//!   required and unknown fields), parses it into the typed object, and runs the semantic
//!   rules. This is `serin check`.
//! - [`canary`], [`metric_template`], [`alert_provider`] run the semantic rules on an object
//!   that already parsed (the controller validates every Canary it reconciles and reports the
//!   problems in a status condition and a Warning event).
//!
//! Every [`Problem`] names a field path from the object root, dotted, with list indexes in
//! brackets (`spec.analysis.metrics[1].thresholdRange`), and says what is wrong and what to do.

mod rules;
pub use rules::{go_template_constructs, go_template_message};
mod schema;

use std::sync::OnceLock;

use serde_json::Value;

use crate::api::{AlertProvider, Canary, MetricTemplate, Provider};

/// One thing wrong with an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    /// Field path from the object root: `spec.analysis.webhooks[0].url`.
    pub path: String,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Semantic problems of a Canary. `default_provider` is the provider used when
/// `spec.provider` is not set (the controller's `--mesh-provider`, Flagger's default
/// [`Provider::Istio`]).
/// Flagger's `-no-cross-namespace-refs`: every reference of a Canary (upstreamRef, metric
/// templateRef, alert providerRef) must stay in the Canary's namespace, so one tenant cannot
/// use another's templates, secrets or alert channels.
pub fn cross_namespace_refs(canary: &Canary) -> Vec<Problem> {
    let own = canary.metadata.namespace.as_deref().unwrap_or_default();
    let foreign = |ns: Option<&str>| ns.is_some_and(|ns| ns != own);
    let mut problems = Vec::new();
    let refused = |ns: Option<&str>| {
        format!(
            "refers to namespace `{}` but cross-namespace references are disabled \
             (--no-cross-namespace-refs): move the object into `{own}` or drop the namespace",
            ns.unwrap_or_default()
        )
    };
    if let Some(u) = &canary.spec.upstream_ref
        && foreign(u.namespace.as_deref())
    {
        problems.push(Problem::new(
            "spec.upstreamRef.namespace",
            refused(u.namespace.as_deref()),
        ));
    }
    let analysis = canary.spec.analysis();
    for (i, m) in analysis
        .map(|a| a.metrics())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Some(t) = &m.template_ref
            && foreign(t.namespace.as_deref())
        {
            problems.push(Problem::new(
                format!("spec.analysis.metrics[{i}].templateRef.namespace"),
                refused(t.namespace.as_deref()),
            ));
        }
    }
    for (i, a) in analysis
        .map(|a| a.alerts())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if foreign(a.provider_ref.namespace.as_deref()) {
            problems.push(Problem::new(
                format!("spec.analysis.alerts[{i}].providerRef.namespace"),
                refused(a.provider_ref.namespace.as_deref()),
            ));
        }
    }
    problems
}

pub fn canary(canary: &Canary, default_provider: Provider) -> Vec<Problem> {
    let mut problems = rules::canary_spec(&canary.spec, default_provider);
    problems.extend(release_group(canary));
    problems
}

/// The release group's name (`serin.flagger.app/release-group`): a label value's shape, so
/// that it can be selected on and printed as it is.
fn release_group(canary: &Canary) -> Option<Problem> {
    let group = canary
        .metadata
        .annotations
        .as_ref()?
        .get(crate::api::canary::RELEASE_GROUP)?;
    let group = group.trim();
    let shaped = !group.is_empty()
        && group.len() <= 63
        && group.starts_with(|c: char| c.is_ascii_alphanumeric())
        && group.ends_with(|c: char| c.is_ascii_alphanumeric())
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!shaped).then(|| {
        Problem::new(
            format!(
                "metadata.annotations[{}]",
                crate::api::canary::RELEASE_GROUP
            ),
            format!(
                "{group:?} is not a release group name: write 1 to 63 letters, digits, '-', '_' \
                 or '.', beginning and ending with a letter or digit (the members of a group \
                 are the Canaries of the namespace with the same name)"
            ),
        )
    })
}

/// Semantic problems of a MetricTemplate.
pub fn metric_template(template: &MetricTemplate) -> Vec<Problem> {
    rules::metric_template_spec(&template.spec)
}

/// Semantic problems of an AlertProvider.
pub fn alert_provider(provider: &AlertProvider) -> Vec<Problem> {
    rules::alert_provider_spec(&provider.spec)
}

/// The kinds serin serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Canary,
    MetricTemplate,
    AlertProvider,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Canary, Kind::MetricTemplate, Kind::AlertProvider];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Canary => "Canary",
            Kind::MetricTemplate => "MetricTemplate",
            Kind::AlertProvider => "AlertProvider",
        }
    }

    /// The `spec` schema of this kind's CRD (generated once).
    fn spec_schema(self) -> &'static Value {
        static SCHEMAS: OnceLock<Vec<Value>> = OnceLock::new();
        let schemas = SCHEMAS.get_or_init(|| {
            crate::api::crds()
                .into_iter()
                .map(|crd| {
                    let json = serde_json::to_value(crd).unwrap_or_default();
                    json.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
                        .cloned()
                        .unwrap_or_default()
                })
                .collect()
        });
        let index = match self {
            Kind::Canary => 0,
            Kind::MetricTemplate => 1,
            Kind::AlertProvider => 2,
        };
        schemas.get(index).unwrap_or(&Value::Null)
    }
}

/// The outcome of checking one `flagger.app` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// `kind` as written in the manifest.
    pub kind: String,
    /// `metadata.name` (or `metadata.generateName`, or `<unnamed>`).
    pub name: String,
    /// Everything wrong with it; empty when valid.
    pub problems: Vec<Problem>,
}

/// Checks one manifest object offline: schema, then semantic rules.
///
/// Returns `None` when the object is not a `flagger.app` object (a Deployment next to a
/// Canary is not serin's business). Never panics, whatever the input.
// Long on purpose: one arm per flagger.app kind, each a schema check then its rules.
pub fn object(value: &Value, default_provider: Provider) -> Option<Checked> {
    let api_version = value.get("apiVersion").and_then(Value::as_str)?;
    let (group, version) = api_version.split_once('/')?;
    if group != crate::api::GROUP {
        return None;
    }
    let kind_str = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let metadata = value.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let mut checked = Checked {
        kind: if kind_str.is_empty() {
            "<no kind>".to_owned()
        } else {
            kind_str.clone()
        },
        name,
        problems: Vec::new(),
    };
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_str) else {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        checked.problems.push(Problem::new(
            "kind",
            format!(
                "`{kind_str}` is not a flagger.app kind; use one of: {}",
                kinds.join(", ")
            ),
        ));
        return Some(checked);
    };
    if version != crate::api::VERSION {
        checked.problems.push(Problem::new(
            "apiVersion",
            format!(
                "`{api_version}` is not served; use {}",
                crate::api::API_VERSION
            ),
        ));
    }
    if metadata
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        checked
            .problems
            .push(Problem::new("metadata.name", "required field is missing"));
    }

    // Schema level, repairing a copy so the typed parse and the rules can still run.
    let mut schema_problems = Vec::new();
    let Some(mut spec) = value.get("spec").cloned() else {
        checked
            .problems
            .push(Problem::new("spec", "required field is missing"));
        return Some(checked);
    };
    schema::check(kind.spec_schema(), &mut spec, "spec", &mut schema_problems);
    let mut typed = serde_json::Map::new();
    typed.insert("apiVersion".into(), crate::api::API_VERSION.into());
    typed.insert("kind".into(), kind.as_str().into());
    // The annotations serin reads (a release group) are checked too, when they are strings.
    let annotations = metadata
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .filter(|a| a.values().all(Value::is_string))
        .cloned()
        .unwrap_or_default();
    typed.insert(
        "metadata".into(),
        serde_json::json!({ "name": checked.name, "annotations": annotations }),
    );
    typed.insert("spec".into(), spec);
    let typed = Value::Object(typed);

    let semantic = match kind {
        Kind::Canary => parse::<Canary>(typed).map(|c| canary(&c, default_provider)),
        Kind::MetricTemplate => parse::<MetricTemplate>(typed).map(|t| metric_template(&t)),
        Kind::AlertProvider => parse::<AlertProvider>(typed).map(|a| alert_provider(&a)),
    };
    checked.problems.extend(merge(schema_problems, semantic));
    Some(checked)
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| Problem::new(e.path().to_string(), e.inner().to_string()))
}

/// Schema problems first; then the semantic ones not at or under a path the schema already
/// reported (those would be about placeholders of the repair). A typed-parse error is only
/// reported when the schema found nothing (it then is the only clue).
fn merge(schema: Vec<Problem>, semantic: Result<Vec<Problem>, Problem>) -> Vec<Problem> {
    let covered = |path: &str| {
        schema.iter().any(|s| {
            path == s.path
                || path
                    .strip_prefix(s.path.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    };
    let extra: Vec<Problem> = match semantic {
        Ok(problems) => problems.into_iter().filter(|p| !covered(&p.path)).collect(),
        Err(problem) if schema.is_empty() => vec![problem],
        Err(_) => Vec::new(),
    };
    let mut all = schema;
    all.extend(extra);
    all
}

#[cfg(test)]
mod tests;
