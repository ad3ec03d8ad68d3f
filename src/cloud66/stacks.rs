//! What the exporter knows about each Cloud66 stack, above all how the API's stack uid
//! maps to the integer stack id that webhooks carry, and the rules that resolve it.
//!
//! Webhooks name a stack by id, the API by uid, and nothing documented links the two.
//! An id comes, in this order of trust, from `--cloud66.stack-ids` (`configured`), from
//! the stack's async actions (`actions`), or from a webhook certificate whose name and
//! domains match exactly one API certificate in exactly one stack (`matched`). Until
//! then the stack's API certificates are labelled with its uid (`unresolved`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a stack's webhook id came from: the `id_source` label of `stack_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdSource {
    /// `--cloud66.stack-ids`.
    Configured,
    /// A `stack` entry of the stack's async actions.
    Actions,
    /// A webhook certificate matching one API certificate of this stack.
    Matched,
    /// Not known yet.
    Unresolved,
}

impl IdSource {
    /// The label value, also how it is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            IdSource::Configured => "configured",
            IdSource::Actions => "actions",
            IdSource::Matched => "matched",
            IdSource::Unresolved => "unresolved",
        }
    }

    /// The source stored as `text`; unknown text counts as unresolved.
    pub fn parse(text: &str) -> IdSource {
        match text {
            "configured" => IdSource::Configured,
            "actions" => IdSource::Actions,
            "matched" => IdSource::Matched,
            _ => IdSource::Unresolved,
        }
    }
}

/// One stack as the exporter remembers it (durably, in the `stacks` table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackRecord {
    /// The API's uid.
    pub uid: String,
    /// The webhook stack id, once resolved.
    pub id: Option<String>,
    /// Where `id` came from.
    pub id_source: IdSource,
    /// The stack's name in Cloud66.
    pub name: String,
    /// Its environment (`production`, `staging`, ...).
    pub environment: String,
    /// Whether its async actions were looked up for an id already (once per stack).
    pub actions_checked: bool,
}

impl StackRecord {
    /// The `stack` label of this stack's certificates: the id once known, else the uid.
    pub fn label(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.uid)
    }
}

/// Every stack known, by uid.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    stacks: BTreeMap<String, StackRecord>,
}

impl Directory {
    /// The directory as stored.
    pub fn new(records: impl IntoIterator<Item = StackRecord>) -> Self {
        Directory {
            stacks: records.into_iter().map(|r| (r.uid.clone(), r)).collect(),
        }
    }

    /// The record of `uid`.
    pub fn get(&self, uid: &str) -> Option<&StackRecord> {
        self.stacks.get(uid)
    }

    /// Every record, by uid.
    pub fn records(&self) -> impl Iterator<Item = &StackRecord> {
        self.stacks.values()
    }

    /// Replaces or adds a record.
    pub fn put(&mut self, record: StackRecord) {
        self.stacks.insert(record.uid.clone(), record);
    }

    /// The uid already bound to webhook stack `id`, if any.
    pub fn uid_of(&self, id: &str) -> Option<&str> {
        self.stacks
            .values()
            .find(|r| r.id.as_deref() == Some(id))
            .map(|r| r.uid.as_str())
    }

    /// The record `listed` (name and environment from the API) should become, given
    /// what was known: names follow the API, a configured id wins over any other, and
    /// an id resolved before is kept. `None` when nothing changed.
    pub fn refreshed(
        &self,
        uid: &str,
        name: &str,
        environment: &str,
        configured: Option<&str>,
    ) -> Option<StackRecord> {
        let known = self.stacks.get(uid);
        let mut record = known.cloned().unwrap_or_else(|| StackRecord {
            uid: uid.to_owned(),
            id: None,
            id_source: IdSource::Unresolved,
            name: String::new(),
            environment: String::new(),
            actions_checked: false,
        });
        record.name = name.to_owned();
        record.environment = environment.to_owned();
        if let Some(id) = configured {
            record.id = Some(id.to_owned());
            record.id_source = IdSource::Configured;
        }
        (known != Some(&record)).then_some(record)
    }
}

/// A certificate as content matching sees it: its name and set of domains.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint {
    /// The certificate name.
    pub name: String,
    /// Its domains, trimmed, lower-cased, as a set.
    pub domains: BTreeSet<String>,
}

impl Fingerprint {
    /// From a name and comma-separated domains; `None` without any domain (too weak to
    /// tell certificates apart).
    pub fn new(name: &str, server_names: &str) -> Option<Self> {
        let domains: BTreeSet<String> = server_names
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        (!domains.is_empty()).then(|| Fingerprint {
            name: name.trim().to_owned(),
            domains,
        })
    }
}

