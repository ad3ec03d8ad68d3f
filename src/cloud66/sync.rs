//! Syncs: list the stacks, resolve their webhook ids, list each stack's certificates,
//! store what changed, forget what is gone; and the loop that runs one every interval or
//! when asked (`POST /api/v1/sync`).
//!
//! A sync runs on its own task, one request at a time, and writes through the storage
//! writer like a webhook: it never holds up a webhook or a scrape. The stacks to list
//! form a round; a round cut short by the request budget or by throttling goes on where
//! it stopped at the next sync, so a fleet larger than the budget is covered over
//! several intervals. A round that listed every stack in scope without a failure is a
//! success.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::client::{ApiError, Client, Endpoint};
use super::metrics::{SyncError, SyncMetrics};
use super::model::{self, Stack};
use super::stacks::{Directory, Fingerprint, IdSource, StackRecord, content_matches};
use crate::app::App;
use crate::config::Cloud66Config;
use crate::state::CertKey;
use crate::store::{Forgotten, Observed};

/// Most pages of one list followed in a sync: a guard against a `next` that never ends.
const MAX_PAGES: u32 = 10_000;

/// How often a replica that does not lead reads the status the leader shares.
const MIRROR_EVERY: Duration = Duration::from_millis(500);

/// What the last syncs did, for `GET /api/v1/sync` and the status page. With replicas
/// on PostgreSQL, the leader's syncs, shared through the database.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Whether this exporter runs the syncs: always with embedded storage; with
    /// replicas, whether it is the leader (the others show the leader's syncs).
    #[serde(default)]
    pub leader: bool,
    /// Whether a sync is running now.
    pub running: bool,
    /// Unix time the last sync started.
    pub last_started: Option<f64>,
    /// Unix time the last sync ended.
    pub last_finished: Option<f64>,
    /// How it ended: `ok` (a round completed), `partial` (the round goes on next
    /// time), or `failed`.
    pub last_result: Option<Cow<'static, str>>,
    /// What went wrong in the last sync, if anything (never the token).
    pub last_error: Option<String>,
    /// Unix time the last complete sync ended.
    pub last_success: Option<f64>,
    /// Certificates seen in the last complete sync.
    pub certificates: Option<usize>,
    /// Stacks in scope at the last listing.
    pub stacks: usize,
    /// Requests the last sync made.
    pub requests: u64,
    /// Certificates the last sync changed, added or forgot.
    pub changed: usize,
    /// Requests left in the hourly budget after the last sync.
    pub budget_remaining: Option<usize>,
    /// Unix time of the next scheduled sync.
    pub next_sync: Option<f64>,
}

/// What `POST /api/v1/sync` got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A sync starts now.
    Started,
    /// One is running already.
    Running,
}

/// The reconciliation of one exporter: shared by the HTTP handlers and the sync task.
pub struct Syncer {
    config: Cloud66Config,
    metrics: SyncMetrics,
    /// What is known about each stack (the sync task writes, everyone reads).
    directory: RwLock<Directory>,
    status: Mutex<SyncStatus>,
    /// Set while a sync runs, or from the moment one was asked for.
    running: AtomicBool,
    /// Asks the sync task for a sync now.
    asks: mpsc::Sender<()>,
    /// The receiving end, taken by the sync task.
    asked: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Syncer {
    /// Reconciliation with `config`, starting from the stacks remembered in storage.
    pub fn new(config: Cloud66Config, metrics: SyncMetrics, stacks: Vec<StackRecord>) -> Self {
        let directory = Directory::new(stacks);
        metrics.show_stacks(&directory);
        let (asks, asked) = mpsc::channel(1);
        Syncer {
            config,
            metrics,
            directory: RwLock::new(directory),
            // Until an election says otherwise, this exporter runs its own syncs.
            status: Mutex::new(SyncStatus {
                leader: true,
                ..SyncStatus::default()
            }),
            running: AtomicBool::new(false),
            asks,
            asked: Mutex::new(Some(asked)),
        }
    }

    /// Starts a sync now unless one is running.
    pub fn trigger(&self) -> Trigger {
        if self
            .running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Trigger::Running;
        }
        // Full means a sync is asked for already; it will run.
        let _ = self.asks.try_send(());
        Trigger::Started
    }

