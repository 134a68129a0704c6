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

    /// A short label for logs and metrics (bounded).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Blocked { reason, .. } => reason,
            Error::Kube { .. } => "KubeError",
            Error::Serialize(_) => "SerializeError",
        }
    }
}
