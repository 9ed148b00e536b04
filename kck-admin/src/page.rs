//! The admin page: one HTML document, a script and a style sheet, compiled
//! into the crate and served without auth (they hold no data; the API they
//! call is authenticated). No CDN, so the page works offline.

use axum::body::Body;
use axum::extract::OriginalUri;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");
const OPENAPI: &str = include_str!("../assets/openapi.json");

/// Nothing but this origin's own files and API; no inline script or style.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: impl Into<Body>) -> Response {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    (headers, body.into()).into_response()
}

/// `GET /`: the page, its `<base>` set to where the router is mounted, so
/// that `app.js` and `api/...` resolve under `/kck/` as well as under `/`.
pub(crate) async fn index(OriginalUri(uri): OriginalUri) -> Response {
    asset(
        "text/html; charset=utf-8",
        INDEX.replace("{{base}}", &base_of(uri.path())),
    )
}

pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /api/openapi.json`: the API's description, OpenAPI 3.1.
pub(crate) async fn openapi() -> Response {
    asset("application/json", OPENAPI)
}

/// The directory the page was asked for, ending in `/`, escaped for an
/// HTML attribute.
fn base_of(path: &str) -> String {
    let mut base = String::with_capacity(path.len() + 1);
    for c in path.chars() {
        match c {
            '&' => base.push_str("&amp;"),
            '"' => base.push_str("&quot;"),
            '<' => base.push_str("&lt;"),
            '>' => base.push_str("&gt;"),
            '\'' => base.push_str("&#39;"),
            c => base.push(c),
        }
    }
    if !base.ends_with('/') {
        base.push('/');
    }
    base
}

#[cfg(test)]
mod tests {
    use super::base_of;

    #[test]
    fn the_base_is_the_mount_point_as_a_directory() {
        assert_eq!(base_of("/"), "/");
        assert_eq!(base_of("/kck"), "/kck/");
        assert_eq!(base_of("/kck/"), "/kck/");
        assert_eq!(base_of("/a\"<b>&'"), "/a&quot;&lt;b&gt;&amp;&#39;/");
    }
}
