//! In-memory certificate state: what the newest events say about each certificate.
//!
//! Only the storage writer changes this state, and only after the change is committed,
//! so readers (scrapes) always see durable facts.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use crate::event::{CertInfo, EventKind, Observation, SslEvent};

/// Bytes of the stack and of the name a [`CertKey`] also keeps inline.
const HEAD: usize = 16;

/// Identifies a certificate: the stack id and the certificate name, ordered as the pair
/// `(stack, name)`.
///
/// The first [`HEAD`] bytes of each are also kept inline, zero-padded, so comparing two
/// keys in the state's ordered map rarely follows the strings' pointers: with 100,000
/// certificates each of those is likely a cache miss, and a lookup compares dozens of
/// keys.
#[derive(Clone, Debug)]
pub struct CertKey {
    stack_head: [u8; HEAD],
    name_head: [u8; HEAD],
    stack: String,
    name: String,
}

/// The first [`HEAD`] bytes of `text`, padded with zeros. Padded heads order like the
/// strings they start: 0 is the least byte and a string sorts after its own prefixes, so
/// where two heads differ, the strings differ the same way.
fn head(text: &str) -> [u8; HEAD] {
    let mut head = [0; HEAD];
    let len = text.len().min(HEAD);
    head[..len].copy_from_slice(&text.as_bytes()[..len]);
    head
}

/// Orders two strings whose heads are equal: equal lengths within the head mean equal
/// strings, without reading them.
fn cmp_rest(a: &str, b: &str) -> Ordering {
    if a.len() == b.len() && a.len() <= HEAD {
        Ordering::Equal
    } else {
        a.cmp(b)
    }
}

impl CertKey {
    /// The key of the certificate `name` on stack `stack`.
    pub fn new(stack: &str, name: &str) -> Self {
        CertKey {
            stack_head: head(stack),
            name_head: head(name),
            stack: stack.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The stack id.
    pub fn stack(&self) -> &str {
        &self.stack
    }

    /// The certificate name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Ord for CertKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.stack_head
            .cmp(&other.stack_head)
            .then_with(|| cmp_rest(&self.stack, &other.stack))
            .then_with(|| self.name_head.cmp(&other.name_head))
            .then_with(|| cmp_rest(&self.name, &other.name))
    }
}

impl PartialOrd for CertKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for CertKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for CertKey {}

impl Hash for CertKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&self.stack, &self.name).hash(state);
    }
}

/// Everything known about one certificate.
///
/// Each aspect (descriptive fields, expiry, install outcome) follows the newest event or
/// API observation that speaks about it, by payload timestamp (a webhook) or fetch time
/// (an observation), with arrival order breaking ties: a late, older event is still
/// counted but never rolls an aspect back. Observations are never counted.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Certificate {
    /// Stack id, the `stack` label.
    pub stack: String,
    /// Certificate name, the `name` label.
    pub name: String,
    /// Expiry as Unix seconds, once any event has told us.
    pub expiry: Option<f64>,
    /// Payload timestamp of the event that set `expiry`.
    pub expiry_event_ts: Option<f64>,
    /// Payload timestamp of the newest webhook event of any kind.
    pub last_event_ts: Option<f64>,
    /// Kind of the webhook event that set `last_event_ts` (its Cloud66 `event_type` is
    /// [`EventKind::event_type`]); `None` until a webhook event arrives, or for a row
    /// restored from an older schema whose events no longer tell.
    pub last_event_type: Option<EventKind>,
    /// Timestamp of the event or observation that last set the descriptive fields.
    pub info_ts: Option<f64>,
    /// Fetch time of the newest API observation applied, if the API ever showed it.
    pub observed_ts: Option<f64>,
    /// Whether the newest install event was a failure.
    pub install_failing: bool,
    /// Payload timestamp of the newest install event (ok or fail).
    pub install_event_ts: Option<f64>,
    /// The failure's `error_message` while `install_failing`.
    pub error_message: Option<String>,
    /// Descriptive fields; each keeps its last known value when an event omits it.
    pub info: CertInfo,
    /// Number of `install.fail` events.
    pub install_failures: u64,
    /// Number of `install.ok` events.
    pub install_successes: u64,
    /// Number of `expire.soon` events.
    pub expire_soon_notifications: u64,
}

