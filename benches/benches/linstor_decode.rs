//! Decoding a large `/v1/view/resources` answer: 10,000 resource definitions with 3 replicas
//! each (30,000 resources, one volume each, with the DRBD layer object), as the simulator
//! renders it.
//!
//! Before the Criterion runs, the benchmark prints two lines of its own:
//!
//! - memory: a counting global allocator tracks the bytes in use. The peak is reset just before
//!   decoding, so "peak extra heap" is the most heap the decode needed on top of what was already
//!   allocated (the body included); the ratio divides it by the body size. "Retained" is what the
//!   decoded value keeps after decoding.
//! - throughput: a few decodes timed by wall clock and by the thread's CPU time (from
//!   `/proc/thread-self/schedstat`, where available), in MB/s (10^6 bytes per second), next to the
//!   load average, since wall-clock figures on a loaded machine include time spent waiting.
//!
//! Criterion then measures `view_resources_30k` (decoding only: the decoded value is dropped
//! outside the timed section) and `view_resources_30k_with_drop` (decoding and dropping the
//! result), and `split_view_resources_30k` (finding the elements as the streaming decode does,
//! in 16 KiB chunks, without decoding them); its throughput is in MiB/s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use linstor_api::client::decode_json;
use linstor_api::json_array::ArraySplitter;
use linstor_api::models::ResourceWithVolumes;
use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState};

/// Global allocator that tracks bytes in use and their peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const DEFINITIONS: usize = 10_000;
const REPLICAS: usize = 3;
const NODES: usize = 30;

fn cluster() -> SimState {
    let mut s = SimState::default();
    for i in 0..NODES {
        s.nodes.push(
            SimNode::new(format!("worker-{i:02}"))
                .prop("Aux/topology/kubernetes.io/hostname", format!("worker-{i:02}"))
                .prop(
                    "Aux/topology/topology.kubernetes.io/zone",
                    format!("zone-{}", i % 3),
                ),
        );
    }
    for d in 0..DEFINITIONS {
        let mut rd =
            SimResourceDefinition::new(format!("pvc-{d:08x}-5c1f-4c2e-9a51-2f0d3f1e7a01"), 1_048_576);
        for r in 0..REPLICAS {
            rd = rd.resource(SimResource::diskful(format!("worker-{:02}", (d + r * 7) % NODES)));
        }
        s.resource_definitions.push(rd);
    }
    s.normalize();
    s
}

fn body() -> Vec<u8> {
    let view = cluster().view_resources(&[], &[], &[]);
    serde_json::to_vec(&view).unwrap_or_default()
}

fn decode(body: &[u8]) -> Vec<ResourceWithVolumes> {
    match decode_json::<Vec<ResourceWithVolumes>>("GET /v1/view/resources", body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("decode failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Elements of `body` found by the streaming splitter, fed in chunks of the size an HTTP body
/// arrives in.
fn split(body: &[u8]) -> usize {
    const CHUNK: usize = 16 * 1024;
    let mut splitter = ArraySplitter::new();
    let mut elements = 0;
    for chunk in body.chunks(CHUNK) {
        let fed = splitter.feed(chunk, |_| {
            elements += 1;
            Ok::<(), ()>(())
        });
        if fed.is_err() {
            eprintln!("splitting failed: {fed:?}");
            std::process::exit(1);
        }
    }
    elements
}

/// Seconds of CPU time this thread has used, if the platform tells.
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn report_memory(body: &[u8]) {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let decoded = decode(body);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let retained = CURRENT.load(Ordering::Relaxed) - before;
    let mb = |b: usize| b as f64 / 1_000_000.0;
    println!(
        "linstor_decode memory: {} resources, body {:.1} MB; peak extra heap while decoding \
         {:.1} MB = {:.2}x the body (body + peak extra = {:.2}x the body); the decoded value \
         retains {:.1} MB ({:.2}x the body)",
        decoded.len(),
        mb(body.len()),
        mb(peak),
        peak as f64 / body.len() as f64,
        (peak + body.len()) as f64 / body.len() as f64,
        mb(retained),
        retained as f64 / body.len() as f64,
    );
    drop(decoded);
}

fn report_throughput(body: &[u8]) {
    const RUNS: u32 = 5;
    let load = load_average();
    let (mut wall, mut cpu) = (0.0, Some(0.0));
    for _ in 0..RUNS {
        let cpu0 = thread_cpu_seconds();
        let t0 = std::time::Instant::now();
        let decoded = decode(std::hint::black_box(body));
        wall += t0.elapsed().as_secs_f64();
        cpu = match (cpu, cpu0, thread_cpu_seconds()) {
            (Some(sum), Some(a), Some(b)) => Some(sum + (b - a)),
            _ => None,
        };
        drop(decoded);
    }
    let mbps = |secs: f64| body.len() as f64 * f64::from(RUNS) / secs / 1_000_000.0;
    let cpu_text = cpu.map_or_else(|| "n/a".to_owned(), |c| format!("{:.0} MB/s", mbps(c)));
    println!(
        "linstor_decode throughput (decode only, mean of {RUNS}): {:.0} MB/s wall clock, {cpu_text} \
         on thread CPU time; load average {load} on {} CPUs",
        mbps(wall),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
}

fn bench(c: &mut Criterion) {
    let body = body();
    report_memory(&body);
    report_throughput(&body);
    let mut g = c.benchmark_group("linstor_decode");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(20);
    g.bench_function("view_resources_30k", |b| {
        b.iter_batched(
            || (),
            |()| decode(std::hint::black_box(&body)),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("view_resources_30k_with_drop", |b| {
        b.iter(|| decode(std::hint::black_box(&body)))
    });
    g.bench_function("split_view_resources_30k", |b| {
        b.iter(|| split(std::hint::black_box(&body)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