    /// What the last syncs did.
    pub fn status(&self) -> SyncStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // A follower shows the leader's `running`, and its own ask on the way.
        status.running |= self.running.load(Ordering::Acquire);
        status
    }

    /// Learns what another replica (the leader) saved about a stack.
    pub fn learn(&self, record: StackRecord) {
        let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
        directory.put(record);
        self.metrics.show_stacks(&directory);
    }

    /// Shares the status with the other replicas, if any (a failure is only logged: the
    /// next sync shares it again).
    async fn share(&self, app: &App) {
        let status = self.status();
        let shared = match serde_json::to_string(&status) {
            Ok(json) => app.store().share_sync_status(&json).await,
            Err(e) => Err(crate::store::StoreError::Write(e.to_string())),
        };
        if let Err(error) = shared {
            tracing::warn!(%error, "cannot share the Cloud66 API sync status with the other replicas");
        }
    }

    /// Shows the status the leader shared, as this replica's (metrics included); the
    /// next sync this replica runs, if it becomes the leader, is when the leader's
    /// would have been.
    async fn mirror(&self, app: &App) -> Option<Instant> {
        let shared = match app.store().shared_sync_status().await {
            Ok(Some(json)) => serde_json::from_str::<SyncStatus>(&json).ok()?,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(%error, "cannot read the leader's Cloud66 API sync status");
                return None;
            }
        };
        if let Some(at) = shared.last_success {
            self.metrics.last_success.set(at);
        }
        if let Some(seen) = shared.certificates {
            self.metrics
                .certificates
                .set(i64::try_from(seen).unwrap_or(i64::MAX));
        }
        let next = shared.next_sync.map(|at| {
            Instant::now() + Duration::try_from_secs_f64(at - crate::now()).unwrap_or_default()
        });
        self.update_status(|s| {
            *s = SyncStatus {
                leader: false,
                ..shared
            }
        });
        next
    }

    /// What is known about each stack.
    pub fn directory(&self) -> Directory {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update_status(&self, change: impl FnOnce(&mut SyncStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs a sync right away, then one every interval (later while Cloud66 throttles)
    /// or whenever asked, until the task is dropped.
    pub async fn run(self: Arc<Self>, app: App) {
        let taken = self.asked.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut asked) = taken else {
            tracing::error!("the Cloud66 API sync loop was started twice");
            return;
        };
        let mut role = app.store().role();
        let requests = role.clone();
        let mut reconciler = Reconciler::new(&self);
        let mut next = Instant::now();
        let mut led = false;
        loop {
            if !role.leads() {
                // Another replica runs the syncs: show its status, and pass on requests.
                led = false;
                self.update_status(|s| s.leader = false);
                tokio::select! {
                    () = role.changed() => {}
                    asked = asked.recv() => match asked {
                        None => return,
                        // Asked just as leadership moved away: pass it on.
                        Some(()) => match role.ask_leader().await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!("a Cloud66 API sync was asked for while no replica leads; the next scheduled one will run"),
                            Err(error) => tracing::warn!(%error, "cannot ask the leader for a Cloud66 API sync"),
                        },
                    },
                    () = tokio::time::sleep(MIRROR_EVERY) => {}
                }
                if let Some(when) = self.mirror(&app).await {
                    next = when;
                }
                self.running.store(false, Ordering::Release);
                continue;
            }
            if !led {
                // Just elected (or started): go on with the cluster's schedule, from what
                // the previous leader shared last; a sync of its that was running ended
                // with it.
                if let Some(when) = self.mirror(&app).await {
                    next = when;
                }
                self.update_status(|s| {
                    s.leader = true;
                    s.running = false;
                });
                self.share(&app).await;
                led = true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                asked = asked.recv() => if asked.is_none() { return },
                () = requests.asked() => {}
                () = role.changed() => continue,
            }
            self.running.store(true, Ordering::Release);
            let started_at = crate::now();
            self.update_status(|s| s.last_started = Some(started_at));
            self.share(&app).await;
            let started = Instant::now();
            let report = reconciler.sync(&self, &app).await;
            let seconds = started.elapsed().as_secs_f64();
            self.metrics.duration.observe(seconds);
            next = Instant::now() + self.config.sync_interval;
            if let Some(until) = reconciler.not_before {
                next = next.max(until);
            }
            let next_sync =
                crate::now() + next.saturating_duration_since(Instant::now()).as_secs_f64();
            report.log(seconds);
            let finished = crate::now();
            if report.completed_round.is_some() {
                // The same time as the status shows (and the followers mirror).
                self.metrics.last_success.set(finished);
            }
            self.update_status(|s| {
                s.last_finished = Some(finished);
                s.last_result = Some(report.result().into());
                s.last_error = report.error.as_ref().map(|(_, why)| why.clone());
                if let Some(seen) = report.completed_round {
                    s.last_success = s.last_finished;
                    s.certificates = Some(seen);
                }
                s.stacks = report.stacks;
                s.requests = report.requests;
                s.changed = report.changed;
                s.budget_remaining = report.budget_remaining;
                s.next_sync = Some(next_sync);
            });
            while asked.try_recv().is_ok() {}
            self.running.store(false, Ordering::Release);
            self.share(&app).await;
        }
    }
}

