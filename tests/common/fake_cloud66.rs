//! A fake Cloud66 API v3 server on 127.0.0.1 for tests and examples.
//!
//! It serves the three list endpoints the reconciler reads, in Cloud66's paging envelope,
//! over HTTP or HTTPS (a server certificate for `127.0.0.1` and `localhost` signed by a CA
//! generated on start), checks the bearer token, gzips answers when asked, records every
//! request, and misbehaves on demand ([`Fault`]). Its data starts empty; the example
//! responses in `tests/fixtures/cloud66/api/` are available through
//! [`FakeCloud66::fixture`] and [`FakeCloud66::fixture_items`].
//!
//! The module is self-contained: besides `std` it uses only tokio, hyper, hyper-util, http,
//! http-body-util, bytes, serde_json, rcgen, rustls, tokio-rustls and flate2, so examples can
//! include it with `#[path = "../../tests/common/fake_cloud66.rs"] mod fake_cloud66;`.
//!
//! ```ignore
//! let fake = FakeCloud66::start().await;
//! fake.add_stack("5999b763474b0eafa5fafb64bff0ba80", "Awesome App", "production");
//! fake.set_certificates(
//!     "5999b763474b0eafa5fafb64bff0ba80",
//!     vec![FakeCloud66::certificate("c1", "app.example.com", "app.example.com",
//!                                   serde_json::json!(3), Some("2030-01-01T00:00:00Z"), true)],
//! );
//! fake.fail(Route::Stacks, Some(2), Fault::Throttled { retry_after: None }, Some(1));
//! // point the client at fake.url() with FAKE_TOKEN ...
//! ```
// Each test crate and example uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The bearer token the fake accepts until [`FakeCloud66::set_token`] changes it.
pub const FAKE_TOKEN: &str = "fake-cloud66-token-0123456789";

/// The path every endpoint lives under, as on `https://app.cloud66.com/api/3`.
pub const API_PREFIX: &str = "/api/3";

/// Items per page until [`FakeCloud66::set_per_page`] changes it (Cloud66's page size).
pub const DEFAULT_PER_PAGE: usize = 30;

/// The body of a [`Fault::Status`] answer.
pub const INTERNAL_ERROR_BODY: &str = r#"{"error":"internal_error"}"#;

/// The body of a [`Fault::NotJson`] answer.
pub const NOT_JSON_BODY: &str = "<html>oops</html>";

const STACKS_PAGE1: &str = include_str!("../fixtures/cloud66/api/stacks.page1.json");
const CERTIFICATES_PAGE1: &str =
    include_str!("../fixtures/cloud66/api/ssl_certificates.page1.json");
const ACTIONS_PAGE1: &str = include_str!("../fixtures/cloud66/api/actions.page1.json");
const ERROR_401: &str = include_str!("../fixtures/cloud66/api/error.401.json");
const ERROR_403: &str = include_str!("../fixtures/cloud66/api/error.403.json");
const ERROR_404: &str = include_str!("../fixtures/cloud66/api/error.404.json");
const ERROR_503: &str = include_str!("../fixtures/cloud66/api/error.503.json");

const BAD_REQUEST_BODY: &str = r#"{"error":"bad_request","error_description":"The page parameter is not a positive integer."}"#;
const METHOD_NOT_ALLOWED_BODY: &str =
    r#"{"error":"method_not_allowed","error_description":"Only GET is supported."}"#;
const TOO_MANY_REQUESTS_BODY: &str = r#"{"error":"too_many_requests","error_description":"The user has sent too many requests in a given amount of time."}"#;

const JSON: &str = "application/json; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Which requests a [`Fault`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET {prefix}/stacks.json`.
    Stacks,
    /// `GET {prefix}/stacks/{uid}/ssl_certificates.json` (and a single certificate
    /// `.../ssl_certificates/{uuid}.json`) of the stack with this uid.
    Certificates(String),
    /// `GET {prefix}/stacks/{uid}/actions.json` of the stack with this uid.
    Actions(String),
    /// Every request, including unknown paths and other methods.
    Any,
}

