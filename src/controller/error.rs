//! Errors of a reconcile. `Blocked` is the user's to fix (it becomes a status condition and a
//! Warning event); the others are transient and retried with backoff.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Canary cannot proceed until its spec or a referenced object changes.
    #[error("{message}")]
    Blocked {
        /// Condition reason, CamelCase.
        reason: &'static str,
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

    pub fn workload(e: crate::workload::primary::PrimaryError) -> Error {
        Error::Blocked {
            reason: "TargetInvalid",
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
                reason: "KindNotServed",
                message: format!(
                    "{action}: the API server does not serve this kind: install its CRD (the \
                     mesh's or ingress controller's), or choose a provider that is installed"
                ),
            };
        }
        if status.code == 403 {
            return Error::Blocked {
                reason: "Forbidden",
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
            Error::Blocked { reason, .. } => reason,
            Error::Kube { .. } => "KubeError",
            Error::Serialize(_) => "SerializeError",
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
                "KindNotServed",
            ),
            (
                404,
                "the server could not find the requested resource",
                "NotFound",
                "KindNotServed",
            ),
            (
                403,
                "virtualservices is forbidden: User cannot patch",
                "Forbidden",
                "Forbidden",
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
