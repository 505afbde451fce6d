//! Deciding whole clusters: 1k, 10k and 100k volumes, 3 diskful replicas
//! each, 50 nodes with 5 topology properties, mixed policies, ~10% drifted.
//!
//! Measured twice: wall time, and the thread's CPU time (robust to other
//! load on the machine).

use affinity_benches::cluster;
use affinity_benches::cpu_time::ThreadCpuTime;
use affinity_core::Planner;
use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn decide<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let mut group = c.benchmark_group(name);
    for volumes in SIZES {
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

fn decide_wall(c: &mut Criterion) {
    decide(c, "decide");
}

fn decide_cpu(c: &mut Criterion<ThreadCpuTime>) {
    if ThreadCpuTime::available() {
        decide(c, "decide-cpu");
    }
}

criterion_group!(wall, decide_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = decide_cpu
}
criterion_main!(wall, cpu);