/// A misbehaviour injected with [`FakeCloud66::fail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This status with the body [`INTERNAL_ERROR_BODY`].
    Status(u16),
    /// 503 with the `error.503.json` body (`"throttled"`), and `Retry-After` if given.
    Throttled {
        /// Seconds for the `Retry-After` header; `None` sends no header (as Cloud66 does).
        retry_after: Option<u64>,
    },
    /// 429 with a `too_many_requests` JSON body, and `Retry-After` if given.
    TooManyRequests {
        /// Seconds for the `Retry-After` header; `None` sends no header.
        retry_after: Option<u64>,
    },
    /// 401 with the `error.401.json` body, whatever token was sent.
    Unauthorized,
    /// 403 with the `error.403.json` body.
    Forbidden,
    /// Waits this long, then answers normally (simulates a slow API / timeouts).
    Delay(Duration),
    /// 200 with `Content-Type: text/html` and the body [`NOT_JSON_BODY`].
    NotJson,
    /// 200 with the first half of the body the request would normally get.
    Truncated,
    /// 302 with `Location` set to this absolute URL.
    Redirect(String),
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path without the query, e.g. `/api/3/stacks.json`.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// The raw `Authorization` header value, if sent.
    pub authorization: Option<String>,
    /// The raw `Accept-Encoding` header value, if sent.
    pub accept_encoding: Option<String>,
    /// The status answered; 0 while the answer is pending (e.g. during a
    /// [`Fault::Delay`]) or when the client went away before it.
    pub status: u16,
    /// Whether the answer's body was gzip-compressed.
    pub gzip: bool,
}

/// A running fake Cloud66 API. Stops (listener and open connections) when dropped or on
/// [`FakeCloud66::stop`].
pub struct FakeCloud66 {
    addr: SocketAddr,
    https: bool,
    ca_pem: Option<String>,
    state: Arc<Mutex<State>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct FaultRule {
    route: Route,
    page: Option<u32>,
    fault: Fault,
    remaining: Option<u32>,
}

struct State {
    token: String,
    per_page: usize,
    stacks: Vec<Value>,
    certificates: HashMap<String, Vec<Value>>,
    actions: HashMap<String, Vec<Value>>,
    faults: Vec<FaultRule>,
    requests: Vec<(u64, RecordedRequest)>,
    next_request_id: u64,
    in_flight: usize,
    max_concurrent: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            token: FAKE_TOKEN.to_owned(),
            per_page: DEFAULT_PER_PAGE,
            stacks: Vec::new(),
            certificates: HashMap::new(),
            actions: HashMap::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            next_request_id: 0,
            in_flight: 0,
            max_concurrent: 0,
        }
    }
}

impl FakeCloud66 {
    /// Starts a plain-HTTP fake on 127.0.0.1 (a free port), with no data.
    pub async fn start() -> FakeCloud66 {
        Self::launch(None, None).await
    }

    /// Starts an HTTPS fake on 127.0.0.1 whose certificate (for `127.0.0.1` and
    /// `localhost`) is signed by a freshly generated CA; trust [`FakeCloud66::ca_pem`].
    pub async fn start_https() -> FakeCloud66 {
        let (ca_pem, config) = tls_material();
        Self::launch(Some(TlsAcceptor::from(config)), Some(ca_pem)).await
    }

