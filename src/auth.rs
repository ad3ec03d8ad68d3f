//! Webhook authentication with a shared token.
//!
//! Cloud66 lets users configure only a URL, so the token may travel as a path segment
//! (`/webhook/<token>`) or a query parameter (`?token=`); clients that can send headers
//! may use `Authorization: Bearer` or the password of HTTP Basic auth. Tokens are
//! compared in constant time (on their SHA-256, so the length is not revealed either)
//! and are redacted from anything logged.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What replaces a token in logged URLs.
const REDACTED: &str = "REDACTED";

/// Checks webhook calls against the configured token.
#[derive(Clone)]
pub struct Authenticator {
    /// SHA-256 of the token; `None` when authentication is disabled.
    token_digest: Option<[u8; 32]>,
}

impl Authenticator {
    /// Requires `token`, or accepts every call when it is `None`.
    pub fn new(token: Option<&str>) -> Self {
        Authenticator {
            token_digest: token.map(digest),
        }
    }

    /// Whether calls must carry the token.
    pub fn is_enabled(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Whether a call with this path token, query and headers may proceed.
    pub fn allows(
        &self,
        path_token: Option<&str>,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        let matches = |candidate: &str| bool::from(digest(candidate).ct_eq(expected));
        // Every candidate is checked, so timing does not tell which form matched.
        let mut allowed = false;
        for candidate in candidates(path_token, query, headers) {
            allowed |= matches(&candidate);
        }
        allowed
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Every place a token may have been sent.
fn candidates(path_token: Option<&str>, query: Option<&str>, headers: &HeaderMap) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    found.extend(path_token.map(str::to_owned));
    found.extend(query_token(query).map(str::to_owned));
    for value in headers.get_all(AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            found.push(credentials.to_owned());
        } else if scheme.eq_ignore_ascii_case("basic") {
            found.extend(basic_password(credentials));
        }
    }
    found
}

/// The value of the first `token=` query parameter.
fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// The password of Basic credentials (`base64(user:password)`).
fn basic_password(credentials: &str) -> Option<String> {
    let decoded = STANDARD.decode(credentials).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    Some(password.to_owned())
}

/// `path_and_query` with any token replaced, fit for logs.
pub fn redact(path: &str, query: Option<&str>) -> String {
    let path = match path.strip_prefix("/webhook/") {
        Some(rest) if !rest.is_empty() => format!("/webhook/{REDACTED}"),
        _ => path.to_owned(),
    };
    match query {
        None => path,
        Some(query) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("token", _)) => format!("token={REDACTED}"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef-token";

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("header"),
        );
        headers
    }

    #[test]
    fn accepts_every_form_of_the_token() {
        let auth = Authenticator::new(Some(TOKEN));
        let none = HeaderMap::new();
        assert!(auth.allows(Some(TOKEN), None, &none));
        assert!(auth.allows(None, Some(&format!("a=1&token={TOKEN}")), &none));
        assert!(auth.allows(None, None, &headers(&format!("Bearer {TOKEN}"))));
        let basic = STANDARD.encode(format!("cloud66:{TOKEN}"));
        assert!(auth.allows(None, None, &headers(&format!("Basic {basic}"))));
    }

    #[test]
    fn rejects_missing_and_wrong_tokens() {
        let auth = Authenticator::new(Some(TOKEN));
        let none = HeaderMap::new();
        assert!(!auth.allows(None, None, &none));
        assert!(!auth.allows(Some("wrong"), Some("token=also-wrong"), &none));
        assert!(!auth.allows(Some(&TOKEN[..TOKEN.len() - 1]), None, &none));
        assert!(!auth.allows(None, None, &headers("Bearer nope")));
        assert!(!auth.allows(None, None, &headers(&format!("Basic {TOKEN}"))));
        assert!(!auth.allows(None, Some(&format!("xtoken={TOKEN}")), &none));
    }

    #[test]
    fn disabled_accepts_everything() {
        let auth = Authenticator::new(None);
        assert!(!auth.is_enabled());
        assert!(auth.allows(None, None, &HeaderMap::new()));
    }

    #[test]
    fn redacts_path_and_query_tokens() {
        assert_eq!(redact("/webhook/s3cret", None), "/webhook/REDACTED");
        assert_eq!(
            redact("/webhook", Some("a=1&token=s3cret&b=2")),
            "/webhook?a=1&token=REDACTED&b=2"
        );
        assert_eq!(redact("/metrics", None), "/metrics");
    }
}
