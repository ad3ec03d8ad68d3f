//! Requests to Cloud66's API: HTTPS verified by rustls (system roots plus
//! `--cloud66.api-ca-file`), gzip, kept-alive connections, a timeout per request,
//! bounded retries with exponential backoff and jitter, and the hourly request budget.
//!
//! The client is `reqwest` without default features (`rustls-no-provider`, `gzip`):
//! connection reuse, timeouts, redirects and decompression are what it does well, and
//! with our own rustls configuration it uses the *ring* provider the server side already
//! builds, instead of compiling a second crypto library.
//!
//! The token goes only to `--cloud66.api-url`'s host: a redirect elsewhere is not
//! followed, and the token never appears in an error or a log line (it is only ever in
//! a header marked sensitive).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use reqwest::redirect;

use super::metrics::{SyncError, SyncMetrics};
use super::model::{self, ModelError};
use crate::config::Cloud66Config;

/// Retries after the first attempt of a request that failed with a 5xx, a timeout, a
/// connection failure or a malformed body.
const RETRIES: u32 = 3;

/// The API endpoints a sync uses; `pattern` is the `endpoint` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /stacks.json`.
    Stacks,
    /// `GET /stacks/{uid}/ssl_certificates.json`.
    Certificates,
    /// `GET /stacks/{uid}/actions.json`.
    Actions,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [Endpoint::Stacks, Endpoint::Certificates, Endpoint::Actions];

    /// The route pattern: a bounded label value, unlike the URL.
    pub fn pattern(self) -> &'static str {
        match self {
            Endpoint::Stacks => "/stacks.json",
            Endpoint::Certificates => "/stacks/{uid}/ssl_certificates.json",
            Endpoint::Actions => "/stacks/{uid}/actions.json",
        }
    }

    /// The path of page `page` under the base URL.
    fn path(self, uid: &str, page: u32) -> String {
        let uid = percent_encoding::utf8_percent_encode(uid, percent_encoding::NON_ALPHANUMERIC);
        match self {
            Endpoint::Stacks => format!("/stacks.json?page={page}"),
            Endpoint::Certificates => format!("/stacks/{uid}/ssl_certificates.json?page={page}"),
            Endpoint::Actions => format!("/stacks/{uid}/actions.json?page={page}"),
        }
    }
}

/// Why a request gave no usable page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 401 or 403.
    Unauthorized(u16),
    /// 503 `throttled` or 429; `retry_after` when the answer said.
    Throttled {
        /// The `Retry-After` delay, if given in seconds.
        retry_after: Option<Duration>,
    },
    /// Our own hourly budget is used up.
    Budget,
    /// 404: the stack is gone (or the URL is wrong).
    NotFound,
    /// Another status (5xx after the retries, an unexpected 4xx or redirect).
    Status(u16),
    /// No answer in time, after the retries.
    Timeout,
    /// No answer at all (connection, TLS), after the retries.
    Transport(String),
    /// A body that does not parse, after the retries.
    Malformed(String),
}

impl ApiError {
    /// The `reason` it is counted under.
    pub fn reason(&self) -> SyncError {
        match self {
            ApiError::Unauthorized(_) => SyncError::Unauthorized,
            ApiError::Throttled { .. } => SyncError::Throttled,
            ApiError::Budget => SyncError::Budget,
            ApiError::NotFound | ApiError::Status(_) => SyncError::ServerError,
            ApiError::Timeout => SyncError::Timeout,
            ApiError::Transport(_) => SyncError::Transport,
            ApiError::Malformed(_) => SyncError::Malformed,
        }
    }

    /// Whether trying the same request again may help.
    fn is_transient(&self) -> bool {
        match self {
            ApiError::Status(code) => *code >= 500,
            ApiError::Timeout | ApiError::Transport(_) | ApiError::Malformed(_) => true,
            _ => false,
        }
    }

