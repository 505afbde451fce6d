//! Scale benchmark of `linstor-affinity-controller` on a real control plane
//! with the LINSTOR simulator; prints its figures.
//!
//! `N` LINSTOR PVs in sync (single replica, local-only policy, each with
//! `mountOptions`) and bound claims; the release controller binary runs at
//! the default `--reconcile-rate` and we read its time to the end of the
//! first pass and, over several cycles, its resident memory (steady and
//! high-water mark), its CPU time and pass duration per cycle, and the
//! LINSTOR and Kubernetes requests (and LINSTOR bytes) per cycle. With
//! `--drift M`, M replicas then move to another node at once and we time
//! the replacements and the rebinding of the claims.
//!
//! Run through `scripts/bench-controller`, which builds the binaries first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim,
    VolumeNodeAffinity,
};
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use clap::Parser;
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube_harness::{LoggedProcess, TEST_LABEL, TestEnv, VolumeOptions, persistent_volume};
use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState, Simulator};

#[derive(Debug, Parser)]
struct Args {
    /// LINSTOR PVs in the cluster.
    #[arg(long, default_value_t = 2000)]
    pvs: usize,
    /// PVs whose replica moves at once after the steady-state measurement (0: none).
    #[arg(long, default_value_t = 0)]
    drift: usize,
    /// Reconcile cycles measured in steady state.
    #[arg(long, default_value_t = 4)]
    cycles: u64,
    /// `--reconcile-rate` of the controller.
    #[arg(long, default_value = "15s")]
    reconcile_rate: String,
    /// The controller binary (release build).
    #[arg(long)]
    controller: PathBuf,
    /// More flags for the controller.
    #[arg(last = true)]
    controller_args: Vec<String>,
}

const HOSTNAME_KEY: &str = "linbit.com/hostname";

fn on_node(node: &str) -> VolumeNodeAffinity {
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: HOSTNAME_KEY.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![node.to_owned()]),
                }]),
                match_fields: None,
            }],
        }),
    }
}

fn affinity_node(pv: &PersistentVolume) -> Option<&str> {
    pv.spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .first()?
        .match_expressions
        .as_ref()?
        .first()?
        .values
        .as_ref()?
        .first()
        .map(String::as_str)
}

fn pv_phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref()?.phase.as_deref()
}

fn pvc_phase(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.status.as_ref()?.phase.as_deref()
}

/// Creates PV `name` and claim `claim` already bound to each other, in the state the PV binder and
/// the protection controllers leave them (UIDs, annotations, finalizers, `Bound` phases), so that
/// thousands of pairs are set up at the API server's pace rather than the binder's (its client is
/// throttled to 20 requests/s). The claim comes first for its UID; should the binder see it before
/// the PV and mark it `Lost`, the binder's periodic sync binds it again, and the caller waits.
async fn create_bound_pair(env: &TestEnv, name: &str, claim: String, options: VolumeOptions) {
    let mut pvc = env.claim(&claim, name, &options);
    pvc.metadata.annotations = Some(BTreeMap::from([
        ("pv.kubernetes.io/bind-completed".to_owned(), "yes".to_owned()),
        (
            "pv.kubernetes.io/bound-by-controller".to_owned(),
            "yes".to_owned(),
        ),
    ]));
    pvc.metadata.finalizers = Some(vec!["kubernetes.io/pvc-protection".to_owned()]);
    let pvc = env.pvcs().create(&PostParams::default(), &pvc).await.unwrap();
    let mut pv = persistent_volume(name, &env.labels(), &options, Some(TestEnv::claim_ref(&pvc)));
    // Beside the provisioner's finalizer the builder sets.
    pv.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push("kubernetes.io/pv-protection".to_owned());
    env.pvs().create(&PostParams::default(), &pv).await.unwrap();
    let bound = |extra: serde_json::Value| {
        let mut status = serde_json::json!({ "phase": "Bound" });
        status
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Patch::Merge(serde_json::json!({ "status": status }))
    };
    env.pvs()
        .patch_status(name, &PatchParams::default(), &bound(serde_json::json!({})))
        .await
        .unwrap();
    let claim_status = serde_json::json!({
        "accessModes": ["ReadWriteOnce"],
        "capacity": { "storage": options.capacity },
    });
    env.pvcs()
        .patch_status(&claim, &PatchParams::default(), &bound(claim_status))
        .await
        .unwrap();
}

/// When the drifted PVs were replaced and bound again.
struct DriftTimeline {
    first_replaced: Instant,
    all_replaced: Instant,
    all_bound: Instant,
    mount_options_kept: usize,
}

