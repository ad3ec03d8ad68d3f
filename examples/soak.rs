//! Soak: a steady stream of webhooks and scrapes against the release exporter for a
//! bounded time, sampling its resident memory, to show that memory levels off. Run by
//! `scripts/soak`, or directly:
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example soak -- --duration 600
//! ```
//!
//! Options: `--duration S` (default 600), `--rate N` webhooks per second (default
//! 200), `--warmup S` (default half the duration, at least 60 s), `--certificates N`
//! distinct certificates (default 2000), `--max-growth-percent P` (default 10),
//! `--binary PATH` (default `target/release/cloud66-ssl-exporter`).
//!
//! The mix: 75 % SSL events for a random certificate of the pool (new the first time
//! one is drawn, an update after), 10 % exact repeats (duplicates), 10 % other event
//! types (ignored), 5 % invalid bodies; plus one scrape a second. Memory (`VmRSS` of
//! `/proc/<pid>/status`) is sampled every 10 s. Exits 1 if the last sample exceeds the
//! one after warm-up by more than the allowed growth, or if any request failed.

mod support;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Error, Exporter, random_in, request};
use tokio::sync::Semaphore;

/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Requests in flight at most; a tick finding none free is counted as skipped.
const MAX_IN_FLIGHT: usize = 256;
/// Recent bodies kept for exact repeats.
const RECENT: usize = 64;

struct Args {
    duration: u64,
    rate: u64,
    /// Seconds after which memory is expected to have levelled off. It rises until the
    /// certificates are all known and SQLite's page cache (a fixed budget, see
    /// `src/store/database.rs`) is full: about 3.5 minutes at 200 events/s.
    warmup: u64,
    certificates: u64,
    max_growth_percent: f64,
    binary: PathBuf,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        duration: 600,
        rate: 200,
        warmup: 0, // set below, once the duration is known
        certificates: 2000,
        max_growth_percent: 10.0,
        binary: PathBuf::from("target/release/cloud66-ssl-exporter"),
    };
    let mut warmup = None;
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--duration" => args.duration = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--warmup" => warmup = Some(value()?.parse()?),
            "--certificates" => args.certificates = value()?.parse()?,
            "--max-growth-percent" => args.max_growth_percent = value()?.parse()?,
            "--binary" => args.binary = value()?.into(),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if !(20..=86_400).contains(&args.duration)
        || !(1..=5_000).contains(&args.rate)
        || !(1..=1_000_000).contains(&args.certificates)
    {
        return Err(
            "--duration must be 20 to 86400, --rate 1 to 5000, --certificates 1 to 1000000".into(),
        );
    }
    let warmup = warmup.unwrap_or((args.duration / 2).max(60));
    args.warmup = warmup.min(args.duration - 10);
    Ok(args)
}

/// Answers counted by kind.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    ignored: AtomicU64,
    invalid: AtomicU64,
    /// 5xx, unexpected answers and transport errors.
    failed: AtomicU64,
    /// Ticks that found `MAX_IN_FLIGHT` requests outstanding.
    skipped: AtomicU64,
    scrapes: AtomicU64,
}

