//! CRD structural schemas: pruning, defaulting and validation of custom resources.
//!
//! Subset honoured: `type` (object, array, string, integer, number, boolean), `properties`,
//! `additionalProperties` (schema or bool), `items`, `required`, `enum`, `pattern`,
//! `minimum`/`maximum` (+ `exclusiveMinimum`/`exclusiveMaximum` as booleans), `minLength`/
//! `maxLength`, `minItems`/`maxItems`, `minProperties`/`maxProperties`, `nullable`, `default`,
//! `oneOf`/`anyOf`/`allOf`/`not` (validation only), `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-embedded-resource`. Not honoured: `format`,
//! CEL rules (`x-kubernetes-validations`), `uniqueItems`, `multipleOf`.

use crate::error::Cause;
use regex::Regex;
use serde_json::{Map, Value};

/// Prune then default, in the order the API server does, on the whole object. Returns the
/// paths of the pruned (unknown) fields, for `fieldValidation=Strict`.
pub fn prune_and_default(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Some(m) = obj.as_object_mut() {
        let props = schema.get("properties");
        let preserve = preserves(schema);
        m.retain(|k, _| {
            let keep = matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                || preserve
                || props.is_some_and(|p| p.get(k).is_some());
            if !keep {
                pruned.push(k.clone());
            }
            keep
        });
        for (k, v) in m.iter_mut() {
            if k == "metadata" || k == "apiVersion" || k == "kind" {
                continue;
            }
            if let Some(s) = props.and_then(|p| p.get(k)) {
                prune(v, s, k, &mut pruned);
            }
        }
    }
    default(obj, schema, true);
    pruned
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        || s.get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true)
}

fn prune(v: &mut Value, s: &Value, path: &str, pruned: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            if let Some(add) = additional.filter(|a| a.is_object()) {
                for (k, child) in m.iter_mut() {
                    prune(child, add, &join(path, k), pruned);
                }
                return;
            }
            if additional.and_then(Value::as_bool) == Some(true) {
                return;
            }
            if !preserves(s) {
                m.retain(|k, _| {
                    let keep = props.is_some_and(|p| p.contains_key(k));
                    if !keep {
                        pruned.push(join(path, k));
                    }
                    keep
                });
            }
            if let Some(p) = props {
                for (k, child) in m.iter_mut() {
                    if let Some(cs) = p.get(k) {
                        prune(child, cs, &join(path, k), pruned);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, is, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

fn default(v: &mut Value, s: &Value, root: bool) {
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    if !m.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in m.iter_mut() {
                    if root && k == "metadata" {
                        continue;
                    }
                    if let Some(ps) = props.get(k) {
                        default(child, ps, false);
                    }
                }
            } else if let Some(add) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    default(child, add, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for i in items {
                    default(i, is, false);
                }
            }
        }
        _ => {}
    }
}

/// Validates `obj` (skipping metadata, which the server checks itself).
pub fn validate(obj: &Value, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let (Some(m), Some(props)) = (
        obj.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for (k, v) in m {
            if matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                continue;
            }
            if let Some(ps) = props.get(k) {
                check(v, ps, k, &mut causes);
            }
        }
        required(m, schema, "", &mut causes);
    }
    causes
}

fn required(m: &Map<String, Value>, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    field: join(path, r),
                    message: "Required value".into(),
                });
            }
        }
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid(path: &str, v: &Value, why: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: {v}: {why}"),
    }
}