    /// Whether the whole sync must stop (no other request can succeed now).
    pub fn stops_sync(&self) -> bool {
        matches!(
            self,
            ApiError::Unauthorized(_) | ApiError::Throttled { .. } | ApiError::Budget
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unauthorized(code) => write!(
                f,
                "Cloud66 rejected the API token (HTTP {code}): check --cloud66.api-token; \
                 a personal access token with the `public` scope is needed"
            ),
            ApiError::Throttled { retry_after } => match retry_after {
                Some(after) => write!(
                    f,
                    "Cloud66 throttled the requests (rate limit); retrying after {} s",
                    after.as_secs()
                ),
                None => f.write_str(
                    "Cloud66 throttled the requests (rate limit); retrying after the next full hour",
                ),
            },
            ApiError::Budget => f.write_str(
                "--cloud66.max-requests-per-hour reached; the sync goes on at the next interval",
            ),
            ApiError::NotFound => f.write_str("HTTP 404: not found"),
            ApiError::Status(code) => write!(f, "unexpected HTTP status {code}"),
            ApiError::Timeout => f.write_str("no answer within the request timeout"),
            ApiError::Transport(why) => write!(f, "request failed: {why}"),
            ApiError::Malformed(why) => write!(f, "unreadable page: {why}"),
        }
    }
}

/// The requests made in the last hour, against `--cloud66.max-requests-per-hour`.
#[derive(Debug)]
pub struct Budget {
    /// Most requests in any window.
    limit: usize,
    /// An hour (shorter in tests).
    window: Duration,
    /// When each request of the last window was made, oldest first.
    sent: VecDeque<Instant>,
}

impl Budget {
    /// A budget of `limit` requests per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Budget {
            limit: limit as usize,
            window,
            sent: VecDeque::new(),
        }
    }

    /// Takes one request at `now` if the last hour leaves room for it.
    pub fn take(&mut self, now: Instant) -> bool {
        self.forget_before(now);
        if self.sent.len() >= self.limit {
            return false;
        }
        self.sent.push_back(now);
        true
    }

    /// Requests left at `now`.
    pub fn remaining(&mut self, now: Instant) -> usize {
        self.forget_before(now);
        self.limit - self.sent.len()
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|sent| now.duration_since(*sent) >= self.window)
        {
            self.sent.pop_front();
        }
    }
}

/// The API client of one exporter.
pub struct Client {
    http: reqwest::Client,
    /// `--cloud66.api-url`, without a trailing `/`.
    base: String,
    /// `Bearer <token>`, marked sensitive.
    authorization: HeaderValue,
    /// First retry delay; doubles per retry.
    retry_delay: Duration,
    budget: Mutex<Budget>,
    /// Requests sent so far.
    sent: AtomicU64,
    metrics: SyncMetrics,
}

impl Client {
    /// A client for `config`; fails when the TLS set-up does (e.g. no CA certificate at
    /// all) or the token cannot be a header value.
    pub fn new(config: &Cloud66Config, metrics: SyncMetrics) -> Result<Client, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
            config.extra_roots.iter().cloned(),
            Arc::clone(&provider),
        )
        .map_err(|e| format!("cannot set up TLS for the Cloud66 API: {e}"))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS for the Cloud66 API: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .gzip(true)
            .no_proxy()
            .redirect(same_host_redirects())
            .user_agent(concat!("cloud66-ssl-exporter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the Cloud66 API client: {e}"))?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", config.token.expose()))
            .map_err(|_| "the Cloud66 API token is not a valid header value".to_owned())?;
        authorization.set_sensitive(true);
        Ok(Client {
            http,
            base: config.api_url.trim_end_matches('/').to_owned(),
            authorization,
            retry_delay: config.retry_delay,
            budget: Mutex::new(Budget::new(
                config.max_requests_per_hour,
                config.budget_window,
            )),
            sent: AtomicU64::new(0),
            metrics,
        })
    }

    /// Requests sent so far.
    pub fn requests_made(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests left in the hourly budget now.
    pub fn budget_remaining(&self) -> usize {
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remaining(Instant::now())
    }

    /// Page `page` of `endpoint` (for stack `uid`), parsed by `parse`, with the time it
    /// was fetched; retried with backoff when the failure may be transient.
    pub async fn get<T>(
        &self,
        endpoint: Endpoint,
        uid: &str,
        page: u32,
        parse: impl Fn(&[u8]) -> Result<T, ModelError>,
    ) -> Result<(T, f64), ApiError> {
        let url = format!("{}{}", self.base, endpoint.path(uid, page));
        let mut retries = 0;
        loop {
            let outcome = match self.fetch(endpoint, &url).await {
                Ok((body, fetched_at)) => parse(&body)
                    .map(|parsed| (parsed, fetched_at))
                    .map_err(|ModelError(why)| ApiError::Malformed(why)),
                Err(error) => Err(error),
            };
            match outcome {
                Err(error) if error.is_transient() && retries < RETRIES => {
                    let delay = backoff(self.retry_delay, retries);
                    tracing::debug!(endpoint = endpoint.pattern(), page, %error, ?delay, "Cloud66 API request failed; retrying");
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// One request: its body and when it arrived, or why there is none.
    async fn fetch(&self, endpoint: Endpoint, url: &str) -> Result<(Bytes, f64), ApiError> {
        let allowed = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now());
        if !allowed {
            return Err(ApiError::Budget);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        let count = |code: &str| {
            self.metrics
                .requests
                .with_label_values(&[endpoint.pattern(), code])
                .inc();
        };
        let sent = self
            .http
            .get(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                count("error");
                return Err(transport_error(error));
            }
        };
        let status = response.status();
        count(status.as_str());
        let retry_after = retry_after(response.headers().get(RETRY_AFTER));
        let body = response.bytes().await.map_err(transport_error)?;
        let fetched_at = crate::now();
        match status {
            s if s.is_success() => Ok((body, fetched_at)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(ApiError::Unauthorized(status.as_u16()))
            }
            StatusCode::TOO_MANY_REQUESTS => Err(ApiError::Throttled { retry_after }),
            StatusCode::SERVICE_UNAVAILABLE
                if model::error_code(&body).as_deref() == Some("throttled") =>
            {
                Err(ApiError::Throttled { retry_after })
            }
            StatusCode::NOT_FOUND => Err(ApiError::NotFound),
            _ => Err(ApiError::Status(status.as_u16())),
        }
    }
}

/// A reqwest error as ours, without the URL's query (nothing secret is in it, but the
/// message stays short) and never with a header.
fn transport_error(error: reqwest::Error) -> ApiError {
    if error.is_timeout() {
        return ApiError::Timeout;
    }
    let error = error.without_url();
    let mut why = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        why.push_str(": ");
        why.push_str(&cause.to_string());
        source = cause.source();
    }
    ApiError::Transport(why)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Cloud66).
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(24 * 3600)))
}

