//! Sync benchmark: what a Cloud66 API sync costs, against the fake API
//! (`tests/common/fake_cloud66.rs`, in this process) and the release exporter (a child
//! process), on 127.0.0.1 only. Run by `scripts/bench-sync`, which builds everything and
//! passes the `BENCH_*` settings; prints a Markdown report to stdout, progress to stderr.
//!
//! 1. Requests and wall time per sync for `--stacks` stacks of `--certificates`
//!    certificates each (default 200 × 10), with no added API latency and with
//!    `--latency-ms` (default 20) per request: the first sync, `--repeats` later ones,
//!    and the first sync after a restart. Each must make exactly the minimum the paging
//!    allows: the stack pages, one page of certificates per stack (per 30), and one
//!    actions lookup per stack on the very first sync only; checked against the fake's
//!    request log (per endpoint), the exporter's `requests` status field and its
//!    `cloud66_ssl_exporter_sync_api_requests_total` counter.
//! 2. Webhook ingest (wrk with `scripts/bench`'s Lua script, read from that file) in
//!    `--rounds` rounds of three `--seconds` runs each, in rotating order: without a
//!    sync, while syncs run back to back against an unchanged fake (a sync that finds
//!    nothing new writes nothing), and while syncs run back to back each finding every
//!    certificate renewed (each writes all of them). Every round starts the exporter
//!    anew on the same store (which keeps the hourly request budget from running out),
//!    waits for its start-up sync, runs wrk for 2 s (discarded), pauses 3 s before each
//!    run, and polls `GET /api/v1/sync` every 100 ms during all three runs, so that the
//!    runs differ only in the syncs.
//!
//! Exits 1 if a request count, a sync result or a webhook answer is wrong (the report
//! says which), 2 on an error; the performance verdicts are in the report only.
//!
//! ```sh
//! cargo build --release --bins --examples
//! target/release/examples/sync_bench --seconds 10 --rounds 3 > report.md
//! ```

#[path = "../tests/common/fake_cloud66.rs"]
mod fake_cloud66;
mod support;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fake_cloud66::{DEFAULT_PER_PAGE, FAKE_TOKEN, FakeCloud66, Fault, Route};
use serde_json::{Value, json};
use support::{Error, Exporter, request};
use tokio::process::Command;

/// Webhook stack ids of the API stacks: `API_STACK_ID + index`, apart from the ids of
/// the wrk deliveries (1000 to 1499).
const API_STACK_ID: usize = 7000;
/// How often `GET /api/v1/sync` is polled while waiting for a sync, and during every
/// ingest run.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// The most a sync may take beyond its requests' latency.
const SYNC_SLACK: Duration = Duration::from_secs(120);
/// Cloud66's hourly limit per user: the budget the exporter is given.
const MAX_REQUESTS_PER_HOUR: u64 = 3000;
/// The quiet pause before each ingest run, so that the writing (and the checkpoints) of
/// the run before is not counted against it.
const SETTLE: Duration = Duration::from_secs(3);
/// A discarded wrk run after each start of the exporter, in seconds.
const WARMUP_SECONDS: u64 = 2;

fn log(message: impl AsRef<str>) {
    eprintln!("[sync-bench {}] {}", clock(), message.as_ref());
}