/// The (webhook stack id, uid) pairs content matching binds. A webhook certificate
/// (`webhook`: its stack id and fingerprint) points at a uid when exactly one API
/// certificate (`api`: its stack uid and fingerprint) has its fingerprint. An id is bound
/// when its certificates point at one uid only, no other id points at that uid, the id
/// is not bound already and the uid not resolved already; anything ambiguous binds
/// nothing.
pub fn content_matches(
    webhook: &[(String, Fingerprint)],
    api: &[(String, Fingerprint)],
    directory: &Directory,
) -> Vec<(String, String)> {
    let mut holders: HashMap<&Fingerprint, Vec<&str>> = HashMap::new();
    for (uid, fingerprint) in api {
        holders.entry(fingerprint).or_default().push(uid);
    }
    let mut uids_of_id: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, fingerprint) in webhook {
        if directory.uid_of(id).is_some() {
            continue;
        }
        if let Some([uid]) = holders.get(fingerprint).map(Vec::as_slice) {
            uids_of_id.entry(id).or_default().insert(uid);
        }
    }
    let mut ids_of_uid: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, uids) in &uids_of_id {
        if let [uid] = uids.iter().copied().collect::<Vec<_>>()[..] {
            ids_of_uid.entry(uid).or_default().push(id);
        }
    }
    ids_of_uid
        .into_iter()
        .filter(|(uid, _)| directory.get(uid).is_some_and(|r| r.id.is_none()))
        .filter_map(|(uid, ids)| match ids[..] {
            [id] => Some((id.to_owned(), uid.to_owned())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str, id: Option<&str>) -> StackRecord {
        StackRecord {
            uid: uid.into(),
            id: id.map(Into::into),
            id_source: if id.is_some() {
                IdSource::Configured
            } else {
                IdSource::Unresolved
            },
            name: format!("stack {uid}"),
            environment: "production".into(),
            actions_checked: false,
        }
    }

    fn fp(name: &str, domains: &str) -> Fingerprint {
        Fingerprint::new(name, domains).expect("has domains")
    }

    fn pair(a: &str, f: Fingerprint) -> (String, Fingerprint) {
        (a.to_owned(), f)
    }

    #[test]
    fn fingerprints_compare_domains_as_sets() {
        assert_eq!(fp("a", "x.com, Y.com"), fp("a", "y.com,x.com,"));
        assert_ne!(fp("a", "x.com"), fp("b", "x.com"));
        assert_eq!(Fingerprint::new("a", " , "), None);
    }

    #[test]
    fn one_match_in_one_stack_binds() {
        let dir = Directory::new([record("u1", None), record("u2", None)]);
        let webhook = [pair("123", fp("web", "a.com,b.com"))];
        let api = [
            pair("u1", fp("web", "b.com,a.com")),
            pair("u2", fp("other", "a.com")),
        ];
        assert_eq!(
            content_matches(&webhook, &api, &dir),
            vec![("123".to_owned(), "u1".to_owned())]
        );
    }

    #[test]
    fn ambiguity_binds_nothing() {
        let dir = Directory::new([record("u1", None), record("u2", None)]);
        // The same certificate in two stacks.
        let webhook = [pair("123", fp("web", "a.com"))];
        let api = [
            pair("u1", fp("web", "a.com")),
            pair("u2", fp("web", "a.com")),
        ];
        assert!(content_matches(&webhook, &api, &dir).is_empty());
        // One id whose certificates point at two stacks.
        let webhook = [pair("123", fp("a", "a.com")), pair("123", fp("b", "b.com"))];
        let api = [pair("u1", fp("a", "a.com")), pair("u2", fp("b", "b.com"))];
        assert!(content_matches(&webhook, &api, &dir).is_empty());
        // Two ids pointing at one stack.
        let webhook = [pair("1", fp("a", "a.com")), pair("2", fp("b", "b.com"))];
        let api = [pair("u1", fp("a", "a.com")), pair("u1", fp("b", "b.com"))];
        assert!(content_matches(&webhook, &api, &dir).is_empty());
    }

    #[test]
    fn bound_ids_and_resolved_stacks_are_left_alone() {
        let dir = Directory::new([record("u1", Some("9")), record("u2", None)]);
        let api = [pair("u1", fp("a", "a.com")), pair("u2", fp("b", "b.com"))];
        // 9 is bound to u1 already; u1 is resolved, so 5 cannot take it.
        let webhook = [pair("9", fp("b", "b.com")), pair("5", fp("a", "a.com"))];
        assert!(content_matches(&webhook, &api, &dir).is_empty());
    }

    #[test]
    fn refreshed_keeps_a_resolved_id_and_prefers_a_configured_one() {
        let mut dir = Directory::default();
        let new = dir.refreshed("u1", "App", "production", None).expect("new");
        assert_eq!((new.label(), new.id_source), ("u1", IdSource::Unresolved));
        dir.put(StackRecord {
            id: Some("7".into()),
            id_source: IdSource::Actions,
            ..new
        });
        assert_eq!(dir.refreshed("u1", "App", "production", None), None);
        let renamed = dir
            .refreshed("u1", "App 2", "production", None)
            .expect("renamed");
        assert_eq!((renamed.label(), renamed.name.as_str()), ("7", "App 2"));
        let configured = dir
            .refreshed("u1", "App", "production", Some("8"))
            .expect("configured");
        assert_eq!(
            (configured.label(), configured.id_source),
            ("8", IdSource::Configured)
        );
    }
}
