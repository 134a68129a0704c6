//! Decoding of the Kubernetes protobuf request bodies that kubectl's generator subcommands
//! send (`kubectl create namespace|configmap|secret|serviceaccount|deployment|service`).
//! Only those kinds, and only their commonly generated fields, are known; unknown fields
//! are skipped. Every response is JSON.
//!
//! Wire format: the magic `k8s\0`, then a `runtime.Unknown` message whose field 1 is the
//! TypeMeta (apiVersion, kind) and field 2 the object's own protobuf encoding (field numbers
//! from the `generated.proto` files of k8s.io/api).

use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
    /// map<string, string>, and map<string, bytes> (values base64 as in JSON)
    MapStr,
    MapBytes,
    IntOrString,
}

struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        num,
        name,
        kind,
        repeated: false,
    }
}

const fn r(num: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        num,
        name,
        kind,
        repeated: true,
    }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(11, "labels", Kind::MapStr),
    f(12, "annotations", Kind::MapStr),
    r(13, "ownerReferences", Kind::Msg(OWNER_REF)),
    r(14, "finalizers", Kind::Str),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(&[r(1, "finalizers", Kind::Str)])),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapStr),
    f(3, "binaryData", Kind::MapBytes),
    f(4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapBytes),
    f(3, "type", Kind::Str),
    f(4, "stringData", Kind::MapStr),
    f(5, "immutable", Kind::Bool),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(4, "automountServiceAccountToken", Kind::Bool),
];

const LABEL_SELECTOR_REQ: &[Field] = &[
    f(1, "key", Kind::Str),
    f(2, "operator", Kind::Str),
    r(3, "values", Kind::Str),
];

const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Kind::MapStr),
    r(2, "matchExpressions", Kind::Msg(LABEL_SELECTOR_REQ)),
];

const CONTAINER_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "hostPort", Kind::Int),
    f(3, "containerPort", Kind::Int),
    f(4, "protocol", Kind::Str),
];

const ENV_VAR: &[Field] = &[f(1, "name", Kind::Str), f(2, "value", Kind::Str)];

const RESOURCES: &[Field] = &[];

const CONTAINER: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "image", Kind::Str),
    r(3, "command", Kind::Str),
    r(4, "args", Kind::Str),
    f(5, "workingDir", Kind::Str),
    r(6, "ports", Kind::Msg(CONTAINER_PORT)),
    r(7, "env", Kind::Msg(ENV_VAR)),
    f(8, "resources", Kind::Msg(RESOURCES)),
    f(14, "imagePullPolicy", Kind::Str),
];

const POD_SPEC: &[Field] = &[
    r(2, "containers", Kind::Msg(CONTAINER)),
    f(3, "restartPolicy", Kind::Str),
    f(8, "serviceAccountName", Kind::Str),
    r(20, "initContainers", Kind::Msg(CONTAINER)),
];

const POD_TEMPLATE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(POD_SPEC)),
];

const DEPLOYMENT_STRATEGY: &[Field] = &[f(1, "type", Kind::Str)];

const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            f(1, "replicas", Kind::Int),
            f(2, "selector", Kind::Msg(LABEL_SELECTOR)),
            f(3, "template", Kind::Msg(POD_TEMPLATE)),
            f(4, "strategy", Kind::Msg(DEPLOYMENT_STRATEGY)),
            f(5, "minReadySeconds", Kind::Int),
            f(6, "revisionHistoryLimit", Kind::Int),
            f(7, "paused", Kind::Bool),
            f(9, "progressDeadlineSeconds", Kind::Int),
        ]),
    ),
];

const SERVICE_PORT: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "protocol", Kind::Str),
    f(3, "port", Kind::Int),
    f(4, "targetPort", Kind::IntOrString),
    f(5, "nodePort", Kind::Int),
];

const SERVICE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            r(1, "ports", Kind::Msg(SERVICE_PORT)),
            f(2, "selector", Kind::MapStr),
            f(3, "clusterIP", Kind::Str),
            f(4, "type", Kind::Str),
            f(10, "externalName", Kind::Str),
        ]),
    ),
];

fn schema_for(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        _ => return None,
    })
}

