//! The controller killed (SIGKILL) in the middle of replacing PVs: after
//! every step of the replace protocol, and repeatedly while it replaces many
//! PVs at once. A fresh controller must finish every replace: each PV comes
//! back with its original reclaim policy, annotations, labels and fields and
//! the affinity of where its data is, its claim is bound again, no saved
//! intent is left, and no LINSTOR volume is ever deleted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use affinity_core::names::{SAVED_PV_PROPERTY, SKIP_RECLAIM_ANNOTATION};
use affinity_core::restore_policy_of;
use affinity_kube::replace::ReplaceStep;
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube_harness::TEST_LABEL;
use serde_json::json;
use support::{Scenario, affinity_nodes, controller_has_test_hooks};

/// Annotation and label put on every PV before the controller starts, so
/// that keeping exactly the original metadata is tested.
const EXTRA_ANNOTATION: (&str, &str) = ("example.com/keep", "yes");
const EXTRA_LABEL: (&str, &str) = ("example.com/tier", "gold");

/// Annotations the PV binder itself may add to a PV; they are not compared.
const BINDER_ANNOTATIONS: &[&str] = &["pv.kubernetes.io/bound-by-controller"];

/// Adds [`EXTRA_ANNOTATION`] and [`EXTRA_LABEL`] to PV `name`; returns the PV
/// as stored, the original the replacement is compared with.
async fn mark(scenario: &Scenario, name: &str) -> PersistentVolume {
    let patch = json!({
        "metadata": {
            "annotations": { EXTRA_ANNOTATION.0: EXTRA_ANNOTATION.1 },
            "labels": { EXTRA_LABEL.0: EXTRA_LABEL.1 },
        }
    });
    scenario
        .env
        .pvs()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap()
}

/// A PV's annotations less those the binder adds.
fn own_annotations(pv: &PersistentVolume) -> BTreeMap<String, String> {
    let mut annotations = pv.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|key, _| !BINDER_ANNOTATIONS.contains(&key.as_str()));
    annotations
}

fn has_skip_reclaim(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(SKIP_RECLAIM_ANNOTATION))
}

fn reclaim_policy(pv: &PersistentVolume) -> Option<&str> {
    pv.spec
        .as_ref()
        .and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref())
}

fn pvc_phase(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.status.as_ref().and_then(|status| status.phase.as_deref())
}

/// Whether `pv` is the finished replacement of the PV that had `original_uid`:
/// a new object, affinity on `node` only, reclaim policy `Delete`, no trace
/// of the protocol.
fn converged(pv: &PersistentVolume, original_uid: &str, node: &str) -> bool {
    pv.metadata.uid.as_deref() != Some(original_uid)
        && pv.metadata.deletion_timestamp.is_none()
        && affinity_nodes(pv) == [node]
        && reclaim_policy(pv) == Some("Delete")
        && !has_skip_reclaim(pv)
}

/// Asserts `replaced` kept everything of `original` but the affinity.
fn assert_kept(original: &PersistentVolume, replaced: &PersistentVolume) {
    let name = original.metadata.name.as_deref().unwrap();
    let spec = replaced.spec.clone().unwrap();
    let before = original.spec.clone().unwrap();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete"),
        "{name}"
    );
    assert_eq!(spec.mount_options, before.mount_options, "{name}");
    assert_eq!(spec.storage_class_name, before.storage_class_name, "{name}");
    assert_eq!(spec.capacity, before.capacity, "{name}");
    assert_eq!(spec.csi, before.csi, "{name}");
    assert_eq!(spec.access_modes, before.access_modes, "{name}");
    assert_eq!(
        spec.claim_ref.as_ref().and_then(|claim| claim.name.clone()),
        before.claim_ref.as_ref().and_then(|claim| claim.name.clone()),
        "{name}"
    );
    assert_eq!(
        spec.claim_ref.as_ref().and_then(|claim| claim.uid.clone()),
        before.claim_ref.as_ref().and_then(|claim| claim.uid.clone()),
        "{name}"
    );
    assert_eq!(replaced.metadata.labels, original.metadata.labels, "{name}");
    assert_eq!(
        own_annotations(replaced),
        own_annotations(original),
        "{name}: annotations (full: {:?})",
        replaced.metadata.annotations
    );
}

