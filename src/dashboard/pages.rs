//! The dashboard's pages: HTML with the script and style sheet it serves itself
//! (`/assets/`), no fetch elsewhere. The overview is filled by the script from the stream; a
//! Canary's page is rendered here from the release report's sections (every text from the
//! cluster escaped) and refreshed by the script when its row changes.

pub use crate::cli::report::html::esc;

/// The script of every page (`assets/dashboard.js`).
pub const SCRIPT: &str = include_str!("assets/dashboard.js");

/// The dashboard's style sheet beside the report's (`assets/dashboard.css`).
pub const STYLE: &str = include_str!("assets/dashboard.css");

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{}</style>\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\">\
         <script src=\"/assets/dashboard.js\" defer></script></head>",
        esc(title),
        crate::cli::report::html::STYLE
    )
}

/// The overview: filters, and a table the script fills from the stream.
pub fn overview() -> String {
    let mut out = head("serin: Canaries");
    out.push_str(
        "<body data-page=\"overview\"><main><h1>Canaries</h1>\
         <p id=\"status\" role=\"status\" aria-live=\"polite\">Connecting…</p>\
         <form id=\"filters\" role=\"search\">\
         <label>Namespace <select id=\"namespace\"><option value=\"\">all</option></select></label>\
         <label>Phase <select id=\"phase\"><option value=\"\">all</option></select></label>\
         <label>Search <input id=\"search\" type=\"search\" placeholder=\"name\"></label>\
         </form>\
         <table id=\"canaries\"><thead><tr><th scope=\"col\">Canary</th>\
         <th scope=\"col\">Phase</th><th scope=\"col\">Weight</th><th scope=\"col\">Step</th>\
         <th scope=\"col\">Failed checks</th><th scope=\"col\">Waiting for</th>\
         <th scope=\"col\">In phase</th><th scope=\"col\">Metrics</th></tr></thead>\
         <tbody></tbody></table></main></body></html>",
    );
    out
}

/// One Canary: its buttons, and the report's `sections` (already escaped HTML).
pub fn canary(namespace: &str, name: &str, sections: &str) -> String {
    let mut out = head(&format!("serin: {name}.{namespace}"));
    out.push_str(&format!(
        "<body data-page=\"canary\" data-namespace=\"{ns}\" data-name=\"{n}\"><main>\
         <p><a href=\"/\">All Canaries</a></p><h1>{n}.{ns}</h1>\
         <div id=\"controls\" role=\"group\" aria-label=\"Steer the release\">\
         <button type=\"button\" data-action=\"promote\">Promote</button>\
         <button type=\"button\" data-action=\"abort\">Abort</button>\
         <button type=\"button\" data-action=\"pause\">Pause</button>\
         <button type=\"button\" data-action=\"resume\">Resume</button>\
         <button type=\"button\" data-action=\"retry\">Retry</button></div>\
         <p id=\"result\" role=\"status\" aria-live=\"polite\"></p>\
         <div id=\"sections\">{sections}</div></main></body></html>",
        ns = esc(namespace),
        n = esc(name),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_only_their_own_assets_and_escape_names() {
        let page = canary("te\"st", "<b>x</b>", "<p>s</p>");
        assert!(page.contains("data-name=\"&lt;b&gt;x&lt;/b&gt;\""));
        assert!(page.contains("data-namespace=\"te&quot;st\""));
        assert!(!page.contains("<b>x</b>"));
        for page in [overview(), page] {
            for fetched in ["http:", "https:", "//"] {
                let outside = page.match_indices(&format!("=\"{fetched}")).count();
                assert_eq!(outside, 0, "{fetched} in {page}");
            }
        }
    }
}
