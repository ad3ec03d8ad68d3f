//! Slow and greedy clients: hundreds of connections that dribble a request byte by
//! byte do not keep a normal webhook from being answered, and a huge header is refused
//! (431 or a closed connection, never a 5xx) without harming the server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Guards against a hang only; nothing here is expected to take nearly this long.
const OUTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two bytes of a dribbling client.
const DRIBBLE_PAUSE: Duration = Duration::from_millis(25);

/// Counters shared by the dribbling clients.
#[derive(Default)]
struct Dribblers {
    /// Clients that are connected and have sent their first byte.
    started: AtomicUsize,
    /// Clients that sent every byte they meant to (the test must be over before).
    finished: AtomicUsize,
    /// Clients whose connection the server closed before they were done.
    cut_off: AtomicUsize,
}

/// Connects, sends `head` at once, then `tail` one byte per [`DRIBBLE_PAUSE`] until
/// done or told to `stop`.
async fn dribble(
    addr: std::net::SocketAddr,
    (head, tail): (Vec<u8>, Vec<u8>),
    dribblers: Arc<Dribblers>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    if stream.write_all(&head).await.is_err() {
        return;
    }
    for (i, byte) in tail.iter().enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            dribblers.cut_off.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if i == 0 {
            dribblers.started.fetch_add(1, Ordering::SeqCst);
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(DRIBBLE_PAUSE) => {}
        }
    }
    dribblers.finished.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_answered_while_hundreds_of_clients_dribble() {
    const SLOW_HEADERS: usize = 250;
    const SLOW_BODIES: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;

    // Request lines and headers that never end, sent byte by byte (about 5 s each);
    // and complete headers announcing a body that then trickles in (4 s).
    let mut slow_headers =
        format!("POST /webhook/{TOKEN} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").into_bytes();
    slow_headers.extend_from_slice(&[b'a'; 160]);
    let body = INSTALL_OK.as_bytes();
    let body_head = format!(
        "POST /webhook/{TOKEN} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );

    let dribblers = Arc::new(Dribblers::default());
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..SLOW_HEADERS + SLOW_BODIES {
        let request = if i < SLOW_HEADERS {
            (Vec::new(), slow_headers.clone())
        } else {
            (body_head.clone().into_bytes(), body[..160].to_vec())
        };
        let (dribblers, stopped) = (Arc::clone(&dribblers), stopped.clone());
        tasks.push(tokio::spawn(dribble(addr, request, dribblers, stopped)));
    }

    let reply = tokio::time::timeout(OUTER_TIMEOUT, async {
        while dribblers.started.load(Ordering::SeqCst) < SLOW_HEADERS + SLOW_BODIES {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let event = payload(
            "ssl_certificate.install.ok",
            1_700_000_000,
            5,
            "fast",
            serde_json::json!({}),
        );
        server.post_event(&event).await
    })
    .await
    .expect("every dribbler starts and the webhook is answered within the outer timeout");
    let finished = dribblers.finished.load(Ordering::SeqCst);
    let cut_off = dribblers.cut_off.load(Ordering::SeqCst);
    let _ = stop.send(true);
    for task in tasks {
        task.await.expect("dribbler task");
    }

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), serde_json::json!({"status": "accepted"}));
    assert_eq!(
        (finished, cut_off),
        (0, 0),
        "the webhook must be answered while every dribbler is still connected and sending"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            &cert_series("ssl_install_successes_total", "5", "fast")
        ),
        Some(1.0)
    );
    // None of the trickled bodies was complete, so none was counted.
    assert_eq!(
        sample(&metrics, "cloud66_ssl_exporter_certificates"),
        Some(1.0)
    );
    server.stop().await;
}

/// Sends `request` on a fresh connection and returns the status of the answer, or
/// `None` if the server closed the connection without one.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may hang up before reading everything; the answer is what counts.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next()?;
    status_line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn huge_header_is_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    for size in [64 * 1024, 1024 * 1024] {
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nX-Huge: {}\r\n\r\n",
            server.addr,
            "h".repeat(size)
        );
        let status =
            tokio::time::timeout(OUTER_TIMEOUT, raw_status(server.addr, request.as_bytes()))
                .await
                .expect("answered or closed within the outer timeout");
        assert!(
            matches!(status, None | Some(431)),
            "a {size}-byte header got {status:?}, expected 431 or a closed connection"
        );
        let health = request_health(&server).await;
        assert_eq!(
            health, 200,
            "the server keeps serving after a {size}-byte header"
        );
    }
    let reply = server.post_event(INSTALL_OK).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.stop().await;
}

async fn request_health(server: &TestServer) -> u16 {
    request(server.addr, "GET", "/healthz", &[], "")
        .await
        .status
}
