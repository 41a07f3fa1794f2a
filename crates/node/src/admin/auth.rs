//! Bearer tokens. Each presented token is compared with every configured
//! one in constant time (over SHA-256 digests, so lengths leak nothing
//! either), and the loop never stops early.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::config::AdminToken;
use verge_api::ErrorCode;

/// Who is calling: the token's name, recorded as the author of changes.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub read_only: bool,
}

/// The configured tokens, kept as digests.
pub struct Tokens {
    tokens: Vec<([u8; 32], Caller)>,
}

impl Tokens {
    pub fn new(tokens: &[AdminToken]) -> Tokens {
        Tokens {
            tokens: tokens
                .iter()
                .map(|t| {
                    (
                        Sha256::digest(t.token.as_bytes()).into(),
                        Caller {
                            name: t.name.clone(),
                            read_only: t.read_only,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The caller `presented` belongs to, if any.
    pub fn check(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (expected, caller) in &self.tokens {
            let difference = expected
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// Lets a request through with its [`Caller`] attached, or answers 401
/// (no or unknown token) or 403 (a read-only token asking for a change).
pub(super) async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return unauthorized("missing `Authorization: Bearer TOKEN` header");
    };
    let Some(caller) = tokens.check(presented) else {
        return unauthorized("the token is not one of this node's admin tokens");
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if caller.read_only && !reads {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("token `{}` is read-only", caller.name),
        )
        .help("use a token without `read_only = true` to change the node")
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        .help("send one of the node's admin tokens (the verge CLI takes --token or VERGE_TOKEN)")
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_pass() {
        let tokens = Tokens::new(&[
            AdminToken {
                name: "ops".into(),
                token: "0123456789abcdef".into(),
                read_only: false,
            },
            AdminToken {
                name: "viewer".into(),
                token: "fedcba9876543210".into(),
                read_only: true,
            },
        ]);
        assert_eq!(tokens.check("0123456789abcdef").unwrap().name, "ops");
        assert!(tokens.check("fedcba9876543210").unwrap().read_only);
        assert!(tokens.check("0123456789abcdeF").is_none());
        assert!(tokens.check("0123456789abcde").is_none());
        assert!(tokens.check("").is_none());
    }
}