impl Counts {
    fn count(&self, status: u16, body: &[u8]) {
        let counter = match (status, body) {
            (200, b) if b.ends_with(br#""accepted"}"#) => &self.accepted,
            (200, b) if b.ends_with(br#""duplicate"}"#) => &self.duplicate,
            (200, b) if b.ends_with(br#""ignored"}"#) => &self.ignored,
            (400, _) => &self.invalid,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn sent(&self) -> u64 {
        [
            &self.accepted,
            &self.duplicate,
            &self.ignored,
            &self.invalid,
            &self.failed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// One memory sample.
struct Sample {
    at: u64,
    /// `VmRSS`: what the verdict compares.
    rss_kib: u64,
    /// `RssAnon`: heap and stacks (where a leak would show).
    anon_kib: u64,
    /// `RssFile` + `RssShmem`: mapped files, e.g. the database's shared memory.
    file_kib: u64,
    certificates: u64,
    sent: u64,
    failed: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match soak().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::from(2)
        }
    }
}

async fn soak() -> Result<bool, Error> {
    let args = parse_args()?;
    let storage = tempfile::tempdir()?;
    let exporter = Exporter::start(&args.binary, storage.path()).await?;
    println!(
        "soak: {} s at {} webhooks/s over {} certificates, scrapes every second, pid {} on {}",
        args.duration, args.rate, args.certificates, exporter.pid, exporter.addr
    );
    let counts = Arc::new(Counts::default());
    let certificates = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);

    let scraper = tokio::spawn(scrape_every_second(
        exporter.addr,
        end,
        Arc::clone(&counts),
        Arc::clone(&certificates),
    ));
    let sampler = tokio::spawn(sample_memory(
        exporter.pid,
        started,
        end,
        Arc::clone(&counts),
        Arc::clone(&certificates),
    ));

    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut recent = VecDeque::with_capacity(RECENT);
    let mut seq = 0u64;
    while Instant::now() < end {
        ticks.tick().await;
        seq += 1;
        let body = next_body(seq, args.certificates, &mut recent);
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            counts.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (counts, addr) = (Arc::clone(&counts), exporter.addr);
        tokio::spawn(async move {
            match request(addr, "POST", "/webhook", body).await {
                Ok((status, body)) => counts.count(status, &body),
                Err(_) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    // Let the requests in flight finish (each has its own timeout).
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
    scraper.await?;
    let samples = sampler.await??;
    exporter.stop().await?;
    drop(storage);
    Ok(report(&args, &counts, &samples))
}

/// The body for request `seq`: mostly SSL events over the certificate pool, some
/// exact repeats, other event types and invalid bodies.
fn next_body(seq: u64, pool: u64, recent: &mut VecDeque<Vec<u8>>) -> Vec<u8> {
    let roll = random_in(0..100);
    if (75..85).contains(&roll)
        && let Some(body) = recent.get(random_in(0..recent.len().max(1) as u64) as usize)
    {
        return body.clone();
    }
    if (85..95).contains(&roll) {
        let body = serde_json::json!({"event_type": "stack.redeploy.ok", "timestamp": seq});
        return body.to_string().into_bytes();
    }
    if roll >= 95 {
        return format!(r#"{{"event_type": "ssl_certificate.install.ok", "timestamp": {seq}"#)
            .into_bytes();
    }
    let cert = random_in(0..pool);
    let kind = ["expire.soon", "install.ok", "install.fail"][(seq % 3) as usize];
    let body = serde_json::json!({
        "event_type": format!("ssl_certificate.{kind}"),
        "timestamp": 1_700_000_000 + seq,
        "ssl_certificate": {
            "stack_id": cert % 50,
            "name": format!("soak-certificate-{cert}"),
            "server_names": format!("c{cert}.example.com,www.c{cert}.example.com"),
            "lets_encrypt": true,
            "status": "installed",
            "cert_expiry": "2031-01-01T00:00:00Z",
            "days_until_expiry": 30,
            "error_message": format!("validation failed at {seq}"),
        },
    })
    .to_string()
    .into_bytes();
    if recent.len() == RECENT {
        recent.pop_front();
    }
    recent.push_back(body.clone());
    body
}

/// Scrapes `/metrics` once a second until `end`, noting the certificate count.
async fn scrape_every_second(
    addr: std::net::SocketAddr,
    end: Instant,
    counts: Arc<Counts>,
    certificates: Arc<AtomicU64>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < end {
        ticks.tick().await;
        match request(addr, "GET", "/metrics", Vec::new()).await {
            Ok((200, body)) => {
                counts.scrapes.fetch_add(1, Ordering::Relaxed);
                let text = String::from_utf8_lossy(&body);
                if let Some(count) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("cloud66_ssl_exporter_certificates "))
                    .and_then(|v| v.trim().parse().ok())
                {
                    certificates.store(count, Ordering::Relaxed);
                }
            }
            _ => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Samples the exporter's resident memory at start and every [`SAMPLE_EVERY`] until
/// `end` (and once at `end`).
async fn sample_memory(
    pid: u32,
    started: Instant,
    end: Instant,
    counts: Arc<Counts>,
    certificates: Arc<AtomicU64>,
) -> Result<Vec<Sample>, Error> {
    let mut samples = Vec::new();
    let mut next = started;
    loop {
        tokio::time::sleep_until(next.into()).await;
        samples.push(Sample {
            at: started.elapsed().as_secs_f64().round() as u64,
            rss_kib: status_kib(pid, "VmRSS")?,
            anon_kib: status_kib(pid, "RssAnon")?,
            file_kib: status_kib(pid, "RssFile")? + status_kib(pid, "RssShmem")?,
            certificates: certificates.load(Ordering::Relaxed),
            sent: counts.sent(),
            failed: counts.failed.load(Ordering::Relaxed),
        });
        if next >= end {
            return Ok(samples);
        }
        next = (next + SAMPLE_EVERY).min(end);
    }
}

/// A memory field (`VmRSS`, `RssAnon`, ...) of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64, Error> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let status = std::fs::read_to_string(&path)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in {}", path.display()).into())
}

/// Prints the table and the verdict; true when memory levelled off and nothing failed.
fn report(args: &Args, counts: &Counts, samples: &[Sample]) -> bool {
    println!();
    println!(
        "{:>6}  {:>7}  {:>8}  {:>8}  {:>12}  {:>8}  {:>6}",
        "time_s", "rss_mib", "anon_mib", "file_mib", "certificates", "requests", "failed"
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for s in samples {
        println!(
            "{:>6}  {:>7.1}  {:>8.1}  {:>8.1}  {:>12}  {:>8}  {:>6}",
            s.at,
            mib(s.rss_kib),
            mib(s.anon_kib),
            mib(s.file_kib),
            s.certificates,
            s.sent,
            s.failed
        );
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!();
    println!(
        "requests: {} accepted, {} duplicate, {} ignored, {} invalid, {} failed; {} ticks skipped (too many in flight); {} scrapes",
        load(&counts.accepted),
        load(&counts.duplicate),
        load(&counts.ignored),
        load(&counts.invalid),
        load(&counts.failed),
        load(&counts.skipped),
        load(&counts.scrapes),
    );
    let (Some(warm), Some(last)) = (samples.iter().find(|s| s.at >= args.warmup), samples.last())
    else {
        println!("verdict: no samples");
        return false;
    };
    let growth = last.rss_kib as f64 - warm.rss_kib as f64;
    let percent = 100.0 * growth / warm.rss_kib as f64;
    let stable = percent <= args.max_growth_percent;
    println!(
        "verdict: RSS {:.1} MiB after warm-up ({} s), {:.1} MiB at the end ({} s): {:+.1} MiB ({:+.1} %, limit {} %): {}",
        warm.rss_kib as f64 / 1024.0,
        warm.at,
        last.rss_kib as f64 / 1024.0,
        last.at,
        growth / 1024.0,
        percent,
        args.max_growth_percent,
        if stable { "stable" } else { "GROWING" }
    );
    let failed = load(&counts.failed);
    if failed > 0 {
        println!("verdict: {failed} requests failed");
    }
    stable && failed == 0
}