/// `HH:MM:SS` (UTC) for the progress lines.
fn clock() -> String {
    let now = unix_now() as u64;
    format!(
        "{:02}:{:02}:{:02}",
        now / 3600 % 24,
        now / 60 % 60,
        now % 60
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct Args {
    binary: PathBuf,
    bench_script: PathBuf,
    work_dir: PathBuf,
    stacks: usize,
    certificates: usize,
    latency_ms: u64,
    repeats: usize,
    seconds: u64,
    rounds: usize,
    burst: u64,
    threads: u32,
    connections: u32,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        binary: PathBuf::from("target/release/cloud66-ssl-exporter"),
        bench_script: PathBuf::from("scripts/bench"),
        work_dir: PathBuf::from("target"),
        stacks: 200,
        certificates: 10,
        latency_ms: 20,
        repeats: 5,
        seconds: 10,
        rounds: 3,
        burst: 1000,
        threads: 2,
        connections: 64,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--binary" => args.binary = value()?.into(),
            "--bench-script" => args.bench_script = value()?.into(),
            "--work-dir" => args.work_dir = value()?.into(),
            "--stacks" => args.stacks = value()?.parse()?,
            "--certificates" => args.certificates = value()?.parse()?,
            "--latency-ms" => args.latency_ms = value()?.parse()?,
            "--repeats" => args.repeats = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--burst" => args.burst = value()?.parse()?,
            "--threads" => args.threads = value()?.parse()?,
            "--connections" => args.connections = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if !(1..=1000).contains(&args.stacks)
        || !(1..=100).contains(&args.certificates)
        || args.latency_ms > 1000
        || !(1..=50).contains(&args.repeats)
        || !(1..=600).contains(&args.seconds)
        || !(1..=50).contains(&args.rounds)
        || !(1..=5000).contains(&args.burst)
        || args.threads == 0
        || args.connections < args.threads
    {
        return Err(
            "--stacks 1-1000, --certificates 1-100, --latency-ms 0-1000, --repeats \
                    1-50, --seconds 1-600, --rounds 1-50, --burst 1-5000, --threads ≥ 1, \
                    --connections ≥ --threads"
                .into(),
        );
    }
    // The default certificate limit of the exporter (--storage.max-certificates).
    if args.stacks * args.certificates + args.burst as usize > 10_000 {
        return Err(
            "--stacks × --certificates + --burst must stay within 10000, the \
                    exporter's default certificate limit"
                .into(),
        );
    }
    let first = expected(&args, true).total();
    if first + args.repeats as u64 * expected(&args, false).total() > MAX_REQUESTS_PER_HOUR {
        return Err(format!(
            "a first sync and {} more exceed the hourly budget of {MAX_REQUESTS_PER_HOUR} \
             requests: fewer --repeats or --stacks",
            args.repeats
        )
        .into());
    }
    Ok(args)
}

// --- the fake's fleet ------------------------------------------------------------------

fn stack_uid(index: usize) -> String {
    format!("benchstack{index:05}")
}

/// A date that differs for each `generation` (one a second over a day).
fn expiry(generation: u64) -> String {
    format!(
        "2030-06-01T{:02}:{:02}:{:02}Z",
        generation / 3600 % 24,
        generation / 60 % 60,
        generation % 60
    )
}

/// Stack `index`'s certificates, all expiring at generation `generation`'s date.
fn certificates_of(index: usize, per_stack: usize, generation: u64) -> Vec<Value> {
    (0..per_stack)
        .map(|j| {
            let name = format!("api-{index:04}-{j:03}.bench.example.com");
            FakeCloud66::certificate(
                &format!("uuid-{index}-{j}"),
                &name,
                &name,
                json!(3),
                Some(&expiry(generation)),
                true,
            )
        })
        .collect()
}

/// A fake API with the fleet, answering each request after `latency`.
async fn fake_with_fleet(args: &Args, latency: Duration) -> FakeCloud66 {
    let fake = FakeCloud66::start().await;
    for index in 0..args.stacks {
        let uid = stack_uid(index);
        fake.add_stack(&uid, &format!("Bench stack {index}"), "production");
        let id = (API_STACK_ID + index).to_string();
        fake.set_actions(&uid, vec![FakeCloud66::stack_action(json!(id))]);
        fake.set_certificates(&uid, certificates_of(index, args.certificates, 0));
    }
    if !latency.is_zero() {
        fake.fail(Route::Any, None, Fault::Delay(latency), None);
    }
    fake
}

/// Every certificate of the fake renewed (a new `expires_at`).
fn renew_all(fake: &FakeCloud66, args: &Args, generation: u64) {
    for index in 0..args.stacks {
        fake.set_certificates(
            &stack_uid(index),
            certificates_of(index, args.certificates, generation),
        );
    }
}

fn exporter_flags(fake: &FakeCloud66) -> Vec<String> {
    vec![
        format!("--cloud66.api-token={FAKE_TOKEN}"),
        format!("--cloud66.api-url={}", fake.url()),
        format!("--cloud66.max-requests-per-hour={MAX_REQUESTS_PER_HOUR}"),
        // Only the syncs this driver asks for (and the one at start).
        "--cloud66.sync-interval=1h".to_owned(),
        // Not one log line per webhook, as scripts/bench runs it.
        "--log.level=warn".to_owned(),
    ]
}

// --- requests per endpoint ---------------------------------------------------------------

/// Requests by endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Requests {
    stacks: u64,
    certificates: u64,
    actions: u64,
    other: u64,
}

impl Requests {
    fn total(&self) -> u64 {
        self.stacks + self.certificates + self.actions + self.other
    }

    fn cells(&self) -> String {
        format!(
            "{} + {} + {}{}",
            self.stacks,
            self.certificates,
            self.actions,
            if self.other > 0 {
                format!(" + {} other", self.other)
            } else {
                String::new()
            }
        )
    }
}

/// The fewest requests a sync can make: every page of stacks, every page of each
/// stack's certificates, and (`first`) one actions page per stack.
fn expected(args: &Args, first: bool) -> Requests {
    let stacks = args.stacks as u64;
    Requests {
        stacks: stacks.div_ceil(DEFAULT_PER_PAGE as u64).max(1),
        certificates: stacks
            * (args.certificates as u64)
                .div_ceil(DEFAULT_PER_PAGE as u64)
                .max(1),
        actions: if first { stacks } else { 0 },
        other: 0,
    }
}

/// The fake's request log by endpoint, and the answers that were not 200.
fn logged(fake: &FakeCloud66) -> (Requests, usize) {
    let mut counts = Requests::default();
    let mut not_ok = 0;
    for r in fake.requests() {
        let counter = if r.path.ends_with("/stacks.json") {
            &mut counts.stacks
        } else if r.path.ends_with("/ssl_certificates.json") {
            &mut counts.certificates
        } else if r.path.ends_with("/actions.json") {
            &mut counts.actions
        } else {
            &mut counts.other
        };
        *counter += 1;
        not_ok += usize::from(r.status != 200);
    }
    (counts, not_ok)
}

/// The exporter's `cloud66_ssl_exporter_sync_api_requests_total`, by endpoint.
async fn counted(addr: std::net::SocketAddr) -> Result<Requests, Error> {
    let (code, body) = request(addr, "GET", "/metrics", Vec::new()).await?;
    if code != 200 {
        return Err(format!("GET /metrics answered {code}").into());
    }
    let mut counts = Requests::default();
    for line in String::from_utf8_lossy(&body).lines() {
        let Some(rest) = line.strip_prefix("cloud66_ssl_exporter_sync_api_requests_total{") else {
            continue;
        };
        let value: u64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64);
        let counter = if rest.contains("endpoint=\"/stacks.json\"") {
            &mut counts.stacks
        } else if rest.contains("endpoint=\"/stacks/{uid}/ssl_certificates.json\"") {
            &mut counts.certificates
        } else if rest.contains("endpoint=\"/stacks/{uid}/actions.json\"") {
            &mut counts.actions
        } else {
            &mut counts.other
        };
        *counter += value;
    }
    Ok(counts)
}