/// Decodes a protobuf request body into the JSON object it encodes.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let body = bytes
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf magic prefix")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (num, val) in Reader(body) {
        match (num, val?) {
            (1, Val::Len(tm)) => {
                for (n, v) in Reader(tm) {
                    if let (n, Val::Len(s)) = (n, v?) {
                        let s = String::from_utf8_lossy(s).to_string();
                        if n == 1 {
                            api_version = s;
                        } else if n == 2 {
                            kind = s;
                        }
                    }
                }
            }
            (2, Val::Len(r)) => raw = r,
            _ => {}
        }
    }
    let schema = schema_for(&api_version, &kind).ok_or_else(|| {
        format!("protobuf bodies of {api_version} {kind} are not supported; send JSON")
    })?;
    let mut obj = message(raw, schema)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

enum Val<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

struct Reader<'a>(&'a [u8]);

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

impl<'a> Iterator for Reader<'a> {
    type Item = (u64, Result<Val<'a>, String>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let key = match varint(&mut self.0) {
            Ok(k) => k,
            Err(e) => {
                self.0 = &[];
                return Some((0, Err(e)));
            }
        };
        let (num, wire) = (key >> 3, key & 7);
        let val = match wire {
            0 => varint(&mut self.0).map(Val::Varint),
            2 => varint(&mut self.0).and_then(|len| {
                let len = usize::try_from(len).map_err(|_| "length overflow".to_string())?;
                if len > self.0.len() {
                    return Err("truncated field".into());
                }
                let (v, rest) = self.0.split_at(len);
                self.0 = rest;
                Ok(Val::Len(v))
            }),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if self.0.len() < n {
                    Err("truncated fixed field".into())
                } else {
                    self.0 = &self.0[n..];
                    Ok(Val::Fixed)
                }
            }
            other => Err(format!("unsupported wire type {other}")),
        };
        if val.is_err() {
            self.0 = &[];
        }
        Some((num, val))
    }
}

fn message(bytes: &[u8], schema: &[Field]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (num, val) in Reader(bytes) {
        let val = val?;
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        let v = match (field.kind, val) {
            (Kind::Str, Val::Len(b)) => json!(String::from_utf8_lossy(b)),
            // int32 fields carry negative numbers as 64-bit two's complement.
            (Kind::Int, Val::Varint(n)) => json!(n as i64),
            (Kind::Bool, Val::Varint(n)) => json!(n != 0),
            (Kind::Msg(s), Val::Len(b)) => Value::Object(message(b, s)?),
            (Kind::MapStr | Kind::MapBytes, Val::Len(b)) => {
                let (k, v) = map_entry(b, matches!(field.kind, Kind::MapBytes))?;
                let entry = out.entry(field.name).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Kind::IntOrString, Val::Len(b)) => int_or_string(b)?,
            _ => continue,
        };
        // Go's zero values travel explicitly in protobuf but are omitted (omitempty) in JSON.
        let zero = v == json!("")
            || v == json!(false)
            || (v == json!(0) && matches!(field.name, "minReadySeconds" | "hostPort" | "nodePort"));
        if zero && !field.repeated {
            continue;
        }
        if field.repeated {
            if let Some(a) = out
                .entry(field.name)
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                a.push(v);
            }
        } else {
            out.insert(field.name.to_string(), v);
        }
    }
    Ok(out)
}

fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut value = json!("");
    for (n, v) in Reader(b) {
        if let Val::Len(s) = v? {
            if n == 1 {
                key = String::from_utf8_lossy(s).to_string();
            } else if n == 2 {
                value = if bytes_value {
                    json!(base64(s))
                } else {
                    json!(String::from_utf8_lossy(s))
                };
            }
        }
    }
    Ok((key, value))
}

fn int_or_string(b: &[u8]) -> Result<Value, String> {
    let (mut is_string, mut int, mut s) = (false, 0i64, String::new());
    for (n, v) in Reader(b) {
        match (n, v?) {
            (1, Val::Varint(t)) => is_string = t == 1,
            (2, Val::Varint(i)) => int = i as i64,
            (3, Val::Len(x)) => s = String::from_utf8_lossy(x).to_string(),
            _ => {}
        }
    }
    Ok(if is_string { json!(s) } else { json!(int) })
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = [
            field(1, b"cfg"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &cm)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "cfg", "labels": {"app": "web"}}, "data": {"k": "v"},
            "apiVersion": "v1", "kind": "ConfigMap"})
        );
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert!(decode(b"nope").is_err());
    }
}
