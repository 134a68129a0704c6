//! The small JSONPath subset used by CRD printer columns and scale paths:
//! `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`, and `{...}` wrappers.

use serde_json::Value;

/// All values the path selects.
pub fn select<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut cur = vec![root];
    for seg in segments(path) {
        let mut next = Vec::new();
        for v in cur {
            match &seg {
                Seg::Field(f) => next.extend(v.get(f.as_str())),
                Seg::Index(i) => next.extend(v.as_array().and_then(|a| a.get(*i))),
                Seg::All => next.extend(v.as_array().into_iter().flatten()),
                Seg::Filter(field, want) => {
                    next.extend(v.as_array().into_iter().flatten().filter(|item| {
                        item.pointer(&format!("/{}", field.replace('.', "/")))
                            .is_some_and(|x| matches(x, want))
                    }))
                }
            }
        }
        cur = next;
    }
    cur
}

fn matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        other => *other == want,
    }
}

enum Seg {
    Field(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                out.push(Seg::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                out.push(Seg::All);
            } else if let Ok(i) = inner.parse() {
                out.push(Seg::Index(i));
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                if let Some((field, want)) = f.split_once("==") {
                    let want = want.trim().trim_matches('"').trim_matches('\'');
                    out.push(Seg::Filter(field.trim().to_string(), want.to_string()));
                }
            } else {
                out.push(Seg::Field(
                    inner.trim_matches('\'').trim_matches('"').to_string(),
                ));
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Seg::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    out
}

/// Sets a simple dotted path (`.spec.replicas`), creating objects on the way.
pub fn set_dotted(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
        .collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    for p in parents {
        if !cur.get(*p).is_some_and(Value::is_object) {
            cur[*p] = Value::Object(Default::default());
        }
        cur = &mut cur[*p];
    }
    cur[*last] = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects() {
        let v = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]},
            "spec": {"r": 3}});
        assert_eq!(
            select(&v, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(select(&v, "{.spec.r}"), vec![&json!(3)]);
        assert_eq!(select(&v, ".status.conditions[*].type").len(), 2);
        let mut w = json!({});
        set_dotted(&mut w, ".spec.replicas", json!(2));
        assert_eq!(w, json!({"spec": {"replicas": 2}}));
    }
}