    async fn launch(tls: Option<TlsAcceptor>, ca_pem: Option<String>) -> FakeCloud66 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the fake Cloud66 binds 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("the fake Cloud66 knows its address");
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(accept_loop(listener, tls.clone(), Arc::clone(&state)));
        FakeCloud66 {
            addr,
            https: tls.is_some(),
            ca_pem,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// The base URL including the API prefix, e.g. `http://127.0.0.1:PORT/api/3`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{API_PREFIX}", self.addr)
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM of the CA that signed the server certificate (HTTPS only).
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Stops accepting, closes every open connection, and waits until the port is closed.
    pub async fn stop(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Requires `Authorization: Bearer <token>` from now on (default [`FAKE_TOKEN`]).
    pub fn set_token(&self, token: &str) {
        self.state().token = token.to_owned();
    }

    /// Items per page of every list (default 30); 0 counts as 1.
    pub fn set_per_page(&self, per_page: usize) {
        self.state().per_page = per_page.max(1);
    }

    /// Adds a stack built by [`FakeCloud66::stack`], replacing one with the same uid.
    pub fn add_stack(&self, uid: &str, name: &str, environment: &str) {
        let stack = Self::stack(uid, name, environment);
        let mut state = self.state();
        match state.stacks.iter_mut().find(|s| s["uid"] == uid) {
            Some(existing) => *existing = stack,
            None => state.stacks.push(stack),
        }
    }

    /// Removes the stack with this uid, and its certificates and actions: its endpoints
    /// answer 404 from now on.
    pub fn remove_stack(&self, uid: &str) {
        let mut state = self.state();
        state.stacks.retain(|s| s["uid"] != uid);
        state.certificates.remove(uid);
        state.actions.remove(uid);
    }

    /// Replaces the stack list with these raw objects, as served. A stack is known (its
    /// certificates and actions are served) while an object here has its `uid`.
    pub fn set_stacks(&self, stacks: Vec<Value>) {
        self.state().stacks = stacks;
    }

    /// Replaces the certificates of stack `uid` with these raw objects, as served. They
    /// are served only while the stack is listed (else 404).
    pub fn set_certificates(&self, uid: &str, certificates: Vec<Value>) {
        self.state()
            .certificates
            .insert(uid.to_owned(), certificates);
    }

    /// Appends a raw certificate object to stack `uid`'s list.
    pub fn add_certificate(&self, uid: &str, certificate: Value) {
        self.state()
            .certificates
            .entry(uid.to_owned())
            .or_default()
            .push(certificate);
    }

    /// Removes every certificate with this `uuid` from stack `uid`'s list.
    pub fn remove_certificate(&self, uid: &str, uuid: &str) {
        if let Some(list) = self.state().certificates.get_mut(uid) {
            list.retain(|c| c["uuid"] != uuid);
        }
    }

    /// Replaces the async actions of stack `uid` with these raw objects, as served.
    pub fn set_actions(&self, uid: &str, actions: Vec<Value>) {
        self.state().actions.insert(uid.to_owned(), actions);
    }

    /// Makes matching requests misbehave: `route`, on `page` (`None`: every page; a
    /// request without `page` is page 1), for the next `times` matching requests (`None`:
    /// forever). Faults are checked before the token; the oldest matching one wins.
    pub fn fail(&self, route: Route, page: Option<u32>, fault: Fault, times: Option<u32>) {
        if times == Some(0) {
            return;
        }
        self.state().faults.push(FaultRule {
            route,
            page,
            fault,
            remaining: times,
        });
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Every request received so far (since [`FakeCloud66::clear_requests`]), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// How many requests were received (since [`FakeCloud66::clear_requests`]).
    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }

    /// Forgets the recorded requests and resets [`FakeCloud66::max_concurrent`] to the
    /// number of requests in flight now.
    pub fn clear_requests(&self) {
        let mut state = self.state();
        state.requests.clear();
        state.max_concurrent = state.in_flight;
    }

    /// The most requests that were being answered at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state().max_concurrent
    }

    /// A full stack object shaped like those in `stacks.page1.json`.
    pub fn stack(uid: &str, name: &str, environment: &str) -> Value {
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        json!({
            "uid": uid,
            "name": name,
            "git": "",
            "git_branch": "main",
            "environment": environment,
            "cloud": "aws",
            "fqdn": format!("{slug}.c66.me"),
            "language": "ruby",
            "framework": "rails",
            "status": 1,
            "health": 3,
            "maintenance_mode": false,
            "has_loadbalancer": false,
            "deploy_directory": "/var/deploy/app",
            "redeploy_hook": null,
            "account_id": 139,
            "account_name": "My Company Account (ops@example.com)",
            "backend": "",
            "version": "",
            "revision": "",
            "namespaces": [],
            "is_busy": false,
            "is_cluster": false,
            "is_inside_cluster": false,
            "cluster_name": "",
            "application_address": null,
            "configstore_namespace": "",
            "created_at": "2014-08-14 00:38:14 UTC",
            "updated_at": "2024-08-14 01:46:52 UTC",
            "created_at_iso": "2014-08-14T00:38:14Z",
            "updated_at_iso": "2024-08-14T01:46:52Z",
            "last_activity": "2024-08-14T01:46:52+00:00",
            "last_activity_iso": "2024-08-14T01:46:52+00:00"
        })
    }

    /// A full certificate object shaped like those in `ssl_certificates.page1.json`.
    /// `status` is served as given (an integer -1..4, or a string such as `"active"`);
    /// `lets_encrypt` picks `type` and `ca_name`; `wildcard` is whether a server name
    /// starts with `*.`; the fingerprint is derived from `uuid`.
    pub fn certificate(
        uuid: &str,
        name: &str,
        server_names: &str,
        status: Value,
        expires_at: Option<&str>,
        lets_encrypt: bool,
    ) -> Value {
        let wildcard = server_names.split(',').any(|n| n.trim().starts_with("*."));
        json!({
            "uuid": uuid,
            "name": name,
            "server_group_id": null,
            "server_names": server_names,
            "sha256_fingerprint": fingerprint(uuid),
            "ca_name": if lets_encrypt { json!("Let's Encrypt") } else { Value::Null },
            "type": if lets_encrypt { "lets_encrypt" } else { "manual" },
            "wildcard": wildcard,
            "dns_provider_uuid": null,
            "ssl_termination": true,
            "has_intermediate_cert": true,
            "status": status,
            "created_at": "2024-10-23T14:15:53Z",
            "updated_at": "2025-03-04T12:48:25Z",
            "expires_at": expires_at,
            "certificate": null,
            "key": null,
            "intermediate_certificate": null
        })
    }

    /// An async action on the stack itself, shaped like the entry of `actions.page1.json`,
    /// with `resource_id` served as given (a digit string in the docs, an integer in the
    /// newer model).
    pub fn stack_action(resource_id: Value) -> Value {
        json!({
            "id": 10,
            "user": "ops@example.com",
            "resource_type": "stack",
            "action": "clear_caches",
            "resource_id": resource_id,
            "started_via": "api",
            "started_at": "2024-09-01T19:08:05Z",
            "finished_at": "2024-09-01T19:08:09Z",
            "finished_success": true,
            "finished_message": null
        })
    }

    /// An example file from `tests/fixtures/cloud66/api/` by name, e.g.
    /// `"stacks.page1.json"` or `"error.401.json"`. Panics on an unknown name.
    pub fn fixture(name: &str) -> &'static str {
        match name {
            "stacks.page1.json" => STACKS_PAGE1,
            "ssl_certificates.page1.json" => CERTIFICATES_PAGE1,
            "actions.page1.json" => ACTIONS_PAGE1,
            "error.401.json" => ERROR_401,
            "error.403.json" => ERROR_403,
            "error.404.json" => ERROR_404,
            "error.503.json" => ERROR_503,
            _ => panic!(
                "no Cloud66 example {name:?}; there are stacks.page1.json, \
                 ssl_certificates.page1.json, actions.page1.json, error.{{401,403,404,503}}.json"
            ),
        }
    }