fn minus(a: Requests, b: Requests) -> Requests {
    Requests {
        stacks: a.stacks - b.stacks,
        certificates: a.certificates - b.certificates,
        actions: a.actions - b.actions,
        other: a.other - b.other,
    }
}

// --- syncs -----------------------------------------------------------------------------

/// What `GET /api/v1/sync` said about one sync.
#[derive(Clone, Debug)]
struct Sync {
    started: f64,
    finished: f64,
    result: String,
    error: Option<String>,
    requests: u64,
    changed: u64,
}

impl Sync {
    fn seconds(&self) -> f64 {
        self.finished - self.started
    }

    fn of(status: &Value) -> Sync {
        Sync {
            started: status["last_started"].as_f64().unwrap_or(0.0),
            finished: status["last_finished"].as_f64().unwrap_or(0.0),
            result: status["last_result"].as_str().unwrap_or("none").to_owned(),
            error: status["last_error"].as_str().map(str::to_owned),
            requests: status["requests"].as_u64().unwrap_or(0),
            changed: status["changed"].as_u64().unwrap_or(0),
        }
    }
}

/// `POST /api/v1/sync`; `Ok(false)` when one runs already (409).
async fn post_sync(addr: std::net::SocketAddr) -> Result<bool, Error> {
    let (code, body) = request(addr, "POST", "/api/v1/sync", Vec::new()).await?;
    match code {
        202 => Ok(true),
        409 => Ok(false),
        _ => Err(format!(
            "POST /api/v1/sync answered {code}: {}",
            String::from_utf8_lossy(&body)
        )
        .into()),
    }
}

/// How long a sync of `requests` requests at `latency` may take.
fn sync_deadline(requests: u64, latency: Duration) -> Duration {
    SYNC_SLACK + latency.saturating_mul(u32::try_from(requests).unwrap_or(u32::MAX))
}

// --- part 1: requests and wall time per sync ---------------------------------------------

/// One measured sync.
struct Measured {
    what: String,
    sync: Sync,
    fake: Requests,
    counter: Requests,
    expected: Requests,
}

impl Measured {
    fn correct(&self) -> bool {
        self.sync.result == "ok"
            && self.fake == self.expected
            && self.counter == self.expected
            && self.sync.requests == self.expected.total()
    }
}

struct SyncFigures {
    latency_ms: u64,
    runs: Vec<Measured>,
}

/// Measures a sync that was started (or is about to start) and clears the fake's log.
async fn measure(
    exporter: &Exporter,
    fake: &FakeCloud66,
    what: String,
    before: (&Value, Requests),
    expected: Requests,
    latency: Duration,
) -> Result<Measured, Error> {
    let status = support::sync_ended(
        exporter.addr,
        before.0,
        sync_deadline(expected.total(), latency),
    )
    .await?;
    let (logged, not_ok) = logged(fake);
    fake.clear_requests();
    let counter = minus(counted(exporter.addr).await?, before.1);
    let sync = Sync::of(&status);
    log(format!(
        "  {what}: {} requests ({} by the fake's log: {}), {:.3} s, {}, {} changed{}",
        sync.requests,
        logged.total(),
        logged.cells(),
        sync.seconds(),
        sync.result,
        sync.changed,
        if not_ok > 0 {
            format!(", {not_ok} answers not 200")
        } else {
            String::new()
        }
    ));
    Ok(Measured {
        what,
        sync,
        fake: logged,
        counter,
        expected,
    })
}

async fn sync_figures(args: &Args, work: &Path, latency_ms: u64) -> Result<SyncFigures, Error> {
    let latency = Duration::from_millis(latency_ms);
    log(format!(
        "syncs of {} stacks × {} certificates, {latency_ms} ms API latency",
        args.stacks, args.certificates
    ));
    let fake = fake_with_fleet(args, latency).await;
    let storage = work.join(format!("syncs-{latency_ms}ms"));
    std::fs::create_dir_all(&storage)?;
    let flags = exporter_flags(&fake);
    let mut runs = Vec::new();

    let exporter = Exporter::start_with(&args.binary, &storage, &flags).await?;
    let first = expected(args, true);
    let later = expected(args, false);
    runs.push(
        measure(
            &exporter,
            &fake,
            "first sync (at start, empty store)".into(),
            (&Value::Null, Requests::default()),
            first,
            latency,
        )
        .await?,
    );
    for repeat in 1..=args.repeats {
        let before = support::sync_status(exporter.addr).await?["last_finished"].clone();
        let counter = counted(exporter.addr).await?;
        if !post_sync(exporter.addr).await? {
            return Err("a sync was running when none should".into());
        }
        let what = format!("later sync {repeat} (POST /api/v1/sync)");
        runs.push(measure(&exporter, &fake, what, (&before, counter), later, latency).await?);
    }
    exporter.stop().await?;

    // The stack ids are stored: a restarted exporter looks up no actions.
    let exporter = Exporter::start_with(&args.binary, &storage, &flags).await?;
    let what = "first sync after a restart (same store)".to_owned();
    let at_start = (&Value::Null, Requests::default());
    runs.push(measure(&exporter, &fake, what, at_start, later, latency).await?);
    exporter.stop().await?;
    fake.stop().await;
    Ok(SyncFigures { latency_ms, runs })
}

