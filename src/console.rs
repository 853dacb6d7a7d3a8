//! The operator console: the page every node serves at `/`, and its session.
//!
//! The page's files (`console/` in the repository) are embedded in the binary: a node
//! started anywhere serves the same page, which asks nothing of any other host. The page
//! reads the REST API once and then follows `GET /api/v1/events`.
//!
//! The page itself holds no fleet data, so `/` and `/console/*` are served without a
//! token. Beyond loopback, the page asks the operator for the token once and posts it to
//! `POST /api/v1/session`, which checks it and keeps it in an HttpOnly cookie (what an
//! `EventSource` sends); `DELETE /api/v1/session` forgets it.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::access::{Access, COOKIE};

#[derive(rust_embed::RustEmbed)]
#[folder = "console/"]
struct Assets;

/// `GET /` and `GET /console/{file}`: the embedded files.
pub async fn asset(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    let name = match path {
        "/" => "index.html",
        p => p.trim_start_matches("/console/"),
    };
    match Assets::get(name) {
        Some(file) => HttpResponse::Ok()
            .content_type(file.metadata.mimetype())
            .insert_header(("Cache-Control", "no-cache"))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            // Nothing but this node: scripts, styles, pictures and connections.
            .insert_header((
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ))
            .body(file.data.into_owned()),
        None => HttpResponse::NotFound().json(serde_json::json!({
            "error": format!("no console file {name}")
        })),
    }
}

/// The body of `POST /api/v1/session`.
#[derive(Debug, Deserialize)]
pub struct Login {
    pub token: String,
}

/// `POST /api/v1/session`: checks the token and keeps it in an HttpOnly cookie.
pub async fn login(
    req: HttpRequest,
    access: web::Data<Access>,
    body: web::Json<Login>,
) -> HttpResponse {
    // On loopback nothing needs a token (the page never asks for one there); beyond it,
    // only this node's token opens a session.
    if let Err(refusal) = access.verify(Some(body.token.trim())) {
        return HttpResponse::Unauthorized()
            .json(serde_json::json!({ "error": refusal.message() }));
    }
    let secure = req.connection_info().scheme() == "https";
    let cookie = Cookie::build(COOKIE, body.token.trim().to_string())
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .finish();
    HttpResponse::NoContent().cookie(cookie).finish()
}

/// `DELETE /api/v1/session`: forgets the cookie.
pub async fn logout() -> HttpResponse {
    let mut cookie = Cookie::build(COOKIE, "").path("/").finish();
    cookie.make_removal();
    HttpResponse::NoContent().cookie(cookie).finish()
}