/// True when an event at `ts` is at least as new as the one that set an aspect at `current`.
fn is_newer(ts: f64, current: Option<f64>) -> bool {
    current.is_none_or(|current| ts >= current)
}

/// Replaces `slot` with `value` when the event carried one.
fn merge(slot: &mut Option<String>, value: &Option<String>) {
    if value.is_some() {
        slot.clone_from(value);
    }
}

impl Certificate {
    /// A certificate about which nothing has happened yet.
    pub fn new(stack: &str, name: &str) -> Self {
        Certificate {
            stack: stack.to_owned(),
            name: name.to_owned(),
            ..Certificate::default()
        }
    }

    /// Counts `event` and lets it update every aspect it is the newest word on.
    pub fn apply(&mut self, event: &SslEvent) {
        let ts = event.timestamp;
        match event.kind {
            EventKind::ExpireSoon => self.expire_soon_notifications += 1,
            EventKind::InstallOk => self.install_successes += 1,
            EventKind::InstallFail => self.install_failures += 1,
        }
        if is_newer(ts, self.last_event_ts) {
            self.last_event_ts = Some(ts);
            self.last_event_type = Some(event.kind);
        }
        self.set_info(ts, &event.info);
        self.set_expiry(ts, event.expiry);
        if event.kind.is_install() {
            let failing = event.kind == EventKind::InstallFail;
            self.set_install(ts, failing, event.error_message.as_ref());
        }
    }

    /// Lets an API observation update every aspect it is the newest word on; counts
    /// nothing. A failure seen in the API carries no message: one a webhook gave for the
    /// same failure is kept.
    pub fn observe(&mut self, observation: &Observation) {
        let ts = observation.fetched_at;
        self.observed_ts = Some(self.observed_ts.map_or(ts, |seen| seen.max(ts)));
        self.set_info(ts, &observation.info);
        self.set_expiry(ts, observation.expiry);
        if let Some(failing) = observation.install_failing {
            let message = match failing && self.install_failing {
                true => self.error_message.clone(),
                false => None,
            };
            self.set_install(ts, failing, message.as_ref());
        }
    }

    /// Takes in `other`, the same certificate known under another stack label (its uid
    /// before the stack id was known): counters add up, each aspect follows the newer
    /// word, ties going to `self`.
    pub fn absorb(&mut self, other: Certificate) {
        self.install_failures += other.install_failures;
        self.install_successes += other.install_successes;
        self.expire_soon_notifications += other.expire_soon_notifications;
        let newest = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        // The newest event's time and kind go together; a tie keeps ours.
        if other
            .last_event_ts
            .is_some_and(|ts| self.last_event_ts.is_none_or(|mine| ts > mine))
        {
            self.last_event_ts = other.last_event_ts;
            self.last_event_type = other.last_event_type;
        }
        self.observed_ts = newest(self.observed_ts, other.observed_ts);
        if let Some(ts) = other.info_ts {
            self.set_info(ts, &other.info);
        }
        if let Some(ts) = other.expiry_event_ts {
            self.set_expiry(ts, other.expiry);
        }
        if let Some(ts) = other.install_event_ts {
            self.set_install(ts, other.install_failing, other.error_message.as_ref());
        }
    }

    /// Whether both say the same about the certificate: everything but the times at
    /// which each aspect was last set. An observation that changes no fact is not
    /// stored.
    pub fn same_facts(&self, other: &Certificate) -> bool {
        self.stack == other.stack
            && self.name == other.name
            && self.expiry == other.expiry
            && self.install_failing == other.install_failing
            && self.error_message == other.error_message
            && self.info == other.info
            && self.install_failures == other.install_failures
            && self.install_successes == other.install_successes
            && self.expire_soon_notifications == other.expire_soon_notifications
    }