// --- part 2: webhook ingest with and without syncs ----------------------------------------

/// The Lua script of `scripts/bench` (its `write_lua` here-document), so that both
/// benchmarks send the same deliveries.
fn lua_from(script: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(script)
        .map_err(|e| format!("cannot read {}: {e}", script.display()))?;
    let start = text
        .find("<<'LUA'\n")
        .ok_or_else(|| format!("no <<'LUA' here-document in {}", script.display()))?
        + "<<'LUA'\n".len();
    let length = text[start..]
        .find("\nLUA\n")
        .ok_or_else(|| format!("the LUA here-document of {} has no end", script.display()))?;
    let lua = &text[start..=start + length];
    if !lua.contains("function request()") || !lua.contains("WRK requests=") {
        return Err(format!("the Lua script of {} is not as expected", script.display()).into());
    }
    Ok(lua.to_owned())
}

/// One wrk run's figures.
#[derive(Clone, Debug, Default)]
struct Wrk {
    requests: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Answers ≥ 400 and time-outs.
    failed: u64,
    /// Connect, read and write errors.
    socket: u64,
}

fn wrk_field(line: &str, key: &str) -> Result<f64, Error> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {key}= in {line:?}").into())
}

async fn run_wrk(
    args: &Args,
    seconds: u64,
    lua: &Path,
    url: &str,
    seed: u64,
) -> Result<Wrk, Error> {
    let child = Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "10s", "-s"])
        .arg(lua)
        .arg(url)
        .arg("--")
        .args([
            args.burst.to_string(),
            "burst".to_owned(),
            seed.to_string(),
            args.threads.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // On a missed deadline the dropped child is killed (by its PID).
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start wrk: {e}"))?;
    let output = tokio::time::timeout(Duration::from_secs(seconds + 30), child.wait_with_output())
        .await
        .map_err(|_| "wrk did not finish within its duration + 30 s")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("WRK ")) else {
        return Err(format!(
            "wrk printed no summary ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    };
    let field = |key| wrk_field(line, key);
    let requests = field("requests")?;
    Ok(Wrk {
        requests: requests as u64,
        rate: requests / (field("duration_us")? / 1e6),
        p50_ms: field("p50_us")? / 1000.0,
        p99_ms: field("p99_us")? / 1000.0,
        max_ms: field("max_us")? / 1000.0,
        failed: (field("status")? + field("timeout")?) as u64,
        socket: (field("connect")? + field("read")? + field("write")?) as u64,
    })
}

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_seconds(pid: &str, ticks_per_second: f64) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks_per_second)
        })
        .unwrap_or(0.0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No sync; the status is polled all the same.
    Without,
    /// Syncs back to back; the fake does not change.
    Unchanged,
    /// Syncs back to back; before each, every certificate of the fake is renewed.
    Renewed,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Without, Mode::Unchanged, Mode::Renewed];

    fn name(self) -> &'static str {
        match self {
            Mode::Without => "no sync",
            Mode::Unchanged => "syncs, nothing changed",
            Mode::Renewed => "syncs, every certificate renewed",
        }
    }
}

/// One ingest run.
struct Run {
    mode: Mode,
    wrk: Wrk,
    /// Syncs that ran during it (started before wrk ended).
    syncs: Vec<Sync>,
    /// Share of the wrk run during which a sync ran.
    coverage: f64,
    /// Whether the loop stopped asking for syncs to stay within the hourly budget.
    budget_stop: bool,
    exporter_cpu: f64,
    driver_cpu: f64,
}

/// What the sync loop of one run found.
struct Looped {
    syncs: Vec<Sync>,
    budget_stop: bool,
}

/// Polls the status every `POLL_EVERY` until `stop`; in the sync modes, starts a sync
/// whenever none runs (renewing the fake's certificates before each in `Renewed`).
/// `started` is told once the first sync runs (at once without syncs).
#[allow(clippy::too_many_arguments)]
async fn sync_loop(
    addr: std::net::SocketAddr,
    fake: Arc<FakeCloud66>,
    args: Arc<Args>,
    mode: Mode,
    mut generation: u64,
    latency: Duration,
    stop: Arc<AtomicBool>,
    started: tokio::sync::oneshot::Sender<()>,
) -> Result<(Looped, u64), Error> {
    let mut started = Some(started);
    let mut looped = Looped {
        syncs: Vec::new(),
        budget_stop: false,
    };
    let per_sync = expected(&args, false).total();
    while !stop.load(Ordering::Acquire) {
        let status = support::sync_status(addr).await?;
        if mode == Mode::Without || looped.budget_stop {
            if let Some(started) = started.take() {
                let _ = started.send(());
            }
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        }
        if status["running"] == true {
            tokio::time::sleep(POLL_EVERY).await;
            continue;
        }
        if status["budget_remaining"]
            .as_u64()
            .is_some_and(|left| left < per_sync)
        {
            looped.budget_stop = true;
            continue;
        }
        if mode == Mode::Renewed {
            generation += 1;
            renew_all(&fake, &args, generation);
        }
        let before = status["last_finished"].clone();
        if !post_sync(addr).await? {
            continue;
        }
        if let Some(started) = started.take() {
            let _ = started.send(());
        }
        let done = support::sync_ended(addr, &before, sync_deadline(per_sync, latency)).await?;
        looped.syncs.push(Sync::of(&done));
    }
    if let Some(started) = started.take() {
        let _ = started.send(());
    }
    Ok((looped, generation))
}