/// What one sync did.
#[derive(Default)]
struct Report {
    /// Stacks in scope.
    stacks: usize,
    /// Requests made.
    requests: u64,
    /// Certificates changed, added, moved or forgotten.
    changed: usize,
    /// Observations that changed nothing.
    unchanged: usize,
    /// Observations dropped at the certificate limit.
    over_limit: usize,
    /// Certificates seen, when this sync completed a round without a failure.
    completed_round: Option<usize>,
    /// The last failure and what it said.
    error: Option<(SyncError, String)>,
    /// Whether the round goes on at the next sync.
    partial: bool,
    /// Requests left in the hourly budget.
    budget_remaining: Option<usize>,
}

impl Report {
    fn result(&self) -> &'static str {
        match (self.completed_round, self.partial) {
            (Some(_), _) => "ok",
            (None, true) => "partial",
            (None, false) => "failed",
        }
    }

    fn add(&mut self, observed: Observed) {
        self.changed += observed.applied;
        self.unchanged += observed.unchanged;
        self.over_limit += observed.over_limit;
    }

    fn log(&self, seconds: f64) {
        let result = self.result();
        let error = self.error.as_ref().map(|(_, why)| why.as_str());
        match self.error {
            Some((SyncError::Unauthorized, _)) => {
                tracing::error!(result, error, "Cloud66 API sync failed")
            }
            Some(_) => tracing::warn!(
                result,
                error,
                stacks = self.stacks,
                requests = self.requests,
                changed = self.changed,
                seconds,
                "Cloud66 API sync did not complete"
            ),
            None => tracing::info!(
                result,
                stacks = self.stacks,
                certificates = self.completed_round,
                requests = self.requests,
                changed = self.changed,
                unchanged = self.unchanged,
                seconds,
                "Cloud66 API sync finished"
            ),
        }
        if self.over_limit > 0 {
            tracing::warn!(
                certificates = self.over_limit,
                "certificates seen in the Cloud66 API were not added: certificate limit reached (--storage.max-certificates)"
            );
        }
    }
}

/// Why a stack's reconciliation stopped.
enum Failure {
    /// The API call failed; `stops_sync` tells whether other stacks may still work.
    Api(ApiError),
    /// Storage refused the observations.
    Storage(String),
}

/// The sync task's own state.
struct Reconciler {
    /// Built at the first sync; a failure (no CA certificates, say) fails each sync.
    client: Option<Client>,
    /// Stacks of the current round still to list.
    pending: VecDeque<String>,
    /// Whether a stack of the current round failed.
    round_failed: bool,
    /// Certificates seen so far in the current round.
    round_seen: usize,
    /// Consecutive complete listings of its stack without each certificate.
    missing: HashMap<CertKey, u32>,
    /// No request before this, after Cloud66 throttled us.
    not_before: Option<Instant>,
    /// Requests the client had made before this sync (from the metric).
    requests_seen: u64,
}

