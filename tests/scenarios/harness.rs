//! The scenarios' starting points on top of the shared test kit (serin-testkit): a world
//! with the `kubernetes` provider, and the podinfo-like Deployment and Canary most of them
//! release.

use serde_json::Value;
use serin::api::Canary;
use serin_core::Phase;
use serin_testkit::LONG;
pub use serin_testkit::{
    ControlPlane, World, WorldConfig, canary, deployment, ready_condition, wait_until,
};

/// The stack on `cp` with serin's CRDs and a running controller (`--mesh-provider
/// kubernetes`, 1 s minimum interval).
pub async fn world(cp: ControlPlane) -> World {
    WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .start()
        .await
}

/// The same, the controller to be started by the test (with its own flags).
pub async fn world_without_controller(cp: ControlPlane) -> World {
    WorldConfig::new(env!("CARGO_BIN_EXE_serin"), cp)
        .without_controller()
        .start()
        .await
}

/// The podinfo Deployment (1 replica) and `canary`, applied; for scenarios that watch what
/// the controller makes of that Canary.
pub async fn podinfo_with(world: &World, canary: Value) {
    world
        .apply(
            &world.deployments(),
            deployment("podinfo", "podinfo:6.0.0", 1),
        )
        .await;
    world.apply(&world.canaries(), canary).await;
}

/// Deployment + Canary, waited to `Initialized`.
pub async fn initialized(world: &World, name: &str, iterations: u32) -> Canary {
    initialized_with(world, canary(name).iterations(iterations).build()).await
}

/// The Deployment of `manifest`'s target (podinfo:6.0.0, 2 replicas) and `manifest`, waited
/// to `Initialized`.
pub async fn initialized_with(world: &World, manifest: Value) -> Canary {
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or("podinfo")
        .to_string();
    let target = manifest["spec"]["targetRef"]["name"]
        .as_str()
        .unwrap_or(&name)
        .to_string();
    world
        .apply(
            &world.deployments(),
            deployment(&target, "podinfo:6.0.0", 2),
        )
        .await;
    world.apply(&world.canaries(), manifest).await;
    world.wait_phase(&name, Phase::Initialized, LONG).await
}
