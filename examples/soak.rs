//! Soak: a steady stream of webhooks and scrapes against the release exporter for a
//! bounded time, with a Cloud66 API sync every 30 s, sampling its resident memory, to
//! show that memory levels off and that syncs keep working. Run by `scripts/soak`, or
//! directly:
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example soak -- --duration 600
//! ```
//!
//! Options: `--duration S` (default 600), `--rate N` webhooks per second (default
//! 200), `--warmup S` (default half the duration, at least 60 s), `--certificates N`
//! distinct certificates (default 2000), `--max-growth-percent P` (default 10),
//! `--binary PATH` (default `target/release/cloud66-ssl-exporter`), `--api-stacks N`
//! (default 20), `--api-certificates N` per stack (default 25), `--api-latency-ms MS`
//! (default 10), `--sync-every S` (default 30).
//!
//! The mix: 75 % SSL events for a random certificate of the pool (new the first time
//! one is drawn, an update after), 10 % exact repeats (duplicates), 10 % other event
//! types (ignored), 5 % invalid bodies; plus one scrape a second. Memory (`VmRSS` of
//! `/proc/<pid>/status`) is sampled every 10 s. Exits 1 if the last sample exceeds the
//! one after warm-up by more than the allowed growth, or if any request failed.
//!
//! Syncs: the fake Cloud66 API (`tests/common/fake_cloud66.rs`) runs in this process on
//! 127.0.0.1 with `--api-stacks` stacks of `--api-certificates` certificates, answering
//! each request after `--api-latency-ms`, and the exporter reconciles with it (its API
//! stacks have webhook ids of their own, apart from the webhooks' 0 to 49). Besides the
//! sync at start, the driver asks for one (`POST /api/v1/sync`) every `--sync-every`
//! seconds and waits for it to end; before each it changes the fake so that the sync
//! writes: one certificate renewed (a new `expires_at`), one added, and the one added
//! two syncs before removed (the exporter forgets it after two listings without it).
//! Exits 1 also if a sync did not end `ok` in time. The defaults keep the syncs within
//! the hourly request budget the exporter is given (3000, Cloud66's limit) however long
//! the run, and the webhook pool plus the API certificates within the exporter's default
//! certificate limit (10 000).

#[path = "../tests/common/fake_cloud66.rs"]
mod fake_cloud66;
mod support;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fake_cloud66::{DEFAULT_PER_PAGE, FAKE_TOKEN, FakeCloud66, Fault, Route};
use serde_json::{Value, json};
use support::{Error, Exporter, random_in, request};
use tokio::sync::Semaphore;

