//! Schema-level checks of an object against serin's own CRD schema, as the API server would
//! apply them: types, enums, required fields, numeric bounds, list lengths, unknown fields
//! (which `kubectl apply` rejects under its default strict field validation).
//!
//! The walk also *repairs* a copy of the object as it goes, so that the typed parse and the
//! semantic rules can still run and report the object's other problems: a value of the wrong
//! type or outside its enum is removed when optional and replaced by a placeholder when
//! required, a missing required field gets a placeholder, an unknown field is removed.
//! Semantic problems at or under a path reported here are dropped (see `super::merge`).
//!
//! Not checked here: `pattern` (the only one is the duration pattern, which the semantic
//! rules check more strictly) and CEL `x-kubernetes-validations` (the semantic rules cover
//! them).

use serde_json::{Map, Value};

use super::Problem;

/// Checks `value` (at `path`) against `schema`; fixes `value` in place as described in the
/// module docs.
pub(super) fn check(schema: &Value, value: &mut Value, path: &str, problems: &mut Vec<Problem>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            problems.push(Problem::new(
                path,
                format!("must not be null: {}", expected(schema)),
            ));
            *value = placeholder(schema);
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            problems.push(Problem::new(
                path,
                format!("must be a port number or name, got {}", describe(value)),
            ));
            *value = Value::Null;
        }
        return;
    }
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("number") => value.is_number(),
        Some("integer") => is_integer(schema, value),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        _ => true,
    };
    if !type_ok {
        problems.push(Problem::new(
            path,
            format!("{}, got {}", expected(schema), describe(value)),
        ));
        *value = Value::Null;
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(Problem::new(
            path,
            format!(
                "{} is not allowed; use one of: {}",
                describe(value),
                list_values(allowed)
            ),
        ));
        *value = Value::Null;
        return;
    }
    if let Some(n) = value.as_f64() {
        check_bounds(schema, n, path, problems);
    }
    match value {
        Value::Object(obj) => check_object(schema, obj, path, problems),
        Value::Array(items) => check_array(schema, items, path, problems),
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    obj: &mut Map<String, Value>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in &required {
            // The deprecated `canaryAnalysis` alias stands in for `analysis`.
            let alias = *name == "analysis" && path == "spec" && obj.contains_key("canaryAnalysis");
            if !obj.contains_key(*name) && !alias {
                problems.push(Problem::new(
                    join(path, name),
                    format!(
                        "required field is missing: {}",
                        expected(props.get(*name).unwrap_or(&Value::Null))
                    ),
                ));
                obj.insert(
                    (*name).to_owned(),
                    placeholder(props.get(*name).unwrap_or(&Value::Null)),
                );
            }
        }
        let keys: Vec<String> = obj.keys().cloned().collect();
        for key in keys {
            let field_path = join(path, &key);
            match props.get(&key) {
                Some(sub) => {
                    if let Some(v) = obj.get_mut(&key) {
                        check(sub, v, &field_path, problems);
                        if v.is_null() && sub.get("nullable") == Some(&Value::Bool(true)) {
                            // Removed by the repair: an optional field, absent from now on.
                            obj.remove(&key);
                        } else if v.is_null() {
                            *v = placeholder(sub);
                        }
                    }
                }
                None if preserve => {}
                None => {
                    let mut message = "unknown field".to_owned();
                    if let Some(similar) = similar_name(&key, props.keys()) {
                        message.push_str(&format!("; did you mean `{similar}`?"));
                    } else {
                        let known: Vec<&str> = props.keys().map(String::as_str).collect();
                        message.push_str(&format!("; known fields: {}", known.join(", ")));
                    }
                    problems.push(Problem::new(field_path, message));
                    obj.remove(&key);
                }
            }
        }
    } else if let Some(additional) = schema.get("additionalProperties") {
        for (key, v) in obj.iter_mut() {
            check(additional, v, &join(path, key), problems);
            if v.is_null() {
                *v = placeholder(additional);
            }
        }
    }
}