impl Reconciler {
    fn new(syncer: &Syncer) -> Self {
        let client = match Client::new(&syncer.config, syncer.metrics.clone()) {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::error!(%error, "Cloud66 API reconciliation cannot start");
                None
            }
        };
        Reconciler {
            client,
            pending: VecDeque::new(),
            round_failed: false,
            round_seen: 0,
            missing: HashMap::new(),
            not_before: None,
            requests_seen: 0,
        }
    }

    /// One sync.
    async fn sync(&mut self, syncer: &Syncer, app: &App) -> Report {
        let mut report = Report::default();
        let result = self.sync_into(syncer, app, &mut report).await;
        if let Err(failure) = result {
            fail(&mut self.not_before, syncer, &mut report, failure);
        }
        let requests = self.client.as_ref().map_or(0, Client::requests_made);
        report.requests = requests - self.requests_seen;
        self.requests_seen = requests;
        report.budget_remaining = self.client.as_ref().map(Client::budget_remaining);
        report
    }

    async fn sync_into(
        &mut self,
        syncer: &Syncer,
        app: &App,
        report: &mut Report,
    ) -> Result<(), Failure> {
        if let Some(until) = self.not_before {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                report.partial = !self.pending.is_empty();
                report.error = Some((
                    SyncError::Throttled,
                    format!(
                        "Cloud66 throttled the requests; no request for {} s more",
                        left.as_secs()
                    ),
                ));
                return Ok(());
            }
            self.not_before = None;
        }
        let Some(client) = &self.client else {
            return Err(Failure::Api(ApiError::Transport(
                "the API client could not be set up (see the error at start)".into(),
            )));
        };
        let stacks = list(client, Endpoint::Stacks, "", model::stack).await?;
        let in_scope = self.scope(syncer, stacks);
        report.stacks = in_scope.len();
        for stack in &in_scope {
            refresh(syncer, app, stack, report).await?;
        }
        let listed: HashSet<&str> = in_scope.iter().map(|s| s.uid.as_str()).collect();
        if self.pending.is_empty() {
            self.pending = in_scope.iter().map(|s| s.uid.clone()).collect();
            self.round_failed = false;
            self.round_seen = 0;
        } else {
            self.pending.retain(|uid| listed.contains(uid.as_str()));
        }
        while let Some(uid) = self.pending.front().cloned() {
            match reconcile_stack(syncer, app, client, &uid, &mut self.missing, report).await {
                Ok(seen) => self.round_seen += seen,
                Err(Failure::Api(error)) if error.stops_sync() => {
                    report.partial = true;
                    return Err(Failure::Api(error));
                }
                Err(failure) => {
                    // This stack's listing is incomplete: nothing of it is forgotten.
                    self.round_failed = true;
                    if let Failure::Api(error) = &failure {
                        tracing::warn!(stack_uid = uid, %error, "cannot list the stack's certificates");
                    }
                    fail(&mut self.not_before, syncer, report, failure);
                }
            }
            self.pending.pop_front();
        }
        if !self.round_failed {
            report.completed_round = Some(self.round_seen);
            syncer
                .metrics
                .certificates
                .set(i64::try_from(self.round_seen).unwrap_or(i64::MAX));
        }
        match_content(syncer, app, report).await
    }

    /// The listed stacks that `--cloud66.stacks` selects (all without it).
    fn scope(&self, syncer: &Syncer, stacks: Vec<Stack>) -> Vec<Stack> {
        let Some(wanted) = &syncer.config.stacks else {
            return stacks;
        };
        for uid in wanted {
            if !stacks.iter().any(|s| &s.uid == uid) {
                tracing::warn!(
                    stack_uid = uid,
                    "a stack of --cloud66.stacks is not among the stacks the token can see"
                );
            }
        }
        stacks
            .into_iter()
            .filter(|s| wanted.contains(&s.uid))
            .collect()
    }
}

/// Notes a failure: counted, reported, and after throttling, the wait (`not_before`).
fn fail(not_before: &mut Option<Instant>, syncer: &Syncer, report: &mut Report, failure: Failure) {
    let (reason, why) = match failure {
        Failure::Api(error) => {
            if let ApiError::Throttled { retry_after } = &error {
                let wait = retry_after.unwrap_or_else(until_next_hour);
                *not_before = Some(Instant::now() + wait);
            }
            (error.reason(), error.to_string())
        }
        Failure::Storage(why) => (SyncError::Storage, why),
    };
    syncer.metrics.error(reason);
    report.error = Some((reason, why));
}

