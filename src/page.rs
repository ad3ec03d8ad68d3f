//! The pages for people: the landing page at `/` (what this is, where things are, how
//! to configure Cloud66, what arrived last), and the page a browser gets at the webhook
//! URL. Neither ever shows the webhook token: the webhook URL's page is reached with
//! it, and nothing on it needs it.

use chrono::DateTime;

use crate::config::AppConfig;
use crate::metrics::{LastDelivery, WebhookResult};

/// The landing page, kept as the parts that depend only on configuration (rendered
/// once) around the one line that changes with each delivery (rendered per request).
pub struct Index {
    /// Everything before the last-delivery line.
    before: String,
    /// Everything after it.
    after: String,
}

impl Index {
    /// Renders the fixed parts.
    pub fn new(config: &AppConfig, auth_enabled: bool) -> Index {
        let metrics = html_escape(&config.telemetry_path);
        let webhook = if auth_enabled {
            "<code>https://&lt;this-host&gt;/webhook/&lt;token&gt;</code> (or <code>?token=&lt;token&gt;</code>). \
             The token is the one you configured with <code>--webhook.token</code>, or the one \
             this exporter generated and logged at its first start."
        } else {
            "<code>https://&lt;this-host&gt;/webhook</code>. <strong>Authentication is disabled</strong> \
             (<code>--webhook.insecure-no-auth</code>): anyone who can reach this port can send events."
        };
        let before = format!(
            r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Cloud66 SSL exporter</title></head>
<body>
<h1>Cloud66 SSL exporter</h1>
<p>Turns Cloud66 SSL certificate webhooks (<code>ssl_certificate.expire.soon</code>,
<code>ssl_certificate.install.ok</code>, <code>ssl_certificate.install.fail</code>) into Prometheus metrics.
Version {version} (revision {revision}).</p>
<ul>
<li><a href="{metrics}">Metrics</a></li>
<li><a href="/healthz">Health</a></li>
<li><a href="/readyz">Readiness</a></li>
</ul>
<h2>Last delivery</h2>
"#,
            version = env!("CARGO_PKG_VERSION"),
            revision = crate::GIT_REVISION,
        );
        let after = format!(
            r#"<h2 id="configure">Configure Cloud66</h2>
<p>In Cloud66, open Account settings, Notifications, Webhook, and enter the URL {webhook}
Use the test button to check the connection: other event types are accepted and ignored,
and the test shows up above as the last delivery. Opening the webhook URL in a browser
shows whether it is ready.</p>
</body>
</html>
"#
        );
        Index { before, after }
    }

    /// The whole page, with the last delivery as of Unix time `now`.
    pub fn render(&self, last: Option<&LastDelivery>, now: f64) -> String {
        let line = match last {
            Some(last) => last_delivery(last, now),
            None => "No delivery received yet: configure Cloud66 as described \
                     <a href=\"#configure\">below</a> and press its test button."
                .to_owned(),
        };
        [self.before.as_str(), "<p>", &line, "</p>\n", &self.after].concat()
    }
}

/// The page for `GET` of the webhook URL with a valid token: a person who pasted the
/// URL into a browser learns that it works and what arrived last, as of Unix time `now`.
pub fn webhook_ready(last: Option<&LastDelivery>, now: f64) -> String {
    let line = match last {
        Some(last) => last_delivery(last, now),
        None => "No delivery received yet.".to_owned(),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">
<title>Cloud66 SSL exporter: webhook URL</title></head>
<body>
<h1>This URL is ready: Cloud66 POSTs deliveries here</h1>
<p>Enter it in Cloud66 (Account settings, Notifications, Webhook) and press the test button;
the test is acknowledged as ignored (it is not an SSL event) and shows up below when you
reload this page.</p>
<h2>Last delivery</h2>
<p>{line}</p>
<p>Metrics, health and set-up: <a href="/">the exporter's overview</a>.</p>
</body>
</html>
"#
    )
}

/// One sentence (HTML) on `last`: when, how long ago, which event type, how it ended.
fn last_delivery(last: &LastDelivery, now: f64) -> String {
    let when = format!(
        "<time datetime=\"{utc}\">{utc}</time> ({age})",
        utc = utc(last.at),
        age = age(now - last.at),
    );
    let Some(seen) = &last.seen else {
        return format!(
            "{when}; what it was is not known: the exporter restarted since, and keeps \
             only the time of the newest stored event."
        );
    };
    let event_type = match &seen.event_type {
        Some(event_type) => format!("event type <code>{}</code>", html_escape(event_type)),
        None => "no event type".to_owned(),
    };
    let result = match seen.result {
        WebhookResult::Accepted => "accepted: an SSL event, stored and applied",
        WebhookResult::Duplicate => "duplicate: the same delivery was already stored",
        WebhookResult::Ignored => "ignored: not an SSL event, acknowledged and not stored",
        WebhookResult::OverLimit => {
            "refused: a new certificate beyond <code>--storage.max-certificates</code>"
        }
        // Only the four above are recorded as the last delivery; any other shows its label.
        other => other.as_str(),
    };
    format!("{when}, {event_type}, {result}.")
}

