//! `serin report`: a release's report, read from the cluster after the release, as Markdown
//! and as a self-contained HTML page.

use serin_core::Phase;
use serin_testkit::LONG;

use crate::harness::{ControlPlane, initialized, world};

async fn a_report_shows_the_release_its_steps_and_its_outcome(cp: ControlPlane) {
    let world = world(cp).await;
    initialized(&world, "podinfo", 2).await;
    world.set_image("podinfo", "app", "podinfo:6.0.1").await;
    world.wait_phase("podinfo", Phase::Succeeded, LONG).await;
    let ns = world.ns();
    let args = [
        "report",
        "podinfo",
        "-n",
        ns,
        "--mesh-provider",
        "kubernetes",
        "--min-analysis-interval",
        "1s",
    ];

    let (code, markdown, err) = world.cli(&[&args[..], &["--format", "md"]].concat()).await;
    assert_eq!(code, 0, "{err}");
    for expected in [
        format!("# Release of podinfo.{ns}"),
        "| Phase | Succeeded |".to_string(),
        format!("| Normal | Advance podinfo.{ns} canary iteration 2/2 |"),
        "| Succeeded |".to_string(),
        "## Planned steps".to_string(),
    ] {
        assert!(markdown.contains(&expected), "{expected:?} in\n{markdown}");
    }

    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let (code, out, err) = world.cli(&[&args[..], &["-o", path]].concat()).await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let page = std::fs::read_to_string(path).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains("<td>Succeeded</td>"));
    assert!(page.contains(&format!("Promotion completed! Scaling down podinfo.{ns}")));
    assert!(
        !page.contains("src=") && !page.contains("href="),
        "fetches nothing"
    );
}

serin_testkit::on_every_control_plane!(virtual_time: a_report_shows_the_release_its_steps_and_its_outcome);
