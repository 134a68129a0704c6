//! Flagger's command line, accepted as it is: Flagger's chart and kustomize bases start its
//! binary with Go-style flags and no subcommand (`-mesh-provider=istio -metrics-server=...`).
//! Such an argument list runs `serin controller`: single-dash flags become double-dash ones,
//! `-zap-encoding` becomes `--log-format` (JSON by default, as Flagger logs), `-version`
//! prints the version, and the flags serin has no use for are dropped with a note saying why,
//! so a Flagger deployment's arguments start serin rather than stop it.

use std::ffi::OsString;

/// Flagger controller flags serin implements, under the same names.
const IMPLEMENTED: &[&str] = &[
    "kubeconfig",
    "kubeconfig-qps",
    "kubeconfig-burst",
    "kubeconfig-service-mesh",
    "master",
    "metrics-server",
    "log-level",
    "port",
    "include-label-prefix",
    "namespace",
    "mesh-provider",
    "selector-labels",
    "ingress-annotations-prefix",
    "ingress-class",
    "enable-config-tracking",
    "event-webhook",
    "no-cross-namespace-refs",
    "slack-url",
    "slack-token",
    "slack-proxy-url",
    "slack-user",
    "slack-channel",
    "msteams-url",
    "msteams-proxy-url",
    "cluster-name",
    "enable-leader-election",
    "leader-election-namespace",
];

/// Flagger controller flags that tune what serin does another way: name, whether Go's flag
/// package reads a value from the next argument (`-flag value`; booleans take `=value`
/// only), and what serin does instead.
const NO_EFFECT: &[(&str, bool, &str)] = &[
    (
        "threadiness",
        true,
        "Flagger's workqueue workers; serin reconciles up to --max-concurrent-reconciles Canaries at once, and no analysis waits for a worker",
    ),
    (
        "control-loop-interval",
        true,
        "Flagger's period for picking up new Canaries; serin watches them and picks each up at once",
    ),
    (
        "zap-replace-globals",
        false,
        "Go's global logger; serin has one logger",
    ),
];

/// Flagger's `-zap-encoding` values and serin's `--log-format` for each.
const ENCODINGS: &[(&str, &str)] = &[("json", "json"), ("console", "text")];

/// The flag's name in `-name`, `--name`, `-name=value` or `--name=value`.
fn flag_name(arg: &str) -> Option<&str> {
    let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let name = bare.split_once('=').map_or(bare, |(n, _)| n);
    (name.len() > 1).then_some(name)
}

fn is_flagger_flag(arg: &str) -> bool {
    flag_name(arg).is_some_and(|n| {
        IMPLEMENTED.contains(&n)
            || NO_EFFECT.iter().any(|(f, _, _)| *f == n)
            || matches!(n, "zap-encoding" | "version")
    })
}

