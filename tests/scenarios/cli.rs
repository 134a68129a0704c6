//! `serin controller` refuses bad flags with exit code 2 and a message naming the flag.

use std::process::Command;

fn controller(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_serin"))
        .arg("controller")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_name_the_flag() {
    let (code, err) = controller(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--kubeconfig /nonexistent/kubeconfig: cannot read"),
        "{err}"
    );

    let (code, err) = controller(&["--kubeconfig-qps", "0", "--kubeconfig", "/dev/null"]);
    assert_eq!(code, 2);
    assert!(err.contains("--kubeconfig-qps"), "{err}");

    let (code, err) = controller(&["--mesh-provider", "envoy"]);
    assert_eq!(code, 2);
    assert!(err.contains("--mesh-provider"), "{err}");

    let (code, err) = controller(&["--log-level", "loud[", "--kubeconfig", "/dev/null"]);
    assert_eq!(code, 2);
    assert!(err.contains("--log-level"), "{err}");
}