    /// The descriptive fields from a word at `ts`, if it is the newest on them.
    fn set_info(&mut self, ts: f64, info: &CertInfo) {
        if !is_newer(ts, self.info_ts) {
            return;
        }
        self.info_ts = Some(ts);
        let mine = &mut self.info;
        merge(&mut mine.server_names, &info.server_names);
        merge(&mut mine.lets_encrypt, &info.lets_encrypt);
        merge(&mut mine.has_intermediate_cert, &info.has_intermediate_cert);
        merge(&mut mine.ssl_termination, &info.ssl_termination);
        merge(&mut mine.status, &info.status);
    }

    /// The expiry from a word at `ts`, if it gave one and is the newest on it.
    fn set_expiry(&mut self, ts: f64, expiry: Option<f64>) {
        if let Some(expiry) = expiry
            && is_newer(ts, self.expiry_event_ts)
        {
            self.expiry = Some(expiry);
            self.expiry_event_ts = Some(ts);
        }
    }

    /// The install outcome from a word at `ts`, if it is the newest on it.
    fn set_install(&mut self, ts: f64, failing: bool, message: Option<&String>) {
        if is_newer(ts, self.install_event_ts) {
            self.install_event_ts = Some(ts);
            self.install_failing = failing;
            self.error_message = if failing { message.cloned() } else { None };
        }
    }
}

/// The current state of every tracked certificate, shared between the storage writer
/// (the only one that changes it) and the scrapes.
#[derive(Debug, Default)]
pub struct State {
    certificates: RwLock<Certificates>,
}

/// The certificates, found by key for the writer and in key order for scrapes.
///
/// The writer looks a certificate up for every event and replaces it after every commit
/// that changed it: through `index` both cost one hash and one key comparison, where an
/// ordered map compares a few dozen keys per lookup at 100,000 certificates (about 11% of
/// the writer's CPU under load, measured). The ordered map changes only when a
/// certificate is added or removed.
#[derive(Debug, Default)]
struct Certificates {
    /// Each certificate in a slot; a removed one's slot is `None` until reused.
    slots: Vec<Option<Arc<Certificate>>>,
    /// Slots that are `None`.
    free: Vec<usize>,
    /// The slot of each certificate.
    index: HashMap<CertKey, usize>,
    /// The slot of each certificate, in (stack, name) order, so scrapes need no sorting.
    order: BTreeMap<CertKey, usize>,
}

impl Certificates {
    /// Sets the state of `key`, adding it if new.
    fn insert(&mut self, key: CertKey, cert: Arc<Certificate>) {
        if let Some(&slot) = self.index.get(&key) {
            self.slots[slot] = Some(cert);
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(cert);
                slot
            }
            None => {
                self.slots.push(Some(cert));
                self.slots.len() - 1
            }
        };
        self.order.insert(key.clone(), slot);
        self.index.insert(key, slot);
    }

    /// Stops tracking `key`.
    fn remove(&mut self, key: &CertKey) {
        if let Some(slot) = self.index.remove(key) {
            self.order.remove(key);
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }

    /// The current state of `key`, if it is tracked.
    fn get(&self, key: &CertKey) -> Option<&Arc<Certificate>> {
        self.index
            .get(key)
            .and_then(|&slot| self.slots.get(slot))
            .and_then(Option::as_ref)
    }
}

impl State {
    /// State holding `certificates` (as restored from storage).
    pub fn new(certificates: impl IntoIterator<Item = Certificate>) -> Self {
        let mut map = Certificates::default();
        for cert in certificates {
            map.insert(CertKey::new(&cert.stack, &cert.name), Arc::new(cert));
        }
        State {
            certificates: RwLock::new(map),
        }
    }