/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Requests in flight at most; a tick finding none free is counted as skipped.
const MAX_IN_FLIGHT: usize = 256;
/// Recent bodies kept for exact repeats.
const RECENT: usize = 64;
/// The hourly request budget the exporter is given: Cloud66's limit per user.
const MAX_REQUESTS_PER_HOUR: u64 = 3000;
/// The exporter's default `--storage.max-certificates`.
const MAX_CERTIFICATES: u64 = 10_000;
/// Webhook stack id of API stack `index`: `API_STACK_ID + index`.
const API_STACK_ID: u64 = 9000;
/// Certificates the driver adds to the fake at most at once (see [`change_fake`]).
const EXTRAS: u64 = 2;

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
    /// Stacks in the fake Cloud66 API.
    api_stacks: u64,
    /// Certificates of each.
    api_certificates: u64,
    /// Latency the fake adds to each request.
    api_latency_ms: u64,
    /// Seconds between the syncs the driver asks for.
    sync_every: u64,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        duration: 600,
        rate: 200,
        warmup: 0, // set below, once the duration is known
        certificates: 2000,
        max_growth_percent: 10.0,
        binary: PathBuf::from("target/release/cloud66-ssl-exporter"),
        api_stacks: 20,
        api_certificates: 25,
        api_latency_ms: 10,
        sync_every: 30,
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
            "--api-stacks" => args.api_stacks = value()?.parse()?,
            "--api-certificates" => args.api_certificates = value()?.parse()?,
            "--api-latency-ms" => args.api_latency_ms = value()?.parse()?,
            "--sync-every" => args.sync_every = value()?.parse()?,
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
    if !(1..=1000).contains(&args.api_stacks)
        || !(1..=1000).contains(&args.api_certificates)
        || args.api_latency_ms > 5000
        || !(10..=3600).contains(&args.sync_every)
    {
        return Err(
            "--api-stacks must be 1 to 1000, --api-certificates 1 to 1000, \
                    --api-latency-ms 0 to 5000, --sync-every 10 to 3600"
                .into(),
        );
    }
    let api_certificates = args.api_stacks * (args.api_certificates + EXTRAS);
    if args.certificates + api_certificates > MAX_CERTIFICATES {
        return Err(format!(
            "--certificates ({}) plus the API's certificates ({api_certificates}) exceed \
             the exporter's default certificate limit ({MAX_CERTIFICATES})",
            args.certificates
        )
        .into());
    }
    let hourly = (3600 / args.sync_every + 1) * requests_per_sync(&args) + args.api_stacks;
    if hourly > MAX_REQUESTS_PER_HOUR {
        return Err(format!(
            "a sync every {} s of {} stacks makes {hourly} API requests an hour, more than \
             the budget of {MAX_REQUESTS_PER_HOUR}: fewer --api-stacks or a longer --sync-every",
            args.sync_every, args.api_stacks
        )
        .into());
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
    /// Syncs ended so far.
    syncs: u64,
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
    let fake = Arc::new(fake_api(&args).await);
    let exporter = Exporter::start_with(&args.binary, storage.path(), &sync_flags(&fake)).await?;
    println!(
        "soak: {} s at {} webhooks/s over {} certificates, scrapes every second, pid {} on {}",
        args.duration, args.rate, args.certificates, exporter.pid, exporter.addr
    );
    println!(
        "soak: Cloud66 API sync every {} s: fake API on {} with {} stacks × {} certificates, {} ms a request",
        args.sync_every,
        fake.addr(),
        args.api_stacks,
        args.api_certificates,
        args.api_latency_ms
    );
    let counts = Arc::new(Counts::default());
    let certificates = Arc::new(AtomicU64::new(0));
    let syncs_done = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);

    let syncer = tokio::spawn(drive_syncs(
        exporter.addr,
        Arc::clone(&fake),
        Fleet::of(&args),
        started,
        end,
        Arc::clone(&syncs_done),
    ));

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
        Arc::clone(&syncs_done),
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
    // Its last sync started before the end and has a deadline of its own.
    let syncs = syncer.await?;
    exporter.stop().await?;
    fake.stop().await;
    drop(storage);
    let memory_ok = report(&args, &counts, &samples);
    let syncs_ok = report_syncs(&args, &syncs);
    Ok(memory_ok && syncs_ok)
}

// --- Cloud66 API syncs --------------------------------------------------------------------

/// Requests a sync makes at most once the stack ids are known: the stack pages and each
/// stack's certificate pages (with the certificates the driver adds).
fn requests_per_sync(args: &Args) -> u64 {
    let per_page = DEFAULT_PER_PAGE as u64;
    args.api_stacks.div_ceil(per_page)
        + args.api_stacks * (args.api_certificates + EXTRAS).div_ceil(per_page)
}

/// What the driver changes in the fake between syncs.
#[derive(Clone, Copy)]
struct Fleet {
    stacks: u64,
    per_stack: u64,
    sync_every: Duration,
    latency: Duration,
}

impl Fleet {
    fn of(args: &Args) -> Fleet {
        Fleet {
            stacks: args.api_stacks,
            per_stack: args.api_certificates,
            sync_every: Duration::from_secs(args.sync_every),
            latency: Duration::from_millis(args.api_latency_ms),
        }
    }
}

fn stack_uid(index: u64) -> String {
    format!("soakstack{index:04}")
}

/// A valid date that differs for each `version` (28-day months, 336 days a year).
fn expiry(version: u64) -> String {
    let (year, day) = (2030 + version / 336, version % 336);
    format!("{year}-{:02}-{:02}T00:00:00Z", 1 + day / 28, 1 + day % 28)
}