    /// The `response` array of a list example, e.g.
    /// `fake.set_stacks(FakeCloud66::fixture_items("stacks.page1.json"))`.
    pub fn fixture_items(name: &str) -> Vec<Value> {
        let parsed: Value =
            serde_json::from_str(Self::fixture(name)).expect("the Cloud66 examples are JSON");
        match parsed {
            Value::Object(mut object) => match object.remove("response") {
                Some(Value::Array(items)) => items,
                _ => panic!("{name} has no `response` array"),
            },
            _ => panic!("{name} is not a JSON object"),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeCloud66 {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Locks, ignoring poisoning: a panicking test thread must not hide the fake's state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A 64-hex-digit string derived from `seed` (FNV-1a, four lanes).
fn fingerprint(seed: &str) -> String {
    (0u64..4)
        .map(|lane| {
            let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for byte in seed.bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{hash:016x}")
        })
        .collect()
}

/// A CA and a server certificate for `127.0.0.1` and `localhost` signed by it; returns the
/// CA's PEM and the server configuration.
fn tls_material() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).expect("CA certificate parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Fake Cloud66 test CA");
    let ca_key = KeyPair::generate().expect("generate the CA key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign the CA");

    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("generate the server key");
    let cert = params
        .signed_by(&key, &ca)
        .expect("sign the server certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("rustls accepts the generated certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), Arc::new(config))
}

/// Accepts until aborted; the connections live in a `JoinSet` owned by this task, so
/// aborting it closes them too.
async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<Mutex<State>>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, tls.clone(), Arc::clone(&state)));
                }
                // Out of file descriptors or similar: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, state: Arc<Mutex<State>>) {
    let _ = stream.set_nodelay(true);
    match tls {
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(stream).await {
                serve(stream, state).await;
            }
        }
        None => serve(stream, state).await,
    }
}

