//! Errors of a reconcile. `Blocked` is the user's to fix (it becomes a status condition and a
//! Warning event); the others are transient and retried with backoff.

/// Why a Canary is blocked: the `Ready=False` condition's reason, the Warning event's, and
/// the `reason` label of `serin_reconcile_errors_total` (a closed set, so the label is
/// bounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter)]
pub enum Reason {
    /// The spec does not validate; the message lists each field and its fix.
    InvalidSpec,
    /// `--no-cross-namespace-refs` and the spec points into another namespace.
    CrossNamespaceRef,
    /// `spec.provider` names a provider serin does not route for.
    ProviderNotSupported,
    /// `spec.targetRef` names an object that does not exist.
    TargetNotFound,
    /// The target exists but cannot be copied into a primary.
    TargetInvalid,
    /// The routing spec cannot be expressed for the provider.
    RoutingInvalid,
    /// `spec.autoscalerRef` names an autoscaler that does not exist.
    AutoscalerNotFound,
    /// A metric's `templateRef` names a MetricTemplate that does not exist.
    MetricTemplateNotFound,
    /// The API server does not serve a kind serin needs (a CRD is not installed).
    KindNotServed,
    /// serin's service account may not do what the step needs (RBAC).
    Forbidden,
    /// Another field manager owns fields serin applies (server-side apply conflict).
    FieldManagerConflict,
    /// serin read back something it cannot use; a bug to report.
    Internal,
    /// serin panicked while reconciling this Canary; the panic was contained to it (the
    /// other Canaries go on) and it is retried later. A bug to report.
    InternalError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Canary cannot proceed until its spec or a referenced object changes.
    #[error("{message}")]
    Blocked {
        reason: Reason,
        /// Names the field and the fix.
        message: String,
    },
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot serialize an object: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A cached object does not decode from the text the cache keeps of it (a bug to
    /// report; retried like any transient error).
    #[error("cached {object} does not decode: {source}")]
    Cache {
        object: String,
        #[source]
        source: serde_json::Error,
    },
    /// The reconcile ran past its deadline and was cancelled (everything it does is
    /// idempotent and its status write is the last step, so the next one redoes it).
    #[error("the reconcile did not finish within {}s and was cancelled", .0.as_secs())]
    Deadline(std::time::Duration),
    /// The status write was refused because another writer changed the status after the copy
    /// the step was decided on (a deposed or a new leader). Nothing was lost: the next
    /// reconcile decides again on the newer copy.
    #[error("the Canary's status changed since the step was decided ({0}); deciding again")]
    Stale(String),
}

impl Error {
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Error {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    pub fn serialize(e: serde_json::Error) -> Error {
        Error::Serialize(e)
    }

    /// A status write refused by its resourceVersion precondition ("the object has been
    /// modified") is [`Error::Stale`]; any other failure keeps its kube error.
    pub fn status_write(e: kube::Error) -> Error {
        match &e {
            kube::Error::Api(status)
                if status.code == 409 && !status.message.contains("conflict with") =>
            {
                Error::Stale(status.message.chars().take(200).collect())
            }
            _ => Error::kube("write Canary status", e),
        }
    }

    pub fn workload(e: crate::workload::primary::PrimaryError) -> Error {
        Error::Blocked {
            reason: Reason::TargetInvalid,
            message: e.to_string(),
        }
    }

    /// A Kubernetes error no retry will fix: the API server does not serve the kind (its CRD
    /// is not installed: a mesh or ingress missing), or serin is not allowed to (RBAC). It
    /// becomes a `Blocked` error, so the user sees a condition and a Warning event instead of
    /// a log line every few seconds.
    pub fn needing_a_human(self) -> Error {
        let Error::Kube {
            action,
            source: kube::Error::Api(status),
        } = &self
        else {
            return self;
        };
        let not_served = status.code == 404
            && (status.message.contains("page not found")
                || status
                    .message
                    .contains("could not find the requested resource"));
        if not_served {
            return Error::Blocked {
                reason: Reason::KindNotServed,
                message: format!(
                    "{action}: the API server does not serve this kind: install its CRD (the \
                     mesh's or ingress controller's), or choose a provider that is installed"
                ),
            };
        }
        // A server-side apply conflict ("Apply failed with 1 conflict: conflict with
        // \"kubectl\" ..."), not the optimistic-concurrency 409 ("the object has been
        // modified"), which the next attempt resolves.
        if status.code == 409 && status.message.contains("conflict with") {
            return Error::Blocked {
                reason: Reason::FieldManagerConflict,
                message: format!(
                    "{action}: {}: another field manager owns these fields; stop managing them \
                     there (e.g. a GitOps tool's ignore-differences for fields serin sets)",
                    status.message
                ),
            };
        }
        if status.code == 403 {
            return Error::Blocked {
                reason: Reason::Forbidden,
                message: format!(
                    "{action}: forbidden ({}): grant serin's service account this verb on \
                     this resource in its ClusterRole",
                    status.message
                ),
            };
        }
        self
    }

    /// A short label for logs and metrics (bounded).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Blocked { reason, .. } => reason.as_str(),
            Error::Kube { .. } => "KubeError",
            Error::Serialize(_) => "SerializeError",
            Error::Cache { .. } => "CacheError",
            Error::Deadline(_) => "ReconcileDeadline",
            Error::Stale(_) => "Stale",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str, reason: &str) -> Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "message": message, "reason": reason
        }))
        .unwrap();
        Error::kube(
            "apply VirtualService/podinfo",
            kube::Error::Api(Box::new(status)),
        )
    }

    #[test]
    fn errors_no_retry_fixes_become_blocked_with_the_fix() {
        for (code, message, reason, want) in [
            (
                404,
                "404 page not found",
                "Failed to parse error data",
                Reason::KindNotServed,
            ),
            (
                404,
                "the server could not find the requested resource",
                "NotFound",
                Reason::KindNotServed,
            ),
            (
                403,
                "virtualservices is forbidden: User cannot patch",
                "Forbidden",
                Reason::Forbidden,
            ),
            (
                409,
                "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas",
                "Conflict",
                Reason::FieldManagerConflict,
            ),
        ] {
            match api_error(code, message, reason).needing_a_human() {
                Error::Blocked { reason, message } => {
                    assert_eq!(reason, want);
                    assert!(
                        message.starts_with("apply VirtualService/podinfo: "),
                        "{message}"
                    );
                }
                other => panic!("{code} {message}: {other:?}"),
            }
        }
    }

    #[test]
    fn reasons_are_the_variant_names() {
        use strum::IntoEnumIterator;
        let names: Vec<&str> = Reason::iter().map(Reason::as_str).collect();
        assert_eq!(names.len(), 13);
        assert!(names.contains(&"KindNotServed") && names.contains(&"FieldManagerConflict"));
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(char::is_uppercase) && !n.contains(' '))
        );
    }

    #[test]
    fn other_errors_stay_transient() {
        for (code, message, reason) in [
            (404, "virtualservices \"podinfo\" not found", "NotFound"),
            (409, "the object has been modified", "Conflict"),
            (500, "etcdserver: request timed out", "InternalError"),
        ] {
            assert!(
                matches!(
                    api_error(code, message, reason).needing_a_human(),
                    Error::Kube { .. }
                ),
                "{code} {message}"
            );
        }
    }
}
