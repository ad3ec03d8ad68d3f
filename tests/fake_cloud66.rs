//! The fake Cloud66 API (`tests/common/fake_cloud66.rs`) itself, driven by a plain hyper
//! client over HTTP and HTTPS: paging, the token, every fault, gzip, the request log, and
//! stopping.

mod common;

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fake_cloud66::{FAKE_TOKEN, FakeCloud66, Fault, RecordedRequest, Route};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const UID_A: &str = "5999b763474b0eafa5fafb64bff0ba80";
const UID_B: &str = "a6b583684833a2cf4845079c9d9350a8";

/// An answer with the raw (possibly gzip-compressed) body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    /// A header's value, if present.
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
    }

    /// The body, decompressed if `Content-Encoding: gzip`.
    fn text(&self) -> String {
        if self.header("content-encoding").as_deref() == Some("gzip") {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_string(&mut text)
                .expect("a valid gzip body");
            text
        } else {
            String::from_utf8(self.body.to_vec()).expect("a UTF-8 body")
        }
    }

    /// The body parsed as JSON.
    fn json(&self) -> Value {
        let text = self.text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

/// An HTTP/1 connection to `fake`, over TLS trusting `ca_pem` (as `server_name`) when the
/// fake is HTTPS.
async fn connect(
    fake: &FakeCloud66,
    ca_pem: Option<&str>,
    server_name: &str,
) -> Result<http1::SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(fake.addr()).await?;
    if !fake.url().starts_with("https://") {
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        return Ok(sender);
    }
    let mut roots = rustls::RootCertStore::empty();
    let pem = ca_pem.ok_or("an HTTPS fake needs a CA to trust")?;
    roots.add(CertificateDer::from_pem_slice(pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_owned())?;
    let stream = connector.connect(name, stream).await?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request on `sender`; `rel` is appended to `fake.url()`.
async fn send_on(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    fake: &FakeCloud66,
    method: &str,
    rel: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, BoxError> {
    let uri: http::Uri = format!("{}{rel}", fake.url()).parse()?;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", uri.authority().map_or("", |a| a.as_str()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::new()))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection (trusting the fake's own CA over HTTPS).
async fn try_send(
    fake: &FakeCloud66,
    method: &str,
    rel: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, BoxError> {
    let ca = fake.ca_pem();
    let mut sender = connect(fake, ca.as_deref(), "127.0.0.1").await?;
    send_on(&mut sender, fake, method, rel, headers).await
}

/// One request that must get an answer within 10 s.
async fn send(fake: &FakeCloud66, method: &str, rel: &str, headers: &[(&str, &str)]) -> Answer {
    tokio::time::timeout(
        Duration::from_secs(10),
        try_send(fake, method, rel, headers),
    )
    .await
    .expect("the fake answers within 10 s")
    .expect("the request succeeds")
}

fn bearer() -> String {
    format!("Bearer {FAKE_TOKEN}")
}

/// An authenticated GET.
async fn get(fake: &FakeCloud66, rel: &str) -> Answer {
    send(fake, "GET", rel, &[("authorization", &bearer())]).await
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(FakeCloud66::fixture(name)).expect("the example is JSON")
}

fn uids(answer: &Answer) -> Vec<String> {
    answer.json()["response"]
        .as_array()
        .expect("a response array")
        .iter()
        .map(|s| s["uid"].as_str().expect("a string uid").to_owned())
        .collect()
}

#[tokio::test]
async fn paging_walks_pages_with_previous_next_and_counts() {
    let fake = FakeCloud66::start().await;
    fake.set_per_page(2);
    for i in 0..5 {
        fake.add_stack(&format!("s{i}"), &format!("Stack {i}"), "production");
    }

    let page1 = get(&fake, "/stacks.json?page=1").await;
    assert_eq!(page1.status, 200);
    assert_eq!(uids(&page1), ["s0", "s1"]);
    assert_eq!(page1.json()["count"], 2);
    assert_eq!(
        page1.json()["pagination"],
        json!({"previous": null, "next": 2, "current": 1, "per_page": 2, "count": 5, "pages": 3})
    );

    let page2 = get(&fake, "/stacks.json?page=2").await;
    assert_eq!(uids(&page2), ["s2", "s3"]);
    assert_eq!(page2.json()["count"], 2);
    assert_eq!(
        page2.json()["pagination"],
        json!({"previous": 1, "next": 3, "current": 2, "per_page": 2, "count": 5, "pages": 3})
    );

    let page3 = get(&fake, "/stacks.json?page=3").await;
    assert_eq!(uids(&page3), ["s4"]);
    assert_eq!(page3.json()["count"], 1);
    assert_eq!(
        page3.json()["pagination"],
        json!({"previous": 2, "next": null, "current": 3, "per_page": 2, "count": 5, "pages": 3})
    );

    // No page parameter means page 1; past the end is an empty page.
    assert_eq!(get(&fake, "/stacks.json").await.json(), page1.json());
    let page4 = get(&fake, "/stacks.json?page=4").await.json();
    assert_eq!(page4["response"], json!([]));
    assert_eq!(page4["count"], 0);
    assert_eq!(page4["pagination"]["next"], Value::Null);

    // Not a positive integer.
    assert_eq!(get(&fake, "/stacks.json?page=0").await.status, 400);
    assert_eq!(get(&fake, "/stacks.json?page=two").await.status, 400);

    // An empty list still has one page.
    fake.set_stacks(Vec::new());
    assert_eq!(
        get(&fake, "/stacks.json").await.json(),
        json!({"response": [], "count": 0, "pagination":
            {"previous": null, "next": null, "current": 1, "per_page": 2, "count": 0, "pages": 1}})
    );
}

#[tokio::test]
async fn seeded_with_the_examples_it_answers_the_examples() {
    let fake = FakeCloud66::start().await;
    fake.set_stacks(FakeCloud66::fixture_items("stacks.page1.json"));
    fake.set_certificates(
        UID_A,
        FakeCloud66::fixture_items("ssl_certificates.page1.json"),
    );
    fake.set_actions(UID_A, FakeCloud66::fixture_items("actions.page1.json"));

    assert_eq!(
        get(&fake, "/stacks.json").await.json(),
        fixture_json("stacks.page1.json")
    );
    assert_eq!(
        get(
            &fake,
            &format!("/stacks/{UID_A}/ssl_certificates.json?page=1")
        )
        .await
        .json(),
        fixture_json("ssl_certificates.page1.json")
    );
    assert_eq!(
        get(&fake, &format!("/stacks/{UID_A}/actions.json"))
            .await
            .json(),
        fixture_json("actions.page1.json")
    );
    for code in ["401", "403", "404", "503"] {
        let error = fixture_json(&format!("error.{code}.json"));
        assert!(error["error"].is_string(), "error.{code}.json");
    }
}

#[test]
fn builders_produce_objects_shaped_like_the_examples() {
    let stacks = FakeCloud66::fixture_items("stacks.page1.json");
    assert_eq!(
        FakeCloud66::stack(UID_A, "Awesome App", "production"),
        stacks[0]
    );
    let billing = FakeCloud66::stack(UID_B, "Billing API", "staging");
    assert_eq!(billing["fqdn"], "billing-api.c66.me");
    assert_eq!(billing["environment"], "staging");
    assert_eq!(billing["created_at"], "2014-08-14 00:38:14 UTC");
    assert_eq!(billing["created_at_iso"], "2014-08-14T00:38:14Z");
    let keys = |v: &Value| {
        v.as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&billing), keys(&stacks[1]));

    let examples = FakeCloud66::fixture_items("ssl_certificates.page1.json");
    let le = FakeCloud66::certificate(
        "3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60",
        "app.example.com",
        "app.example.com,www.example.com",
        json!(3),
        Some("2025-06-02T11:48:04Z"),
        true,
    );
    assert_eq!(keys(&le), keys(&examples[0]));
    for field in [
        "uuid",
        "name",
        "server_names",
        "ca_name",
        "type",
        "status",
        "expires_at",
        "ssl_termination",
        "has_intermediate_cert",
        "wildcard",
    ] {
        assert_eq!(le[field], examples[0][field], "{field}");
    }
    let fingerprint = le["sha256_fingerprint"].as_str().expect("a fingerprint");
    assert_eq!(fingerprint.len(), 64);
    assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));

    let manual = FakeCloud66::certificate(
        "m1",
        "*.example.com",
        "*.example.com",
        json!("active"),
        None,
        false,
    );
    assert_eq!(manual["type"], "manual");
    assert_eq!(manual["ca_name"], Value::Null);
    assert_eq!(manual["expires_at"], Value::Null);
    assert_eq!(manual["status"], "active");
    assert_eq!(manual["wildcard"], true);

    let actions = FakeCloud66::fixture_items("actions.page1.json");
    assert_eq!(FakeCloud66::stack_action(json!("283")), actions[0]);
    assert_eq!(FakeCloud66::stack_action(json!(283))["resource_id"], 283);
}

#[tokio::test]
async fn the_bearer_token_is_required() {
    let fake = FakeCloud66::start().await;
    let unauthenticated = fixture_json("error.401.json");

    let missing = send(&fake, "GET", "/stacks.json", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json(), unauthenticated);
    let wrong = send(
        &fake,
        "GET",
        "/stacks.json",
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let bare = send(
        &fake,
        "GET",
        "/stacks.json",
        &[("authorization", FAKE_TOKEN)],
    )
    .await;
    assert_eq!(bare.status, 401);
    // Authentication comes before routing.
    assert_eq!(send(&fake, "GET", "/nothing.json", &[]).await.status, 401);
    assert_eq!(get(&fake, "/stacks.json").await.status, 200);

    fake.set_token("another-token");
    assert_eq!(get(&fake, "/stacks.json").await.status, 401);
    let other = send(
        &fake,
        "GET",
        "/stacks.json",
        &[("authorization", "Bearer another-token")],
    )
    .await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn unknown_stacks_paths_and_methods_are_refused() {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    let not_found = fixture_json("error.404.json");

    for rel in [
        format!("/stacks/{UID_B}/ssl_certificates.json"),
        format!("/stacks/{UID_B}/actions.json"),
        format!("/stacks/{UID_A}/ssl_certificates/nope.json"),
        format!("/stacks/{UID_A}/servers.json"),
        format!("/stacks/{UID_A}/ssl_certificates"),
        "/stacks".to_owned(),
        "/nothing.json".to_owned(),
    ] {
        let answer = get(&fake, &rel).await;
        assert_eq!(answer.status, 404, "{rel}");
        assert_eq!(answer.json(), not_found, "{rel}");
    }
    // Outside the /api/3 prefix.
    let mut sender = connect(&fake, None, "127.0.0.1").await.expect("connects");
    let request = http::Request::get("/stacks.json")
        .header("host", fake.addr().to_string())
        .header("authorization", bearer())
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), 404);

    let post = send(
        &fake,
        "POST",
        "/stacks.json",
        &[("authorization", &bearer())],
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET"));
}

#[tokio::test]
async fn certificates_and_actions_belong_to_their_stack() {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    fake.add_stack(UID_B, "Billing API", "staging");
    let cert = |uuid: &str| {
        FakeCloud66::certificate(
            uuid,
            &format!("{uuid}.example.com"),
            &format!("{uuid}.example.com"),
            json!(3),
            Some("2030-01-01T00:00:00Z"),
            true,
        )
    };
    fake.set_certificates(UID_A, vec![cert("c1"), cert("c2")]);
    fake.add_certificate(UID_A, cert("c3"));
    fake.set_actions(UID_B, vec![FakeCloud66::stack_action(json!("283"))]);

    let uuids = |answer: Answer| -> Vec<String> {
        answer.json()["response"]
            .as_array()
            .expect("an array")
            .iter()
            .map(|c| c["uuid"].as_str().expect("a uuid").to_owned())
            .collect()
    };
    let a_certs = format!("/stacks/{UID_A}/ssl_certificates.json");
    let b_certs = format!("/stacks/{UID_B}/ssl_certificates.json");
    assert_eq!(uuids(get(&fake, &a_certs).await), ["c1", "c2", "c3"]);
    assert_eq!(get(&fake, &b_certs).await.json()["response"], json!([]));
    assert_eq!(
        get(&fake, &format!("/stacks/{UID_A}/actions.json"))
            .await
            .json()["pagination"]["pages"],
        1
    );
    assert_eq!(
        get(&fake, &format!("/stacks/{UID_B}/actions.json"))
            .await
            .json()["response"][0]["resource_id"],
        "283"
    );
    let single = get(&fake, &format!("/stacks/{UID_A}/ssl_certificates/c2.json")).await;
    assert_eq!(single.json(), json!({ "response": cert("c2") }));

    fake.remove_certificate(UID_A, "c2");
    assert_eq!(uuids(get(&fake, &a_certs).await), ["c1", "c3"]);

    // Re-adding a stack replaces it; removing it makes its lists 404.
    fake.add_stack(UID_A, "Renamed", "production");
    let stacks = get(&fake, "/stacks.json").await.json();
    assert_eq!(stacks["pagination"]["count"], 2);
    assert_eq!(stacks["response"][0]["name"], "Renamed");
    fake.remove_stack(UID_A);
    assert_eq!(get(&fake, &a_certs).await.status, 404);
    assert_eq!(uids(&get(&fake, "/stacks.json").await), [UID_B]);
    // Certificates of a stack that is not listed are not served.
    fake.set_certificates("unlisted", vec![cert("c9")]);
    assert_eq!(
        get(&fake, "/stacks/unlisted/ssl_certificates.json")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn fault_status_answers_internal_error_until_times_runs_out() {
    let fake = FakeCloud66::start().await;
    fake.fail(Route::Stacks, None, Fault::Status(500), Some(2));
    for _ in 0..2 {
        let answer = get(&fake, "/stacks.json").await;
        assert_eq!(answer.status, 500);
        assert_eq!(answer.json(), json!({"error": "internal_error"}));
    }
    assert_eq!(get(&fake, "/stacks.json").await.status, 200);

    fake.fail(Route::Stacks, None, Fault::Status(502), None);
    for _ in 0..3 {
        assert_eq!(get(&fake, "/stacks.json").await.status, 502);
    }
    fake.clear_faults();
    assert_eq!(get(&fake, "/stacks.json").await.status, 200);
}

#[tokio::test]
async fn fault_throttled_and_too_many_requests_carry_retry_after_if_given() {
    let fake = FakeCloud66::start().await;
    fake.fail(
        Route::Any,
        None,
        Fault::Throttled { retry_after: None },
        Some(1),
    );
    fake.fail(
        Route::Any,
        None,
        Fault::Throttled {
            retry_after: Some(7),
        },
        Some(1),
    );
    fake.fail(
        Route::Any,
        None,
        Fault::TooManyRequests { retry_after: None },
        Some(1),
    );
    fake.fail(
        Route::Any,
        None,
        Fault::TooManyRequests {
            retry_after: Some(3),
        },
        Some(1),
    );

    let throttled = get(&fake, "/stacks.json").await;
    assert_eq!(throttled.status, 503);
    assert_eq!(throttled.json(), fixture_json("error.503.json"));
    assert_eq!(throttled.header("retry-after"), None);
    let throttled = get(&fake, "/stacks.json").await;
    assert_eq!(throttled.status, 503);
    assert_eq!(throttled.header("retry-after").as_deref(), Some("7"));

    let limited = get(&fake, "/stacks.json").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"], "too_many_requests");
    assert_eq!(limited.header("retry-after"), None);
    let limited = get(&fake, "/stacks.json").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after").as_deref(), Some("3"));

    assert_eq!(get(&fake, "/stacks.json").await.status, 200);
}

#[tokio::test]
async fn fault_unauthorized_and_forbidden_override_a_good_token() {
    let fake = FakeCloud66::start().await;
    fake.fail(Route::Stacks, None, Fault::Unauthorized, Some(1));
    fake.fail(Route::Stacks, None, Fault::Forbidden, Some(1));

    let unauthorized = get(&fake, "/stacks.json").await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(unauthorized.json(), fixture_json("error.401.json"));
    let forbidden = get(&fake, "/stacks.json").await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.json(), fixture_json("error.403.json"));
    assert_eq!(get(&fake, "/stacks.json").await.status, 200);
}

#[tokio::test]
async fn fault_delay_answers_normally_but_late() {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    let delay = Duration::from_millis(300);
    fake.fail(Route::Stacks, None, Fault::Delay(delay), Some(2));

    let started = Instant::now();
    let answer = get(&fake, "/stacks.json").await;
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(answer.status, 200);
    assert_eq!(uids(&answer), [UID_A]);

    // A client with a shorter timeout gives up.
    let auth = bearer();
    let timed_out = tokio::time::timeout(
        Duration::from_millis(50),
        try_send(&fake, "GET", "/stacks.json", &[("authorization", &auth)]),
    )
    .await;
    assert!(timed_out.is_err(), "the delayed answer came early");

    let started = Instant::now();
    assert_eq!(get(&fake, "/stacks.json").await.status, 200);
    assert!(started.elapsed() < delay, "the delay outlived `times`");
}

#[tokio::test]
async fn fault_not_json_truncated_and_redirect() {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    let full = get(&fake, "/stacks.json").await.text();

    fake.fail(Route::Stacks, None, Fault::NotJson, Some(1));
    let html = get(&fake, "/stacks.json").await;
    assert_eq!(html.status, 200);
    assert!(
        html.header("content-type")
            .expect("a content type")
            .starts_with("text/html")
    );
    assert_eq!(html.text(), "<html>oops</html>");

    fake.fail(Route::Stacks, None, Fault::Truncated, Some(1));
    let truncated = get(&fake, "/stacks.json").await;
    assert_eq!(truncated.status, 200);
    let text = truncated.text();
    assert_eq!(text.len(), full.len() / 2);
    assert!(full.starts_with(&text));
    assert!(serde_json::from_str::<Value>(&text).is_err());

    let target = "https://elsewhere.example/api/3/stacks.json?page=1";
    fake.fail(
        Route::Stacks,
        None,
        Fault::Redirect(target.to_owned()),
        Some(1),
    );
    let redirect = get(&fake, "/stacks.json").await;
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location").as_deref(), Some(target));

    assert_eq!(get(&fake, "/stacks.json").await.text(), full);
}

#[tokio::test]
async fn faults_match_by_route_and_page_oldest_first() {
    let fake = FakeCloud66::start().await;
    fake.set_per_page(1);
    fake.add_stack(UID_A, "Awesome App", "production");
    fake.add_stack(UID_B, "Billing API", "staging");
    let cert = FakeCloud66::certificate("c", "c.example", "c.example", json!(3), None, true);
    fake.set_certificates(UID_A, vec![cert.clone(), cert.clone()]);
    fake.set_certificates(UID_B, vec![cert.clone(), cert]);
    fake.fail(
        Route::Certificates(UID_A.to_owned()),
        Some(2),
        Fault::Status(500),
        None,
    );

    let a = format!("/stacks/{UID_A}/ssl_certificates.json");
    let b = format!("/stacks/{UID_B}/ssl_certificates.json");
    assert_eq!(get(&fake, &a).await.status, 200); // page 1 implied
    assert_eq!(get(&fake, &format!("{a}?page=1")).await.status, 200);
    assert_eq!(get(&fake, &format!("{a}?page=2")).await.status, 500);
    assert_eq!(get(&fake, &format!("{a}?page=2")).await.status, 500);
    assert_eq!(get(&fake, &format!("{b}?page=2")).await.status, 200);
    assert_eq!(get(&fake, "/stacks.json?page=2").await.status, 200);

    fake.fail(
        Route::Actions(UID_B.to_owned()),
        None,
        Fault::Forbidden,
        None,
    );
    assert_eq!(
        get(&fake, &format!("/stacks/{UID_B}/actions.json"))
            .await
            .status,
        403
    );
    assert_eq!(
        get(&fake, &format!("/stacks/{UID_A}/actions.json"))
            .await
            .status,
        200
    );

    // The oldest matching fault answers; a later one waits its turn.
    fake.clear_faults();
    fake.fail(Route::Any, None, Fault::Status(502), Some(1));
    fake.fail(Route::Stacks, None, Fault::Status(504), Some(1));
    assert_eq!(get(&fake, "/stacks.json").await.status, 502);
    assert_eq!(get(&fake, "/stacks.json").await.status, 504);
    assert_eq!(get(&fake, "/stacks.json").await.status, 200);

    // `Any` covers unknown paths too; zero times is nothing.
    fake.fail(Route::Any, None, Fault::Status(500), Some(0));
    assert_eq!(get(&fake, "/nothing.json").await.status, 404);
    fake.fail(Route::Any, None, Fault::Status(500), Some(1));
    assert_eq!(get(&fake, "/nothing.json").await.status, 500);
}

#[tokio::test]
async fn gzip_is_answered_only_when_asked() {
    let fake = FakeCloud66::start().await;
    fake.set_stacks(FakeCloud66::fixture_items("stacks.page1.json"));
    let auth = bearer();

    let plain = get(&fake, "/stacks.json").await;
    assert_eq!(plain.header("content-encoding"), None);

    let compressed = send(
        &fake,
        "GET",
        "/stacks.json",
        &[
            ("authorization", &auth),
            ("accept-encoding", "gzip, deflate"),
        ],
    )
    .await;
    assert_eq!(compressed.status, 200);
    assert_eq!(
        compressed.header("content-encoding").as_deref(),
        Some("gzip")
    );
    assert!(compressed.body.starts_with(&[0x1f, 0x8b]), "gzip magic");
    assert_eq!(compressed.json(), plain.json());

    // Errors are compressed too.
    let error = send(&fake, "GET", "/stacks.json", &[("accept-encoding", "gzip")]).await;
    assert_eq!(error.status, 401);
    assert_eq!(error.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(error.json(), fixture_json("error.401.json"));

    let identity = send(
        &fake,
        "GET",
        "/stacks.json",
        &[("authorization", &auth), ("accept-encoding", "identity")],
    )
    .await;
    assert_eq!(identity.header("content-encoding"), None);

    let gzipped: Vec<bool> = fake.requests().iter().map(|r| r.gzip).collect();
    assert_eq!(gzipped, [false, true, true, false]);
}

#[tokio::test]
async fn the_request_log_records_what_was_asked_and_answered() {
    let fake = FakeCloud66::start().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    assert_eq!(fake.request_count(), 0);

    get(
        &fake,
        &format!("/stacks/{UID_A}/ssl_certificates.json?page=1"),
    )
    .await;
    send(
        &fake,
        "GET",
        "/stacks.json",
        &[
            ("authorization", "Bearer wrong"),
            ("accept-encoding", "gzip"),
        ],
    )
    .await;
    send(&fake, "DELETE", "/stacks.json", &[]).await;

    assert_eq!(fake.request_count(), 3);
    assert_eq!(
        fake.requests(),
        [
            RecordedRequest {
                method: "GET".into(),
                path: format!("/api/3/stacks/{UID_A}/ssl_certificates.json"),
                query: Some("page=1".into()),
                authorization: Some(bearer()),
                accept_encoding: None,
                status: 200,
                gzip: false,
            },
            RecordedRequest {
                method: "GET".into(),
                path: "/api/3/stacks.json".into(),
                query: None,
                authorization: Some("Bearer wrong".into()),
                accept_encoding: Some("gzip".into()),
                status: 401,
                gzip: true,
            },
            RecordedRequest {
                method: "DELETE".into(),
                path: "/api/3/stacks.json".into(),
                query: None,
                authorization: None,
                accept_encoding: None,
                status: 405,
                gzip: false,
            },
        ]
    );

    fake.clear_requests();
    assert_eq!(fake.request_count(), 0);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn max_concurrent_counts_overlapping_requests() {
    let fake = FakeCloud66::start().await;
    for _ in 0..2 {
        get(&fake, "/stacks.json").await;
    }
    assert_eq!(
        fake.max_concurrent(),
        1,
        "sequential requests do not overlap"
    );

    fake.fail(
        Route::Any,
        None,
        Fault::Delay(Duration::from_millis(300)),
        Some(3),
    );
    let (a, b, c) = tokio::join!(
        get(&fake, "/stacks.json"),
        get(&fake, "/stacks.json"),
        get(&fake, "/stacks.json"),
    );
    assert_eq!([a.status, b.status, c.status], [200, 200, 200]);
    assert_eq!(fake.max_concurrent(), 3);

    fake.clear_requests();
    assert_eq!(fake.max_concurrent(), 0);
    get(&fake, "/stacks.json").await;
    assert_eq!(fake.max_concurrent(), 1);
}

#[tokio::test]
async fn https_is_served_with_a_certificate_from_its_own_ca() {
    let fake = FakeCloud66::start_https().await;
    fake.add_stack(UID_A, "Awesome App", "production");
    assert_eq!(
        fake.url(),
        format!("https://127.0.0.1:{}/api/3", fake.addr().port())
    );
    let ca = fake.ca_pem().expect("an HTTPS fake has a CA");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    for name in ["127.0.0.1", "localhost"] {
        let mut sender = connect(&fake, Some(&ca), name)
            .await
            .unwrap_or_else(|e| panic!("TLS as {name}: {e}"));
        let auth = bearer();
        let answer = send_on(
            &mut sender,
            &fake,
            "GET",
            "/stacks.json",
            &[("authorization", &auth), ("accept-encoding", "gzip")],
        )
        .await
        .expect("an answer over TLS");
        assert_eq!(answer.status, 200);
        assert_eq!(uids(&answer), [UID_A]);
    }
    assert_eq!(get(&fake, "/stacks.json").await.status, 200);

    // Another fake's CA does not vouch for this one, nor does a wrong name.
    let other = FakeCloud66::start_https().await;
    let other_ca = other.ca_pem().expect("a CA");
    assert_ne!(other_ca, ca);
    assert!(connect(&fake, Some(&other_ca), "127.0.0.1").await.is_err());
    assert!(connect(&fake, Some(&ca), "example.com").await.is_err());

    let plain = FakeCloud66::start().await;
    assert_eq!(plain.ca_pem(), None);
    assert!(plain.url().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn stop_closes_the_port_and_open_connections() {
    let fake = FakeCloud66::start().await;
    let mut sender = connect(&fake, None, "127.0.0.1").await.expect("connects");
    let auth = bearer();
    let first = send_on(
        &mut sender,
        &fake,
        "GET",
        "/stacks.json",
        &[("authorization", &auth)],
    )
    .await
    .expect("served before stop");
    assert_eq!(first.status, 200);

    fake.stop().await;
    assert!(TcpStream::connect(fake.addr()).await.is_err());
    let after = tokio::time::timeout(
        Duration::from_secs(2),
        send_on(
            &mut sender,
            &fake,
            "GET",
            "/stacks.json",
            &[("authorization", &auth)],
        ),
    )
    .await
    .expect("the closed connection fails fast");
    assert!(after.is_err(), "a kept-alive connection outlived stop");
    fake.stop().await; // stopping twice is harmless
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn dropping_stops_the_server() {
    let fake = FakeCloud66::start_https().await;
    let addr = fake.addr();
    assert!(TcpStream::connect(addr).await.is_ok());
    drop(fake);
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening 2 s after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