struct Ingest {
    latency_ms: u64,
    /// Runs by round, in the order they ran.
    rounds: Vec<Vec<Run>>,
    /// The sync each round's exporter ran at start.
    start_syncs: Vec<Sync>,
}

async fn ingest(args: Arc<Args>, work: &Path, lua: &Path) -> Result<Ingest, Error> {
    let latency = Duration::from_millis(args.latency_ms);
    log(format!(
        "ingest: {} rounds of {} s runs ({}), {} ms API latency",
        args.rounds,
        args.seconds,
        Mode::ALL.map(Mode::name).join(", "),
        args.latency_ms
    ));
    let fake = Arc::new(fake_with_fleet(&args, latency).await);
    let storage = work.join("ingest");
    std::fs::create_dir_all(&storage)?;
    let flags = exporter_flags(&fake);
    let ticks_per_second = clock_ticks().await;
    let mut generation = 0;
    let mut rounds = Vec::new();
    let mut start_syncs = Vec::new();
    for round in 0..args.rounds {
        let exporter = Exporter::start_with(&args.binary, &storage, &flags).await?;
        let deadline = sync_deadline(expected(&args, true).total(), latency);
        let start = Sync::of(&support::sync_ended(exporter.addr, &Value::Null, deadline).await?);
        log(format!(
            "round {}: exporter pid {} on {}; its start-up sync: {} requests, {:.2} s, {}",
            round + 1,
            exporter.pid,
            exporter.addr,
            start.requests,
            start.seconds(),
            start.result
        ));
        start_syncs.push(start);
        let url = format!("http://{}/webhook", exporter.addr);
        let seed = 100 * (round as u64 + 1);
        run_wrk(&args, WARMUP_SECONDS, lua, &url, seed).await?;
        let mut runs = Vec::new();
        for k in 0..Mode::ALL.len() {
            let mode = Mode::ALL[(round + k) % Mode::ALL.len()];
            let seed = seed + 1 + k as u64;
            tokio::time::sleep(SETTLE).await;
            let stop = Arc::new(AtomicBool::new(false));
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let looper = tokio::spawn(sync_loop(
                exporter.addr,
                Arc::clone(&fake),
                Arc::clone(&args),
                mode,
                generation,
                latency,
                Arc::clone(&stop),
                started_tx,
            ));
            tokio::time::timeout(Duration::from_secs(30), started_rx)
                .await
                .map_err(|_| "the sync loop did not start within 30 s")??;
            let pid = exporter.pid.to_string();
            let (exporter_before, driver_before) = (
                cpu_seconds(&pid, ticks_per_second),
                cpu_seconds("self", ticks_per_second),
            );
            let (from, began) = (unix_now(), Instant::now());
            log(format!("  {}: wrk {} s", mode.name(), args.seconds));
            let wrk = run_wrk(&args, args.seconds, lua, &url, seed).await;
            let (to, took) = (unix_now(), began.elapsed().as_secs_f64());
            let (exporter_after, driver_after) = (
                cpu_seconds(&pid, ticks_per_second),
                cpu_seconds("self", ticks_per_second),
            );
            stop.store(true, Ordering::Release);
            let deadline = sync_deadline(expected(&args, false).total(), latency) + SYNC_SLACK;
            let (looped, now_generation) = tokio::time::timeout(deadline, looper)
                .await
                .map_err(|_| "the sync loop did not stop in time")???;
            generation = now_generation;
            let wrk = wrk?;
            let syncs: Vec<Sync> = looped
                .syncs
                .into_iter()
                .filter(|s| s.started < to)
                .collect();
            let covered: f64 = syncs
                .iter()
                .map(|s| (s.finished.min(to) - s.started.max(from)).max(0.0))
                .sum::<f64>()
                + 0.0; // not -0.0, the sum of nothing
            let run = Run {
                mode,
                coverage: covered / (to - from),
                budget_stop: looped.budget_stop,
                exporter_cpu: (exporter_after - exporter_before) / took,
                driver_cpu: (driver_after - driver_before) / took,
                syncs,
                wrk,
            };
            log(format!(
                "    {} requests, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, failed {} / {}; \
                 {} syncs ({} changed), covering {:.0}% of the run{}; CPU exporter {:.0}%, \
                 driver {:.0}%",
                run.wrk.requests,
                run.wrk.rate,
                run.wrk.p50_ms,
                run.wrk.p99_ms,
                run.wrk.max_ms,
                run.wrk.failed,
                run.wrk.socket,
                run.syncs.len(),
                run.syncs.iter().map(|s| s.changed).sum::<u64>(),
                100.0 * run.coverage,
                if run.budget_stop {
                    " (stopped: hourly budget)"
                } else {
                    ""
                },
                100.0 * run.exporter_cpu,
                100.0 * run.driver_cpu,
            ));
            runs.push(run);
        }
        exporter.stop().await?;
        rounds.push(runs);
    }
    fake.stop().await;
    Ok(Ingest {
        latency_ms: args.latency_ms,
        rounds,
        start_syncs,
    })
}

