//! `wget`, as far as Flagger's chart uses it: its Deployment probes the controller with
//! `exec: wget --quiet --tries=1 --timeout=4 --spider http://localhost:8080/healthz`, and
//! serin's image (distroless) has no shell and no wget. The image links `wget` to the serin
//! binary, which answers to that name: a GET of one `http://` URL, exit 0 on a 2xx answer,
//! 1 on anything else (as BusyBox's wget), so Flagger's chart runs with serin's image unchanged.

use std::process::ExitCode;
use std::time::Duration;

/// Whether the process was started as `wget` (its name, as a probe's `exec` gives it).
pub fn invoked_as_wget(program: &std::ffi::OsStr) -> bool {
    std::path::Path::new(program)
        .file_name()
        .is_some_and(|name| name == "wget")
}

/// What the probe asked for.
#[derive(Debug, PartialEq)]
struct Request {
    url: String,
    timeout: Duration,
    tries: u32,
    quiet: bool,
}

/// Reads wget's arguments (those Flagger's and common probes use); the others are refused
/// with a message naming them.
fn parse(args: &[String]) -> Result<Request, String> {
    let mut request = Request {
        url: String::new(),
        timeout: Duration::from_secs(10),
        tries: 1,
        quiet: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        match flag {
            "-q" | "--quiet" => request.quiet = true,
            "--spider" | "-s" => {}
            "-O" | "--output-document" => {
                value(flag)?;
            }
            "-T" | "--timeout" => {
                let v = value(flag)?;
                let secs: u64 = v.parse().map_err(|_| format!("{flag} {v}: not seconds"))?;
                request.timeout = Duration::from_secs(secs.clamp(1, 300));
            }
            "-t" | "--tries" => {
                let v = value(flag)?;
                let tries: u32 = v.parse().map_err(|_| format!("{flag} {v}: not a count"))?;
                request.tries = tries.clamp(1, 10);
            }
            _ if flag.starts_with('-') => return Err(format!("{flag}: not supported")),
            url => request.url = url.to_string(),
        }
    }
    if !request.url.starts_with("http://") {
        return Err(format!("{:?}: an http:// URL is needed", request.url));
    }
    Ok(request)
}

/// Runs `wget ARGS`; the exit code is the probe's verdict.
pub fn run(args: &[String]) -> ExitCode {
    let request = match parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wget: {e}");
            return ExitCode::from(2);
        }
    };
    let answered = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(fetch(&request)));
    match answered {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !request.quiet {
                eprintln!("wget: {}: {e}", request.url);
            }
            ExitCode::from(1)
        }
    }
}

/// GETs the URL up to `tries` times; Ok on a 2xx answer.
async fn fetch(request: &Request) -> Result<(), String> {
    let client = crate::outbound::client_builder()
        .timeout(request.timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for _ in 0..request.tries {
        match client.get(&request.url).send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => last = format!("server answered {}", answer.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flaggers_probe_reads_as_one_get_with_its_timeout() {
        let r = parse(&args(
            "--quiet --tries=1 --timeout=4 --spider http://localhost:8080/healthz",
        ))
        .unwrap();
        assert_eq!(
            r,
            Request {
                url: "http://localhost:8080/healthz".into(),
                timeout: Duration::from_secs(4),
                tries: 1,
                quiet: true,
            }
        );
        assert_eq!(
            parse(&args("-q -T 2 -t 3 -O - http://x/")).unwrap().tries,
            3
        );
    }

    #[test]
    fn what_it_cannot_do_is_refused_by_name() {
        for (line, says) in [
            ("--post-data=x http://x/", "--post-data: not supported"),
            ("--spider https://x/", "an http:// URL is needed"),
            ("--timeout=soon http://x/", "--timeout soon: not seconds"),
            ("--quiet", "an http:// URL is needed"),
            ("-T", "-T needs a value"),
        ] {
            assert!(parse(&args(line)).unwrap_err().contains(says), "{line}");
        }
    }

    #[test]
    fn only_the_name_wget_switches() {
        assert!(invoked_as_wget("/usr/local/bin/wget".as_ref()));
        assert!(invoked_as_wget("wget".as_ref()));
        assert!(!invoked_as_wget("/usr/local/bin/serin".as_ref()));
    }
}