/// Follows a redirect only to the same scheme, host and port: the token must never
/// reach another host. Anything else is returned as the 3xx answer, an error.
fn same_host_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let origin = |url: &reqwest::Url| {
            (
                url.scheme().to_owned(),
                url.host_str().map(str::to_owned),
                url.port_or_known_default(),
            )
        };
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| origin(first) == origin(attempt.url()));
        if same && attempt.previous().len() < 5 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The delay before retry `retry` (0-based): `first` doubled per retry, times a random
/// factor from 0.5 to 1.5 so that exporters sharing a token do not retry in step.
fn backoff(first: Duration, retry: u32) -> Duration {
    let mut byte = [0u8; 1];
    let jitter = match getrandom::fill(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 255.0,
        Err(_) => 1.0,
    };
    first.mul_f64(f64::from(1u32 << retry.min(16)) * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_over_any_hour() {
        const HOUR: Duration = Duration::from_secs(3600);
        let start = Instant::now();
        let mut budget = Budget::new(3, HOUR);
        assert!(budget.take(start));
        assert!(budget.take(start + Duration::from_secs(10)));
        assert!(budget.take(start + Duration::from_secs(20)));
        assert!(
            !budget.take(start + Duration::from_secs(30)),
            "4th within the hour"
        );
        assert_eq!(budget.remaining(start + Duration::from_secs(3599)), 0);
        // An hour after the first request, its slot is free again, and only it.
        assert!(budget.take(start + HOUR));
        assert!(!budget.take(start + HOUR + Duration::from_secs(5)));
        assert_eq!(budget.remaining(start + HOUR + Duration::from_secs(20)), 2);
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let first = Duration::from_millis(100);
        for retry in 0..4 {
            let delay = backoff(first, retry);
            let base = first * (1 << retry);
            assert!(
                delay >= base / 2 && delay <= base * 3 / 2,
                "{retry}: {delay:?}"
            );
        }
    }

    #[test]
    fn only_some_errors_are_retried_or_stop_the_sync() {
        assert!(ApiError::Status(502).is_transient());
        assert!(!ApiError::Status(400).is_transient());
        assert!(ApiError::Timeout.is_transient());
        assert!(ApiError::Malformed(String::new()).is_transient());
        assert!(!ApiError::Unauthorized(401).is_transient());
        assert!(ApiError::Unauthorized(403).stops_sync());
        assert!(ApiError::Throttled { retry_after: None }.stops_sync());
        assert!(ApiError::Budget.stops_sync());
        assert!(!ApiError::NotFound.stops_sync());
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static(" 120 "))),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
    }
}