    /// The current state of the certificate `key`.
    pub fn get_key(&self, key: &CertKey) -> Option<Arc<Certificate>> {
        let map = self.certificates.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    /// Makes committed changes visible: a certificate's new state, or `None` for one
    /// that was removed.
    pub fn apply(&self, changes: impl IntoIterator<Item = (CertKey, Option<Certificate>)>) {
        let changes: Vec<_> = changes
            .into_iter()
            .map(|(key, cert)| (key, cert.map(Arc::new)))
            .collect();
        let mut map = self.certificates.write().unwrap_or_else(|e| e.into_inner());
        for (key, cert) in changes {
            match cert {
                Some(cert) => map.insert(key, cert),
                None => map.remove(&key),
            }
        }
    }

    /// A consistent copy of every certificate, in (stack, name) order. Holds the lock
    /// only for the copy of the pointers, so scrapes do not hold up the writer while
    /// they encode.
    pub fn snapshot(&self) -> Vec<Arc<Certificate>> {
        let map = self.certificates.read().unwrap_or_else(|e| e.into_inner());
        map.order
            .values()
            .filter_map(|&slot| map.slots.get(slot).cloned().flatten())
            .collect()
    }

    /// The keys of every certificate labelled `stack`.
    pub fn keys_of_stack(&self, stack: &str) -> Vec<CertKey> {
        let map = self.certificates.read().unwrap_or_else(|e| e.into_inner());
        map.order
            .range(CertKey::new(stack, "")..)
            .map(|(key, _)| key)
            .take_while(|key| key.stack() == stack)
            .cloned()
            .collect()
    }

    /// Number of tracked certificates.
    pub fn len(&self) -> usize {
        self.certificates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .len()
    }

    /// Whether no certificate is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, ts: f64, expiry: Option<f64>) -> SslEvent {
        SslEvent {
            kind,
            timestamp: ts,
            stack: "123".into(),
            name: "web".into(),
            expiry,
            error_message: (kind == EventKind::InstallFail).then(|| format!("failed at {ts}")),
            info: CertInfo {
                status: Some(format!("status at {ts}")),
                ..CertInfo::default()
            },
        }
    }

    fn applied(events: &[SslEvent]) -> Certificate {
        let mut cert = Certificate::new("123", "web");
        for e in events {
            cert.apply(e);
        }
        cert
    }

    #[test]
    fn counts_every_event_by_kind() {
        let cert = applied(&[
            event(EventKind::InstallOk, 1.0, Some(100.0)),
            event(EventKind::InstallFail, 2.0, None),
            event(EventKind::InstallFail, 3.0, None),
            event(EventKind::ExpireSoon, 4.0, Some(100.0)),
        ]);
        assert_eq!(
            (
                cert.install_successes,
                cert.install_failures,
                cert.expire_soon_notifications
            ),
            (1, 2, 1)
        );
    }

    #[test]
    fn install_fail_keeps_last_known_expiry_and_sets_failing() {
        let cert = applied(&[
            event(EventKind::InstallOk, 1.0, Some(100.0)),
            event(EventKind::InstallFail, 2.0, None),
        ]);
        assert_eq!(cert.expiry, Some(100.0));
        assert!(cert.install_failing);
        assert_eq!(cert.error_message.as_deref(), Some("failed at 2"));
        assert_eq!(cert.last_event_ts, Some(2.0));
    }

    #[test]
    fn late_older_event_is_counted_but_does_not_roll_back() {
        let cert = applied(&[
            event(EventKind::InstallFail, 10.0, None),
            event(EventKind::InstallOk, 5.0, Some(50.0)),
        ]);
        assert!(
            cert.install_failing,
            "the newer failure still defines status"
        );
        assert_eq!(cert.install_successes, 1);
        assert_eq!(cert.info.status.as_deref(), Some("status at 10"));
        assert_eq!(cert.last_event_ts, Some(10.0));
        // The late event is still the newest word on expiry, which nothing newer gave.
        assert_eq!(cert.expiry, Some(50.0));
    }

    #[test]
    fn older_expiry_does_not_replace_newer_one() {
        let cert = applied(&[
            event(EventKind::InstallOk, 10.0, Some(200.0)),
            event(EventKind::ExpireSoon, 5.0, Some(100.0)),
        ]);
        assert_eq!(cert.expiry, Some(200.0));
    }

    #[test]
    fn equal_timestamps_are_decided_by_arrival_order() {
        let cert = applied(&[
            event(EventKind::InstallFail, 7.0, None),
            event(EventKind::InstallOk, 7.0, Some(300.0)),
        ]);
        assert!(!cert.install_failing);
        assert_eq!(cert.error_message, None);
        let cert = applied(&[
            event(EventKind::InstallOk, 7.0, Some(300.0)),
            event(EventKind::InstallFail, 7.0, None),
        ]);
        assert!(cert.install_failing);
    }