/// Rewrites a command line given in Flagger's style (see the module documentation) and
/// returns a note for each flag it dropped. Any other command line is returned as is.
pub fn normalize(args: Vec<OsString>) -> (Vec<OsString>, Vec<String>) {
    let mut iter = args.into_iter();
    let Some(program) = iter.next() else {
        return (Vec::new(), Vec::new());
    };
    let rest: Vec<OsString> = iter.collect();
    let first = rest.first().and_then(|a| a.to_str()).unwrap_or_default();
    let (controller_args, flagger_style) = if first == "controller" {
        (&rest[1..], false)
    } else if is_flagger_flag(first) {
        (&rest[..], true)
    } else {
        let mut all = vec![program];
        all.extend(rest);
        return (all, Vec::new());
    };
    let mut out = vec![program, OsString::from("controller")];
    let mut notes = Vec::new();
    let mut log_format_given = false;
    let mut i = 0;
    while i < controller_args.len() {
        let arg = &controller_args[i];
        i += 1;
        let Some(text) = arg.to_str() else {
            out.push(arg.clone());
            continue;
        };
        let Some(name) = flag_name(text) else {
            out.push(arg.clone());
            continue;
        };
        // The value of `-flag value`, taken from the next argument.
        let mut value_of = |text: &str| match text.split_once('=') {
            Some((_, v)) => Some(v.to_string()),
            None if i < controller_args.len() => {
                i += 1;
                Some(controller_args[i - 1].to_string_lossy().into_owned())
            }
            None => None,
        };
        match name {
            "version" => {
                out.truncate(1);
                out.push("--version".into());
                return (out, Vec::new());
            }
            "zap-encoding" => {
                let value = value_of(text).unwrap_or_default();
                let format = ENCODINGS
                    .iter()
                    .find(|(zap, _)| *zap == value)
                    .map_or(value.as_str(), |(_, format)| format);
                out.push(OsString::from(format!("--log-format={format}")));
                log_format_given = true;
            }
            "log-format" => {
                log_format_given = true;
                out.push(arg.clone());
            }
            _ => {
                if let Some((_, takes_value, instead)) =
                    NO_EFFECT.iter().find(|(f, _, _)| *f == name)
                {
                    let given = match (*takes_value, text.contains('=')) {
                        (true, false) => format!("{text} {}", value_of(text).unwrap_or_default()),
                        _ => text.to_string(),
                    };
                    notes.push(format!("Flagger flag `{given}` has no effect: {instead}"));
                } else if IMPLEMENTED.contains(&name) && !text.starts_with("--") {
                    out.push(OsString::from(format!("-{text}")));
                } else {
                    out.push(arg.clone());
                }
            }
        }
    }
    if flagger_style && !log_format_given {
        out.push(OsString::from("--log-format=json"));
    }
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let (out, warnings) = normalize(args.iter().map(OsString::from).collect());
        (
            out.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            warnings,
        )
    }

    #[test]
    fn a_flagger_chart_argument_list_runs_the_controller() {
        let (args, warnings) = run(&[
            "serin",
            "-mesh-provider=istio",
            "-metrics-server=http://prometheus:9090",
            "-enable-leader-election=true",
            "-leader-election-namespace",
            "flagger-system",
            "-threadiness",
            "4",
            "-zap-replace-globals",
            "-log-level",
            "info",
        ]);
        assert_eq!(
            args,
            [
                "serin",
                "controller",
                "--mesh-provider=istio",
                "--metrics-server=http://prometheus:9090",
                "--enable-leader-election=true",
                "--leader-election-namespace",
                "flagger-system",
                "--log-level",
                "info",
                "--log-format=json"
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("`-threadiness 4` has no effect"));
        assert!(warnings[0].contains("--max-concurrent-reconciles"));
        assert!(warnings[1].contains("`-zap-replace-globals`"));
    }

    #[test]
    fn zap_encoding_becomes_the_log_format() {
        for (given, format) in [
            (&["-zap-encoding", "console"][..], "--log-format=text"),
            (&["-zap-encoding=json"], "--log-format=json"),
            (
                &["-log-level=info", "-zap-encoding=console"],
                "--log-format=text",
            ),
        ] {
            let mut line = vec!["serin"];
            line.extend(given);
            let (args, _) = run(&line);
            assert_eq!(
                args.iter()
                    .filter(|a| a.starts_with("--log-format"))
                    .count(),
                1
            );
            assert!(args.contains(&format.to_string()), "{args:?}");
        }
        // serin's own subcommand keeps serin's default (text).
        let (args, _) = run(&["serin", "controller", "-port=0"]);
        assert_eq!(args, ["serin", "controller", "--port=0"]);
    }

    #[test]
    fn version_prints_the_version() {
        for line in [
            &["serin", "-version"][..],
            &["serin", "--version"],
            &["serin", "-mesh-provider=istio", "-version"],
        ] {
            assert_eq!(
                run(line),
                (vec!["serin".into(), "--version".into()], vec![])
            );
        }
    }

    #[test]
    fn the_mesh_kubeconfig_and_master_reach_the_controller() {
        let (args, notes) = run(&[
            "serin",
            "-kubeconfig-service-mesh=/m",
            "-master",
            "https://x",
        ]);
        assert_eq!(
            args,
            [
                "serin",
                "controller",
                "--kubeconfig-service-mesh=/m",
                "--master",
                "https://x",
                "--log-format=json"
            ]
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn double_dashes_and_the_subcommand_are_kept() {
        let (args, warnings) = run(&[
            "serin",
            "controller",
            "--kubeconfig",
            "/k",
            "-port=0",
            "-zap-replace-globals",
            "--log-level=debug",
        ]);
        assert_eq!(
            args,
            [
                "serin",
                "controller",
                "--kubeconfig",
                "/k",
                "--port=0",
                "--log-level=debug"
            ]
        );
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn other_command_lines_are_untouched() {
        for args in [
            &["serin", "check", "-f", "x.yaml"][..],
            &["serin", "--help"],
            &["serin", "-h"],
            &["serin", "plan", "-f", "c.yaml", "-o", "json"],
            &["serin"],
        ] {
            assert_eq!(
                run(args),
                (args.iter().map(|a| a.to_string()).collect(), vec![])
            );
        }
    }
}
