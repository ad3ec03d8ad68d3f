//! The landing page at `/`: what this is, where things are, how to configure Cloud66.
//! It never shows the webhook token.

use crate::config::AppConfig;

/// The HTML of the landing page.
pub fn index(config: &AppConfig, auth_enabled: bool) -> String {
    let metrics = html_escape(&config.telemetry_path);
    let webhook = if auth_enabled {
        "<code>https://&lt;this-host&gt;/webhook/&lt;token&gt;</code> (or <code>?token=&lt;token&gt;</code>). \
         The token is the one you configured with <code>--webhook.token</code>, or the one \
         this exporter generated and logged at its first start."
    } else {
        "<code>https://&lt;this-host&gt;/webhook</code>. <strong>Authentication is disabled</strong> \
         (<code>--webhook.insecure-no-auth</code>): anyone who can reach this port can send events."
    };
    format!(
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
<h2>Configure Cloud66</h2>
<p>In Cloud66, open Account settings, Notifications, Webhook, and enter the URL {webhook}
Use the test button to check the connection: other event types are accepted and ignored.</p>
</body>
</html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        revision = crate::GIT_REVISION,
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_the_configured_metrics_path_escaped() {
        let mut config = AppConfig::new("/tmp/x");
        config.telemetry_path = "/m\"<x>".into();
        let page = index(&config, true);
        assert!(page.contains(r#"<a href="/m&quot;&lt;x&gt;">Metrics</a>"#));
        assert!(page.contains("/webhook/&lt;token&gt;"));
        assert!(index(&config, false).contains("Authentication is disabled"));
    }
}
