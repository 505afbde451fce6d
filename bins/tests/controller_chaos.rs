//! A bounded, seeded run of everything that happens to a controller in a
//! real cluster at once: it is killed and restarted, loses its lease,
//! LINSTOR fails, replicas move, and users delete and re-create claims,
//! set `Retain` and delete PVs. Checked throughout by the reclaim emulator:
//! no volume is reclaimed unless the test itself let go of it (deleted its
//! claim or the PV) while the PV was at `Delete` and carried nothing this
//! controller wrote. At the end every claim that exists has its PV and
//! every intent left is reported.
//!
//! The seed is printed; `CHAOS_SEED=<n>` runs the same sequence again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::coordination::v1::Lease;
use affinity_core::k8s_openapi::api::core::v1::{Event, PersistentVolume};
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_RECLAIM_ANNOTATION};
use affinity_core::restore_policy_of;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_harness::{TEST_LABEL, VolumeOptions, micro_time_now};
use linstor_api::sim::{Fault, FaultKind};
use serde_json::json;
use support::{ControllerProcess, Scenario, controller_has_test_hooks};

const VOLUMES: usize = 50;
const CHAOS: Duration = Duration::from_secs(75);
const SETTLE: Duration = Duration::from_secs(120);
const NODES: usize = 3;

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

fn reclaim_policy(pv: &PersistentVolume) -> Option<&str> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref())
}

/// Whether `pv` carries something this controller wrote to keep its volume.
fn carries_ours(pv: &PersistentVolume) -> bool {
    restore_policy_of(pv).is_some()
        || pv
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(SKIP_RECLAIM_ANNOTATION))
}

