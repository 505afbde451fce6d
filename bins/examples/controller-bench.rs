//! Scale benchmark of `linstor-affinity-controller` on a real control plane
//! with the LINSTOR simulator; prints its figures.
//!
//! `N` LINSTOR PVs in sync (single replica, local-only policy, each with
//! `mountOptions`) and bound claims; the release controller binary runs at
//! the default `--reconcile-rate` and we read, over several cycles, its
//! resident memory, its CPU time per cycle and the LINSTOR requests per
//! cycle. With `--drift M`, M replicas then move to another node at once
//! and we time the replacements and the rebinding of the claims.
//!
//! Run through `scripts/bench-controller`, which builds the binaries first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim,
    VolumeNodeAffinity,
};
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use clap::Parser;
use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use kube_harness::persistent_volume;
use kube_harness::{TestEnv, VolumeOptions};
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

/// Resident memory (KiB) and CPU time (user + system) of a process.
fn usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on Linux.
    (rss, Duration::from_millis(ticks * 10))
}

/// The controller process with its log.
struct Controller {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Controller {
    async fn line(&self, needle: &str) -> String {
        for _ in 0..6000 {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(needle))
            {
                return line.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("controller never logged {needle:?}");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

    // Kubernetes: pre-bound PVs and claims, created concurrently.
    let started = Instant::now();
    let pvs: Api<PersistentVolume> = env.pvs();
    let pvcs: Api<PersistentVolumeClaim> = env.pvcs();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(32, |(i, name)| {
            let (pvs, pvcs, env) = (pvs.clone(), pvcs.clone(), &env);
            let node = home(i);
            let class = class.clone();
            async move {
                let options = VolumeOptions {
                    storage_class: Some(class),
                    node_affinity: Some(on_node(&node)),
                    reclaim_policy: "Delete".to_owned(),
                    mount_options: vec!["noatime".to_owned()],
                    ..VolumeOptions::default()
                };
                let suffix = format!("c{i}");
                let claim = env.claim(&suffix, name, &options);
                let mut claim_ref = TestEnv::claim_ref(&claim);
                claim_ref.uid = None;
                let pv = persistent_volume(name, &env.labels(), &options, Some(claim_ref));
                pvs.create(&PostParams::default(), &pv).await.unwrap();
                pvcs.create(&PostParams::default(), &claim).await.unwrap();
            }
        })
        .await;
    let label = ListParams::default().labels(&format!("kube-harness.test/prefix={}", env.prefix()));
    loop {
        let bound = pvcs
            .list(&label)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|pvc| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        if bound == args.pvs {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("setup: {} bound PVs in {:.0?}", args.pvs, started.elapsed());

    // The controller.
    let mut child = Command::new(&args.controller)
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
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let controller = Controller { child, lines };
    let pid = controller.child.id();
    let metrics_line = controller.line("metrics endpoint").await;
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
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Steady state: skip the first cycle (cache fill), then measure.
    let first = wait_cycles(0.0, 1).await;
    assert_eq!(metric(&first, "linstor_affinity_controller_pvs_out_of_sync"), 0.0);
    let cycles0 = metric(&first, reconciles);
    let (_, cpu0) = usage(pid);
    let linstor0 = linstor_requests(&sim);
    let last = wait_cycles(cycles0, args.cycles).await;
    let (rss, cpu1) = usage(pid);
    let cycles = metric(&last, reconciles) - cycles0;
    let linstor = linstor_requests(&sim) - linstor0;
    println!("pvs                          {}", args.pvs);
    println!("steady RSS                   {:.1} MiB", rss as f64 / 1024.0);
    println!(
        "CPU per reconcile cycle      {:.4} s ({cycles} cycles)",
        (cpu1 - cpu0).as_secs_f64() / cycles
    );
    println!("LINSTOR requests per cycle   {:.2}", linstor as f64 / cycles);

    if args.drift > 0 {
        let kube_requests = "linstor_affinity_controller_kubernetes_requests_total";
        let before = metrics(&address).await;
        let drifted: BTreeSet<&String> = names.iter().step_by(2).take(args.drift).collect();
        let target = &nodes[2];
        let start = Instant::now();
        for name in &drifted {
            sim.add_resource(name, SimResource::diskful(target)).unwrap();
            sim.delete_resource(name, &nodes[0]).unwrap();
        }
        let cycles_before = metric(&before, reconciles);
        let mut replaced_at = None;
        let mut first_replaced_at = None;
        let bound_at = loop {
            let current = pvs.list(&label).await.unwrap().items;
            let moved: Vec<&PersistentVolume> = current
                .iter()
                .filter(|pv| {
                    pv.metadata
                        .name
                        .as_ref()
                        .is_some_and(|name| drifted.contains(name))
                        && affinity_node(pv) == Some(target.as_str())
                })
                .collect();
            if first_replaced_at.is_none() && !moved.is_empty() {
                first_replaced_at = Some(start.elapsed());
            }
            if replaced_at.is_none() && moved.len() == drifted.len() {
                replaced_at = Some(start.elapsed());
                let kept = moved
                    .iter()
                    .filter(|pv| {
                        pv.spec.as_ref().and_then(|spec| spec.mount_options.as_deref())
                            == Some(&["noatime".to_owned()][..])
                    })
                    .count();
                println!("mountOptions kept            {kept} of {}", drifted.len());
            }
            if replaced_at.is_some() {
                let claims = pvcs.list(&label).await.unwrap().items;
                let all_bound = claims
                    .iter()
                    .all(|pvc| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"));
                if all_bound {
                    break start.elapsed();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "drift did not converge"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let after = metrics(&address).await;
        let requests = metric(&after, kube_requests) - metric(&before, kube_requests);
        println!("drifted PVs                  {}", drifted.len());
        println!(
            "first PV replaced after      {:.1} s",
            first_replaced_at.unwrap_or_default().as_secs_f64()
        );
        let replaced_at = replaced_at.unwrap_or_default();
        println!("all replaced after           {:.1} s", replaced_at.as_secs_f64());
        println!("all claims Bound after       {:.1} s", bound_at.as_secs_f64());
        println!(
            "replacing took               {:.1} s (from the first replaced PV)",
            (replaced_at - first_replaced_at.unwrap_or_default()).as_secs_f64()
        );
        println!(
            "API requests per replaced PV {:.1}",
            requests / drifted.len() as f64
        );
        println!(
            "reconcile cycles meanwhile   {}",
            metric(&after, reconciles) - cycles_before
        );
    }
    drop(controller);
    env.cleanup().await;
}