    #[test]
    fn expire_soon_does_not_change_install_status() {
        let cert = applied(&[
            event(EventKind::InstallFail, 1.0, None),
            event(EventKind::ExpireSoon, 2.0, Some(90.0)),
        ]);
        assert!(cert.install_failing);
        assert_eq!(cert.expiry, Some(90.0));
    }

    #[test]
    fn missing_info_fields_keep_their_last_value() {
        let mut first = event(EventKind::InstallOk, 1.0, Some(1.0));
        first.info.server_names = Some("a.example".into());
        let second = event(EventKind::InstallOk, 2.0, Some(1.0));
        let cert = applied(&[first, second]);
        assert_eq!(cert.info.server_names.as_deref(), Some("a.example"));
        assert_eq!(cert.info.status.as_deref(), Some("status at 2"));
    }

    fn observation(ts: f64, expiry: Option<f64>, failing: Option<bool>) -> Observation {
        Observation {
            fetched_at: ts,
            stack: "123".into(),
            stack_uid: "uid".into(),
            uuid: "u".into(),
            name: "web".into(),
            expiry,
            install_failing: failing,
            info: CertInfo {
                status: Some(format!("seen at {ts}")),
                ..CertInfo::default()
            },
        }
    }

    #[test]
    fn an_observation_counts_nothing_and_the_newest_word_wins_both_ways() {
        // A fetch newer than a stale webhook wins...
        let mut cert = applied(&[event(EventKind::InstallFail, 10.0, Some(100.0))]);
        cert.observe(&observation(20.0, Some(200.0), Some(false)));
        assert_eq!((cert.expiry, cert.install_failing), (Some(200.0), false));
        assert_eq!(cert.error_message, None);
        assert_eq!(cert.info.status.as_deref(), Some("seen at 20"));
        assert_eq!((cert.install_failures, cert.install_successes), (1, 0));
        assert_eq!(
            cert.last_event_ts,
            Some(10.0),
            "observations are not events"
        );
        assert_eq!(cert.observed_ts, Some(20.0));
        // ...and a webhook newer than the fetch wins.
        cert.apply(&event(EventKind::InstallFail, 30.0, None));
        assert!(cert.install_failing);
        assert_eq!(cert.expiry, Some(200.0), "the failure gave no expiry");
        // A fetch older than the failure does not undo it, though its expiry is still
        // the newest word on expiry; a null expiry keeps the last known one.
        cert.observe(&observation(25.0, Some(300.0), Some(false)));
        assert_eq!((cert.expiry, cert.install_failing), (Some(300.0), true));
        let before = cert.clone();
        cert.observe(&observation(24.0, Some(400.0), Some(false)));
        assert!(cert.same_facts(&before), "an older fetch changes nothing");
        cert.observe(&observation(40.0, None, None));
        assert_eq!((cert.expiry, cert.install_failing), (Some(300.0), true));
    }

    #[test]
    fn a_failure_seen_in_the_api_keeps_the_webhook_s_message() {
        let mut cert = applied(&[event(EventKind::InstallFail, 10.0, None)]);
        cert.observe(&observation(20.0, None, Some(true)));
        assert_eq!(cert.error_message.as_deref(), Some("failed at 10"));
        let mut fresh = Certificate::new("123", "web");
        fresh.observe(&observation(20.0, None, Some(true)));
        assert!(fresh.install_failing);
        assert_eq!(fresh.error_message, None);
    }

    #[test]
    fn absorbing_adds_counters_and_keeps_the_newest_aspects() {
        let mut by_id = applied(&[
            event(EventKind::InstallOk, 10.0, Some(100.0)),
            event(EventKind::ExpireSoon, 12.0, Some(100.0)),
        ]);
        let mut by_uid = Certificate::new("uid", "web");
        by_uid.observe(&observation(20.0, Some(200.0), Some(false)));
        by_uid.install_failures = 2;
        by_id.absorb(by_uid);
        assert_eq!(by_id.stack, "123");
        assert_eq!(by_id.expiry, Some(200.0));
        assert_eq!(
            (
                by_id.install_failures,
                by_id.install_successes,
                by_id.expire_soon_notifications
            ),
            (2, 1, 1)
        );
        assert_eq!(
            (by_id.last_event_ts, by_id.observed_ts),
            (Some(12.0), Some(20.0))
        );
        assert_eq!(by_id.info.status.as_deref(), Some("seen at 20"));
    }