async fn serve<S>(io: S, state: Arc<Mutex<State>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(state, request).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Counts a request as in flight until dropped (also when the client goes away).
struct InFlight(Arc<Mutex<State>>);

impl InFlight {
    fn enter(state: &Arc<Mutex<State>>) -> InFlight {
        let mut guard = lock(state);
        guard.in_flight += 1;
        guard.max_concurrent = guard.max_concurrent.max(guard.in_flight);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut guard = lock(&self.0);
        guard.in_flight = guard.in_flight.saturating_sub(1);
    }
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Stacks,
    Certificates(String),
    Certificate(String, String),
    Actions(String),
    Unknown,
}

impl Endpoint {
    fn parse(path: &str) -> Endpoint {
        let Some(rest) = path.strip_prefix(API_PREFIX) else {
            return Endpoint::Unknown;
        };
        if rest == "/stacks.json" {
            return Endpoint::Stacks;
        }
        let Some(rest) = rest.strip_prefix("/stacks/") else {
            return Endpoint::Unknown;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            [uid, "ssl_certificates.json"] if !uid.is_empty() => {
                Endpoint::Certificates((*uid).to_owned())
            }
            [uid, "actions.json"] if !uid.is_empty() => Endpoint::Actions((*uid).to_owned()),
            [uid, "ssl_certificates", file] if !uid.is_empty() => {
                match file.strip_suffix(".json") {
                    Some(uuid) if !uuid.is_empty() => {
                        Endpoint::Certificate((*uid).to_owned(), uuid.to_owned())
                    }
                    _ => Endpoint::Unknown,
                }
            }
            _ => Endpoint::Unknown,
        }
    }

    fn matches(&self, route: &Route) -> bool {
        match (route, self) {
            (Route::Any, _) | (Route::Stacks, Endpoint::Stacks) => true,
            (Route::Certificates(uid), Endpoint::Certificates(u) | Endpoint::Certificate(u, _))
            | (Route::Actions(uid), Endpoint::Actions(u)) => uid == u,
            _ => false,
        }
    }
}

/// The `page` query parameter: 1 when absent, `None` when not a positive integer.
fn page_of(query: Option<&str>) -> Option<u32> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("page="));
    match value {
        None => Some(1),
        Some(value) => value.parse::<u32>().ok().filter(|page| *page >= 1),
    }
}

