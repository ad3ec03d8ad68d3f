//! The `--cloud66.*` flags, validated into a `Cloud66Config`.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{self, PemObject};

use super::flags::Parsed;
use super::{Cloud66Config, ConfigError, FALLBACK_API_TOKEN_ENV, one_line, read_token_file};

/// Shortest accepted `--cloud66.sync-interval`.
const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Longest accepted `--cloud66.sync-interval` (a week).
const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest accepted `--cloud66.max-requests-per-hour`: Cloud66's limit per user.
const MAX_REQUESTS_PER_HOUR: u32 = 3000;

/// Largest accepted `--cloud66.forget-missing-after`.
const MAX_FORGET_MISSING_AFTER: u32 = 1000;

/// Longest accepted stack uid.
const MAX_UID_CHARS: usize = 64;

/// The `--cloud66.*` flags that only make sense with an API token.
const NEED_TOKEN: &[&str] = &[
    "cloud66.api-url",
    "cloud66.api-ca-file",
    "cloud66.stacks",
    "cloud66.stack-ids",
    "cloud66.sync-interval",
    "cloud66.max-requests-per-hour",
    "cloud66.forget-missing-after",
];

/// The reconciliation settings, or `None` without an API token. Any other `--cloud66.*`
/// flag given without a token is an error, so that a mistyped setup fails loudly.
pub(super) fn config(
    parsed: &Parsed,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Cloud66Config>, ConfigError> {
    let cli = &parsed.cli;
    let Some(token) = api_token(parsed, env)? else {
        return match NEED_TOKEN.iter().find(|flag| parsed.given(flag)) {
            Some(flag) => Err(ConfigError::new(
                parsed.name(flag),
                "needs --cloud66.api-token or --cloud66.api-token-file",
            )),
            None => Ok(None),
        };
    };
    let name = |flag: &str| parsed.name(flag);
    let url =
        api_url(&cli.cloud66_api_url).map_err(|e| ConfigError::new(name("cloud66.api-url"), e))?;
    let mut config = Cloud66Config::new(token, url);
    if let Some(path) = &cli.cloud66_api_ca_file {
        config.extra_roots =
            pem_roots(path).map_err(|e| ConfigError::new(name("cloud66.api-ca-file"), e))?;
    }
    if let Some(text) = &cli.cloud66_stacks {
        let stacks = stacks(text).map_err(|e| ConfigError::new(name("cloud66.stacks"), e))?;
        config.stacks = Some(stacks);
    }
    if let Some(text) = &cli.cloud66_stack_ids {
        config.stack_ids =
            stack_ids(text).map_err(|e| ConfigError::new(name("cloud66.stack-ids"), e))?;
    }
    config.sync_interval = sync_interval(&cli.cloud66_sync_interval)
        .map_err(|e| ConfigError::new(name("cloud66.sync-interval"), e))?;
    config.max_requests_per_hour =
        bounded(cli.cloud66_max_requests_per_hour, 1, MAX_REQUESTS_PER_HOUR)
            .map_err(|e| ConfigError::new(name("cloud66.max-requests-per-hour"), e))?;
    config.forget_missing_after = bounded(
        cli.cloud66_forget_missing_after,
        0,
        MAX_FORGET_MISSING_AFTER,
    )
    .map_err(|e| ConfigError::new(name("cloud66.forget-missing-after"), e))?;
    Ok(Some(config))
}

/// The API token from `--cloud66.api-token` (or its variable, or `CLOUD66_API_TOKEN`) or
/// from `--cloud66.api-token-file`; at most one of the two flags may be set.
fn api_token(
    parsed: &Parsed,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let cli = &parsed.cli;
    let given = match &cli.cloud66_api_token {
        Some(token) => Some((parsed.name("cloud66.api-token"), token.clone())),
        None => env(FALLBACK_API_TOKEN_ENV)
            .filter(|token| !token.is_empty())
            .map(|token| {
                let name = format!("--cloud66.api-token (from {FALLBACK_API_TOKEN_ENV})");
                (name, token)
            }),
    };
    let file_name = parsed.name("cloud66.api-token-file");
    match (given, &cli.cloud66_api_token_file) {
        (Some((token_name, _)), Some(_)) => {
            let reason = format!("cannot be combined with {token_name}; give at most one");
            Err(ConfigError::new(file_name, reason))
        }
        (Some((name, token)), None) => {
            check_api_token(&token).map_err(|reason| ConfigError::new(name, reason))?;
            Ok(Some(token))
        }
        (None, Some(path)) => read_token_file(path, check_api_token)
            .map(Some)
            .map_err(|reason| ConfigError::new(file_name, reason)),
        (None, None) => Ok(None),
    }
}

/// The token goes into an HTTP header, so it must be visible ASCII only. Reasons never
/// quote the token: it is a secret.
fn check_api_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("must not be empty".to_owned());
    }
    match token.chars().position(|c| !c.is_ascii_graphic()) {
        Some(index) => Err(format!(
            "must contain only visible ASCII characters, without spaces (character {} is not)",
            index + 1
        )),
        None => Ok(()),
    }
}