async fn clock_ticks() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().await;
    output
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// --- the report ------------------------------------------------------------------------------

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A command's first line of output, or `unknown`.
async fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output().await {
        Ok(output) => {
            let text = [output.stdout, output.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("unknown")
                .trim()
                .to_owned()
        }
        Err(_) => "unknown".to_owned(),
    }
}

/// The file system type at `path`, from the longest matching mount point.
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(length, _)| *length)
        .map_or_else(|| "unknown".to_owned(), |(_, kind)| kind)
}

/// Percentage of CPU time idle over the next 2 seconds, all cores.
async fn cpu_idle_percent() -> f64 {
    let sample = || {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
        (idle, fields.iter().take(8).sum::<f64>())
    };
    let (idle_a, total_a) = sample();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_b, total_b) = sample();
    100.0 * (idle_b - idle_a) / (total_b - total_a).max(1.0)
}

struct Machine {
    commit: String,
    rustc: String,
    wrk: String,
    cores: usize,
    cpu: String,
    memory_gib: f64,
    kernel: String,
    fs: String,
    idle_before: f64,
    idle_after: f64,
}

async fn machine(work: &Path) -> Machine {
    let mut commit = first_line("git", &["rev-parse", "--short", "HEAD"]).await;
    let dirty = Command::new("git")
        .args(["status", "--porcelain"])
        .output()
        .await
        .is_ok_and(|o| !o.stdout.is_empty());
    if dirty {
        commit.push_str(" (with uncommitted changes)");
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        commit,
        rustc: first_line("rustc", &["--version"]).await,
        wrk: first_line("wrk", &["-v"])
            .await
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown".to_owned(), |(_, v)| v.trim().to_owned()),
        memory_gib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1_048_576.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".to_owned(), |v| v.trim().to_owned()),
        fs: fs_type(work),
        idle_before: cpu_idle_percent().await,
        idle_after: f64::NAN,
    }
}