/// An answer before compression.
struct Answer {
    status: u16,
    content_type: &'static str,
    headers: Vec<(header::HeaderName, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn with_retry_after(mut self, retry_after: Option<u64>) -> Answer {
        if let Some(seconds) = retry_after {
            self.headers
                .push((header::RETRY_AFTER, seconds.to_string()));
        }
        self
    }
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let _in_flight = InFlight::enter(&state);
    let header_value = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let recorded = RecordedRequest {
        method: request.method().as_str().to_owned(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        authorization: header_value(header::AUTHORIZATION),
        accept_encoding: header_value(header::ACCEPT_ENCODING),
        status: 0,
        gzip: false,
    };
    let method = request.method().clone();
    drop(request);
    let endpoint = Endpoint::parse(&recorded.path);
    let page = page_of(recorded.query.as_deref());

    let (id, fault) = {
        let mut guard = lock(&state);
        let id = guard.next_request_id;
        guard.next_request_id += 1;
        guard.requests.push((id, recorded.clone()));
        (id, guard.take_fault(&endpoint, page))
    };

    let normal = |state: &Arc<Mutex<State>>| {
        lock(state).answer(&method, &endpoint, page, recorded.authorization.as_deref())
    };
    let answer = match fault {
        None => normal(&state),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            normal(&state)
        }
        Some(Fault::Truncated) => {
            let mut answer = normal(&state);
            answer.status = 200;
            answer.body.truncate(answer.body.len() / 2);
            answer
        }
        Some(Fault::Status(status)) => Answer::json(status, INTERNAL_ERROR_BODY),
        Some(Fault::Throttled { retry_after }) => {
            Answer::json(503, ERROR_503).with_retry_after(retry_after)
        }
        Some(Fault::TooManyRequests { retry_after }) => {
            Answer::json(429, TOO_MANY_REQUESTS_BODY).with_retry_after(retry_after)
        }
        Some(Fault::Unauthorized) => Answer::json(401, ERROR_401),
        Some(Fault::Forbidden) => Answer::json(403, ERROR_403),
        Some(Fault::NotJson) => Answer {
            status: 200,
            content_type: HTML,
            headers: Vec::new(),
            body: NOT_JSON_BODY.into(),
        },
        Some(Fault::Redirect(location)) => Answer {
            status: 302,
            content_type: HTML,
            headers: vec![(header::LOCATION, location)],
            body: Vec::new(),
        },
    };

    let gzip = !answer.body.is_empty()
        && recorded
            .accept_encoding
            .as_deref()
            .is_some_and(|v| v.to_ascii_lowercase().contains("gzip"));
    {
        let mut guard = lock(&state);
        if let Some((_, r)) = guard.requests.iter_mut().rev().find(|(i, _)| *i == id) {
            r.status = answer.status;
            r.gzip = gzip;
        }
    }
    build_response(answer, gzip)
}

fn build_response(answer: Answer, gzip: bool) -> Response<Full<Bytes>> {
    let body = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(&answer.body)
            .expect("gzip into memory cannot fail");
        encoder.finish().expect("gzip into memory cannot fail")
    } else {
        answer.body
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

impl State {
    /// The oldest fault matching the request, counting it down.
    fn take_fault(&mut self, endpoint: &Endpoint, page: Option<u32>) -> Option<Fault> {
        let index = self.faults.iter().position(|rule| {
            endpoint.matches(&rule.route) && (rule.page.is_none() || rule.page == page)
        })?;
        let rule = &mut self.faults[index];
        let fault = rule.fault.clone();
        match &mut rule.remaining {
            Some(1) => {
                self.faults.remove(index);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }

    /// The answer of a well-behaved API.
    fn answer(
        &self,
        method: &Method,
        endpoint: &Endpoint,
        page: Option<u32>,
        authorization: Option<&str>,
    ) -> Answer {
        if method != Method::GET {
            let mut answer = Answer::json(405, METHOD_NOT_ALLOWED_BODY);
            answer.headers.push((header::ALLOW, "GET".to_owned()));
            return answer;
        }
        let expected = format!("Bearer {}", self.token);
        if authorization != Some(expected.as_str()) {
            return Answer::json(401, ERROR_401);
        }
        let not_found = || Answer::json(404, ERROR_404);
        let items: &[Value] = match endpoint {
            Endpoint::Unknown => return not_found(),
            Endpoint::Stacks => &self.stacks,
            Endpoint::Certificates(uid)
            | Endpoint::Actions(uid)
            | Endpoint::Certificate(uid, _)
                if !self.has_stack(uid) =>
            {
                return not_found();
            }
            Endpoint::Certificate(uid, uuid) => {
                let found = self
                    .certificates
                    .get(uid)
                    .and_then(|list| list.iter().find(|c| c["uuid"] == uuid.as_str()));
                return match found {
                    Some(certificate) => {
                        Answer::json(200, json!({ "response": certificate }).to_string())
                    }
                    None => not_found(),
                };
            }
            Endpoint::Certificates(uid) => self.certificates.get(uid).map_or(&[], Vec::as_slice),
            Endpoint::Actions(uid) => self.actions.get(uid).map_or(&[], Vec::as_slice),
        };
        match page {
            Some(page) => Answer::json(200, envelope(items, page, self.per_page).to_string()),
            None => Answer::json(400, BAD_REQUEST_BODY),
        }
    }

    fn has_stack(&self, uid: &str) -> bool {
        self.stacks.iter().any(|s| s["uid"] == uid)
    }
}

/// Cloud66's paging envelope for page `page` (1-based) of `items`.
fn envelope(items: &[Value], page: u32, per_page: usize) -> Value {
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let index = page as usize;
    let on_page: Vec<Value> = items
        .iter()
        .skip((index - 1).saturating_mul(per_page))
        .take(per_page)
        .cloned()
        .collect();
    json!({
        "response": on_page,
        "count": on_page.len(),
        "pagination": {
            "previous": if page > 1 { Some(page - 1) } else { None },
            "next": if index < pages { Some(page + 1) } else { None },
            "current": page,
            "per_page": per_page,
            "count": total,
            "pages": pages,
        }
    })
}