fn check_array(schema: &Value, items: &mut [Value], path: &str, problems: &mut Vec<Problem>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        problems.push(Problem::new(
            path,
            format!("has {} items; at most {max} are allowed", items.len()),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter_mut().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), problems);
            if item.is_null() {
                *item = placeholder(item_schema);
            }
        }
    }
}

fn check_bounds(schema: &Value, n: f64, path: &str, problems: &mut Vec<Problem>) {
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    let out = min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
    if out {
        let range = match (min, max) {
            (Some(a), Some(b)) => format!("between {a} and {b}"),
            (Some(a), None) => format!("at least {a}"),
            (None, Some(b)) => format!("at most {b}"),
            (None, None) => String::new(),
        };
        problems.push(Problem::new(
            path,
            format!("{n} is out of range: must be {range}"),
        ));
    }
}

/// Integers; `format: int32` must also fit in 32 bits (it is an `i32` in serin's types).
fn is_integer(schema: &Value, value: &Value) -> bool {
    let Some(n) = value.as_i64() else {
        return value.is_u64() && schema.get("format").and_then(Value::as_str) != Some("int32");
    };
    match schema.get("format").and_then(Value::as_str) {
        Some("int32") => i32::try_from(n).is_ok(),
        _ => true,
    }
}

/// What a schema expects, for messages: "must be a string", "must be one of: a, b".
fn expected(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return format!("must be one of: {}", list_values(values));
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "must be a port number or name".to_owned();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => "must be a string".to_owned(),
        Some("boolean") => "must be true or false".to_owned(),
        Some("number") => "must be a number".to_owned(),
        Some("integer") if schema.get("format").and_then(Value::as_str) == Some("int32") => {
            "must be a whole number (32-bit)".to_owned()
        }
        Some("integer") => "must be a whole number".to_owned(),
        Some("object") => match required_names(schema) {
            Some(names) => format!("must be an object with {names}"),
            None => "must be an object".to_owned(),
        },
        Some("array") => "must be a list".to_owned(),
        _ => "must be set".to_owned(),
    }
}

fn required_names(schema: &Value) -> Option<String> {
    let names: Vec<&str> = schema
        .get("required")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("`{s}`"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn list_values(values: &[Value]) -> String {
    let names: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) if s.is_empty() => "\"\"".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    names.join(", ")
}

/// A minimal value that satisfies `schema` (for the repair).
fn placeholder(schema: &Value) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return first.clone();
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return Value::from(0);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => Value::from(""),
        Some("boolean") => Value::Bool(false),
        Some("number") | Some("integer") => Value::from(0),
        Some("array") => Value::Array(Vec::new()),
        Some("object") => {
            let mut obj = Map::new();
            if let (Some(required), Some(props)) = (
                schema.get("required").and_then(Value::as_array),
                schema.get("properties").and_then(Value::as_object),
            ) {
                for name in required.iter().filter_map(Value::as_str) {
                    obj.insert(
                        name.to_owned(),
                        placeholder(props.get(name).unwrap_or(&Value::Null)),
                    );
                }
            }
            Value::Object(obj)
        }
        _ => Value::Null,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A known field name close to `key`: same letters ignoring case, or at most two edits away.
fn similar_name<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .map(|k| {
            let d = if k.to_ascii_lowercase() == lower {
                0
            } else {
                edit_distance(&lower, &k.to_ascii_lowercase())
            };
            (d, k)
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("stepweight", "stepweight"), 0);
        assert_eq!(edit_distance("stepweigth", "stepweight"), 2);
        assert_eq!(edit_distance("intervl", "interval"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn similar_names_ignore_case_and_small_typos() {
        let known = [
            "stepWeight".to_owned(),
            "stepWeights".to_owned(),
            "interval".to_owned(),
        ];
        assert_eq!(similar_name("stepweight", known.iter()), Some("stepWeight"));
        assert_eq!(similar_name("intervall", known.iter()), Some("interval"));
        assert_eq!(similar_name("zzz", known.iter()), None);
    }
}
