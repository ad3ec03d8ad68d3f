//! What the load examples (`crash_loop`, `soak`, `sync_bench`) share: the release binary as a child
//! process on a loopback port, a one-request-per-connection HTTP client, and a little
//! randomness. Not an example itself: Cargo only builds `examples/*.rs` and
//! `examples/*/main.rs`.
#![allow(dead_code)] // each example uses a different part of this module

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, SocketAddr};
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

/// How long the exporter may take to listen (and, see [`Exporter::start_with`], to be
/// ready).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

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
        Self::start_with(binary, storage, &[]).await
    }

    /// [`Exporter::start`] with `extra` arguments after the usual ones (e.g. the
    /// `--cloud66.*` flags). If they set `--log.level`, the exporter does not log its
    /// address: it is read from `/proc` instead (its listening TCP socket), and the
    /// exporter is ready once `/readyz` answers 200 (at most 30 s in all).
    pub async fn start_with(
        binary: &Path,
        storage: &Path,
        extra: &[String],
    ) -> Result<Exporter, Error> {
        let own_level = extra.iter().any(|arg| arg.starts_with("--log.level"));
        let mut command = Command::new(binary);
        command
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--storage.path={}", storage.display()))
            .arg("--webhook.insecure-no-auth")
            .arg("--log.format=logfmt");
        if !own_level {
            // `info`: the address is only logged at that level.
            command.arg("--log.level=info");
        }
        let mut child = command
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Never the developer's real Cloud66 API token: only what the caller passes.
            .env_remove("CLOUD66_API_TOKEN")
            .env_remove("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN")
            .env_remove("CLOUD66_SSL_EXPORTER_CLOUD66_API_TOKEN_FILE")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("the exporter exited at once")?;
        let stderr = child.stderr.take().ok_or("stderr is not piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let addr = if own_level {
            drain_errors(lines);
            tokio::time::timeout_at(deadline, listening_socket_of(&mut child, pid))
                .await
                .map_err(|_| "the exporter did not listen within 30 s")??
        } else {
            let addr = tokio::time::timeout_at(deadline, async {
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
            drain_errors(lines);
            addr
        };
        if own_level {
            tokio::time::timeout_at(deadline, async {
                loop {
                    if let Ok((200, _)) = request(addr, "GET", "/readyz", Vec::new()).await {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .map_err(|_| "the exporter was not ready within 30 s")?;
        }
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

/// Keeps draining the exporter's stderr so that it never blocks on a full pipe, showing
/// errors.
fn drain_errors(mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>) {
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("level=error") {
                eprintln!("exporter: {line}");
            }
        }
    });
}

/// Waits until process `pid` (the `child`) has a listening TCP socket, and returns its
/// address; fails if the process exits first. Run under a deadline.
async fn listening_socket_of(child: &mut Child, pid: u32) -> Result<SocketAddr, Error> {
    loop {
        if let Some(addr) = listening_socket(pid) {
            return Ok(addr);
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("the exporter exited before listening ({status})").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The address of the first listening IPv4 TCP socket that process `pid` holds, from
/// its file descriptors (`socket:[inode]`) and `/proc/<pid>/net/tcp`.
fn listening_socket(pid: u32) -> Option<SocketAddr> {
    let proc = Path::new("/proc").join(pid.to_string());
    let inodes: HashSet<String> = std::fs::read_dir(proc.join("fd"))
        .ok()?
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(proc.join("net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != "0A" || !inodes.contains(fields[9]) {
            return None;
        }
        let (ip, port) = fields[1].split_once(':')?;
        // The address is printed as the kernel's 32-bit word in host byte order.
        let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddr::from((ip, port)))
    })
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

/// `GET /api/v1/sync`: the exporter's Cloud66 API sync status.
pub async fn sync_status(addr: SocketAddr) -> Result<serde_json::Value, Error> {
    match request(addr, "GET", "/api/v1/sync", Vec::new()).await? {
        (200, body) => Ok(serde_json::from_slice(&body)?),
        (code, body) => Err(format!(
            "GET /api/v1/sync answered {code}: {}",
            String::from_utf8_lossy(&body)
        )
        .into()),
    }
}

/// Waits (at most `deadline`, polling every 100 ms) until no sync runs and the last one
/// ended after the one that had ended at `before` (null: none had).
pub async fn sync_ended(
    addr: SocketAddr,
    before: &serde_json::Value,
    deadline: Duration,
) -> Result<serde_json::Value, Error> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let status = sync_status(addr).await?;
        let finished = &status["last_finished"];
        if status["running"] == false && !finished.is_null() && finished != before {
            return Ok(status);
        }
        if std::time::Instant::now() >= until {
            return Err(format!("no sync ended within {} s: {status}", deadline.as_secs()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