/// The report; returns whether every correctness check passed.
fn report(args: &Args, machine: &Machine, figures: &[SyncFigures], ingest: &Ingest) -> bool {
    let mut correct = true;
    let first = expected(args, true);
    let later = expected(args, false);
    println!("## Cloud66 API sync benchmark");
    println!();
    println!(
        "- Commit: {}; {}; {}",
        machine.commit, machine.rustc, machine.wrk
    );
    println!(
        "- Machine: {} cores, {}, {:.0} GiB, Linux {}; exporter store on {}",
        machine.cores, machine.cpu, machine.memory_gib, machine.kernel, machine.fs
    );
    println!(
        "- CPU idle just before / after the measurements (2 s samples): {:.0}% / {:.0}%",
        machine.idle_before, machine.idle_after
    );
    println!(
        "- Command: `scripts/bench-sync` (BENCH_SECONDS={} BENCH_ROUNDS={} BENCH_BURST={} \
         BENCH_SYNC_STACKS={} BENCH_SYNC_CERTIFICATES={} BENCH_SYNC_LATENCY_MS={} \
         BENCH_SYNC_REPEATS={})",
        args.seconds,
        args.rounds,
        args.burst,
        args.stacks,
        args.certificates,
        args.latency_ms,
        args.repeats
    );
    println!(
        "- The fake Cloud66 API runs in the driver process on 127.0.0.1 (30 items a page, \
         gzip); the exporter is the release binary, started with \
         `--cloud66.max-requests-per-hour={MAX_REQUESTS_PER_HOUR} --cloud66.sync-interval=1h \
         --log.level=warn --webhook.insecure-no-auth`, its store in a new directory under \
         `target/`."
    );
    if machine.idle_before < 80.0 || machine.idle_after < 80.0 {
        println!();
        println!(
            "**Other processes were using the CPU (idle below 80% before or after the run): \
             the figures understate this machine.**"
        );
    }
    println!();
    println!(
        "### Requests and wall time per sync: {} stacks × {} certificates",
        args.stacks, args.certificates
    );
    println!();
    println!(
        "The fewest requests the paging allows: ⌈{} / {DEFAULT_PER_PAGE}⌉ = {} stack pages, \
         {} certificate pages (one per stack: {} certificates fit a page), and one actions \
         lookup per stack the first time it is seen ({} on the first sync, 0 after, also \
         after a restart: the stack ids are stored). So {} requests for the first sync and \
         {} for every later one. Each sync is checked three ways: the exporter's `requests` \
         (GET /api/v1/sync), the fake's request log and the exporter's \
         `cloud66_ssl_exporter_sync_api_requests_total` (both by endpoint: stacks + \
         certificates + actions). Wall time is `last_finished - last_started` of GET \
         /api/v1/sync.",
        args.stacks,
        first.stacks,
        first.certificates,
        args.certificates,
        first.actions,
        first.total(),
        later.total()
    );
    println!();
    println!(
        "| API latency | Sync | Requests (status) | Fake's log | Counter | Minimum | Wall time | Changed | Result | Check |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for figure in figures {
        for run in &figure.runs {
            let ok = run.correct();
            correct &= ok;
            println!(
                "| {} ms | {} | {} | {} | {} | {} ({}) | {:.3} s | {} | {}{} | {} |",
                figure.latency_ms,
                run.what,
                run.sync.requests,
                run.fake.cells(),
                run.counter.cells(),
                run.expected.total(),
                run.expected.cells(),
                run.sync.seconds(),
                run.sync.changed,
                run.sync.result,
                run.sync
                    .error
                    .as_deref()
                    .map_or(String::new(), |e| format!(": {e}")),
                verdict(ok)
            );
        }
    }
    println!();
    println!(
        "| API latency | First sync | Later syncs: best / median (of {}) | After a restart | Requests: first / later |",
        args.repeats
    );
    println!("|---|---|---|---|---|");
    for figure in figures {
        let later: Vec<f64> = figure
            .runs
            .iter()
            .filter(|r| r.what.starts_with("later"))
            .map(|r| r.sync.seconds())
            .collect();
        let restart = figure.runs.last().map_or(f64::NAN, |r| r.sync.seconds());
        println!(
            "| {} ms | {:.3} s | {:.3} / {:.3} s | {:.3} s | {} / {} |",
            figure.latency_ms,
            figure.runs[0].sync.seconds(),
            best(&later),
            median(&later),
            restart,
            figure.runs[0].sync.requests,
            figure
                .runs
                .get(1)
                .map_or("-".to_owned(), |r| r.sync.requests.to_string()),
        );
    }

    // Ingest.
    let runs_of = |mode: Mode| -> Vec<&Run> {
        ingest
            .rounds
            .iter()
            .flat_map(|round| round.iter().filter(move |r| r.mode == mode))
            .collect()
    };
    let without = runs_of(Mode::Without);
    println!();
    println!(
        "### Webhook ingest with and without a sync running ({} ms API latency)",
        ingest.latency_ms
    );
    println!();
    println!(
        "wrk -t{} -c{} -d{}s with `scripts/bench`'s Lua script (unique \
         `ssl_certificate.install.ok` deliveries over {} certificates), {} rounds; each \
         round restarts the exporter on the same store, waits for its start-up sync, runs \
         wrk for {WARMUP_SECONDS} s (discarded), then runs the three cases in rotating \
         order, each after a quiet pause of {} s (a sync still running from the case \
         before is waited for first). With syncs, \
         the driver starts a sync (POST /api/v1/sync) whenever none runs, from before wrk \
         starts until it ends; in every case, syncs or not, it polls GET /api/v1/sync every \
         {} ms. \"Nothing changed\": the fake stays as it is, so each sync reads {} \
         certificates and writes nothing. \"Every certificate renewed\": before each sync \
         the fake gives all {} certificates a new `expires_at`, so each sync stores {} \
         observations (a worst case: a whole fleet renewed at once). Figures are medians \
         over the rounds; ratios are the medians of each round's ratio to the run without \
         a sync in the same round.",
        args.threads,
        args.connections,
        args.seconds,
        thousands(args.burst as f64),
        args.rounds,
        SETTLE.as_secs(),
        POLL_EVERY.as_millis(),
        args.stacks * args.certificates,
        args.stacks * args.certificates,
        args.stacks * args.certificates,
    );
    println!();
    println!(
        "| Case | Rate | p50 / p99 (max) | Rate ÷ no sync | p99 ÷ no sync | Syncs per run (share of the run syncing) | Exporter CPU / driver CPU | Target | Result |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut failed_answers = 0;
    for mode in Mode::ALL {
        let runs = runs_of(mode);
        let rates: Vec<f64> = runs.iter().map(|r| r.wrk.rate).collect();
        let p50s: Vec<f64> = runs.iter().map(|r| r.wrk.p50_ms).collect();
        let p99s: Vec<f64> = runs.iter().map(|r| r.wrk.p99_ms).collect();
        let max = runs.iter().map(|r| r.wrk.max_ms).fold(0.0, f64::max);
        let rate_ratios: Vec<f64> = runs
            .iter()
            .zip(&without)
            .map(|(r, w)| 100.0 * r.wrk.rate / w.wrk.rate)
            .collect();
        let p99_ratios: Vec<f64> = runs
            .iter()
            .zip(&without)
            .map(|(r, w)| 100.0 * r.wrk.p99_ms / w.wrk.p99_ms)
            .collect();
        let syncs: Vec<f64> = runs.iter().map(|r| r.syncs.len() as f64).collect();
        let coverage: Vec<f64> = runs.iter().map(|r| 100.0 * r.coverage).collect();
        let exporter_cpu: Vec<f64> = runs.iter().map(|r| 100.0 * r.exporter_cpu).collect();
        let driver_cpu: Vec<f64> = runs.iter().map(|r| 100.0 * r.driver_cpu).collect();
        failed_answers += runs
            .iter()
            .map(|r| r.wrk.failed + r.wrk.socket)
            .sum::<u64>();
        let (rate_ratio, p99_ratio) = (median(&rate_ratios), median(&p99_ratios));
        let (target, result) = if mode == Mode::Without {
            ("", "")
        } else {
            (
                "rate ≥ 90%, p99 ≤ 110%",
                verdict(rate_ratio >= 90.0 && p99_ratio <= 110.0),
            )
        };
        println!(
            "| {} | {} req/s | {:.2} / {:.2} ms ({:.1}) | {} | {} | {} | {:.0}% / {:.0}% | {} | {} |",
            mode.name(),
            thousands(median(&rates)),
            median(&p50s),
            median(&p99s),
            max,
            if mode == Mode::Without {
                "100%".to_owned()
            } else {
                format!("{rate_ratio:.1}%")
            },
            if mode == Mode::Without {
                "100%".to_owned()
            } else {
                format!("{p99_ratio:.1}%")
            },
            if mode == Mode::Without {
                "0".to_owned()
            } else {
                format!("{:.0} ({:.0}%)", median(&syncs), median(&coverage))
            },
            median(&exporter_cpu),
            median(&driver_cpu),
            target,
            result
        );
    }
    println!();
    println!("Rounds (rate in req/s, p99 in ms; syncs: count, changed certificates, results):");
    println!();
    println!(
        "| Round | Order | No sync | Syncs, nothing changed | Syncs, every certificate renewed |"
    );
    println!("|---|---|---|---|---|");
    let mut sync_results_ok = true;
    let mut budget_stops = 0;
    for (index, round) in ingest.rounds.iter().enumerate() {
        let cell = |mode: Mode| {
            let Some(run) = round.iter().find(|r| r.mode == mode) else {
                return String::new();
            };
            let mut text = format!("{} (p99 {:.2})", thousands(run.wrk.rate), run.wrk.p99_ms);
            if mode != Mode::Without {
                let mut results: Vec<&str> = run.syncs.iter().map(|s| s.result.as_str()).collect();
                results.dedup();
                text.push_str(&format!(
                    "; {} syncs, {} changed, {}",
                    run.syncs.len(),
                    run.syncs.iter().map(|s| s.changed).sum::<u64>(),
                    results.join("/")
                ));
            }
            text
        };
        for run in round {
            budget_stops += usize::from(run.budget_stop);
            for sync in &run.syncs {
                let expected_changed = match run.mode {
                    Mode::Renewed => (args.stacks * args.certificates) as u64,
                    _ => 0,
                };
                sync_results_ok &= sync.result == "ok"
                    && sync.requests == later.total()
                    && sync.changed == expected_changed;
            }
            sync_results_ok &= run.mode == Mode::Without || !run.syncs.is_empty();
        }
        let order: Vec<&str> = round
            .iter()
            .map(|r| match r.mode {
                Mode::Without => "none",
                Mode::Unchanged => "same",
                Mode::Renewed => "renewed",
            })
            .collect();
        println!(
            "| {} | {} | {} | {} | {} |",
            index + 1,
            order.join(", "),
            cell(Mode::Without),
            cell(Mode::Unchanged),
            cell(Mode::Renewed)
        );
    }
    sync_results_ok &= ingest.start_syncs.iter().all(|s| s.result == "ok");
    println!();
    println!(
        "Checks: every sync during the runs ended `ok` with {} requests, changing 0 \
         certificates (nothing changed) or all {} (renewed): {}; webhook answers not 2xx, \
         timed out or socket errors: {}: {}{}.",
        later.total(),
        args.stacks * args.certificates,
        verdict(sync_results_ok),
        failed_answers,
        verdict(failed_answers == 0),
        if budget_stops > 0 {
            format!(
                "; in {budget_stops} runs the driver stopped asking for syncs to stay within \
                 the hourly budget (see the share of the run syncing)"
            )
        } else {
            String::new()
        }
    );
    println!();
    println!(
        "CPU is the share of one core over each wrk run, median over the rounds: the \
         exporter's, and the driver's (the fake API, the sync loop and the status polling; \
         wrk runs as its own process). The exporter's start-up syncs (one per round): {}.",
        ingest
            .start_syncs
            .iter()
            .map(|s| format!(
                "{} requests in {:.2} s ({})",
                s.requests,
                s.seconds(),
                s.result
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    correct && sync_results_ok && failed_answers == 0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match bench().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            log("FAILED: a check failed (see the report)");
            ExitCode::FAILURE
        }
        Err(error) => {
            log(format!("FAILED: {error}"));
            ExitCode::from(2)
        }
    }
}

async fn bench() -> Result<bool, Error> {
    let args = Arc::new(parse_args()?);
    if !args.binary.is_file() {
        return Err(format!(
            "no exporter binary at {} (cargo build --release)",
            args.binary.display()
        )
        .into());
    }
    std::fs::create_dir_all(&args.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("bench-sync.")
        .tempdir_in(&args.work_dir)?;
    let lua = work.path().join("webhook.lua");
    std::fs::write(&lua, lua_from(&args.bench_script)?)?;
    let mut machine = machine(work.path()).await;
    if machine.fs == "tmpfs" {
        log("WARNING: the store is on tmpfs: fsync costs nothing there");
    }
    if machine.idle_before < 80.0 {
        log(format!(
            "WARNING: the CPU is only {:.0}% idle before the run: figures will be low",
            machine.idle_before
        ));
    }
    let mut figures = Vec::new();
    let mut latencies = vec![0];
    if args.latency_ms > 0 {
        latencies.push(args.latency_ms);
    }
    for latency_ms in latencies {
        figures.push(sync_figures(&args, work.path(), latency_ms).await?);
    }
    let ingest = ingest(Arc::clone(&args), work.path(), &lua).await?;
    machine.idle_after = cpu_idle_percent().await;
    let correct = report(&args, &machine, &figures, &ingest);
    log("done");
    Ok(correct)
}