/// Every item of a list, following `next` from page 1.
async fn list<T>(
    client: &Client,
    endpoint: Endpoint,
    uid: &str,
    item: fn(&serde_json::Map<String, serde_json::Value>) -> Result<T, model::ModelError>,
) -> Result<Vec<T>, Failure> {
    let mut items = Vec::new();
    let mut page = 1;
    loop {
        let (got, _) = client
            .get(endpoint, uid, page, |body| model::page(body, item))
            .await
            .map_err(Failure::Api)?;
        items.extend(got.items);
        match got.next {
            None => return Ok(items),
            Some(next) if next > page && next <= MAX_PAGES => page = next,
            Some(next) => {
                return Err(Failure::Api(ApiError::Malformed(format!(
                    "page {page} of {} points to page {next} next",
                    endpoint.pattern()
                ))));
            }
        }
    }
}

/// Brings a listed stack's record up to date (name, environment, configured id).
async fn refresh(
    syncer: &Syncer,
    app: &App,
    stack: &Stack,
    report: &mut Report,
) -> Result<(), Failure> {
    let configured = syncer
        .config
        .stack_ids
        .iter()
        .find(|(uid, _)| *uid == stack.uid)
        .map(|(_, id)| id.as_str());
    let (record, previous) = {
        let directory = syncer.directory.read().unwrap_or_else(|e| e.into_inner());
        let Some(record) =
            directory.refreshed(&stack.uid, &stack.name, &stack.environment, configured)
        else {
            return Ok(());
        };
        let previous = directory.get(&stack.uid).map(|r| r.label().to_owned());
        (record, previous)
    };
    save(syncer, app, record, previous, report).await
}

/// Saves a stack's record durably (moving its certificates if its label changed), then
/// makes it visible.
async fn save(
    syncer: &Syncer,
    app: &App,
    record: StackRecord,
    previous: Option<String>,
    report: &mut Report,
) -> Result<(), Failure> {
    let label = record.label().to_owned();
    let moved = app
        .store()
        .save_stack(record.clone(), previous.clone())
        .await
        .map_err(|e| Failure::Storage(format!("stack not saved: {e}")))?;
    if let Some(previous) = previous.filter(|p| *p != label) {
        tracing::info!(
            stack_uid = record.uid,
            stack_name = record.name,
            from = previous,
            to = label,
            id_source = record.id_source.as_str(),
            certificates = moved,
            "Cloud66 stack id resolved; its certificates now carry the stack id"
        );
        report.changed += moved;
    }
    let mut directory = syncer.directory.write().unwrap_or_else(|e| e.into_inner());
    directory.put(record);
    syncer.metrics.show_stacks(&directory);
    Ok(())
}

/// Resolves a stack's id from its actions (once per stack), lists its certificates,
/// stores what changed, and forgets what is gone. Returns how many it listed.
async fn reconcile_stack(
    syncer: &Syncer,
    app: &App,
    client: &Client,
    uid: &str,
    missing: &mut HashMap<CertKey, u32>,
    report: &mut Report,
) -> Result<usize, Failure> {
    let known = syncer
        .directory
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(uid)
        .cloned();
    let Some(mut record) = known else {
        return Ok(0);
    };
    if record.id.is_none() && !record.actions_checked {
        match client
            .get(Endpoint::Actions, uid, 1, |body| {
                model::page(body, model::action_stack_id)
            })
            .await
        {
            Ok((page, _)) => {
                let previous = record.label().to_owned();
                record.actions_checked = true;
                let id = page.items.into_iter().flatten().next();
                let free = |id: &String| {
                    let directory = syncer.directory.read().unwrap_or_else(|e| e.into_inner());
                    directory.uid_of(id).is_none()
                };
                if let Some(id) = id.filter(free) {
                    record.id = Some(id);
                    record.id_source = IdSource::Actions;
                }
                save(syncer, app, record.clone(), Some(previous), report).await?;
            }
            Err(error) if error.stops_sync() => return Err(Failure::Api(error)),
            Err(error) => {
                // The id can come later; the certificates are listed all the same.
                tracing::warn!(stack_uid = uid, %error, "cannot read the stack's actions");
                syncer.metrics.error(error.reason());
            }
        }
    }
    let label = record.label().to_owned();
    let mut names = HashSet::new();
    let mut page = 1;
    loop {
        let (got, fetched_at) = client
            .get(Endpoint::Certificates, uid, page, |body| {
                model::page(body, model::certificate)
            })
            .await
            .map_err(Failure::Api)?;
        let observations: Vec<_> = got
            .items
            .into_iter()
            .map(|cert| cert.observed(&label, uid, fetched_at))
            .collect();
        names.extend(observations.iter().map(|o| o.name.clone()));
        let observed = app
            .store()
            .observe(observations)
            .await
            .map_err(|e| Failure::Storage(format!("observations not stored: {e}")))?;
        report.add(observed);
        match got.next {
            None => break,
            Some(next) if next > page && next <= MAX_PAGES => page = next,
            Some(next) => {
                return Err(Failure::Api(ApiError::Malformed(format!(
                    "certificate page {page} points to page {next} next"
                ))));
            }
        }
    }
    forget_missing(syncer, app, &label, &names, missing, report).await?;
    Ok(names.len())
}