/// Asserts LINSTOR still has every resource definition of `names` with its
/// replica on `node`, and was never asked to delete anything.
fn assert_no_linstor_deletion(scenario: &Scenario, names: &[String], node: &str) {
    let deletes: BTreeMap<String, u64> = scenario
        .sim
        .counters()
        .into_iter()
        .filter(|(endpoint, _)| endpoint.starts_with("DELETE /v1/"))
        .collect();
    assert!(deletes.is_empty(), "LINSTOR DELETE requests: {deletes:?}");
    scenario.sim.with_state(|state| {
        for name in names {
            let definition = state
                .resource_definitions
                .iter()
                .find(|rd| &rd.name == name)
                .unwrap_or_else(|| panic!("resource definition {name} deleted"));
            assert!(
                definition.resources.iter().any(|r| r.node_name == node),
                "{name}: replica on {node} gone: {:?}",
                definition.resources
            );
            assert!(
                definition
                    .volume_definitions
                    .iter()
                    .any(|vd| vd.volume_number == 0),
                "{name}: volume definition 0 gone"
            );
        }
    });
}

/// How many volume definitions carry a saved intent.
fn saved_intents(scenario: &Scenario) -> usize {
    scenario.sim.with_state(|state| {
        state
            .resource_definitions
            .iter()
            .flat_map(|rd| rd.volume_definitions.iter())
            .filter(|vd| vd.props.contains_key(SAVED_PV_PROPERTY))
            .count()
    })
}

/// Panics with the controller's log and the cluster's controller-manager
/// log, after `message`.
fn fail(scenario: &Scenario, controllers: &[String], message: &str) -> ! {
    let manager = scenario
        .env
        .cluster()
        .log_tail("kube-controller-manager", 50)
        .unwrap_or_default();
    let logs: Vec<String> = controllers
        .iter()
        .enumerate()
        .map(|(index, log)| {
            // Other tests' PVs share the cluster: keep the lines that are
            // not about one PV, and those about this test's.
            let ours: Vec<&str> = log
                .lines()
                .filter(|line| line.contains(scenario.env.prefix()))
                .collect();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            format!(
                "--- controller {index}: lines about this test ---\n{}\n--- last lines ---\n{}",
                ours[ours.len().saturating_sub(150)..].join("\n"),
                tail.join("\n")
            )
        })
        .collect();
    panic!(
        "{message}\n{}\n--- kube-controller-manager ---\n{manager}",
        logs.join("\n")
    );
}

/// Checks what the protocol left when it halted after `step` (the process
/// is dead by then, so nothing moves).
async fn assert_halted_state(scenario: &Scenario, step: ReplaceStep, pv_name: &str, original_uid: &str) {
    let live = scenario.env.pvs().get_opt(pv_name).await.unwrap();
    let saved = scenario.saved_pv(pv_name);
    let uid = live.as_ref().and_then(|pv| pv.metadata.uid.clone());
    let original = uid.as_deref() == Some(original_uid);
    match step {
        ReplaceStep::IntentSaved => {
            let live = live.expect("PV still there");
            assert!(original, "PV not replaced yet");
            assert!(saved.is_some(), "intent saved");
            assert_eq!(reclaim_policy(&live), Some("Delete"));
            assert!(!has_skip_reclaim(&live));
        }
        ReplaceStep::RetainSet => {
            let live = live.expect("PV still there");
            assert!(original, "PV not replaced yet");
            assert!(saved.is_some(), "intent saved");
            assert_eq!(reclaim_policy(&live), Some("Retain"));
            assert!(has_skip_reclaim(&live));
            assert!(live.metadata.deletion_timestamp.is_none());
        }
        ReplaceStep::DeleteIssued => {
            assert!(saved.is_some(), "intent saved");
            // The pv-protection finalizer keeps a bound PV until the
            // protocol removes it.
            let live = live.expect("PV kept by its finalizer");
            assert!(original);
            assert!(live.metadata.deletion_timestamp.is_some(), "PV being deleted");
            assert_eq!(reclaim_policy(&live), Some("Retain"));
            assert!(has_skip_reclaim(&live));
        }
        ReplaceStep::FinalizersRemoved => {
            assert!(saved.is_some(), "intent saved");
            assert!(live.is_none(), "PV gone: {live:?}");
        }
        ReplaceStep::Recreated => {
            let live = live.expect("PV re-created");
            assert!(!original, "PV replaced");
            assert!(saved.is_some(), "intent still saved");
            assert_eq!(affinity_nodes(&live), [scenario.node(1)]);
            assert_held_at_retain(&live);
        }
        ReplaceStep::IntentCleared => {
            let live = live.expect("PV re-created");
            assert!(!original, "PV replaced");
            assert!(saved.is_none(), "intent cleared");
            assert_eq!(affinity_nodes(&live), [scenario.node(1)]);
            assert_held_at_retain(&live);
        }
        ReplaceStep::PolicyRestored => {
            let live = live.expect("PV re-created");
            assert!(!original, "PV replaced");
            assert!(saved.is_none(), "intent cleared");
            assert_eq!(reclaim_policy(&live), Some("Delete"));
            assert_eq!(restore_policy_of(&live), None);
        }
    }
}

