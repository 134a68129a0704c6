//! Flagger's command line, accepted as it is: Flagger's chart and kustomize bases start its
//! binary with Go-style flags and no subcommand (`-mesh-provider=istio -metrics-server=...`).
//! Such an argument list runs `serin controller`: single-dash flags become double-dash ones,
//! and each Flagger flag serin does not implement is dropped with one warning naming it, so a
//! Flagger deployment's arguments start serin rather than stop it.

use std::ffi::OsString;

/// Flagger controller flags serin implements, under the same names.
const IMPLEMENTED: &[&str] = &[
    "kubeconfig",
    "kubeconfig-qps",
    "kubeconfig-burst",
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

/// Flagger controller flags serin does not implement (yet): name and whether Go's flag
/// package reads a value from the next argument (`-flag value`; booleans take `=value` only).
const NOT_IMPLEMENTED: &[(&str, bool)] = &[
    ("master", true),
    ("kubeconfig-service-mesh", true),
    ("control-loop-interval", true),
    ("zap-encoding", true),
    ("zap-replace-globals", false),
    ("threadiness", true),
    ("version", false),
];

/// The flag's name in `-name`, `--name`, `-name=value` or `--name=value`.
fn flag_name(arg: &str) -> Option<&str> {
    let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let name = bare.split_once('=').map_or(bare, |(n, _)| n);
    (name.len() > 1).then_some(name)
}

fn is_flagger_flag(arg: &str) -> bool {
    flag_name(arg)
        .is_some_and(|n| IMPLEMENTED.contains(&n) || NOT_IMPLEMENTED.iter().any(|(f, _)| *f == n))
}

/// Rewrites a command line given in Flagger's style (see the module documentation) and
/// returns the warnings for the flags it dropped. Any other command line is returned as is.
pub fn normalize(args: Vec<OsString>) -> (Vec<OsString>, Vec<String>) {
    let mut iter = args.into_iter();
    let Some(program) = iter.next() else {
        return (Vec::new(), Vec::new());
    };
    let rest: Vec<OsString> = iter.collect();
    let first = rest.first().and_then(|a| a.to_str()).unwrap_or_default();
    let controller_args = if first == "controller" {
        &rest[1..]
    } else if is_flagger_flag(first) {
        &rest[..]
    } else {
        let mut all = vec![program];
        all.extend(rest);
        return (all, Vec::new());
    };
    let mut out = vec![program, OsString::from("controller")];
    let mut warnings = Vec::new();
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
        if let Some((_, takes_value)) = NOT_IMPLEMENTED.iter().find(|(f, _)| *f == name) {
            let mut given = text.to_string();
            if *takes_value && !text.contains('=') && i < controller_args.len() {
                given = format!("{text} {}", controller_args[i].to_string_lossy());
                i += 1;
            }
            warnings.push(format!(
                "ignoring Flagger flag `{given}`: serin does not implement -{name}; it starts without it"
            ));
            continue;
        }
        if IMPLEMENTED.contains(&name) && !text.starts_with("--") {
            out.push(OsString::from(format!("-{text}")));
        } else {
            out.push(arg.clone());
        }
    }
    (out, warnings)
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
                "info"
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("`-threadiness 4`"));
        assert!(warnings[1].contains("`-zap-replace-globals`"));
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