fn api_certificate(uuid: &str, name: &str, version: u64) -> Value {
    FakeCloud66::certificate(uuid, name, name, json!(3), Some(&expiry(version)), true)
}

/// The fake API with the fleet (each stack with an action giving its webhook id).
async fn fake_api(args: &Args) -> FakeCloud66 {
    let fake = FakeCloud66::start().await;
    for index in 0..args.api_stacks {
        let uid = stack_uid(index);
        fake.add_stack(&uid, &format!("Soak stack {index}"), "production");
        let id = (API_STACK_ID + index).to_string();
        fake.set_actions(&uid, vec![FakeCloud66::stack_action(json!(id))]);
        let certificates = (0..args.api_certificates)
            .map(|j| {
                let name = format!("api-{index}-{j}.soak.example.com");
                api_certificate(&format!("uuid-{index}-{j}"), &name, 0)
            })
            .collect();
        fake.set_certificates(&uid, certificates);
    }
    if args.api_latency_ms > 0 {
        let latency = Duration::from_millis(args.api_latency_ms);
        fake.fail(Route::Any, None, Fault::Delay(latency), None);
    }
    fake
}

fn sync_flags(fake: &FakeCloud66) -> Vec<String> {
    vec![
        format!("--cloud66.api-token={FAKE_TOKEN}"),
        format!("--cloud66.api-url={}", fake.url()),
        format!("--cloud66.max-requests-per-hour={MAX_REQUESTS_PER_HOUR}"),
        // Only the syncs the driver asks for (and the one at start).
        "--cloud66.sync-interval=1h".to_owned(),
    ]
}

/// Before sync `k` (from 1): renews one certificate, adds `extra-k`, and removes
/// `extra-(k-2)`, so that at most [`EXTRAS`] extras exist at once.
fn change_fake(fake: &FakeCloud66, fleet: Fleet, k: u64) {
    let (stack, cert) = (k % fleet.stacks, (k / fleet.stacks) % fleet.per_stack);
    let uid = stack_uid(stack);
    let uuid = format!("uuid-{stack}-{cert}");
    fake.remove_certificate(&uid, &uuid);
    let name = format!("api-{stack}-{cert}.soak.example.com");
    fake.add_certificate(&uid, api_certificate(&uuid, &name, k));
    let extra = |k: u64| (stack_uid(k % fleet.stacks), format!("extra-{k}"));
    let (uid, uuid) = extra(k);
    let name = format!("{uuid}.soak.example.com");
    fake.add_certificate(&uid, api_certificate(&uuid, &name, k));
    if k > EXTRAS {
        let (uid, uuid) = extra(k - EXTRAS);
        fake.remove_certificate(&uid, &uuid);
    }
}

/// One sync, as `GET /api/v1/sync` told it.
struct SyncRecord {
    /// Seconds into the soak it ended.
    at: f64,
    seconds: f64,
    result: String,
    error: Option<String>,
    requests: u64,
    changed: u64,
}

/// The syncs of the soak, and what went wrong around them.
#[derive(Default)]
struct SyncLog {
    syncs: Vec<SyncRecord>,
    /// Syncs asked for that did not end in time, refused triggers, failed requests.
    problems: Vec<String>,
}

