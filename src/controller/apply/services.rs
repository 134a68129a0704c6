//! The Services a Canary generates: the apex, `-primary` and `-canary` (`workload::services`
//! renders them; here they are applied when their routing differs).

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use crate::controller::caches::packed;
use crate::controller::error::Error;
use crate::controller::reconcile::target::Target;
use crate::workload::services::{self, Role};
use crate::workload::stateful_set;

use super::Scope;

impl Scope<'_> {
    /// `<apex>-primary` and `<apex>-canary`, which address each version directly.
    pub(super) async fn ensure_side_services(&self) -> Result<(), Error> {
        for role in [Role::Primary, Role::Canary] {
            self.ensure_service(role).await?;
        }
        Ok(())
    }

    /// All three generated Services; the apex selects the primary.
    pub async fn ensure_services(&self) -> Result<(), Error> {
        for role in [Role::Primary, Role::Canary, Role::Apex] {
            self.ensure_service(role).await?;
        }
        Ok(())
    }

    pub(super) async fn ensure_service(&self, role: Role) -> Result<(), Error> {
        let Some((label, value)) = self.selector else {
            // Service targets route by their own Services.
            return Ok(());
        };
        let discovered = services::discovered_ports(&self.canary.spec, self.target.pod());
        let mut desired = services::render(
            &self.canary.spec,
            self.namespace,
            label,
            value,
            role,
            &discovered,
        );
        if let (Target::StatefulSet(s), Some(spec)) = (self.target, desired.spec.as_mut()) {
            let selector = stateful_set::service_selector(s, label, value, role, self.in_analysis);
            spec.selector = Some(selector);
        }
        let name = desired.name_any();
        let live = packed::get(&self.ctx.stores.services, self.namespace, &name)?;
        let owned = live.as_ref().is_none_or(|s| self.controls(&s.metadata));
        if let Some(live) = &live
            && same_routing(live, &desired)
            && match owned {
                true => live.metadata.owner_references.is_some(),
                false => services::opts_out_of_gitops(live),
            }
        {
            return Ok(());
        }
        if owned {
            desired.metadata.owner_references = self.owner().map(|o| vec![o]);
        } else {
            // Taking over someone else's apex Service: only its selector and ports change,
            // so its clients never see it disappear and its owner keeps the rest; GitOps
            // tools are told to leave it alone meanwhile.
            desired.metadata.labels = None;
            desired.metadata.annotations = Some(
                services::FLUX_OPT_OUT
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        self.apply(&name, &desired).await.map(|_| ())
    }
}

/// The parts of a Service that route: selector and ports.
fn same_routing(live: &Service, desired: &Service) -> bool {
    let (Some(l), Some(d)) = (&live.spec, &desired.spec) else {
        return false;
    };
    let ports = |s: &k8s_openapi::api::core::v1::ServiceSpec| {
        s.ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.port, p.target_port.clone()))
            .collect::<Vec<_>>()
    };
    l.selector == d.selector && ports(l) == ports(d)
}
