//! `webhook::parse` (JSON, validation and the duplicate digest) of each documented
//! payload: the CPU work of one webhook before it reaches storage.

mod common;

use std::hint::black_box;

use cloud66_ssl_exporter::webhook;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, body) in common::FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| webhook::parse(black_box(body.as_bytes())).expect("valid fixture"))
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
