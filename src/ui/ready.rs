//! The page a browser gets at the webhook URL with a valid token: a person who pasted
//! the URL learns that it works and what arrived last. It never shows the token.

use maud::html;

use super::status::last_delivery;
use super::{Links, page};
use crate::metrics::LastDelivery;

/// The page, with the last delivery as of Unix time `now`.
pub fn render(last: Option<&LastDelivery>, now: f64, links: &Links<'_>) -> String {
    page(
        "Cloud66 SSL exporter: webhook URL",
        links,
        html! {
            h1 { "This URL is ready: Cloud66 POSTs deliveries here" }
            p {
                "Enter it in Cloud66 (Account settings, Notifications, Webhook) and press the test "
                "button; the test is acknowledged as ignored (it is not an SSL event) and shows up "
                "below when you reload this page."
            }
            h2 { "Last delivery" }
            p #last-delivery {
                @match last {
                    Some(last) => (last_delivery(last, now)),
                    None => "No delivery received yet.",
                }
            }
            p { "Certificates, metrics and set-up: " a href="/" { "the exporter's status page" } "." }
        },
    )
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{SeenDelivery, WebhookResult};

    #[test]
    fn escapes_what_the_sender_named() {
        let hostile = LastDelivery {
            at: 1_719_792_000.0,
            seen: Some(SeenDelivery {
                event_type: Some("<script>'x'&</script>".into()),
                result: WebhookResult::Ignored,
            }),
        };
        let links = Links {
            metrics: "/metrics",
        };
        let page = render(Some(&hostile), 1_719_792_001.0, &links);
        assert!(page.contains("This URL is ready: Cloud66 POSTs deliveries here"));
        assert!(
            page.contains("<code>&lt;script&gt;'x'&amp;&lt;/script&gt;</code>"),
            "{page}"
        );
        assert!(!page.contains("<script>"));
        assert!(page.contains("(1 second ago)"));
        assert!(page.contains("ignored (not an SSL event)"));
        assert!(render(None, 0.0, &links).contains("No delivery received yet."));
    }
}