/// An `http://` or `https://` URL with a host and no query, fragment or user info,
/// returned without a trailing `/`.
fn api_url(text: &str) -> Result<String, String> {
    // Checked before anything quotes the URL, which would show the password.
    let after_scheme = text.split_once("://").map_or(text, |(_, rest)| rest);
    if let Some(authority) = after_scheme.split(['/', '?', '#']).next()
        && authority.contains('@')
    {
        return Err("must not contain user info (user:password@)".to_owned());
    }
    let shape = || format!("{text:?} is not an http:// or https:// URL");
    let uri: http::Uri = text.parse().map_err(|_| shape())?;
    let scheme = match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => "http",
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => "https",
        _ => return Err(shape()),
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    // `http::Uri` accepts any digits after the colon; a port must fit in 16 bits.
    if let Some(port) = authority
        .strip_prefix(host)
        .and_then(|p| p.strip_prefix(':'))
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{text:?} has an invalid port"));
    }
    // `http::Uri` silently drops a fragment, so look for it in the text.
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{path}"))
}

/// The certificates of a PEM file; at least one is required, and each must be usable
/// as a trust anchor.
pub(super) fn pem_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let failed = |e: pem::Error| match e {
        pem::Error::Io(e) => format!("cannot read {path:?}: {}", one_line(&e.to_string())),
        e => format!("{path:?} is not valid PEM: {}", one_line(&e.to_string())),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (index, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| {
            let reason = one_line(&e.to_string());
            format!(
                "certificate {} in {path:?} is not usable: {reason}",
                index + 1
            )
        })?;
    }
    Ok(certs)
}

/// The items of a comma-separated list, trimmed, without empty ones.
fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Checks a stack uid: 1 to 64 of `A-Z a-z 0-9 _ -`.
fn check_uid(uid: &str) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if uid.is_empty() || uid.len() > MAX_UID_CHARS || !uid.chars().all(valid) {
        return Err(format!(
            "{uid:?} is not a stack uid (1 to {MAX_UID_CHARS} of A-Z a-z 0-9 _ -)"
        ));
    }
    Ok(())
}

/// The stack uids of a comma-separated list, without duplicates, in the order given.
fn stacks(text: &str) -> Result<Vec<String>, String> {
    let mut stacks: Vec<String> = Vec::new();
    for uid in items(text) {
        check_uid(uid)?;
        if !stacks.iter().any(|known| known == uid) {
            stacks.push(uid.to_owned());
        }
    }
    if stacks.is_empty() {
        return Err("lists no stack uid".to_owned());
    }
    Ok(stacks)
}

/// The `UID=ID` pairs of a comma-separated list, ids in canonical decimal, without
/// duplicates, in the order given. A uid may have only one id and an id only one uid.
fn stack_ids(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for item in items(text) {
        let Some((uid, id)) = item.split_once('=') else {
            return Err(format!("{item:?} is not UID=ID"));
        };
        let (uid, id) = (uid.trim(), id.trim());
        check_uid(uid)?;
        let id = stack_id(id).ok_or_else(|| {
            format!("{id:?} in {item:?} is not a stack id (a non-negative integer)")
        })?;
        if let Some((_, known)) = pairs.iter().find(|(known, _)| known == uid) {
            if *known == id {
                continue;
            }
            return Err(format!("{uid:?} is given two ids, {known} and {id}"));
        }
        if let Some((other, _)) = pairs.iter().find(|(_, known)| *known == id) {
            return Err(format!("{other:?} and {uid:?} both have id {id}"));
        }
        pairs.push((uid.to_owned(), id));
    }
    if pairs.is_empty() {
        return Err("lists no UID=ID pair".to_owned());
    }
    Ok(pairs)
}

/// A stack id in canonical decimal (`"0123"` gives `"123"`), as webhook stack ids are.
fn stack_id(text: &str) -> Option<String> {
    // `u64::from_str` would also take a leading `+`; only digits are an id.
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().map(|id| id.to_string())
}

/// `--cloud66.sync-interval`: a duration from a minute to a week.
fn sync_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if !(MIN_SYNC_INTERVAL..=MAX_SYNC_INTERVAL).contains(&interval) {
        return Err(format!("must be from 1m to 7d, got {text}"));
    }
    Ok(interval)
}

/// Checks a count against its range.
fn bounded(value: u64, min: u32, max: u32) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(count) if (min..=max).contains(&count) => Ok(count),
        _ => Err(format!("must be from {min} to {max}, got {value}")),
    }
}

/// Units of a duration, longest first, with their length in milliseconds.
const UNITS: &[(&str, u64)] = &[
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a Prometheus-style duration: one or more `<integer><unit>` with units `w`, `d`,
/// `h`, `m`, `s` and `ms`, each at most once and longest first (`1h30m`, `90s`), or `0`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 90s, 15m or 1h30m");
    match text {
        "" => return Err(invalid()),
        "0" => return Ok(Duration::ZERO),
        _ => {}
    }
    let mut rest = text;
    let mut millis: u64 = 0;
    // Index in `UNITS` of the next unit allowed: each must be shorter than the last.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let index = UNITS[next_unit..]
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(invalid)?
            + next_unit;
        let too_long = || format!("{text:?} is too long");
        let number: u64 = number.parse().map_err(|_| too_long())?;
        millis = number
            .checked_mul(UNITS[index].1)
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(too_long)?;
        next_unit = index + 1;
        rest = after;
    }
    Ok(Duration::from_millis(millis))
}
