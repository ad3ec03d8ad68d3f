//! The JSON API's list: filtering, sorting, building the views and serialising
//! `GET /api/v1/certificates` for 1k and 10k certificates, as the handler does; and the
//! status page `GET /`: summary, state counts, the list and its HTML, with the default
//! 500 rows and with every row (`?limit=all`).

mod common;

use std::hint::black_box;
use std::sync::Arc;

use cloud66_ssl_exporter::state::Certificate;
use cloud66_ssl_exporter::ui::Links;
use cloud66_ssl_exporter::ui::status::{DEFAULT_ROWS, StatusPage, render};
use cloud66_ssl_exporter::view::{CertState, Filter, Overview, StackNames};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Request time: 2024-02-01, while the fleet's certificates are still valid.
const NOW: f64 = (common::EPOCH + 31 * 86_400) as f64;

fn list(c: &mut Criterion) {
    let mut group = c.benchmark_group("view");
    let names: StackNames = (1000..1500)
        .map(|stack| (stack.to_string(), format!("shop-stack-{stack}")))
        .collect();
    for n in [1_000, 10_000] {
        let certs = common::fleet(n);
        let all = Filter::default();
        let bytes = serde_json::to_vec(&all.apply(&certs, NOW, &names))
            .expect("serialises")
            .len();
        eprintln!(
            "view/{n}: {bytes} bytes, {} bytes per certificate",
            bytes / n
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("all", n), &certs, |b, certs| {
            b.iter(|| serde_json::to_vec(&all.apply(black_box(certs), NOW, &names)))
        });
        let failing = Filter {
            state: Some(CertState::Failing),
            q: Some("example".into()),
            ..Filter::default()
        };
        group.bench_with_input(BenchmarkId::new("filtered", n), &certs, |b, certs| {
            b.iter(|| serde_json::to_vec(&failing.apply(black_box(certs), NOW, &names)))
        });
    }
    group.finish();
}

/// The status page as its handler builds it, for `filter`.
fn page(certs: &[Arc<Certificate>], filter: &Filter, names: &StackNames) -> String {
    render(&StatusPage {
        links: Links {
            metrics: "/metrics",
        },
        now: NOW,
        filter,
        overview: &Overview::of(certs, filter, NOW, names),
        last_delivery: None,
        storage: Ok(()),
        started_at: NOW - 3_600.0,
        sync: None,
        auth_enabled: true,
    })
}

fn status_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("page");
    let names: StackNames = (1000..1500)
        .map(|stack| (stack.to_string(), format!("shop-stack-{stack}")))
        .collect();
    let certs = common::fleet(10_000);
    let first = Filter {
        limit: Some(DEFAULT_ROWS),
        ..Filter::default()
    };
    let all = Filter::default();
    for (label, filter) in [("first_500", &first), ("all", &all)] {
        eprintln!(
            "page/{label}/10000: {} bytes",
            page(&certs, filter, &names).len()
        );
        group.bench_with_input(BenchmarkId::new(label, 10_000), &certs, |b, certs| {
            b.iter(|| page(black_box(certs), filter, &names))
        });
    }
    group.finish();
}

criterion_group!(benches, list, status_page);
criterion_main!(benches);