    #[test]
    fn the_newest_event_s_type_is_kept_beside_its_time() {
        let mut cert = applied(&[event(EventKind::InstallFail, 10.0, None)]);
        assert_eq!(
            (cert.last_event_ts, cert.last_event_type),
            (Some(10.0), Some(EventKind::InstallFail))
        );
        assert_eq!(
            cert.last_event_type.map(EventKind::event_type),
            Some("ssl_certificate.install.fail")
        );
        // An older event arriving late is counted but is not the newest event.
        cert.apply(&event(EventKind::InstallOk, 5.0, Some(50.0)));
        assert_eq!(
            (cert.last_event_ts, cert.last_event_type),
            (Some(10.0), Some(EventKind::InstallFail))
        );
        // An observation, even a newer one, is not an event.
        cert.observe(&observation(20.0, Some(200.0), Some(false)));
        assert_eq!(
            (cert.last_event_ts, cert.last_event_type),
            (Some(10.0), Some(EventKind::InstallFail))
        );
        // Equal timestamps: the later arrival is the newest, as for every aspect.
        cert.apply(&event(EventKind::ExpireSoon, 10.0, Some(60.0)));
        assert_eq!(
            (cert.last_event_ts, cert.last_event_type),
            (Some(10.0), Some(EventKind::ExpireSoon))
        );
        cert.apply(&event(EventKind::InstallOk, 11.0, None));
        assert_eq!(
            (cert.last_event_ts, cert.last_event_type),
            (Some(11.0), Some(EventKind::InstallOk))
        );
        assert_eq!(Certificate::new("1", "a").last_event_type, None);
    }

    #[test]
    fn absorbing_takes_the_newest_event_s_type_from_its_side() {
        let at = |kind, ts| applied(&[event(kind, ts, None)]);
        let newest = |mut mine: Certificate, other: Certificate| {
            mine.absorb(other);
            (mine.last_event_ts, mine.last_event_type)
        };
        let (ok, fail) = (EventKind::InstallOk, EventKind::InstallFail);
        assert_eq!(
            newest(at(ok, 10.0), at(fail, 20.0)),
            (Some(20.0), Some(fail)),
            "the other side is newer"
        );
        assert_eq!(
            newest(at(ok, 30.0), at(fail, 20.0)),
            (Some(30.0), Some(ok)),
            "ours is newer"
        );
        assert_eq!(
            newest(at(ok, 20.0), at(fail, 20.0)),
            (Some(20.0), Some(ok)),
            "a tie keeps ours"
        );
        assert_eq!(
            newest(Certificate::new("123", "web"), at(fail, 20.0)),
            (Some(20.0), Some(fail)),
            "we had no event"
        );
        // The other side known only from the API: no event, nothing to take.
        let mut seen = Certificate::new("uid", "web");
        seen.observe(&observation(40.0, None, Some(true)));
        assert_eq!(newest(at(ok, 10.0), seen), (Some(10.0), Some(ok)));
    }

    #[test]
    fn keys_of_a_stack_are_exactly_its_own() {
        let state = State::new([
            Certificate::new("12", "a"),
            Certificate::new("1", "b"),
            Certificate::new("1", "a"),
            Certificate::new("", "x"),
        ]);
        let names: Vec<_> = state
            .keys_of_stack("1")
            .iter()
            .map(|k| k.name().to_owned())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(state.keys_of_stack("2").is_empty());
    }

