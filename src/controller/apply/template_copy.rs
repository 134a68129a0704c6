//! The promoted pod template as kept in an annotation of the primary: gzip, then base64,
//! behind a `gzip:` prefix. The API server refuses an object whose annotations pass 256 KiB
//! in all, and a pod template with many environment variables or init containers can be
//! larger than that as plain JSON; compressed, even a template of several hundred KiB fits
//! in [`MAX_ENCODED`]. Read back with a bound, since anyone who may edit the primary may
//! write the annotation.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::Value;

/// The largest encoded copy kept: half the API server's budget for all annotations, leaving
/// the rest to the user's and other controllers'.
pub const MAX_ENCODED: usize = 128 * 1024;
/// The largest template read back from a copy (a bomb in a hand-edited annotation
/// stops here).
pub const MAX_DECODED: u64 = 8 * 1024 * 1024;

const PREFIX: &str = "gzip:";

/// The copy of `template` to keep, or `Err(encoded size)` when it is over [`MAX_ENCODED`].
pub fn encode(template: &Value) -> Result<String, usize> {
    let json = template.to_string();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = gz
        .write_all(json.as_bytes())
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    let encoded = format!("{PREFIX}{}", STANDARD.encode(compressed));
    match encoded.len() <= MAX_ENCODED {
        true => Ok(encoded),
        false => Err(encoded.len()),
    }
}

/// The template in a kept copy: compressed, or plain JSON as serin kept it before; `None`
/// when it is neither, or larger than [`MAX_DECODED`].
pub fn decode(copy: &str) -> Option<Value> {
    let Some(encoded) = copy.strip_prefix(PREFIX) else {
        return serde_json::from_str(copy).ok();
    };
    let compressed = STANDARD.decode(encoded).ok()?;
    let mut json = Vec::new();
    GzDecoder::new(compressed.as_slice())
        .take(MAX_DECODED + 1)
        .read_to_end(&mut json)
        .ok()?;
    if json.len() as u64 > MAX_DECODED {
        return None;
    }
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod template of about `kib` KiB of environment variables, as varied as real ones.
    fn big_template(kib: usize) -> Value {
        let env: Vec<Value> = (0..kib * 1024 / 64)
            .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("{:x}", i * 7919)}))
            .collect();
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "app", "image": "web:1", "env": env}]}})
    }

    #[test]
    fn a_template_of_several_hundred_kib_round_trips_within_the_bound() {
        let template = big_template(400);
        assert!(template.to_string().len() > 256 * 1024);
        let copy = encode(&template).unwrap();
        assert!(copy.len() <= MAX_ENCODED, "{} bytes", copy.len());
        assert_eq!(decode(&copy), Some(template));
    }

    #[test]
    fn a_template_that_does_not_compress_enough_is_refused_with_its_size() {
        // Random-looking values compress badly.
        let env: Vec<Value> = (0..6000u64)
            .map(|i| json!({"name": format!("K{i}"),
                "value": format!("{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), !i.rotate_left(17))}))
            .collect();
        let template = json!({"spec": {"containers": [{"name": "app", "env": env}]}});
        let size = encode(&template).unwrap_err();
        assert!(size > MAX_ENCODED);
    }

    #[test]
    fn plain_json_kept_before_is_still_read() {
        let template = json!({"spec": {"containers": [{"name": "app", "image": "web:1"}]}});
        assert_eq!(decode(&template.to_string()), Some(template));
    }

    #[test]
    fn hand_edited_copies_give_nothing_instead_of_a_panic_or_a_bomb() {
        assert_eq!(decode("gzip:not base64!"), None);
        assert_eq!(decode("gzip:aGVsbG8="), None); // base64 of "hello", not gzip
        assert_eq!(decode("{broken"), None);
        // 64 MiB of spaces compress to about 64 KiB: read no further than the bound.
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let spaces = vec![b' '; 1024 * 1024];
        for _ in 0..64 {
            gz.write_all(&spaces).unwrap();
        }
        let bomb = format!("{PREFIX}{}", STANDARD.encode(gz.finish().unwrap()));
        assert_eq!(decode(&bomb), None);
    }
}