fn check(v: &Value, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if s.get("nullable").and_then(Value::as_bool) != Some(true) {
            let t = s.get("type").and_then(Value::as_str).unwrap_or("object");
            causes.push(invalid(
                path,
                v,
                format!("{path} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    if let Some(wrong_type) = type_error(v, s, path) {
        causes.push(wrong_type);
        return;
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array)
        && !values.contains(v)
    {
        let supported: Vec<String> = values.iter().map(|x| x.to_string()).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            message: format!(
                "Unsupported value: {v}: supported values: {}",
                supported.join(", ")
            ),
        });
    }
    match v {
        Value::String(st) => check_string(v, st, s, path, causes),
        Value::Number(n) => check_number(v, n.as_f64().unwrap_or(0.0), s, path, causes),
        Value::Array(items) => check_array(v, items, s, path, causes),
        Value::Object(m) => check_object(v, m, s, path, causes),
        _ => {}
    }
    combinators(v, s, path, causes);
}

/// A value of another type than the schema's `type` (or than integer or string under
/// `x-kubernetes-int-or-string`); an integer is a number too.
fn type_error(v: &Value, s: &Value, path: &str) -> Option<Cause> {
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if int_or_string {
        return match v.is_string() || v.is_i64() || v.is_u64() {
            true => None,
            false => Some(invalid(
                path,
                v,
                format!("{path} in body must be of type integer or string"),
            )),
        };
    }
    let t = s.get("type").and_then(Value::as_str)?;
    let actual = type_name(v);
    match actual == t || (t == "number" && actual == "integer") {
        true => None,
        false => Some(invalid(
            path,
            v,
            format!("{path} in body must be of type {t}: \"{actual}\""),
        )),
    }
}

/// `pattern`, `minLength`, `maxLength` (in characters).
fn check_string(v: &Value, st: &str, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        match Regex::new(p) {
            Ok(re) if !re.is_match(st) => causes.push(invalid(
                path,
                v,
                format!("{path} in body should match '{p}'"),
            )),
            _ => {}
        }
    }
    let len = st.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: path.to_string(),
            message: format!("Too long: may not be more than {max} bytes"),
        });
    }
}

/// `minimum` and `maximum`, each exclusive when `exclusiveMinimum`/`exclusiveMaximum` is
/// true.
fn check_number(v: &Value, x: f64, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let exclusive = |key: &str| s.get(key).and_then(Value::as_bool) == Some(true);
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let excl = exclusive("exclusiveMinimum");
        if x < min || (excl && x == min) {
            let op = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(invalid(
                path,
                v,
                format!("{path} in body should be {op} {min}"),
            ));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let excl = exclusive("exclusiveMaximum");
        if x > max || (excl && x == max) {
            let op = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(invalid(
                path,
                v,
                format!("{path} in body should be {op} {max}"),
            ));
        }
    }
}

/// `minItems`, `maxItems`, then each item against `items`.
fn check_array(v: &Value, items: &[Value], s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let n = items.len() as u64;
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        causes.push(Cause {
            reason: "FieldValueTooMany",
            field: path.to_string(),
            message: format!("Too many: {n}: must have at most {max} items"),
        });
    }
    if let Some(is) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item, is, &format!("{path}[{i}]"), causes);
        }
    }
}

/// `minProperties`, `maxProperties`, each property against its schema (or
/// `additionalProperties`), then `required`.
fn check_object(v: &Value, m: &Map<String, Value>, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let n = m.len() as u64;
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && n < min
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body should have at least {min} properties"),
        ));
    }
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && n > max
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body should have at most {max} properties"),
        ));
    }
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    for (k, child) in m {
        let cs = props.and_then(|p| p.get(k)).or(additional);
        if let Some(cs) = cs {
            check(child, cs, &join(path, k), causes);
        }
    }
    required(m, s, path, causes);
}

fn combinators(v: &Value, s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let passes = |sub: &Value| {
        let mut c = Vec::new();
        check(v, sub, path, &mut c);
        c.is_empty()
    };
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(v, sub, path, causes);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(passes)
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body must match at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if n != 1 {
            causes.push(invalid(
                path,
                v,
                format!("{path} in body must match exactly one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = s.get("not")
        && passes(not)
    {
        causes.push(invalid(
            path,
            v,
            format!("{path} in body must not match the schema (not)"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["port"], "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "target": {"x-kubernetes-int-or-string": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "opt": {"type": "string", "nullable": true}}}}})
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n"},
            "junk": 1, "spec": {"port": 80, "extra": true, "free": {"any": 1}, "target": "50%", "opt": null}});
        let pruned = prune_and_default(&mut obj, &schema());
        assert_eq!(pruned, ["junk", "spec.extra"]);
        assert!(obj.get("junk").is_none());
        assert!(obj["spec"].get("extra").is_none());
        assert_eq!(obj["spec"]["free"], json!({"any": 1}));
        assert_eq!(obj["spec"]["mode"], "a");
        assert!(validate(&obj, &schema()).is_empty());

        let bad = json!({"spec": {"port": 0, "mode": "c", "name": "A1", "target": 1.5}});
        let fields: Vec<String> = validate(&bad, &schema())
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            vec!["spec.port", "spec.mode", "spec.name", "spec.target"]
        );
        let missing = validate(&json!({"spec": {}}), &schema());
        assert_eq!(missing[0].field, "spec.port");
        assert_eq!(missing[0].reason, "FieldValueRequired");
    }
}
