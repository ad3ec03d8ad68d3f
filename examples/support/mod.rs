//! What the load examples (`crash_loop`, `soak`) share: the release binary as a child
//! process on a loopback port, a one-request-per-connection HTTP client, and a little
//! randomness. Not an example itself: Cargo only builds `examples/*.rs` and
//! `examples/*/main.rs`.
#![allow(dead_code)] // each example uses a different part of this module

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Errors are reported, not handled: these are test drivers.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter binary running as a child process on 127.0.0.1.
pub struct Exporter {
    /// The process; killed if dropped, so nothing outlives the driver.
    pub child: Child,
    /// Its process id, for signals and `/proc/<pid>/status`.
    pub pid: u32,
    /// Where it listens (a free loopback port chosen by the kernel).
    pub addr: SocketAddr,
}

impl Exporter {
    /// Starts `binary` on 127.0.0.1:0 with storage in `storage`, without webhook
    /// authentication, and waits (at most 30 s) until it logs its address.
    pub async fn start(binary: &Path, storage: &Path) -> Result<Exporter, Error> {
        let mut child = Command::new(binary)
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--storage.path={}", storage.display()))
            .arg("--webhook.insecure-no-auth")
            .arg("--log.format=logfmt")
            // `info`: the address is only logged at that level.
            .arg("--log.level=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("the exporter exited at once")?;
        let stderr = child.stderr.take().ok_or("stderr is not piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("message=listening") {
                    return listening_address(&line);
                }
                // Warnings (authentication disabled) are expected; show anything worse.
                if line.contains("level=error") {
                    eprintln!("exporter: {line}");
                }
            }
            Err::<SocketAddr, Error>("the exporter exited before listening".into())
        })
        .await
        .map_err(|_| "the exporter did not listen within 30 s")??;
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("level=error") {
                    eprintln!("exporter: {line}");
                }
            }
        });
        Ok(Exporter { child, pid, addr })
    }

    /// SIGKILL (by PID, through the child handle), and waits until the process is gone.
    pub async fn kill(mut self) -> Result<(), Error> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM (by PID), and waits at most 30 s for a clean exit.
    pub async fn stop(mut self) -> Result<(), Error> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -TERM {} failed", self.pid).into());
        }
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .map_err(|_| "the exporter did not stop within 30 s of SIGTERM")??;
        if !exit.success() {
            return Err(format!("the exporter exited with {exit}").into());
        }
        Ok(())
    }
}

/// The `address=` field of the `listening` log line.
fn listening_address(line: &str) -> Result<SocketAddr, Error> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .map(|value| value.trim_matches('"'))
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| format!("no address in {line:?}").into())
}

/// One request on a fresh connection: the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    })
    .await
    .map_err(|_| "request timed out")?
}

/// A random number from the standard library's per-process hash keys.
pub fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::Instant::now())
}

/// A random number in `range` (the range must not be empty).
pub fn random_in(range: std::ops::Range<u64>) -> u64 {
    range.start + random_u64() % (range.end - range.start)
}
