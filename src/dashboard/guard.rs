//! What keeps a page of another site from using the dashboard. It listens on the loopback
//! interface only, but any site the user visits can make their browser send requests there:
//!
//! - **DNS rebinding**: a site whose name resolves to 127.0.0.1 would be same-origin with the
//!   dashboard. Every request must name the dashboard's own address in `Host`.
//! - **Cross-site requests**: a form or `fetch` of another origin may POST without reading
//!   the answer. A button's request carries the header `X-Serin-Dashboard`, which a browser
//!   only lets a page of another origin send after a CORS preflight the dashboard never
//!   approves, and an `Origin` (when sent) must be the dashboard's.
//!
//! Every answer forbids framing and any script or connection that is not the dashboard's own.

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The header a button's request carries.
pub const BUTTON_HEADER: &str = "x-serin-dashboard";

/// The dashboard's own port (the `Host` it answers to).
#[derive(Clone, Copy, Debug)]
pub struct Own {
    pub port: u16,
}

impl Own {
    fn hosts(self) -> [String; 3] {
        let port = self.port;
        [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ]
    }

    /// Why `headers` of a `method` request are refused, if they are.
    pub fn refusal(self, method: &Method, headers: &HeaderMap) -> Option<&'static str> {
        let hosts = self.hosts();
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        if !host.is_some_and(|h| hosts.iter().any(|own| own == h)) {
            return Some("this dashboard answers requests for its own address only");
        }
        if method == Method::GET || method == Method::HEAD {
            return None;
        }
        if headers.get(BUTTON_HEADER).is_none() {
            return Some("changes come from the dashboard's buttons only");
        }
        let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
        let own_origin = |o: &str| hosts.iter().any(|h| o == format!("http://{h}"));
        if origin.is_some_and(|o| !own_origin(o)) {
            return Some("changes come from the dashboard's own pages only");
        }
        None
    }
}

/// Refuses what [`Own::refusal`] refuses (403), and sets the answers' security headers.
pub async fn check(State(own): State<Own>, request: Request, next: Next) -> Response {
    let mut response = match own.refusal(request.method(), request.headers()) {
        Some(why) => (StatusCode::FORBIDDEN, why).into_response(),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn only_the_own_address_and_the_own_buttons_pass() {
        let own = Own { port: 3100 };
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            own.refusal(&get, &headers(&[("host", "127.0.0.1:3100")])),
            None
        );
        assert_eq!(
            own.refusal(&get, &headers(&[("host", "localhost:3100")])),
            None
        );
        // A rebound name, another port, no Host at all.
        for host in [
            &[("host", "evil.example:3100")][..],
            &[("host", "127.0.0.1:80")],
            &[],
        ] {
            assert!(own.refusal(&get, &headers(host)).is_some(), "{host:?}");
        }
        let button = [("host", "127.0.0.1:3100"), (BUTTON_HEADER, "1")];
        assert_eq!(own.refusal(&post, &headers(&button)), None);
        let same = [
            ("host", "127.0.0.1:3100"),
            (BUTTON_HEADER, "1"),
            ("origin", "http://127.0.0.1:3100"),
        ];
        assert_eq!(own.refusal(&post, &headers(&same)), None);
        // A form of another site: no button header; a fetch that got one past CORS would
        // still say where it comes from.
        let form = [
            ("host", "127.0.0.1:3100"),
            ("origin", "https://evil.example"),
        ];
        assert!(own.refusal(&post, &headers(&form)).is_some());
        let other = [
            ("host", "127.0.0.1:3100"),
            (BUTTON_HEADER, "1"),
            ("origin", "https://evil.example"),
        ];
        assert!(own.refusal(&post, &headers(&other)).is_some());
    }
}
