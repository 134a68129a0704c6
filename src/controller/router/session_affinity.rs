//! Session affinity (`analysis.sessionAffinity`) as routers express it: which sticky rules a
//! render needs, the `Set-Cookie` values and the `Cookie` match, as Flagger writes them.
//!
//! A user whose request landed on the new version gets a cookie; later requests carrying it
//! go to the new version whatever the weights. The controller keeps the cookies in the status
//! (`name=value`, one per run); this module only decides how they appear in routes.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::api::canary::{DEFAULT_INTERVAL, SameSite, SessionAffinity};

use super::Input;

/// The sticky routing of one render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sticky {
    /// No session affinity, or nothing to pin or expire.
    None,
    /// A run is sending traffic to the new version: hand out `canary` (and `primary`, when
    /// `primaryCookieName` is set) and route their holders.
    Pin {
        canary: Cookie,
        canary_set_cookie: String,
        primary: Option<(Cookie, String)>,
    },
    /// No traffic goes to the new version (rolled back, promoted, or not started): holders of
    /// the previous run's cookie are routed normally and their cookie is expired.
    Expire {
        previous: Cookie,
        set_cookie: String,
    },
}

/// How a provider spells the rules of a sticky render (each is a JSON object: an Istio HTTP
/// route, a Gateway API rule).
pub trait StickySpelling {
    /// A rule sending every holder of `cookie` to the canary (`to_canary`) or the primary,
    /// from the `weighted` rule.
    fn pinned(
        &self,
        weighted: &Map<String, Value>,
        cookie: &Cookie,
        to_canary: bool,
    ) -> Map<String, Value>;
    /// Hands out a cookie (`set_cookie`) on the weighted rule's backend `index` (0 the primary,
    /// 1 the canary).
    fn hand_out(&self, weighted: &mut Map<String, Value>, index: usize, set_cookie: String);
    /// A rule routing the holders of `cookie` as the `weighted` one does and expiring their
    /// cookie (`set_cookie`).
    fn expiring(
        &self,
        weighted: &Map<String, Value>,
        cookie: &Cookie,
        set_cookie: String,
    ) -> Map<String, Value>;
}

impl Sticky {
    /// The rules of a render, in the order they must match: the pinned ones before the
    /// weighted one, whose users get the cookie of the version the weights sent them to.
    pub fn rules(
        self,
        mut weighted: Map<String, Value>,
        spelling: &impl StickySpelling,
    ) -> Vec<Value> {
        match self {
            Sticky::None => vec![Value::Object(weighted)],
            Sticky::Pin {
                canary,
                canary_set_cookie,
                primary,
            } => {
                let mut rules = Vec::with_capacity(3);
                rules.push(Value::Object(spelling.pinned(&weighted, &canary, true)));
                spelling.hand_out(&mut weighted, 1, canary_set_cookie);
                if let Some((cookie, set_cookie)) = primary {
                    rules.push(Value::Object(spelling.pinned(&weighted, &cookie, false)));
                    spelling.hand_out(&mut weighted, 0, set_cookie);
                }
                rules.push(Value::Object(weighted));
                rules
            }
            Sticky::Expire {
                previous,
                set_cookie,
            } => {
                let expire = spelling.expiring(&weighted, &previous, set_cookie);
                vec![Value::Object(expire), Value::Object(weighted)]
            }
        }
    }
}

/// A `name=value` cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
}

impl Cookie {
    fn parse(cookie: &str) -> Option<Cookie> {
        let (name, value) = cookie.split_once('=')?;
        (!name.is_empty() && !value.is_empty()).then(|| Cookie {
            name: name.to_string(),
            value: value.to_string(),
        })
    }

    /// The pattern a `Cookie` request header matches when it carries this cookie (Flagger's
    /// `.*name.*value.*`, so routes it wrote keep matching the same requests).
    pub fn header_regex(&self) -> String {
        format!(".*{}.*{}.*", self.name, self.value)
    }

    fn pair(&self) -> String {
        format!("{}={}", self.name, self.value)
    }
}

/// `Cookie`, the request header sticky routes match.
pub const COOKIE_HEADER: &str = "Cookie";
/// `Set-Cookie`, the response header that hands a cookie out.
pub const SET_COOKIE_HEADER: &str = "Set-Cookie";

/// The sticky routing `input` asks for. `primary_cookies`: whether the provider can pin to
/// the primary too (Gateway API v1beta1 cannot).
pub fn sticky(input: &Input<'_>, primary_cookies: bool) -> Sticky {
    let Some(affinity) = input
        .canary
        .spec
        .analysis()
        .and_then(|a| a.session_affinity.as_ref())
    else {
        return Sticky::None;
    };
    let canary_cookie = input.canary_cookie.and_then(Cookie::parse);
    if input.routes.canary > 0
        && let Some(canary) = canary_cookie.clone()
    {
        let canary_set_cookie = set_cookie(&canary, affinity);
        // The primary cookie is Flagger's opt-in (`primaryCookieName`): without it users
        // pinned to nothing follow the weights.
        let primary = affinity
            .primary_cookie_name
            .as_ref()
            .filter(|_| primary_cookies)
            .and(input.primary_cookie)
            .and_then(Cookie::parse)
            .map(|cookie| {
                let set = primary_set_cookie(&cookie, input);
                (cookie, set)
            });
        return Sticky::Pin {
            canary,
            canary_set_cookie,
            primary,
        };
    }
    // The cookie still to expire: the one of the run that just ended, else the one before.
    let status = input.canary.status.as_ref();
    let previous = match canary_cookie {
        None => status.and_then(|s| {
            s.session_affinity_cookie
                .clone()
                .or_else(|| s.previous_session_affinity_cookie.clone())
        }),
        Some(_) => status.and_then(|s| s.previous_session_affinity_cookie.clone()),
    };
    match previous
        .as_deref()
        .filter(|p| Some(*p) != input.canary_cookie)
        .and_then(Cookie::parse)
    {
        Some(previous) => Sticky::Expire {
            set_cookie: format!("{}; Max-Age=-1", previous.pair()),
            previous,
        },
        None => Sticky::None,
    }
}

