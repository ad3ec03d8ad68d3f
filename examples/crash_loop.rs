//! Crash loop: rounds of concurrent webhooks against the release exporter, each ended
//! by SIGKILL at a random moment; after every restart, every event that was answered
//! 200 must be in `/metrics`. Run by `scripts/crash-loop`, or directly:
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example crash_loop -- --rounds 20
//! ```
//!
//! Options: `--rounds N` (default 20), `--clients N` (default 16), `--binary PATH`
//! (default `target/release/cloud66-ssl-exporter`), `--storage DIR` (default a new
//! temporary directory, removed at the end). Only 127.0.0.1 is used; each event names
//! its own certificate, so that the check is exact, and all rounds together send at
//! most `EVENT_BUDGET` events, below the exporter's default certificate limit (10 000);
//! exits 1 if any acknowledged event is lost.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{Error, Exporter, random_in, request};
use tokio::sync::{Mutex, watch};

/// Events sent in all rounds at most: one certificate each, under the default limit.
const EVENT_BUDGET: usize = 9_000;
/// Events sent per round at most.
const MAX_EVENTS_PER_ROUND: usize = 400;
/// The kill comes after a random number of acknowledgements, from 1 to 3/4 of the
/// round's events, plus a random delay in this range (milliseconds), so it can hit
/// any phase of a request.
const KILL_DELAY_MS: std::ops::Range<u64> = 0..15;
/// Stack id of every event, so the check reads one label combination.
const STACK: u64 = 1;

struct Args {
    rounds: usize,
    clients: usize,
    binary: PathBuf,
    storage: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        rounds: 20,
        clients: 16,
        binary: PathBuf::from("target/release/cloud66-ssl-exporter"),
        storage: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => args.rounds = value()?.parse()?,
            "--clients" => args.clients = value()?.parse()?,
            "--binary" => args.binary = value()?.into(),
            "--storage" => args.storage = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if !(1..=500).contains(&args.rounds) || !(1..=256).contains(&args.clients) {
        return Err("--rounds must be 1 to 500 and --clients 1 to 256".into());
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    match crash_loop().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("crash_loop: {error}");
            ExitCode::from(2)
        }
    }
}

/// Runs every round; `Ok(false)` when an acknowledged event was lost or an answer was
/// neither 200 nor a dropped connection.
async fn crash_loop() -> Result<bool, Error> {
    let args = parse_args()?;
    let temporary = tempfile::tempdir()?;
    let storage = args.storage.clone().unwrap_or(temporary.path().to_owned());
    println!(
        "crash loop: {} rounds of {} clients, SIGKILL at a random moment; storage {}",
        args.rounds,
        args.clients,
        storage.display()
    );
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let mut total_lost = 0;
    let mut unexpected = Vec::new();
    let per_round = (EVENT_BUDGET / args.rounds).min(MAX_EVENTS_PER_ROUND);
    let mut exporter = Exporter::start(&args.binary, &storage).await?;
    for round in 1..=args.rounds {
        let before = acknowledged.lock().await.len();
        let kill_after = random_in(1..(per_round as u64 * 3 / 4).max(2));
        let delay = random_in(KILL_DELAY_MS);
        let (killed, sent, errors) = load_until_killed(
            exporter,
            round,
            args.clients,
            per_round,
            Arc::clone(&acknowledged),
            before + kill_after as usize,
            Duration::from_millis(delay),
        )
        .await?;
        unexpected.extend(errors);
        exporter = Exporter::start(&args.binary, &storage).await?;
        let acknowledged = acknowledged.lock().await;
        let lost = lost_events(&exporter, &acknowledged).await?;
        total_lost += lost.len();
        println!(
            "round {round:2}/{}: SIGKILL after {:4} acks + {delay:2} ms; {sent:4} sent, {:4} acknowledged; after restart {}/{} present",
            args.rounds,
            killed - before,
            acknowledged.len() - before,
            acknowledged.len() - lost.len(),
            acknowledged.len(),
        );
        if !lost.is_empty() {
            println!("  lost: {:?}", lost.iter().take(20).collect::<Vec<_>>());
        }
    }
    exporter.stop().await?;
    let total = acknowledged.lock().await.len();
    println!(
        "{} rounds, {total} acknowledged events, {total_lost} lost",
        args.rounds
    );
    if !unexpected.is_empty() {
        println!(
            "{} unexpected answers, e.g. {:?}",
            unexpected.len(),
            &unexpected[..unexpected.len().min(5)]
        );
    }
    Ok(total_lost == 0 && unexpected.is_empty())
}

/// Drives `clients` concurrent senders of at most `max_events` unique events until
/// `kill_at` events in all are acknowledged, waits `delay`, SIGKILLs the exporter and
/// waits for the senders.
/// Returns the acknowledgement count at the kill, the events sent this round, and any
/// answer that was neither 200 nor a dropped connection.
async fn load_until_killed(
    exporter: Exporter,
    round: usize,
    clients: usize,
    max_events: usize,
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    kill_at: usize,
    delay: Duration,
) -> Result<(usize, usize, Vec<String>), Error> {
    let addr = exporter.addr;
    let sent = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (acknowledged, sent, stopped) = (
            Arc::clone(&acknowledged),
            Arc::clone(&sent),
            stopped.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut unexpected = Vec::new();
            for seq in 0.. {
                if *stopped.borrow() || sent.fetch_add(1, Ordering::SeqCst) >= max_events {
                    break;
                }
                let name = format!("r{round}-c{client}-s{seq}");
                let body = serde_json::json!({
                    "event_type": "ssl_certificate.install.ok",
                    "timestamp": 1_700_000_000 + round,
                    "ssl_certificate": {"stack_id": STACK, "name": name, "cert_expiry": "2030-01-01T00:00:00Z"},
                });
                match request(addr, "POST", "/webhook", body.to_string().into_bytes()).await {
                    Ok((200, _)) => {
                        acknowledged.lock().await.insert(name);
                    }
                    Ok((status, body)) => {
                        unexpected.push(format!("{name}: {status} {}", String::from_utf8_lossy(&body)));
                    }
                    Err(_) => break, // killed
                }
            }
            unexpected
        }));
    }
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let count = acknowledged.lock().await.len();
            if count >= kill_at || tasks.iter().all(|t| t.is_finished()) {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .map_err(|_| format!("round {round}: {kill_at} acknowledgements not reached within 60 s"))?;
    tokio::time::sleep(delay).await;
    exporter.kill().await?;
    let _ = stop.send(true);
    let mut unexpected = Vec::new();
    for task in tasks {
        unexpected.extend(task.await?);
    }
    let sent = sent.load(Ordering::SeqCst).min(max_events);
    Ok((reached, sent, unexpected))
}

/// The acknowledged events whose certificate is not in `/metrics` with exactly one
/// `install.ok`.
async fn lost_events(
    exporter: &Exporter,
    acknowledged: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    let (status, body) = request(exporter.addr, "GET", "/metrics", Vec::new()).await?;
    if status != 200 {
        return Err(format!("/metrics answered {status}").into());
    }
    let text = std::str::from_utf8(&body)?;
    let prefix = format!("ssl_install_successes_total{{stack=\"{STACK}\",name=\"");
    let counts: HashMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .filter_map(|rest| rest.split_once("\"} "))
        .collect();
    Ok(acknowledged
        .iter()
        .filter(|name| counts.get(name.as_str()) != Some(&"1"))
        .cloned()
        .collect())
}