fn election(scenario: &Scenario, lease: &str) -> Vec<String> {
    [
        "--leader-election",
        "--leader-election-id",
        "chaos",
        "--lease-lock-name",
        lease,
        "--lease-lock-namespace",
        scenario.env.namespace(),
        "--leader-election-lease-duration",
        "4s",
        "--leader-election-renew-deadline",
        "3s",
        "--leader-election-retry-period",
        "1s",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

fn start(scenario: &Scenario, flags: &[String]) -> ControllerProcess {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    scenario.controller(&flags)
}

/// Where each volume's single replica is now, by node index.
type Placement = BTreeMap<String, usize>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_never_reclaims_a_volume_the_test_did_not_let_go_of() {
    if !controller_has_test_hooks("chaos") {
        return;
    }
    let Some(scenario) = Scenario::new("chaos", NODES).await else {
        return;
    };
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
                    % u128::from(u64::MAX),
            )
            .unwrap()
                | 1
        });
    eprintln!("chaos seed {seed} (rerun with CHAOS_SEED={seed})");
    let mut rng = Rng(seed);

    let class = scenario.local_only_class().await;
    let created: Vec<_> = futures::stream::iter(0..VOLUMES)
        .map(|index| {
            let (scenario, class) = (&scenario, &class);
            async move { scenario.volume(&format!("v{index:02}"), class, 0, 1).await }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    let mut placement: Placement = created
        .iter()
        .map(|bound| (bound.pv.metadata.name.clone().unwrap(), 1))
        .collect();
    let claims: BTreeMap<String, String> = created
        .iter()
        .map(|bound| {
            (
                bound.pv.metadata.name.clone().unwrap(),
                bound.pvc.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    let names: Vec<String> = placement.keys().cloned().collect();
    // PV UIDs whose volume the test let go of while nothing of ours was on them.
    let mut released_by_test: BTreeSet<String> = BTreeSet::new();
    // PVs the test deleted, or whose claim it deleted while they were at
    // Delete: a claim naming one of them may rightly find it gone.
    let mut let_go: BTreeSet<String> = BTreeSet::new();
    let lease = scenario.env.name("lease");
    let leases: Api<Lease> = Api::namespaced(scenario.env.client(), scenario.env.namespace());
    let pvs = scenario.env.pvs();
    let pvcs = scenario.env.pvcs();

    let flags = election(&scenario, &lease);
    let mut controller = start(&scenario, &flags);
    let mut logs = Vec::new();
    let started = Instant::now();
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    while started.elapsed() < CHAOS {
        let name = names[rng.below(names.len())].clone();
        let action = match rng.below(10) {
            0 => {
                controller.kill();
                logs.push(controller.log());
                controller = start(&scenario, &flags);
                "kill"
            }
            1 => {
                // Another holder takes the lease for a moment.
                let steal = json!({ "spec": {
                    "holderIdentity": "intruder",
                    "leaseDurationSeconds": 3,
                    "renewTime": micro_time_now(),
                } });
                let _ = leases
                    .patch(&lease, &PatchParams::default(), &Patch::Merge(&steal))
                    .await;
                "lease-lost"
            }
            2 => {
                let fault = match rng.below(3) {
                    0 => Fault::new(FaultKind::Error {
                        status: 500,
                        message: "chaos".to_owned(),
                    })
                    .on_method("PUT"),
                    1 => Fault::new(FaultKind::Drop).on_path("/v1/view/resources"),
                    _ => Fault::new(FaultKind::Latency { ms: 1500 }).on_method("GET"),
                };
                scenario.sim.add_fault(fault.times(1 + rng.below(4) as u32));
                "linstor-fault"
            }
            3..=5 => {
                let from = placement[&name];
                let to = (from + 1 + rng.below(NODES - 1)) % NODES;
                if scenario.has_resource_definition(&name) {
                    scenario.move_replica(&name, from, to);
                    placement.insert(name.clone(), to);
                }
                "replica-moved"
            }
            6 => {
                // The user deletes the claim; if its PV is untouched by us
                // and at Delete, Kubernetes may reclaim the volume.
                if let Ok(Some(pv)) = pvs.get_opt(&name).await
                    && reclaim_policy(&pv) == Some("Delete")
                    && !carries_ours(&pv)
                {
                    released_by_test.insert(pv.metadata.uid.clone().unwrap_or_default());
                    let_go.insert(name.clone());
                }
                let _ = pvcs.delete(&claims[&name], &DeleteParams::default()).await;
                // A policy restored before the claim was deleted is the
                // user's PV at Delete again: letting go of it is theirs.
                let deadline = Instant::now() + Duration::from_secs(5);
                while pvcs.get_opt(&claims[&name]).await.ok().flatten().is_some() && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if let Ok(Some(pv)) = pvs.get_opt(&name).await
                    && reclaim_policy(&pv) == Some("Delete")
                    && !carries_ours(&pv)
                {
                    released_by_test.insert(pv.metadata.uid.clone().unwrap_or_default());
                    let_go.insert(name.clone());
                }
                "claim-deleted"
            }
            7 => {
                // A claim of the same name comes back (another claim).
                if pvcs.get_opt(&claims[&name]).await.unwrap().is_none() {
                    let options = VolumeOptions {
                        storage_class: Some(class.clone()),
                        ..VolumeOptions::default()
                    };
                    let claim = scenario.env.claim(&claims[&name], &name, &options);
                    let _ = pvcs.create(&PostParams::default(), &claim).await;
                }
                "claim-recreated"
            }
            8 => {
                let retain = json!({ "spec": { "persistentVolumeReclaimPolicy": "Retain" } });
                let _ = pvs
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&retain))
                    .await;
                "retain-set"
            }
            _ => {
                if let Ok(Some(pv)) = pvs.get_opt(&name).await
                    && reclaim_policy(&pv) == Some("Delete")
                    && !carries_ours(&pv)
                {
                    released_by_test.insert(pv.metadata.uid.clone().unwrap_or_default());
                }
                let_go.insert(name.clone());
                let _ = pvs.delete(&name, &DeleteParams::default()).await;
                "pv-deleted"
            }
        };
        *actions.entry(action).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800) as u64)).await;
    }
    eprintln!("chaos seed {seed}: {actions:?}");

    // Calm: no faults, one controller, time to converge.
    scenario.sim.clear_faults();
    controller.kill();
    logs.push(controller.log());
    let controller = start(&scenario, &flags);
    let deadline = Instant::now() + SETTLE;
    let unexpected = loop {
        scenario.reclaims.settle().await;
        let unexpected: Vec<String> = scenario
            .reclaims
            .reclaimed()
            .into_iter()
            .filter(|reclaim| !released_by_test.contains(&reclaim.pv_uid))
            .map(|reclaim| reclaim.to_string())
            .collect();
        let missing = claims_without_pv(&scenario, &let_go).await;
        let unreported = unreported_intents(&scenario).await;
        if !unexpected.is_empty() || (missing.is_empty() && unreported.is_empty()) {
            break (unexpected, missing, unreported);
        }
        if Instant::now() >= deadline {
            break (unexpected, missing, unreported);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (unexpected, missing, unreported) = unexpected;
    if !(unexpected.is_empty() && missing.is_empty() && unreported.is_empty()) {
        logs.push(controller.log());
        let tail: Vec<String> = logs
            .iter()
            .map(|log| {
                log.lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        panic!(
            "chaos seed {seed} (rerun with CHAOS_SEED={seed}):\nreclaimed without the test letting go: {unexpected:#?}\nclaims without their PV: {missing:?}\nintents not reported: {unreported:?}\n{}",
            tail.join("\n---\n")
        );
    }
    let kept = scenario.reclaims.reclaimed().len();
    eprintln!("chaos seed {seed}: converged; {kept} volumes reclaimed, each after the test let go of it");
    drop(controller);
    // The reclaims the test caused are expected: end without asserting none.
    scenario.reclaims.stop().await;
    scenario.env.cleanup().await;
}

/// Claims of the test that name a volume which does not exist, other than
/// those the test let go of.
async fn claims_without_pv(scenario: &Scenario, let_go: &BTreeSet<String>) -> Vec<String> {
    let selector = format!("{TEST_LABEL}={}", scenario.env.prefix());
    let claims = scenario
        .env
        .pvcs()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    let mut missing = Vec::new();
    for claim in claims.items {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(volume) = claim.spec.and_then(|spec| spec.volume_name) else {
            continue;
        };
        if let_go.contains(&volume) {
            continue;
        }
        if scenario.env.pvs().get_opt(&volume).await.unwrap().is_none() {
            missing.push(format!("{} -> {volume}", claim.metadata.name.unwrap_or_default()));
        }
    }
    missing
}

/// Saved intents left in LINSTOR without a `ReplaceHeld` warning about their PV.
async fn unreported_intents(scenario: &Scenario) -> Vec<String> {
    let left: Vec<String> = scenario.sim.with_state(|state| {
        state
            .resource_definitions
            .iter()
            .filter(|rd| {
                rd.volume_definitions
                    .iter()
                    .any(|vd| vd.props.contains_key(SAVED_PV_PROPERTY))
            })
            .map(|rd| rd.name.clone())
            .collect()
    });
    if left.is_empty() {
        return left;
    }
    let events: Api<Event> = Api::namespaced(scenario.env.client(), "default");
    let reported: BTreeSet<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("ReplaceHeld"))
        .filter_map(|event| event.involved_object.name)
        .collect();
    left.into_iter().filter(|name| !reported.contains(name)).collect()
}