/// A change seen by one of the two watches.
enum Seen {
    Volume(Box<Event<PersistentVolume>>),
    Claim(Box<Event<PersistentVolumeClaim>>),
}

/// Watches the benchmark's PVs and claims (`ready` fires once both are listed) until every PV in
/// `drifted` has its affinity on `target` and is `Bound`, and every claim is `Bound`.
async fn watch_drift(
    pvs: Api<PersistentVolume>,
    pvcs: Api<PersistentVolumeClaim>,
    label: ListParams,
    drifted: BTreeSet<String>,
    target: String,
    ready: tokio::sync::oneshot::Sender<()>,
) -> DriftTimeline {
    let config = watcher::Config::default().labels(label.label_selector.as_deref().unwrap());
    let volumes = watcher::watcher(pvs, config.clone())
        .default_backoff()
        .map(|e| e.map(|event| Seen::Volume(Box::new(event))));
    let claims = watcher::watcher(pvcs, config)
        .default_backoff()
        .map(|e| e.map(|event| Seen::Claim(Box::new(event))));
    let mut events = std::pin::pin!(futures::stream::select(volumes, claims));
    let mut ready = Some(ready);
    let mut listed = 0;
    let mut volume_of: BTreeMap<String, PersistentVolume> = BTreeMap::new();
    let mut claim_phase: BTreeMap<String, Option<String>> = BTreeMap::new();
    let (mut first_replaced, mut all_replaced) = (None, None);
    let mut mount_options_kept = 0;
    while let Some(event) = events.next().await {
        match event {
            Ok(Seen::Volume(event)) => match *event {
                Event::Apply(pv) | Event::InitApply(pv) => {
                    let name = pv.metadata.name.clone().unwrap_or_default();
                    if drifted.contains(&name) {
                        volume_of.insert(name, pv);
                    }
                }
                Event::Delete(pv) => {
                    volume_of.remove(pv.metadata.name.as_deref().unwrap_or_default());
                }
                Event::InitDone => listed += 1,
                Event::Init => {}
            },
            Ok(Seen::Claim(event)) => match *event {
                Event::Apply(pvc) | Event::InitApply(pvc) => {
                    let phase = pvc_phase(&pvc).map(str::to_owned);
                    claim_phase.insert(pvc.metadata.name.clone().unwrap_or_default(), phase);
                }
                Event::Delete(pvc) => {
                    claim_phase.remove(pvc.metadata.name.as_deref().unwrap_or_default());
                }
                Event::InitDone => listed += 1,
                Event::Init => {}
            },
            Err(_) => {}
        }
        if listed < 2 {
            continue;
        }
        if let Some(ready) = ready.take() {
            ready.send(()).unwrap();
        }
        let replaced: Vec<&PersistentVolume> = volume_of
            .values()
            .filter(|pv| affinity_node(pv) == Some(target.as_str()))
            .collect();
        if first_replaced.is_none() && !replaced.is_empty() {
            first_replaced = Some(Instant::now());
        }
        if all_replaced.is_none() && replaced.len() == drifted.len() {
            all_replaced = Some(Instant::now());
            mount_options_kept = replaced
                .iter()
                .filter(|pv| {
                    pv.spec.as_ref().and_then(|spec| spec.mount_options.as_deref())
                        == Some(&["noatime".to_owned()][..])
                })
                .count();
        }
        if let (Some(first_replaced), Some(all_replaced)) = (first_replaced, all_replaced)
            && replaced.iter().all(|pv| pv_phase(pv) == Some("Bound"))
            && claim_phase
                .values()
                .all(|phase| phase.as_deref() == Some("Bound"))
        {
            return DriftTimeline {
                first_replaced,
                all_replaced,
                all_bound: Instant::now(),
                mount_options_kept,
            };
        }
    }
    panic!("the watches ended");
}

/// How many objects of `api` with the label are `Bound`, read with a paged list.
async fn count_bound<K>(api: &Api<K>, label: &ListParams, phase: fn(&K) -> Option<&str>) -> usize
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = label.clone().limit(500);
    let mut bound = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        bound += page
            .items
            .iter()
            .filter(|object| phase(object) == Some("Bound"))
            .count();
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return bound,
        }
    }
}

/// Resident memory of a process, in KiB.
struct Resident {
    total: u64,
    /// The high-water mark since the start.
    peak: u64,
    /// Heap and stacks.
    anonymous: u64,
    /// Mapped files: the binary and its libraries.
    files: u64,
}

