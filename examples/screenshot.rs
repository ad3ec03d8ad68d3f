//! Screenshots of the status page and of one certificate's detail page, for README: an
//! in-process exporter on 127.0.0.1 seeded through real webhooks with the test fleet
//! (`tests/common/fleet.rs`: certificates across stacks in every state, with histories),
//! a fake Cloud66 API (`tests/common/fake_cloud66.rs`) that names the stacks and adds two
//! certificates only the API knows, and headless Chromium at 1280 px width
//! (`tests/common/chromium.rs`). Run by `scripts/screenshot`:
//!
//! ```sh
//! cargo run --release --example screenshot -- docs/images
//! ```
//!
//! Writes `status-page.png` and `certificate-detail.png` into the directory given.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use common::fake_cloud66::FakeCloud66;
use common::{TestServer, chromium, fleet};

/// Cloud66 stack names for the fleet's stack ids, in ascending id order.
const STACK_NAMES: &[&str] = &[
    "Storefront",
    "Payments API",
    "Marketing sites",
    "Internal tools",
    "Legacy platform",
    "Data pipeline",
];

#[tokio::main]
async fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "docs/images".into()),
    );
    std::fs::create_dir_all(&out).expect("output directory");
    let storage = tempfile::tempdir().expect("temporary storage");

    // Seed through webhooks first, then restart with the API reconciliation, which
    // then knows each stack's uid by the configured id.
    let server = TestServer::start(storage.path()).await;
    let seeded = fleet::seed(server.addr, false).await;
    server.stop().await;
    eprintln!(
        "seeded {} certificates on stacks {:?} with {} deliveries",
        seeded.certificates.len(),
        seeded.stacks(),
        seeded.deliveries
    );

    let fake = FakeCloud66::start().await;
    let mut stack_ids = Vec::new();
    for (index, stack) in seeded.stacks().into_iter().enumerate() {
        let uid = format!("{:032x}", 0x5a5a_0000_u64 + stack);
        let name = STACK_NAMES.get(index).copied().unwrap_or("Other");
        fake.add_stack(&uid, name, "production");
        stack_ids.push((uid.clone(), stack.to_string()));
        if index == 0 {
            // Two certificates nobody sent a webhook about yet: the API fills them in.
            let expires =
                |days: i64| fleet::rfc3339(seeded.now + days * fleet::DAY + fleet::DAY / 2);
            fake.set_certificates(
                &uid,
                vec![
                    FakeCloud66::certificate(
                        "api-only-1",
                        "checkout.example.com",
                        "checkout.example.com",
                        serde_json::json!(1),
                        Some(&expires(44)),
                        true,
                    ),
                    FakeCloud66::certificate(
                        "api-only-2",
                        "partners.example.com",
                        "partners.example.com,api.partners.example.com",
                        serde_json::json!(1),
                        Some(&expires(12)),
                        false,
                    ),
                ],
            );
        }
    }
    let server = common::sync::start(storage.path(), &fake, |cloud66| {
        cloud66.stack_ids = stack_ids;
    })
    .await;
    let status = common::sync::first_sync(&server).await;
    eprintln!("first sync: {status}");
    // A delivery after the restart, so the summary shows what the last one was.
    let renewal = common::payload(
        fleet::INSTALL_OK,
        chrono::Utc::now().timestamp() - 240,
        fleet::HISTORY_STACK,
        "status.shopfront.io",
        serde_json::json!({
            "server_names": "status.shopfront.io",
            "cert_expiry": fleet::rfc3339(seeded.now + 89 * fleet::DAY + fleet::DAY / 2),
        }),
    );
    let reply = server.post_event(&renewal).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let base = format!("http://{}", server.addr);
    let page = out.join("status-page.png");
    chromium::screenshot(&format!("{base}/"), &page, 1280, 2600).await;
    eprintln!("wrote {}", page.display());
    let detail = out.join("certificate-detail.png");
    let url = format!(
        "{base}/certificates/{}/{}",
        fleet::HISTORY_STACK,
        fleet::HISTORY_NAME
    );
    chromium::screenshot(&url, &detail, 1280, 1700).await;
    eprintln!("wrote {}", detail.display());
    server.stop().await;
    fake.stop().await;
}