/// Asserts `pv` is a replacement created at `Retain`, its original policy
/// `Delete` kept for when its claim owns it, without the skip-reclaim mark.
fn assert_held_at_retain(pv: &PersistentVolume) {
    assert_eq!(reclaim_policy(pv), Some("Retain"));
    assert_eq!(restore_policy_of(pv), Some("Delete"));
    assert!(!has_skip_reclaim(pv));
}

/// A drifted volume; the controller is killed right after `step` of its
/// replace; a fresh controller finishes the job.
async fn crash_after(step: ReplaceStep) {
    if !controller_has_test_hooks(&format!("crash-{step}")) {
        return;
    }
    let Some(scenario) = Scenario::new(&format!("crash-{step}"), 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    // PV affinity on node 0, data on node 1.
    let bound = scenario.volume("vol", &class, 0, 1).await;
    let pv_name = bound.pv.metadata.name.clone().unwrap();
    let claim = bound.pvc.metadata.name.clone().unwrap();
    let original = mark(&scenario, &pv_name).await;
    let original_uid = original.metadata.uid.clone().unwrap();
    eprintln!("{step}: original annotations {:?}", original.metadata.annotations);

    let mut first = scenario.controller(&["--debug-halt-after", step.as_str()]);
    let line = first
        .wait_for_line("halting after replace step", Duration::from_secs(90))
        .await;
    first.kill();
    let mut logs = vec![first.log()];
    assert!(
        line.contains(&pv_name) && line.contains(step.as_str()),
        "halted elsewhere: {line}"
    );
    assert_halted_state(&scenario, step, &pv_name, &original_uid).await;

    let second = scenario.controller(&[]);
    let restarted = Instant::now();
    let result = scenario
        .env
        .try_wait_for(&scenario.env.pvs(), &pv_name, Duration::from_secs(90), |pv| {
            converged(pv, &original_uid, scenario.node(1))
        })
        .await;
    let replaced = match result {
        Ok(pv) => pv,
        Err(observed) => {
            logs.push(second.log());
            fail(
                &scenario,
                &logs,
                &format!("{step}: PV {pv_name} not replaced after the restart; last observed:\n{observed}"),
            )
        }
    };
    let pv_converged = restarted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scenario.saved_pv(&pv_name).is_some() {
        if Instant::now() >= deadline {
            logs.push(second.log());
            fail(
                &scenario,
                &logs,
                &format!("{step}: intent of {pv_name} not cleared"),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_kept(&original, &replaced);

    let pvc = scenario.env.wait_for_pvc_phase(&claim, "Bound").await;
    eprintln!(
        "{step}: after the restart, PV replaced in {pv_converged:?}, claim bound in {:?}",
        restarted.elapsed()
    );
    assert_eq!(
        pvc.spec.and_then(|spec| spec.volume_name).as_deref(),
        Some(pv_name.as_str())
    );
    scenario.env.wait_for_pv_phase(&pv_name, "Bound").await;

    // Converged for good: later passes leave the PV alone.
    second.wait_for_full_passes(3, Duration::from_secs(30)).await;
    let later = scenario.env.pvs().get(&pv_name).await.unwrap();
    assert_eq!(later.metadata.uid, replaced.metadata.uid, "replaced again");
    assert!(scenario.saved_pv(&pv_name).is_none());
    assert_no_linstor_deletion(&scenario, std::slice::from_ref(&pv_name), scenario.node(1));
    drop(second);
    scenario.finish().await;
}

/// The steps the tests below cover, in protocol order.
const TESTED_STEPS: [ReplaceStep; 7] = [
    ReplaceStep::IntentSaved,
    ReplaceStep::RetainSet,
    ReplaceStep::DeleteIssued,
    ReplaceStep::FinalizersRemoved,
    ReplaceStep::Recreated,
    ReplaceStep::IntentCleared,
    ReplaceStep::PolicyRestored,
];

#[test]
fn every_step_is_tested() {
    assert_eq!(TESTED_STEPS, ReplaceStep::ALL);
}

macro_rules! crash_test {
    ($($name:ident => $step:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_after($step).await;
            }
        )*
    };
}

crash_test! {
    killed_after_intent_saved => TESTED_STEPS[0],
    killed_after_retain_set => TESTED_STEPS[1],
    killed_after_delete_issued => TESTED_STEPS[2],
    killed_after_finalizers_removed => TESTED_STEPS[3],
    killed_after_recreated => TESTED_STEPS[4],
    killed_after_intent_cleared => TESTED_STEPS[5],
    killed_after_policy_restored => TESTED_STEPS[6],
}

/// Volumes of the mass run.
const MASS: usize = 200;
/// Kills during the mass run, and the time each controller runs before.
const KILLS: usize = 6;
const KILL_EVERY: Duration = Duration::from_secs(7);
const MASS_TIMEOUT: Duration = Duration::from_secs(300);

/// One volume of the mass run, as created.
struct Original {
    pv: PersistentVolume,
    claim: String,
}

impl Original {
    fn name(&self) -> &str {
        self.pv.metadata.name.as_deref().unwrap()
    }

    fn uid(&self) -> &str {
        self.pv.metadata.uid.as_deref().unwrap()
    }
}

/// What the cluster shows of the mass run's volumes.
struct MassState {
    pvs: BTreeMap<String, PersistentVolume>,
    pvcs: BTreeMap<String, PersistentVolumeClaim>,
}

impl MassState {
    async fn read(scenario: &Scenario) -> Result<Self, kube::Error> {
        let selector = ListParams::default().labels(&format!("{TEST_LABEL}={}", scenario.env.prefix()));
        let pvs = scenario.env.pvs().list(&selector).await?;
        let pvcs = scenario.env.pvcs().list(&ListParams::default()).await?;
        Ok(Self {
            pvs: pvs
                .items
                .into_iter()
                .map(|pv| (pv.metadata.name.clone().unwrap_or_default(), pv))
                .collect(),
            pvcs: pvcs
                .items
                .into_iter()
                .map(|pvc| (pvc.metadata.name.clone().unwrap_or_default(), pvc))
                .collect(),
        })
    }

    /// The UID of every PV.
    fn uids(&self) -> BTreeMap<String, Option<String>> {
        self.pvs
            .iter()
            .map(|(name, pv)| (name.clone(), pv.metadata.uid.clone()))
            .collect()
    }

    /// Names of the volumes not finished yet: PV not replaced, or claim not bound to it.
    fn unfinished<'a>(&self, originals: &'a [Original], node: &str) -> Vec<&'a str> {
        originals
            .iter()
            .filter(|original| {
                let pv_done = self
                    .pvs
                    .get(original.name())
                    .is_some_and(|pv| converged(pv, original.uid(), node));
                let claim_done = self.pvcs.get(&original.claim).is_some_and(|pvc| {
                    pvc_phase(pvc) == Some("Bound")
                        && pvc.spec.as_ref().and_then(|spec| spec.volume_name.as_deref())
                            == Some(original.name())
                });
                !(pv_done && claim_done)
            })
            .map(Original::name)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_replaces_survive_repeated_kills() {
    let Some(scenario) = Scenario::new("crash-mass", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;

    let setup = Instant::now();
    let mut originals: Vec<Original> = futures::stream::iter(0..MASS)
        .map(|index| {
            let (scenario, class) = (&scenario, &class);
            async move {
                let bound = scenario.volume(&format!("v{index:03}"), class, 0, 0).await;
                let name = bound.pv.metadata.name.clone().unwrap();
                Original {
                    pv: mark(scenario, &name).await,
                    claim: bound.pvc.metadata.name.clone().unwrap(),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    originals.sort_by(|a, b| a.name().cmp(b.name()));
    let setup_took = setup.elapsed();
    eprintln!("mass run: {MASS} bound volumes created in {setup_took:?}");
    if setup_took > Duration::from_secs(180) {
        eprintln!("mass run: creating the volumes took more than 3 minutes");
    }
    let names: Vec<String> = originals.iter().map(|o| o.name().to_owned()).collect();
    for name in &names {
        scenario.move_replica(name, 0, 1);
    }

    let flags = ["--workers", "10"];
    let node = scenario.node(1).to_owned();
    let started = Instant::now();
    let mut converged_at = None;
    let mut logs = Vec::new();
    let mut controller = scenario.controller(&flags);
    for kill in 1..=KILLS {
        // Watch the progress while the controller runs.
        let run_until = Instant::now() + KILL_EVERY;
        while Instant::now() < run_until {
            if converged_at.is_none()
                && let Ok(state) = MassState::read(&scenario).await
                && state.unfinished(&originals, &node).is_empty()
                && saved_intents(&scenario) == 0
            {
                converged_at = Some((started.elapsed(), state.uids()));
            }
            tokio::time::sleep(
                run_until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            )
            .await;
        }
        controller.kill();
        let replaced = controller.count("PV replaced");
        logs.push(controller.log());
        eprintln!(
            "mass run: kill {kill} at {:?}: {replaced} replaces finished by the killed controller, {} intents saved",
            started.elapsed(),
            saved_intents(&scenario)
        );
        controller = scenario.controller(&flags);
    }

    // Whether or not all converged before the last kill, the last
    // controller must bring (or keep) every volume there.
    let mut last_report = Instant::now();
    let state = loop {
        let state = match MassState::read(&scenario).await {
            Ok(state) => state,
            Err(error) => {
                eprintln!("mass run: listing failed: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let unfinished = state.unfinished(&originals, &node);
        let intents = saved_intents(&scenario);
        if unfinished.is_empty() && intents == 0 {
            break state;
        }
        // Not converged now: an earlier observation does not count.
        converged_at = None;
        if started.elapsed() > MASS_TIMEOUT {
            logs.push(controller.log());
            let shown: Vec<String> = unfinished
                .iter()
                .take(5)
                .map(|name| {
                    let pv = state.pvs.get(*name);
                    format!(
                        "{name}: pv {:?}",
                        pv.map(|pv| (
                            pv.metadata.uid.clone(),
                            affinity_nodes(pv),
                            reclaim_policy(pv).map(str::to_owned),
                            has_skip_reclaim(pv),
                            pv.status.as_ref().and_then(|s| s.phase.clone()),
                        ))
                    )
                })
                .collect();
            fail(
                &scenario,
                &logs,
                &format!(
                    "mass run: {} of {MASS} volumes unfinished and {intents} intents saved after {:?}; first: {shown:#?}",
                    unfinished.len(),
                    started.elapsed()
                ),
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "mass run: {:?}: {} unfinished, {intents} intents saved",
                started.elapsed(),
                unfinished.len()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let converged_at = match converged_at {
        Some((at, uids)) => {
            assert_eq!(uids, state.uids(), "PVs replaced again after all had converged");
            at
        }
        None => started.elapsed(),
    };
    eprintln!(
        "mass run: all {MASS} PVs replaced and bound {converged_at:?} after the first start \
         ({KILLS} kills, {KILL_EVERY:?} apart; checked again {:?} after the first start)",
        started.elapsed()
    );

    for original in &originals {
        let replaced = &state.pvs[original.name()];
        assert_kept(&original.pv, replaced);
    }
    assert_eq!(saved_intents(&scenario), 0);
    assert_no_linstor_deletion(&scenario, &names, &node);
    let finished = controller.count("PV replaced");
    let total: usize = logs
        .iter()
        .map(|log| log.lines().filter(|line| line.contains("PV replaced")).count())
        .sum::<usize>()
        + finished;
    eprintln!("mass run: {total} \"PV replaced\" lines over all controllers");
    drop(controller);
    scenario.finish().await;
}