    proptest::proptest! {
        /// Keys order, compare and hash as their (stack, name) pairs, whatever the
        /// strings: embedded NULs (the padding byte), one a prefix of the other, long
        /// shared starts on either side of the inline head, non-ASCII.
        #[test]
        fn keys_order_as_their_pairs(
            stack in "[0\\x00é]{0,20}", stacks in proptest::array::uniform2("[0\\x00é]{0,3}"),
            name in "[ab\\x00é]{0,20}", names in proptest::array::uniform2("[ab\\x00é]{0,3}"),
        ) {
            // Two keys sharing a start, so that heads often tie.
            let (a, c) = (format!("{stack}{}", stacks[0]), format!("{stack}{}", stacks[1]));
            let (b, d) = (format!("{name}{}", names[0]), format!("{name}{}", names[1]));
            let (x, y) = (CertKey::new(&a, &b), CertKey::new(&c, &d));
            proptest::prop_assert_eq!(x.cmp(&y), (&a, &b).cmp(&(&c, &d)));
            proptest::prop_assert_eq!(x == y, (&a, &b) == (&c, &d));
            let hash = |key: &CertKey| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                key.hash(&mut hasher);
                hasher.finish()
            };
            if x == y {
                proptest::prop_assert_eq!(hash(&x), hash(&y));
            }
        }
    }

    #[test]
    fn keys_order_as_their_pairs_at_the_edges() {
        let exactly_head = "0123456789abcdef";
        let cases = [
            (("1", "z"), ("1\0", "a")),
            (("1", "\0b"), ("1\0", "a")),
            (("", ""), ("", "\0")),
            ((exactly_head, "a"), ("0123456789abcdef\0", "a")),
            ((exactly_head, "a"), ("0123456789abcdefg", "a")),
            (("9", "web"), ("10", "web")),
            (("1", "www.example.com.long"), ("1", "www.example.com.lone")),
        ];
        for ((a, b), (c, d)) in cases {
            let (x, y) = (CertKey::new(a, b), CertKey::new(c, d));
            assert_eq!(x.cmp(&y), (a, b).cmp(&(c, d)), "{a:?} {b:?} / {c:?} {d:?}");
            assert_eq!(y.cmp(&x), (c, d).cmp(&(a, b)), "{c:?} {d:?} / {a:?} {b:?}");
            assert_eq!(x.cmp(&x.clone()), Ordering::Equal);
        }
    }

    #[test]
    fn a_removed_certificate_frees_its_slot_for_the_next_one() {
        let key = CertKey::new;
        let state = State::new([Certificate::new("1", "a"), Certificate::new("2", "b")]);
        state.apply([(key("1", "a"), None)]);
        assert_eq!(state.get_key(&key("1", "a")), None);
        assert_eq!(state.len(), 1);
        // Removing an unknown certificate changes nothing.
        state.apply([(key("9", "unknown"), None)]);
        state.apply([(key("0", "new"), Some(Certificate::new("0", "new")))]);
        let map = state.certificates.read().unwrap();
        assert_eq!(map.slots.len(), 2, "the freed slot is reused");
        assert!(map.free.is_empty());
        drop(map);
        let names: Vec<_> = state.snapshot().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["new", "b"]);
        assert_eq!(
            state.get_key(&key("2", "b")).map(|c| c.name.clone()),
            Some("b".into())
        );
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn snapshot_is_ordered_and_apply_replaces_and_removes() {
        let key = CertKey::new;
        let state = State::new([
            Certificate::new("2", "b"),
            Certificate::new("1", "z"),
            Certificate::new("3", "gone"),
        ]);
        let mut updated = Certificate::new("2", "b");
        updated.install_failures = 4;
        state.apply([
            (key("2", "b"), Some(updated)),
            (key("1", "a"), Some(Certificate::new("1", "a"))),
            (key("3", "gone"), None),
        ]);
        let keys: Vec<_> = state
            .snapshot()
            .iter()
            .map(|c| (c.stack.clone(), c.name.clone(), c.install_failures))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("1".into(), "a".into(), 0),
                ("1".into(), "z".into(), 0),
                ("2".into(), "b".into(), 4)
            ]
        );
        assert_eq!(
            state.get_key(&key("2", "b")).map(|c| c.install_failures),
            Some(4)
        );
        assert_eq!(state.len(), 3);
    }
}
