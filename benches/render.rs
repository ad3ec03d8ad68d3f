//! The scrape: `Metrics::render` of 1k, 10k and 100k certificates, and the state
//! snapshot a scrape takes first (the only part that holds the state's lock).

mod common;

use std::hint::black_box;
use std::time::Duration;

use cloud66_ssl_exporter::metrics::Metrics;
use cloud66_ssl_exporter::state::State;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Fleet sizes from the goals.
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// Scrape time: 2024-02-01, while the fleet's certificates are still valid.
const NOW: f64 = (common::EPOCH + 31 * 86_400) as f64;

fn render(c: &mut Criterion) {
    let metrics = Metrics::new().expect("metrics registry");
    let mut group = c.benchmark_group("render");
    for n in SIZES {
        let certs = common::fleet(n);
        let bytes = metrics.render(&certs, NOW).len();
        eprintln!(
            "render/{n}: {bytes} bytes, {} bytes per certificate",
            bytes / n
        );
        group.throughput(Throughput::Elements(n as u64));
        if n >= 100_000 {
            // About 0.1 s an iteration: ten samples keep the whole run short.
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(10));
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &certs, |b, certs| {
            b.iter(|| metrics.render(black_box(certs), NOW))
        });
    }
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    let n = 100_000;
    let state = State::new(common::fleet(n).iter().map(|cert| (**cert).clone()));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| black_box(&state).snapshot())
    });
    group.finish();
}

criterion_group!(benches, render, snapshot);
criterion_main!(benches);
