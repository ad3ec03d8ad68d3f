//! The reference for `scripts/bench`: a bare hyper 1.x server that reads each request's
//! whole body and answers `202 Accepted` with an empty body. No parsing, no storage, no
//! logging: the most an HTTP/1.1 server on this stack can do on this machine, which the
//! exporter's durable ingest rate is compared with.
//!
//! ```sh
//! cargo run --release --example reference_server -- 127.0.0.1:18080
//! ```
//!
//! Prints `listening <address>` once bound (port 0 picks a free one), then serves until
//! killed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Reads the whole body (as a real webhook receiver must) and answers 202.
async fn accept(request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let status = match request.into_body().collect().await {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1).map(|arg| arg.parse()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("usage: reference_server HOST:PORT (e.g. 127.0.0.1:18080)");
            std::process::exit(64);
        }
    };
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A client closing mid-request is not the server's failure: ignore it.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(accept))
                .await;
        });
    }
}