/// After a complete listing of the stack labelled `label`, which showed `names`: counts
/// one more miss for each of its certificates not shown, and forgets those missed
/// `--cloud66.forget-missing-after` times in a row.
async fn forget_missing(
    syncer: &Syncer,
    app: &App,
    label: &str,
    names: &HashSet<String>,
    missing: &mut HashMap<CertKey, u32>,
    report: &mut Report,
) -> Result<(), Failure> {
    let keys = app.state().keys_of_stack(label);
    let tracked: HashSet<&CertKey> = keys.iter().collect();
    missing.retain(|key, _| key.stack() != label || tracked.contains(key));
    let after = syncer.config.forget_missing_after;
    for key in &keys {
        if names.contains(key.name()) {
            missing.remove(key);
            continue;
        }
        let misses = missing.entry(key.clone()).or_insert(0);
        *misses += 1;
        if after == 0 || *misses < after {
            continue;
        }
        let forgotten = app
            .store()
            .forget(key.stack().to_owned(), key.name().to_owned())
            .await
            .map_err(|e| Failure::Storage(format!("certificate not forgotten: {e}")))?;
        missing.remove(key);
        if forgotten == Forgotten::Removed {
            tracing::info!(
                stack = key.stack(),
                name = key.name(),
                listings = after,
                "certificate forgotten: it is gone from Cloud66"
            );
            report.changed += 1;
        }
    }
    Ok(())
}

/// Binds the webhook stack ids whose certificates match API certificates of exactly one
/// unresolved stack (see [`content_matches`]).
async fn match_content(syncer: &Syncer, app: &App, report: &mut Report) -> Result<(), Failure> {
    let directory = syncer.directory();
    let unresolved: HashSet<&str> = directory
        .records()
        .filter(|r| r.id.is_none())
        .map(|r| r.uid.as_str())
        .collect();
    if unresolved.is_empty() {
        return Ok(());
    }
    let (mut webhook, mut api) = (Vec::new(), Vec::new());
    for cert in app.state().snapshot() {
        let Some(fingerprint) = cert
            .info
            .server_names
            .as_deref()
            .and_then(|names| Fingerprint::new(&cert.name, names))
        else {
            continue;
        };
        if unresolved.contains(cert.stack.as_str()) {
            api.push((cert.stack.clone(), fingerprint));
        } else if cert.last_event_ts.is_some() && cert.stack.bytes().all(|b| b.is_ascii_digit()) {
            webhook.push((cert.stack.clone(), fingerprint));
        }
    }
    for (id, uid) in content_matches(&webhook, &api, &directory) {
        let Some(mut record) = directory.get(&uid).cloned() else {
            continue;
        };
        record.id = Some(id);
        record.id_source = IdSource::Matched;
        save(syncer, app, record, Some(uid), report).await?;
    }
    Ok(())
}

/// The wait until the next full hour (UTC), when Cloud66's hourly limit resets.
fn until_next_hour() -> Duration {
    let now = crate::now();
    let next = (now / 3600.0).floor() * 3600.0 + 3600.0;
    Duration::from_secs_f64((next - now).max(1.0))
}