/// `Set-Cookie` for the new version's cookie, with the attributes of `sessionAffinity`.
fn set_cookie(cookie: &Cookie, affinity: &SessionAffinity) -> String {
    let mut value = format!("{}; Max-Age={}", cookie.pair(), affinity.max_age());
    if let Some(domain) = affinity.domain.as_deref().filter(|d| !d.is_empty()) {
        value.push_str(&format!("; Domain={domain}"));
    }
    if affinity.http_only == Some(true) {
        value.push_str("; HttpOnly");
    }
    if affinity.partitioned == Some(true) {
        value.push_str("; Partitioned");
    }
    if let Some(path) = affinity.path.as_deref().filter(|p| !p.is_empty()) {
        value.push_str(&format!("; Path={path}"));
    }
    if let Some(same_site) = affinity.same_site {
        let same_site = match same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        };
        value.push_str(&format!("; SameSite={same_site}"));
    }
    if affinity.secure == Some(true) {
        value.push_str("; Secure");
    }
    value
}

/// `Set-Cookie` for the primary's cookie. It lives one analysis interval: long enough to keep
/// a user on the primary until the next step re-rolls the weights, no longer.
fn primary_set_cookie(cookie: &Cookie, input: &Input<'_>) -> String {
    let interval = input
        .canary
        .spec
        .analysis()
        .and_then(|a| a.interval(Duration::ZERO).ok())
        .unwrap_or(DEFAULT_INTERVAL);
    format!("{}; Max-Age={}", cookie.pair(), interval.as_secs())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use serin_core::Routes;

    use super::*;
    use crate::controller::router::Options;
    use crate::controller::router::routing_object::fixture::{canary, input};

    fn cookie(name: &str, value: &str) -> Cookie {
        Cookie {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn which_cookies_a_render_pins_or_expires() {
        let options = Options::default();
        let affinity = json!({"analysis": {"sessionAffinity": {"cookieName": "c"}}});
        let with_primary =
            json!({"analysis": {"sessionAffinity": {"cookieName": "c", "primaryCookieName": "p"}}});
        let status = |current: Option<&str>, previous: Option<&str>| {
            json!({"phase": "Progressing", "sessionAffinityCookie": current,
                   "previousSessionAffinityCookie": previous})
        };
        let expire = |value: &str| Sticky::Expire {
            previous: cookie("c", value),
            set_cookie: format!("c={value}; Max-Age=-1"),
        };
        // (spec patch, status, canary weight, canary cookie, primary cookie, expected)
        let cases = [
            (
                json!({}),
                status(None, None),
                50,
                Some("c=now"),
                None,
                Sticky::None,
            ),
            (
                affinity.clone(),
                status(None, None),
                50,
                Some("c=now"),
                Some("p=x"),
                Sticky::Pin {
                    canary: cookie("c", "now"),
                    canary_set_cookie: "c=now; Max-Age=86400".into(),
                    primary: None,
                },
            ),
            (
                with_primary,
                status(None, None),
                50,
                Some("c=now"),
                Some("p=x"),
                Sticky::Pin {
                    canary: cookie("c", "now"),
                    canary_set_cookie: "c=now; Max-Age=86400".into(),
                    primary: Some((cookie("p", "x"), "p=x; Max-Age=60".into())),
                },
            ),
            // A run starting: nothing handed out yet, the run before's cookie expires.
            (
                affinity.clone(),
                status(Some("c=now"), Some("c=old")),
                0,
                Some("c=now"),
                None,
                expire("old"),
            ),
            (
                affinity.clone(),
                status(Some("c=now"), None),
                0,
                Some("c=now"),
                None,
                Sticky::None,
            ),
            // The run is over: its cookie expires.
            (
                affinity.clone(),
                status(Some("c=now"), Some("c=old")),
                0,
                None,
                None,
                expire("now"),
            ),
            (
                affinity.clone(),
                status(None, Some("c=old")),
                0,
                None,
                None,
                expire("old"),
            ),
            (
                affinity,
                status(None, Some("garbage")),
                0,
                None,
                None,
                Sticky::None,
            ),
        ];
        for (i, (patch, status, weight, canary_cookie, primary_cookie, expected)) in
            cases.into_iter().enumerate()
        {
            let mut canary = canary(patch);
            canary.status = serde_json::from_value(status).unwrap();
            let mut input = input(&canary, &options, Routes::canary(weight));
            input.canary_cookie = canary_cookie;
            input.primary_cookie = primary_cookie;
            assert_eq!(sticky(&input, true), expected, "case {i}");
        }
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let affinity: SessionAffinity = serde_json::from_value(json!({
            "cookieName": "c", "maxAge": -5, "domain": "example.com", "httpOnly": true,
            "partitioned": true, "path": "/app", "sameSite": "None", "secure": true
        }))
        .unwrap();
        assert_eq!(
            set_cookie(&cookie("c", "v"), &affinity),
            "c=v; Max-Age=86400; Domain=example.com; HttpOnly; Partitioned; Path=/app; \
             SameSite=None; Secure"
        );
        assert_eq!(cookie("c", "v").header_regex(), ".*c.*v.*");
    }
}
