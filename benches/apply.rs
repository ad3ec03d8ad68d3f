//! `Certificate::apply` of one event: in place, and as the storage writer does it
//! (copy the current state, apply, share the result).

mod common;

use std::hint::black_box;
use std::sync::Arc;

use cloud66_ssl_exporter::state::Certificate;
use criterion::{Criterion, criterion_group, criterion_main};

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    for (name, body) in common::FIXTURES {
        let event = common::ssl_event(body);
        let mut cert = Certificate::new(&event.stack, &event.name);
        cert.apply(&event);
        group.bench_function(name, |b| b.iter(|| cert.apply(black_box(&event))));
    }
    // The writer never mutates a published certificate: it copies it, applies the
    // event and publishes a new `Arc`, so that is the cost per accepted webhook.
    let current = Arc::new(common::certificate(1));
    let event = common::ssl_event(&common::payload(1, false));
    group.bench_function("copy-apply-share", |b| {
        b.iter(|| {
            let mut next = Certificate::clone(black_box(&current));
            next.apply(black_box(&event));
            Arc::new(next)
        })
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