/// Records the sync at start, then until `end` changes the fake and asks for a sync
/// every `fleet.sync_every`, waiting for each to end (at most that long).
async fn drive_syncs(
    addr: std::net::SocketAddr,
    fake: Arc<FakeCloud66>,
    fleet: Fleet,
    started: Instant,
    end: Instant,
    done: Arc<AtomicU64>,
) -> SyncLog {
    let mut log = SyncLog::default();
    let record = |log: &mut SyncLog, status: &Value| {
        let field = |name: &str| status[name].as_f64().unwrap_or(0.0);
        log.syncs.push(SyncRecord {
            at: started.elapsed().as_secs_f64(),
            seconds: field("last_finished") - field("last_started"),
            result: status["last_result"].as_str().unwrap_or("none").to_owned(),
            error: status["last_error"].as_str().map(str::to_owned),
            requests: status["requests"].as_u64().unwrap_or(0),
            changed: status["changed"].as_u64().unwrap_or(0),
        });
        done.fetch_add(1, Ordering::Relaxed);
        // The log of every request is not needed: keep the driver's memory flat.
        fake.clear_requests();
    };
    // The sync at start also looks up each stack's actions.
    let first = fleet.latency * 2 * u32::try_from(fleet.stacks).unwrap_or(u32::MAX);
    match support::sync_ended(addr, &Value::Null, first + Duration::from_secs(60)).await {
        Ok(status) => record(&mut log, &status),
        Err(e) => log.problems.push(format!("the sync at start: {e}")),
    }
    for k in 1.. {
        let at = started + fleet.sync_every * u32::try_from(k).unwrap_or(u32::MAX);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        change_fake(&fake, fleet, k);
        let asked = async {
            let before = support::sync_status(addr).await?["last_finished"].clone();
            match request(addr, "POST", "/api/v1/sync", Vec::new()).await? {
                (202, _) => {}
                (code, body) => {
                    let body = String::from_utf8_lossy(&body).into_owned();
                    return Err::<Value, Error>(format!("POST answered {code}: {body}").into());
                }
            }
            support::sync_ended(addr, &before, fleet.sync_every).await
        };
        match asked.await {
            Ok(status) => record(&mut log, &status),
            Err(e) => log.problems.push(format!(
                "sync {k} at {} s: {e}",
                fleet.sync_every.as_secs() * k
            )),
        }
    }
    log
}

/// Prints what the syncs did; true when each ended `ok` and nothing went wrong.
fn report_syncs(args: &Args, log: &SyncLog) -> bool {
    let syncs = &log.syncs;
    let not_ok: Vec<&SyncRecord> = syncs.iter().filter(|s| s.result != "ok").collect();
    let mut seconds: Vec<f64> = syncs.iter().map(|s| s.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let median = seconds.get(seconds.len() / 2).copied().unwrap_or(f64::NAN);
    let max = seconds.last().copied().unwrap_or(f64::NAN);
    println!(
        "syncs: {} ended (the one at start, then one every {} s): {} ok, {} not ok; {} API \
         requests, {} certificates changed; wall time median {median:.2} s, max {max:.2} s",
        syncs.len(),
        args.sync_every,
        syncs.len() - not_ok.len(),
        not_ok.len(),
        syncs.iter().map(|s| s.requests).sum::<u64>(),
        syncs.iter().map(|s| s.changed).sum::<u64>(),
    );
    for sync in &not_ok {
        println!(
            "sync ended at {:.0} s: {} ({})",
            sync.at,
            sync.result,
            sync.error.as_deref().unwrap_or("no error given")
        );
    }
    for problem in &log.problems {
        println!("sync problem: {problem}");
    }
    let expected = args.duration.div_ceil(args.sync_every) as usize;
    let all_ok = not_ok.is_empty() && log.problems.is_empty() && syncs.len() == expected;
    let changed = syncs.iter().skip(1).any(|s| s.changed > 0);
    println!(
        "verdict: syncs {} ({} of {expected} expected ended, all ok: {}, later syncs wrote: {})",
        if all_ok && changed { "ok" } else { "FAILED" },
        syncs.len(),
        not_ok.is_empty() && log.problems.is_empty(),
        changed,
    );
    all_ok && changed
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
    syncs: Arc<AtomicU64>,
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
            syncs: syncs.load(Ordering::Relaxed),
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
        "{:>6}  {:>7}  {:>8}  {:>8}  {:>12}  {:>8}  {:>6}  {:>5}",
        "time_s", "rss_mib", "anon_mib", "file_mib", "certificates", "requests", "failed", "syncs"
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for s in samples {
        println!(
            "{:>6}  {:>7.1}  {:>8.1}  {:>8.1}  {:>12}  {:>8}  {:>6}  {:>5}",
            s.at,
            mib(s.rss_kib),
            mib(s.anon_kib),
            mib(s.file_kib),
            s.certificates,
            s.sent,
            s.failed,
            s.syncs
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