/// Resident memory and CPU time (user + system) of a process.
fn usage(pid: u32) -> (Resident, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap()
    };
    let resident = Resident {
        total: kib("VmRSS:"),
        peak: kib("VmHWM:"),
        anonymous: kib("RssAnon:"),
        files: kib("RssFile:"),
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on Linux.
    (resident, Duration::from_millis(ticks * 10))
}

/// Values of the controller's metrics, by series name with labels.
async fn metrics(address: &str) -> BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metric(values: &BTreeMap<String, f64>, name: &str) -> f64 {
    values.get(name).copied().unwrap_or(0.0)
}

fn linstor_requests(sim: &Simulator) -> u64 {
    sim.counters()
        .iter()
        .filter(|(endpoint, _)| endpoint.contains(" /v1/"))
        .map(|(_, count)| count)
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let env = TestEnv::setup("bench")
        .await
        .expect("no Kubernetes cluster: set K8S_BIN_DIR");
    let nodes: Vec<String> = (0..3).map(|i| env.name(&format!("n{i}"))).collect();
    for (i, node) in nodes.iter().enumerate() {
        env.create_node_with_labels(
            &format!("n{i}"),
            BTreeMap::from([(HOSTNAME_KEY.to_owned(), node.clone())]),
        )
        .await;
    }
    let class = env.name("local");
    Api::<StorageClass>::all(env.client())
        .create(
            &PostParams::default(),
            &StorageClass {
                metadata: ObjectMeta {
                    name: Some(class.clone()),
                    ..ObjectMeta::default()
                },
                provisioner: "linstor.csi.linbit.com".to_owned(),
                parameters: Some(BTreeMap::from([(
                    "linstor.csi.linbit.com/allowRemoteVolumeAccess".to_owned(),
                    "false".to_owned(),
                )])),
                ..StorageClass::default()
            },
        )
        .await
        .unwrap();

    // LINSTOR: one resource definition per PV, its replica on node 0 or 1.
    let names: Vec<String> = (0..args.pvs).map(|i| env.name(&format!("v{i}"))).collect();
    let home = |i: usize| nodes[i % 2].clone();
    let state = SimState {
        nodes: nodes.iter().map(SimNode::new).collect(),
        resource_definitions: names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                SimResourceDefinition::new(name, 1 << 20).resource(SimResource::diskful(home(i)))
            })
            .collect(),
        ..SimState::default()
    };
    let sim = Simulator::start(state).await.unwrap();

    // Kubernetes: bound PVs and claims, created concurrently.
    let started = Instant::now();
    let pvs: Api<PersistentVolume> = env.pvs();
    let pvcs: Api<PersistentVolumeClaim> = env.pvcs();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(64, |(i, name)| {
            let options = VolumeOptions {
                storage_class: Some(class.clone()),
                node_affinity: Some(on_node(&home(i))),
                reclaim_policy: "Delete".to_owned(),
                mount_options: vec!["noatime".to_owned()],
                ..VolumeOptions::default()
            };
            create_bound_pair(&env, name, format!("c{i}"), options)
        })
        .await;
    let label = ListParams::default().labels(&format!("{TEST_LABEL}={}", env.prefix()));
    let created = started.elapsed();
    loop {
        let bound_claims = count_bound(&pvcs, &label, pvc_phase).await;
        let bound_volumes = count_bound(&pvs, &label, pv_phase).await;
        if bound_claims == args.pvs && bound_volumes == args.pvs {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!(
        "setup                        {} bound pairs in {:.0} s ({:.0} s to create)",
        args.pvs,
        started.elapsed().as_secs_f64(),
        created.as_secs_f64()
    );

    // The controller.
    let controller = LoggedProcess::spawn(
        Command::new(&args.controller)
            .args([
                "--kubeconfig",
                env.cluster().kubeconfig().to_str().unwrap(),
                "--reconcile-rate",
                &args.reconcile_rate,
                "--bind-address",
                "127.0.0.1:0",
                "--metrics-address",
                "127.0.0.1:0",
            ])
            .args(&args.controller_args)
            .env("LS_CONTROLLERS", sim.http_url().unwrap())
            .env_remove("RUST_LOG"),
    );
    let pid = controller.pid();
    let spawned = Instant::now();
    let metrics_line = controller
        .wait_for_line("metrics endpoint", Duration::from_secs(120))
        .await;
    let address = metrics_line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .unwrap()
        .to_owned();
    let reconciles = "linstor_affinity_controller_reconciles_total{reconciler=\"AffinityReconciler\"}";
    let wait_cycles = |from: f64, cycles: u64| {
        let address = address.clone();
        async move {
            loop {
                let values = metrics(&address).await;
                if metric(&values, reconciles) >= from + cycles as f64 {
                    return values;
                }
                // Once a second: scraping adds CPU to the controller, and Prometheus scrapes far
                // less often.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };

    // Steady state: skip the first cycle (cache fill), then measure.
    let first = wait_cycles(0.0, 1).await;
    let ready = spawned.elapsed();
    let (started_rss, _) = usage(pid);
    assert_eq!(metric(&first, "linstor_affinity_controller_pvs_out_of_sync"), 0.0);
    let cycles0 = metric(&first, reconciles);
    let (_, cpu0) = usage(pid);
    let linstor0 = linstor_requests(&sim);
    let last = wait_cycles(cycles0, args.cycles).await;
    let (rss, cpu1) = usage(pid);
    let cycles = metric(&last, reconciles) - cycles0;
    let linstor = linstor_requests(&sim) - linstor0;
    let per_cycle = |name: &str| (metric(&last, name) - metric(&first, name)) / cycles;
    let duration = |values: &BTreeMap<String, f64>| {
        let series = |suffix: &str| {
            metric(
                values,
                &format!(
                    "linstor_affinity_controller_reconciles_duration_{suffix}{{reconciler=\"AffinityReconciler\"}}"
                ),
            )
        };
        (series("sum"), series("count"))
    };
    let ((sum0, count0), (sum1, count1)) = (duration(&first), duration(&last));
    println!("pvs                          {}", args.pvs);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "first pass done after start  {:.1} s (high-water mark then {:.1} MiB)",
        ready.as_secs_f64(),
        mib(started_rss.peak)
    );
    println!(
        "steady RSS                   {:.1} MiB ({:.1} MiB heap and stacks, {:.1} MiB mapped files)",
        mib(rss.total),
        mib(rss.anonymous),
        mib(rss.files)
    );
    println!("high-water mark              {:.1} MiB", mib(rss.peak));
    println!(
        "CPU per reconcile cycle      {:.4} s ({cycles} cycles)",
        (cpu1 - cpu0).as_secs_f64() / cycles
    );
    println!(
        "full pass duration           {:.3} s (mean, LINSTOR read included)",
        (sum1 - sum0) / (count1 - count0).max(1.0)
    );
    println!("LINSTOR requests per cycle   {:.2}", linstor as f64 / cycles);
    println!(
        "LINSTOR bytes per cycle      {:.1} MB (resource definitions and resources)",
        per_cycle("linstor_affinity_controller_linstor_received_bytes_total") / 1e6
    );
    println!(
        "API requests per cycle       {:.2} (watches aside)",
        per_cycle("linstor_affinity_controller_kubernetes_requests_total")
    );

    if args.drift > 0 {
        let kube_requests = "linstor_affinity_controller_kubernetes_requests_total";
        let before = metrics(&address).await;
        // Replicas of even-numbered volumes live on node 0; they move to node 2.
        let drifted: BTreeSet<String> = names.iter().step_by(2).take(args.drift).cloned().collect();
        let target = nodes[2].clone();
        let (ready, watching) = tokio::sync::oneshot::channel();
        let timeline = tokio::spawn(watch_drift(
            pvs.clone(),
            pvcs.clone(),
            label.clone(),
            drifted.clone(),
            target.clone(),
            ready,
        ));
        watching.await.unwrap();
        let start = Instant::now();
        for name in &drifted {
            sim.add_resource(name, SimResource::diskful(&target)).unwrap();
            sim.delete_resource(name, &nodes[0]).unwrap();
        }
        let timeline = tokio::time::timeout(Duration::from_secs(600), timeline)
            .await
            .expect("the drift did not converge within 10 minutes")
            .unwrap();
        let after = metrics(&address).await;
        let requests = metric(&after, kube_requests) - metric(&before, kube_requests);
        let since = |at: Instant| (at - start).as_secs_f64();
        println!("drifted PVs                  {}", drifted.len());
        println!(
            "first PV replaced after      {:.1} s",
            since(timeline.first_replaced)
        );
        println!(
            "all replaced after           {:.1} s",
            since(timeline.all_replaced)
        );
        println!("all PVs and claims Bound     {:.1} s", since(timeline.all_bound));
        println!(
            "from first replaced to all   {:.1} s replaced, {:.1} s Bound",
            (timeline.all_replaced - timeline.first_replaced).as_secs_f64(),
            (timeline.all_bound - timeline.first_replaced).as_secs_f64()
        );
        println!(
            "mountOptions kept            {} of {}",
            timeline.mount_options_kept,
            drifted.len()
        );
        println!(
            "API requests per replaced PV {:.1}",
            requests / drifted.len() as f64
        );
    }
    drop(controller);
    env.cleanup().await;
}
