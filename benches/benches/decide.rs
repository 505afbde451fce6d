//! Deciding whole clusters: 1k, 10k and 100k volumes, 3 diskful replicas
//! each, 50 nodes with 5 topology properties, mixed policies, ~10% drifted.

use affinity_benches::cluster;
use affinity_core::Planner;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for volumes in [1_000, 10_000, 100_000] {
        let fixture = cluster(volumes);
        let summary = Planner::new(&fixture.linstor, &fixture.storage_classes, &fixture.settings)
            .plan(&fixture.pvs)
            .summary();
        eprintln!("{volumes} volumes: {summary:?}");
        group.throughput(Throughput::Elements(volumes as u64));
        if volumes >= 100_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::from_parameter(volumes), &fixture, |b, fixture| {
            b.iter(|| {
                Planner::new(&fixture.linstor, &fixture.storage_classes, &fixture.settings)
                    .plan(&fixture.pvs)
                    .decisions
                    .len()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
