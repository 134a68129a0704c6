//! The load tester's manual gates, keyed by canary (`<name>.<namespace>`): closed until
//! opened. In memory, as in Flagger's load tester: a restart closes every gate.

use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Gates {
    open: Mutex<HashSet<String>>,
}

/// Which gate: the approval gate of `/gate/*` or the rollback gate of `/rollback/*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Approval,
    Rollback,
}

fn key(kind: Kind, name: &str, namespace: &str) -> String {
    match kind {
        Kind::Approval => format!("{name}.{namespace}"),
        Kind::Rollback => format!("rollback.{name}.{namespace}"),
    }
}

impl Gates {
    pub fn set(&self, kind: Kind, name: &str, namespace: &str, open: bool) {
        if let Ok(mut gates) = self.open.lock() {
            let key = key(kind, name, namespace);
            if open {
                gates.insert(key);
            } else {
                gates.remove(&key);
            }
        }
    }

    pub fn is_open(&self, kind: Kind, name: &str, namespace: &str) -> bool {
        self.open
            .lock()
            .is_ok_and(|g| g.contains(&key(kind, name, namespace)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_closed_until_opened_and_kept_apart() {
        let gates = Gates::default();
        assert!(!gates.is_open(Kind::Approval, "podinfo", "test"));
        gates.set(Kind::Approval, "podinfo", "test", true);
        assert!(gates.is_open(Kind::Approval, "podinfo", "test"));
        assert!(!gates.is_open(Kind::Rollback, "podinfo", "test"));
        assert!(!gates.is_open(Kind::Approval, "podinfo", "other"));
        gates.set(Kind::Approval, "podinfo", "test", false);
        assert!(!gates.is_open(Kind::Approval, "podinfo", "test"));
    }
}
