//! `serin check`: validate Canary, MetricTemplate and AlertProvider manifests offline.
//!
//! Reads YAML files (multi-document; `kind: List` items too), directories (every `*.yaml` /
//! `*.yml` below them) and `-` (stdin). Objects that are not `flagger.app` kinds are skipped.
//! Each object is checked against serin's CRD schema, then against the semantic rules
//! ([`crate::api::validate`]); a Canary whose StatefulSet target is in the manifests too is
//! checked against it (released in place, it must update by rolling update, with at least
//! two replicas).
//!
//! Output, all on stdout: one line per problem,
//! `FILE: <Kind>/<name>: <field path>: <what is wrong and what to do>`, then a summary line.
//! Files that cannot be read or parsed are reported on stderr as `FILE: <error>`.
//!
//! Exit status: 0 when every object is valid, 1 when any problem was found, 2 when a file
//! could not be read or is not YAML (the other files are still checked).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::api::Provider;
use crate::api::validate::{self, Checked, Problem};
use crate::workload::stateful_set;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Manifests to check: YAML files, directories, or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE", num_args = 1.., required = true)]
    pub files: Vec<PathBuf>,
    /// Provider assumed for Canaries without `spec.provider` (the controller's
    /// `--mesh-provider`).
    #[arg(long, value_name = "PROVIDER", default_value = "istio")]
    pub mesh_provider: Provider,
}

/// Counts for the summary line.
#[derive(Debug, Default)]
struct Tally {
    files: usize,
    objects: usize,
    invalid_objects: usize,
    problems: usize,
    unreadable: usize,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut tally = Tally::default();

    let mut read_files = Vec::new();
    for input in expand(&args.files, &mut stderr, &mut tally)? {
        tally.files += 1;
        let display = input.display().to_string();
        let parsed = read(&input).and_then(|text| parse_documents(&text));
        match parsed {
            Ok(objects) => read_files.push((display, objects)),
            Err(error) => {
                tally.unreadable += 1;
                writeln!(stderr, "{display}: {error:#}")?;
            }
        }
    }
    // A Canary's StatefulSet target is checked when the manifests hold it too.
    let stateful_sets: Vec<&Value> = read_files
        .iter()
        .flat_map(|(_, objects)| objects)
        .filter(|o| o["apiVersion"] == "apps/v1" && o["kind"] == "StatefulSet")
        .collect();
    for (display, objects) in &read_files {
        for object in objects {
            let Some(Checked {
                kind,
                name,
                mut problems,
            }) = validate::object(object, args.mesh_provider)
            else {
                continue;
            };
            problems.extend(target_problems(object, &stateful_sets));
            tally.objects += 1;
            if !problems.is_empty() {
                tally.invalid_objects += 1;
                tally.problems += problems.len();
            }
            for problem in problems {
                writeln!(stdout, "{display}: {kind}/{name}: {problem}")?;
            }
        }
    }

    writeln!(stdout, "{}", summary(&tally))?;
    Ok(if tally.unreadable > 0 {
        ExitCode::from(2)
    } else if tally.problems > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What keeps a Canary's StatefulSet target, found among `stateful_sets` (same name, and
/// the same namespace where both name one), from being released in place.
fn target_problems(canary: &Value, stateful_sets: &[&Value]) -> Vec<Problem> {
    let target = &canary["spec"]["targetRef"];
    if canary["kind"] != "Canary" || target["kind"] != "StatefulSet" {
        return Vec::new();
    }
    let namespace = |o: &Value| o["metadata"]["namespace"].as_str().map(str::to_string);
    let found = stateful_sets.iter().find(|s| {
        s["metadata"]["name"] == target["name"]
            && match (namespace(s), namespace(canary)) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    });
    let Some(typed) = found.and_then(|s| serde_json::from_value::<StatefulSet>((*s).clone()).ok())
    else {
        return Vec::new();
    };
    stateful_set::problems(&typed)
        .into_iter()
        .map(|(field, message)| Problem::new("spec.targetRef", format!("{field}: {message}")))
        .collect()
}

fn summary(t: &Tally) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut line = format!(
        "{}, {}",
        plural(t.files, "file", "files"),
        plural(t.objects, "object", "objects")
    );
    if t.problems == 0 {
        line.push_str(": all valid");
    } else {
        line.push_str(&format!(
            ": {} in {}",
            plural(t.problems, "problem", "problems"),
            plural(t.invalid_objects, "object", "objects")
        ));
    }
    if t.unreadable > 0 {
        line.push_str(&format!(
            ", {} could not be read",
            plural(t.unreadable, "file", "files")
        ));
    }
    line
}

/// Files to read: the arguments, with directories replaced by the YAML files below them
/// (sorted). A missing path stays in the list, so that reading it reports the error.
fn expand(
    args: &[PathBuf],
    stderr: &mut impl Write,
    tally: &mut Tally,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            if let Err(error) = walk(arg, &mut files) {
                tally.unreadable += 1;
                writeln!(stderr, "{}: {error:#}", arg.display())?;
            }
        } else {
            files.push(arg.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .context("cannot read directory")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(path);
        }
    }
    Ok(())
}

pub(crate) fn read(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        return Ok(text);
    }
    let bytes = std::fs::read(path).context("cannot read file")?;
    String::from_utf8(bytes).context("not a YAML file: not UTF-8 text")
}

/// Every object of a multi-document YAML stream; `kind: *List` objects contribute their
/// `items`. Empty documents are skipped.
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let n = index + 1;
        let mut yaml: serde_norway::Value = serde::Deserialize::deserialize(document)
            .with_context(|| format!("not valid YAML (document {n})"))?;
        yaml.apply_merge()
            .with_context(|| format!("not valid YAML (document {n})"))?;
        let value: Value = serde_json::to_value(&yaml)
            .with_context(|| format!("document {n} is not a Kubernetes object"))?;
        match value {
            Value::Null => {}
            Value::Object(_) => push_object(value, &mut objects),
            _ => anyhow::bail!(
                "document {n} is not a Kubernetes object (expected a mapping with apiVersion \
                 and kind)"
            ),
        }
    }
    Ok(objects)
}

fn push_object(value: Value, objects: &mut Vec<Value>) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = value.get("items").cloned() {
            for item in items {
                push_object(item, objects);
            }
        }
    } else {
        objects.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_empty_documents() {
        let text = "---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: a/v1, kind: X}\n- {apiVersion: a/v1, kind: Y}\n---\nkind: Z\n";
        let objects = parse_documents(text).unwrap();
        let kinds: Vec<_> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["X", "Y", "Z"]);
    }

    #[test]
    fn yaml_errors_and_scalars_are_rejected() {
        assert!(parse_documents("a: [unclosed\n").is_err());
        assert!(parse_documents("just some text\n").is_err());
        assert!(parse_documents("a: 1\n---\n- list\n").is_err());
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "base: &b {x: 1}\nobj:\n  <<: *b\n  y: 2\n";
        let objects = parse_documents(text).unwrap();
        assert_eq!(objects[0]["obj"], serde_json::json!({"x": 1, "y": 2}));
    }

    #[test]
    fn summary_lines() {
        let mut t = Tally {
            files: 3,
            objects: 5,
            ..Tally::default()
        };
        assert_eq!(summary(&t), "3 files, 5 objects: all valid");
        t.problems = 2;
        t.invalid_objects = 1;
        t.unreadable = 1;
        assert_eq!(
            summary(&t),
            "3 files, 5 objects: 2 problems in 1 object, 1 file could not be read"
        );
    }
}
