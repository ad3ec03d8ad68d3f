//! The JSON API's list: filtering, sorting, building the views and serialising
//! `GET /api/v1/certificates` for 1k and 10k certificates, as the handler does.

mod common;

use std::hint::black_box;

use cloud66_ssl_exporter::view::{CertState, Filter, StackNames};
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

criterion_group!(benches, list);
criterion_main!(benches);
