//! ObjectMeta validation the API server applies to every object: label keys and values,
//! annotation keys and total annotation size. Controllers that put hashes or long names into
//! labels fail here as they would on a real cluster.

use crate::error::Cause;
use serde_json::Value;

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn prefix_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

/// A qualified name: `[prefix/]name`.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !prefix_ok(p)
    {
        return Some(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !name_part_ok(name) {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    None
}

fn value_problem(v: &str) -> Option<String> {
    if v.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !v.is_empty() && !name_part_ok(v) {
        return Some("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    None
}

/// Problems with an object's labels and annotations, as 422 causes.
pub fn validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let invalid = |field: &str, v: &str, why: String| Cause {
        reason: "FieldValueInvalid",
        field: field.to_string(),
        message: format!("Invalid value: {v:?}: {why}"),
    };
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(why) = key_problem(k) {
                causes.push(invalid("metadata.labels", k, why));
            }
            match v.as_str() {
                Some(s) => {
                    if let Some(why) = value_problem(s) {
                        causes.push(invalid("metadata.labels", s, why));
                    }
                }
                None => causes.push(invalid(
                    "metadata.labels",
                    &v.to_string(),
                    "label values must be strings".into(),
                )),
            }
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in annotations {
            if let Some(why) = key_problem(&k.to_lowercase()) {
                causes.push(invalid("metadata.annotations", k, why));
            }
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
        }
        if total > MAX_ANNOTATIONS_BYTES {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
            });
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_annotations() {
        let ok = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web", "x": ""},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}});
        assert!(validate(&ok).is_empty());
        let long = "a".repeat(64);
        let bad = json!({"metadata": {"labels": {"app": long, "Bad_Prefix/x": "v", "y": "-v"}}});
        let fields: Vec<String> = validate(&bad).into_iter().map(|c| c.message).collect();
        assert_eq!(fields.len(), 3, "{fields:?}");
        let huge = json!({"metadata": {"annotations": {"a": "x".repeat(300_000)}}});
        assert_eq!(validate(&huge)[0].reason, "FieldValueTooLong");
    }
}
