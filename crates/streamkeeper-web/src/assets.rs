//! The embedded assets: one HTML page, its stylesheet and script, and the
//! login form. `include_str!` puts them in the binary: no CDN, no network,
//! no Node step.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");
const LOGIN: &str = include_str!("../assets/login.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const ICON: &str = include_str!("../assets/icon.svg");

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The logout button of the page's header, left out without a token.
const LOGOUT: &str = "  <form method=\"post\" action=\"/logout\" class=\"logout\"><button type=\"submit\">Log out</button></form>\n";

/// The page without the logout button (no token, nothing to log out of).
static INDEX_OPEN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| INDEX.replace(LOGOUT, ""));

/// `GET /`: the page (routes live after `#`, so every view is bookmarkable).
pub(crate) async fn index(State(s): State<crate::AppState>) -> Response {
    if s.config().token.is_some() {
        html(INDEX)
    } else {
        html(INDEX_OPEN.as_str())
    }
}

/// `GET /login`: the token form.
pub(crate) async fn login() -> Response {
    html(LOGIN)
}

/// `GET /assets/{file}`.
pub(crate) async fn file(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logout_button_is_in_the_page_and_can_be_left_out() {
        assert!(INDEX.contains(LOGOUT));
        assert!(!INDEX_OPEN.contains("/logout"));
    }
}
