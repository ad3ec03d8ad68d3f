//! HTTPS with `--web.tls-cert-file` and `--web.tls-key-file`, using a self-signed
//! certificate generated in the test (Cloud66 accepts self-signed certificates).

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cloud66_ssl_exporter::config::{TlsConfig, WebhookAuth};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};

/// Writes a self-signed certificate for 127.0.0.1 and its key; returns the certificate.
fn self_signed(dir: &Path) -> CertificateDer<'static> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("generate certificate");
    std::fs::write(dir.join("cert.pem"), generated.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).expect("write key");
    generated.cert.der().clone()
}

/// POSTs `body` over HTTPS, trusting exactly `cert`.
async fn post_https(
    addr: std::net::SocketAddr,
    cert: CertificateDer<'static>,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector
        .connect(server_name, tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn webhooks_are_served_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path());
    let tls =
        TlsConfig::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).expect("load");
    let server = TestServer::start_with(&dir.path().join("data"), |c| {
        c.auth = WebhookAuth::Token(TOKEN.into());
        c.tls = Some(tls);
    })
    .await;
    let (status, body) =
        post_https(server.addr, cert, &format!("/webhook/{TOKEN}"), INSTALL_OK).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"accepted"}"#));
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = try_request(server.addr, "GET", "/healthz", &[], Vec::new()).await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");
    server.stop().await;
}

#[test]
fn unusable_tls_files_exit_64_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    self_signed(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "").expect("write");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let empty = dir.path().join("empty.pem");
    for (args, flag) in [
        (
            vec![format!("--web.tls-cert-file={}", cert.display())],
            "--web.tls-cert-file",
        ),
        (
            vec![
                format!("--web.tls-cert-file={}", empty.display()),
                format!("--web.tls-key-file={}", key.display()),
            ],
            "--web.tls-cert-file",
        ),
        (
            vec![
                format!("--web.tls-cert-file={}", cert.display()),
                format!("--web.tls-key-file={}", empty.display()),
            ],
            "--web.tls-key-file",
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloud66-ssl-exporter"))
            .args(&args)
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("cloud66-ssl-exporter: error: {flag}")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn the_binary_serves_https_with_the_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path());
    let exporter = Exporter::spawn(
        &dir.path().join("data"),
        &[
            &format!(
                "--web.tls-cert-file={}",
                dir.path().join("cert.pem").display()
            ),
            &format!(
                "--web.tls-key-file={}",
                dir.path().join("key.pem").display()
            ),
            "--webhook.insecure-no-auth",
        ],
    )
    .await;
    let (status, _) = post_https(exporter.addr, cert, "/webhook", INSTALL_FAIL).await;
    assert_eq!(status, 200);
    exporter.kill().await;
}
