//! The one harness of serin's end-to-end tests. A [`World`] is a local stack (the emulator
//! or the real control plane), serin's CRDs (and, on request, the routing CRDs), and the
//! `serin controller` binary running against it, with the reads and waits the scenario
//! suites share. [`on_every_control_plane!`] turns a scenario into one test per back-end.

// Test support: failing loudly, with context, is its job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
mod canary;
mod controller;
pub mod dashboard;
pub mod http;
mod logs;
mod receiver;
mod requests;
pub mod tls;
pub mod virtual_time;
pub mod wait;
mod world;

pub use canary::{CanaryManifest, apex_ingress, canary, virtual_service_weights};
pub use controller::Controller;
pub use receiver::Receiver;
pub use requests::{metric_sum, requests_between};
pub use serin_stack::{ControlPlane, Scenario, Stack, StackConfig};
pub use virtual_time::{in_virtual_time, virtual_time};
pub use wait::{Poll, wait_until};
pub use world::{World, WorldConfig, controller_args, ready_condition};

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// How long a scenario waits for what must come (a phase, an event, the end of a release)
/// before it fails. Generous, since twelve scenarios share two cores; a wait returns as soon as
/// its condition holds, so passing scenarios never spend it.
pub const LONG: Duration = Duration::from_secs(120);

/// The control planes the scenario suites run on: `$SERIN_CONTROL_PLANES` (`emulator`,
/// `real`, or both comma-separated); both by default.
pub fn control_planes() -> Vec<ControlPlane> {
    let spec = std::env::var("SERIN_CONTROL_PLANES").unwrap_or_else(|_| "emulator,real".into());
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|e| panic!("SERIN_CONTROL_PLANES: {e}"))
        })
        .collect()
}

/// Whether the suites run on `cp` this time (see [`control_planes`]).
pub fn selected(cp: ControlPlane) -> bool {
    control_planes().contains(&cp)
}

/// A file of the workspace (`crds/crds.yaml`, `e2e/crds/routing.yaml`, ...).
pub fn workspace_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// The `helm` binary `scripts/setup` builds (`$SERIN_HELM` overrides it).
pub fn helm_binary() -> PathBuf {
    std::env::var_os("SERIN_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_file("target/helm/helm"))
}

/// One `#[tokio::test]` per control plane for each named `async fn(ControlPlane)`, in
/// modules `emulator` and `real` (so `cargo test real::` runs one back-end). A back-end
/// left out of `$SERIN_CONTROL_PLANES` passes without running.
///
/// Scenarios listed after `virtual_time:` run their emulator half in virtual time (see
/// [`in_virtual_time`]); those after `real_time:` in real time on both, for what virtual time
/// cannot hold: a process beside the test (Prometheus, the CLI, the load tester), a controller
/// killed or restarted, its environment, its process id. The real control plane is a process
/// of its own and always runs in real time.
#[macro_export]
macro_rules! on_every_control_plane {
    (virtual_time: $($v:ident),* $(,)? $(; real_time: $($r:ident),* $(,)?)?) => {
        mod emulator {
            $($crate::scenario_test!(virtual_time, $v);)*
            $($($crate::scenario_test!(emulator, $r);)*)?
        }
        mod real {
            $($crate::scenario_test!(real, $v);)*
            $($($crate::scenario_test!(real, $r);)*)?
        }
    };
    ($($name:ident),* $(,)?) => {
        mod emulator {
            $($crate::scenario_test!(emulator, $name);)*
        }
        mod real {
            $($crate::scenario_test!(real, $name);)*
        }
    };
}

/// One test of [`on_every_control_plane!`].
#[doc(hidden)]
#[macro_export]
macro_rules! scenario_test {
    (virtual_time, $name:ident) => {
        #[tokio::test(start_paused = true)]
        async fn $name() {
            if $crate::selected($crate::ControlPlane::Emulator) {
                $crate::in_virtual_time(super::$name($crate::ControlPlane::Emulator)).await
            }
        }
    };
    (emulator, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            if $crate::selected($crate::ControlPlane::Emulator) {
                super::$name($crate::ControlPlane::Emulator).await
            }
        }
    };
    (real, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            if $crate::selected($crate::ControlPlane::Real) {
                super::$name($crate::ControlPlane::Real).await
            }
        }
    };
}

/// A StatefulSet of podinfo-like pods (`app: <name>`, container `app`), released in place:
/// pods started in parallel (ordered start would add a ready delay per pod) and no volume
/// claims (no volume controller runs on either control plane).
pub fn stateful_set(name: &str, image: &str, replicas: i32) -> Value {
    let mut s = deployment(name, image, replicas);
    s["kind"] = json!("StatefulSet");
    s["spec"]["serviceName"] = json!(name);
    s["spec"]["podManagementPolicy"] = json!("Parallel");
    s
}

/// A podinfo-like Deployment (`app: <name>`, container `app`).
pub fn deployment(name: &str, image: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image,
                    "ports": [{"containerPort": 9898, "name": "http"}]}]}
            }
        }
    })
}
