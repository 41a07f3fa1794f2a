//! A URL shortener on Verge KV.
//!
//! - `POST /links` `{"url", "slug"?, "ttl"?}` → 201 `{"slug", "url",
//!   "short_url", "expires_at"}`; the link expires after `ttl` seconds
//!   (KV expiration does the forgetting); a taken slug is a 409.
//! - `GET /:slug` → 302 to the URL, counting the hit with an atomic
//!   increment; an unknown or expired slug is a 404.
//! - `GET /links/:slug` → the link and its hits.
//! - `DELETE /links/:slug` with `Authorization: Bearer <ADMIN_TOKEN>` → 204;
//!   `ADMIN_TOKEN` is a secret (`.dev.vars` under `verge dev`).

use serde::{Deserialize, Serialize};
use verge_sdk::http::header::LOCATION;
use verge_sdk::http::{HeaderValue, StatusCode, Uri};
use verge_sdk::{Bytes, Env, Error, Kv, Params, Request, RequestExt, Response, Router, json};

const SLUG_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
const SLUG_LEN: usize = 7;
/// A link lives at least a minute and at most a year; a day by default.
const MIN_TTL: u64 = 60;
const MAX_TTL: u64 = 365 * 86_400;
const DEFAULT_TTL: u64 = 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLink {
    url: String,
    slug: Option<String>,
    ttl: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Link {
    slug: String,
    url: String,
    expires_at: u64,
}

#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    link: &'a Link,
    short_url: String,
    hits: i64,
}

fn links(env: &Env) -> Result<Kv, Error> {
    env.kv("LINKS")
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, "invalid", message)
}

fn check_url(url: &str) -> Result<(), Error> {
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(format!("`url` is not a URL: {e}")))?;
    let web = matches!(uri.scheme_str(), Some("http" | "https"));
    if !web || uri.host().is_none() {
        return Err(invalid("`url` must be an absolute http:// or https:// URL"));
    }
    Ok(())
}

fn check_slug(slug: &str) -> Result<(), Error> {
    let ok = (3..=64).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && slug != "links";
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "`slug` must be 3 to 64 letters, digits, `-` or `_` (and not `links`)",
        ))
    }
}

fn random_slug() -> String {
    let mut bits = verge_sdk::random_u64();
    (0..SLUG_LEN)
        .map(|_| {
            let c = SLUG_ALPHABET[(bits % SLUG_ALPHABET.len() as u64) as usize];
            bits /= SLUG_ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn short_url(env: &Env, slug: &str) -> String {
    let origin = env.var("PUBLIC_URL").unwrap_or_default();
    format!("{}/{slug}", origin.trim_end_matches('/'))
}

fn hits_key(slug: &str) -> String {
    format!("hits:{slug}")
}

async fn create(req: Request, _: Params, env: Env) -> Result<Response, Error> {
    let new: NewLink = req.json()?;
    check_url(&new.url)?;
    let ttl = new.ttl.unwrap_or(DEFAULT_TTL);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(invalid(format!(
            "`ttl` must be between {MIN_TTL} and {MAX_TTL} seconds"
        )));
    }
    if let Some(slug) = &new.slug {
        check_slug(slug)?;
    }
    let kv = links(&env)?;
    // A random slug that is taken is drawn again; a chosen one is a 409.
    for _ in 0..5 {
        let slug = new.slug.clone().unwrap_or_else(random_slug);
        let link = Link {
            slug: slug.clone(),
            url: new.url.clone(),
            expires_at: now() + ttl,
        };
        let written = kv
            .put_json(format!("link:{slug}"), &link)
            .expiration(link.expires_at)
            .if_absent()
            .execute();
        match written {
            Ok(_) => {
                // A counter left by an expired link of the same slug starts over.
                kv.put(hits_key(&slug), "0")
                    .expiration(link.expires_at)
                    .execute()?;
                verge_sdk::info!("created {slug} -> {}", link.url);
                let shown = Shown {
                    short_url: short_url(&env, &slug),
                    link: &link,
                    hits: 0,
                };
                let mut response = json(201, &shown)?;
                response.headers_mut().insert(
                    LOCATION,
                    HeaderValue::from_str(&format!("/links/{slug}")).map_err(Error::internal)?,
                );
                return Ok(response);
            }
            Err(verge_sdk::KvError::ConditionFailed) if new.slug.is_none() => continue,
            Err(verge_sdk::KvError::ConditionFailed) => {
                return Err(Error::conflict(format!("the slug `{slug}` is taken")));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::unavailable("could not find a free slug; try again"))
}

fn load(kv: &Kv, slug: &str) -> Result<Link, Error> {
    Ok(kv
        .get(format!("link:{slug}"))
        .json()?
        .ok_or_else(|| Error::not_found(format!("no link `{slug}` (it may have expired)")))?)
}

async fn follow(_req: Request, params: Params, env: Env) -> Result<Response, Error> {
    let slug = params.get("slug").unwrap_or_default();
    let kv = links(&env)?;
    let link = load(&kv, slug)?;
    let hits = kv.increment(hits_key(slug), 1)?;
    verge_sdk::debug!("{slug} hit {hits}");
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&link.url).map_err(Error::internal)?,
    );
    Ok(response)
}

async fn show(_req: Request, params: Params, env: Env) -> Result<Response, Error> {
    let slug = params.get("slug").unwrap_or_default();
    let kv = links(&env)?;
    let link = load(&kv, slug)?;
    let hits = kv
        .get(hits_key(slug))
        .text()?
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    json(
        200,
        &Shown {
            short_url: short_url(&env, slug),
            link: &link,
            hits,
        },
    )
}

/// 401 unless the request carries the admin token. The comparison takes
/// the same time wherever the first difference is.
fn authorize(req: &Request, env: &Env) -> Result<(), Error> {
    let token = env.secret("ADMIN_TOKEN")?;
    let sent = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same = sent.len() == token.len()
        && sent
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(Error::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <admin token>`",
        ))
    }
}

async fn remove(req: Request, params: Params, env: Env) -> Result<Response, Error> {
    authorize(&req, &env)?;
    let slug = params.get("slug").unwrap_or_default();
    let kv = links(&env)?;
    if !kv.delete(format!("link:{slug}"))? {
        return Err(Error::not_found(format!("no link `{slug}`")));
    }
    kv.delete(hits_key(slug))?;
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

#[verge_sdk::handler]
async fn fetch(req: Request, env: Env) -> Response {
    Router::new()
        .post("/links", create)
        .get("/links/:slug", show)
        .delete("/links/:slug", remove)
        .get("/:slug", follow)
        .handle(req, env)
        .await
}