/// Unix seconds as ISO 8601 in UTC, to the second.
fn utc(at: f64) -> String {
    // `as` saturates; times beyond chrono's range fall back to the number.
    DateTime::from_timestamp(at.floor() as i64, 0).map_or_else(
        || format!("{at} (Unix time)"),
        |time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// How long ago something `seconds` old happened, in the largest whole unit.
fn age(seconds: f64) -> String {
    if seconds < -1.0 {
        // The clock went back since (or storage came from a machine ahead of this one).
        return "in the future by this server's clock".to_owned();
    }
    if seconds < 1.0 {
        return "just now".to_owned();
    }
    let whole = seconds.floor() as u64;
    let (count, unit) = match whole {
        0..60 => (whole, "second"),
        60..3_600 => (whole / 60, "minute"),
        3_600..172_800 => (whole / 3_600, "hour"),
        _ => (whole / 86_400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} ago")
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SeenDelivery;

    /// 2024-07-01T00:00:00Z.
    const AT: f64 = 1_719_792_000.0;

    fn seen(event_type: Option<&str>, result: WebhookResult) -> LastDelivery {
        LastDelivery {
            at: AT,
            seen: Some(SeenDelivery {
                event_type: event_type.map(str::to_owned),
                result,
            }),
        }
    }

    #[test]
    fn links_the_configured_metrics_path_escaped() {
        let mut config = AppConfig::new("/tmp/x");
        config.telemetry_path = "/m\"<x>".into();
        let page = Index::new(&config, true).render(None, AT);
        assert!(page.contains(r#"<a href="/m&quot;&lt;x&gt;">Metrics</a>"#));
        assert!(page.contains("/webhook/&lt;token&gt;"));
        let open = Index::new(&config, false).render(None, AT);
        assert!(open.contains("Authentication is disabled"));
    }

    #[test]
    fn index_says_what_arrived_last_or_that_nothing_did() {
        let index = Index::new(&AppConfig::new("/tmp/x"), true);
        let none = index.render(None, AT);
        assert!(none.contains("<p>No delivery received yet: configure Cloud66"));
        let last = seen(Some("stack.redeploy.ok"), WebhookResult::Ignored);
        let page = index.render(Some(&last), AT + 300.0);
        assert!(page.contains(
            "<p><time datetime=\"2024-07-01T00:00:00Z\">2024-07-01T00:00:00Z</time> \
             (5 minutes ago), event type <code>stack.redeploy.ok</code>, ignored: not an SSL \
             event, acknowledged and not stored.</p>"
        ));
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn last_delivery_names_no_event_type_and_unknowns_after_restart() {
        let test = last_delivery(&seen(None, WebhookResult::Ignored), AT);
        assert!(
            test.contains("(just now), no event type, ignored"),
            "{test}"
        );
        let ssl = seen(Some("ssl_certificate.install.ok"), WebhookResult::Duplicate);
        assert!(last_delivery(&ssl, AT + 7_200.0).contains("(2 hours ago), event type"));
        let restored = LastDelivery { at: AT, seen: None };
        let text = last_delivery(&restored, AT + 3.0 * 86_400.0);
        assert!(
            text.contains("(3 days ago); what it was is not known"),
            "{text}"
        );
    }

    #[test]
    fn the_webhook_page_escapes_what_the_sender_named() {
        let hostile = seen(Some("<script>'x'&</script>"), WebhookResult::Ignored);
        let page = webhook_ready(Some(&hostile), AT + 1.0);
        assert!(page.contains("This URL is ready: Cloud66 POSTs deliveries here"));
        assert!(page.contains("<code>&lt;script&gt;&#39;x&#39;&amp;&lt;/script&gt;</code>"));
        assert!(!page.contains("<script>"));
        assert!(page.contains(r#"<a href="/">"#));
        assert!(webhook_ready(None, AT).contains("No delivery received yet."));
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let cases = [
            (-30.0, "in the future by this server's clock"),
            (0.4, "just now"),
            (1.0, "1 second ago"),
            (59.9, "59 seconds ago"),
            (60.0, "1 minute ago"),
            (3_599.0, "59 minutes ago"),
            (3_600.0, "1 hour ago"),
            (172_799.0, "47 hours ago"),
            (172_800.0, "2 days ago"),
        ];
        for (seconds, text) in cases {
            assert_eq!(age(seconds), text, "{seconds}");
        }
        assert_eq!(utc(AT + 0.9), "2024-07-01T00:00:00Z");
        assert!(utc(1e300).ends_with(" (Unix time)"));
    }
}
