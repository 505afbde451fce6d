//! The reclaim emulator the controller tests run with, on a real control
//! plane and the LINSTOR simulator: it deletes the resource definition of a
//! PV exactly when the CSI external-provisioner would (a Released PV with
//! reclaim policy Delete, or one deleted with Delete while it carries the
//! provisioner's finalizer), and otherwise only removes its finalizer from a
//! PV being deleted. So a controller that let a volume be reclaimed would
//! fail its tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{DeleteParams, PostParams};
use kube_harness::{
    PROVISIONER_FINALIZER, Reclaim, ReclaimEmulator, ReclaimReason, SKIP_RECLAIM_ANNOTATION, TestEnv,
    VolumeOptions, linstor_volume_deleter, persistent_volume,
};
use linstor_api::sim::{SimNode, SimResource, SimResourceDefinition, SimState, Simulator};

/// How long a test waits for the emulator to act.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The LINSTOR node holding the test volumes.
const NODE: &str = "node-a";

/// A test's cluster view, a simulator knowing [`NODE`], and the emulator.
struct Setup {
    env: TestEnv,
    sim: Simulator,
    reclaims: ReclaimEmulator,
}

impl Setup {
    async fn new(test: &str) -> Option<Setup> {
        let env = TestEnv::setup(test).await?;
        let sim = Simulator::start(SimState {
            nodes: vec![SimNode::new(NODE)],
            ..SimState::default()
        })
        .await
        .unwrap();
        let reclaims = ReclaimEmulator::start(&env, linstor_volume_deleter(&sim.http_url().unwrap())).await;
        Some(Setup { env, sim, reclaims })
    }

    /// Adds the resource definition `name` (one diskful replica on [`NODE`]).
    fn add_resource_definition(&self, name: &str) {
        self.sim
            .add_resource_definition(
                SimResourceDefinition::new(name, 1 << 20).resource(SimResource::diskful(NODE)),
            )
            .unwrap();
    }

    fn has_resource_definition(&self, name: &str) -> bool {
        self.sim
            .with_state(|state| state.resource_definitions.iter().any(|rd| rd.name == name))
    }

    /// A PV bound to its claim with reclaim policy `policy` and volume handle
    /// `<rd>/0`, and LINSTOR's resource definition `<rd>` (the PV's name).
    async fn bound_volume(&self, suffix: &str, policy: &str, annotations: &[(&str, &str)]) -> String {
        let name = self.env.name(suffix);
        let options = VolumeOptions {
            volume_handle: Some(format!("{name}/0")),
            reclaim_policy: policy.to_owned(),
            ..VolumeOptions::default()
        };
        self.env.create_bound_volume(suffix, &options).await;
        self.annotate(&name, annotations).await;
        self.add_resource_definition(&name);
        name
    }

    /// An unbound PV with reclaim policy `policy`, and its resource
    /// definition (both named `<prefix>-<suffix>`), once `Available`.
    async fn available_volume(&self, suffix: &str, policy: &str) -> String {
        let name = self.env.name(suffix);
        let options = VolumeOptions {
            reclaim_policy: policy.to_owned(),
            ..VolumeOptions::default()
        };
        let pv = persistent_volume(&name, &self.env.labels(), &options, None);
        self.env.pvs().create(&PostParams::default(), &pv).await.unwrap();
        self.add_resource_definition(&name);
        self.env.wait_for_pv_phase(&name, "Available").await;
        name
    }

    async fn annotate(&self, name: &str, annotations: &[(&str, &str)]) {
        if annotations.is_empty() {
            return;
        }
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
        self.env
            .pvs()
            .patch(name, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Deletes claim `suffix`, which releases its PV.
    async fn release(&self, suffix: &str) {
        self.env
            .pvcs()
            .delete(suffix, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Waits until LINSTOR no longer has `name`.
    async fn wait_for_resource_definition_deleted(&self, name: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while self.has_resource_definition(name) {
            assert!(
                Instant::now() < deadline,
                "resource definition {name} still there after {TIMEOUT:?}; reclaims: {:?}",
                self.reclaims.reclaimed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that the emulator reclaimed exactly PV `name` (its resource
    /// definition of the same name) for `reason`.
    fn assert_reclaimed(&self, name: &str, reason: ReclaimReason) {
        let reclaimed = self.reclaims.reclaimed();
        let [
            Reclaim {
                pv,
                resource_definition,
                reason: why,
                error,
                ..
            },
        ] = reclaimed.as_slice()
        else {
            panic!("expected one reclaim of {name}, got {reclaimed:?}");
        };
        assert_eq!(pv, name);
        assert_eq!(resource_definition, name);
        assert_eq!(*why, reason);
        assert_eq!(error, &None);
    }

    /// Asserts, once the emulator has gone through the PVs as they are now,
    /// that nothing was reclaimed and LINSTOR still has `name`.
    async fn assert_kept(&self, name: &str) {
        self.reclaims.settle().await;
        assert_eq!(self.reclaims.reclaimed(), []);
        assert!(
            self.has_resource_definition(name),
            "resource definition {name} deleted"
        );
    }

    /// Ends a test in which the emulator reclaimed volumes on purpose.
    async fn end(self) {
        self.reclaims.stop().await;
        self.env.cleanup().await;
    }
}

fn finalizers(pv: &PersistentVolume) -> Vec<String> {
    pv.metadata.finalizers.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_pv_with_delete_is_reclaimed() {
    let Some(setup) = Setup::new("reclaim-released-delete").await else {
        return;
    };
    let name = setup.bound_volume("vol", "Delete", &[]).await;
    let pv = setup.env.pvs().get(&name).await.unwrap();
    assert!(
        finalizers(&pv).contains(&PROVISIONER_FINALIZER.to_owned()),
        "{pv:?}"
    );

    setup.release("vol").await;
    setup.wait_for_resource_definition_deleted(&name).await;
    setup.env.wait_for_deletion(&setup.env.pvs(), &name).await;
    setup.assert_reclaimed(&name, ReclaimReason::Released);
    setup.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_pv_with_retain_is_kept() {
    let Some(setup) = Setup::new("reclaim-released-retain").await else {
        return;
    };
    let name = setup.bound_volume("vol", "Retain", &[]).await;

    setup.release("vol").await;
    setup.env.wait_for_pv_phase(&name, "Released").await;
    setup.assert_kept(&name).await;
    let pv = setup.env.pvs().get(&name).await.unwrap();
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Released"));
    setup.reclaims.finish().await;
    setup.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_pv_with_delete_and_skip_reclaim_is_kept() {
    let Some(setup) = Setup::new("reclaim-released-skip").await else {
        return;
    };
    let name = setup
        .bound_volume("vol", "Delete", &[(SKIP_RECLAIM_ANNOTATION, "true")])
        .await;

    setup.release("vol").await;
    setup.env.wait_for_pv_phase(&name, "Released").await;
    setup.assert_kept(&name).await;
    let pv = setup.env.pvs().get(&name).await.unwrap();
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Released"));
    setup.reclaims.finish().await;
    setup.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pv_with_delete_deleted_directly_is_reclaimed() {
    let Some(setup) = Setup::new("reclaim-deleted-delete").await else {
        return;
    };
    let name = setup.available_volume("vol", "Delete").await;

    setup
        .env
        .pvs()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    setup.wait_for_resource_definition_deleted(&name).await;
    setup.env.wait_for_deletion(&setup.env.pvs(), &name).await;
    setup.assert_reclaimed(&name, ReclaimReason::Deleted);
    setup.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_pv_with_delete_deleted_directly_is_reclaimed_and_kept_by_pv_protection() {
    let Some(setup) = Setup::new("reclaim-deleted-bound").await else {
        return;
    };
    let name = setup.bound_volume("vol", "Delete", &[]).await;

    setup
        .env
        .pvs()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    setup.wait_for_resource_definition_deleted(&name).await;
    // The claim still uses the PV: only the provisioner's finalizer goes.
    let pv = setup
        .env
        .wait_for(
            &setup.env.pvs(),
            &name,
            "the provisioner finalizer removed",
            TIMEOUT,
            |pv| !finalizers(pv).contains(&PROVISIONER_FINALIZER.to_owned()),
        )
        .await;
    assert!(pv.metadata.deletion_timestamp.is_some());
    assert_eq!(finalizers(&pv), ["kubernetes.io/pv-protection"]);
    setup.assert_reclaimed(&name, ReclaimReason::Deleted);
    setup.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pv_with_retain_deleted_directly_only_loses_the_finalizer() {
    let Some(setup) = Setup::new("reclaim-deleted-retain").await else {
        return;
    };
    let name = setup.available_volume("vol", "Retain").await;

    setup
        .env
        .pvs()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    setup.env.wait_for_deletion(&setup.env.pvs(), &name).await;
    setup.assert_kept(&name).await;
    setup.reclaims.finish().await;
    setup.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaim_fails_the_final_assertion() {
    let Some(setup) = Setup::new("reclaim-assertion").await else {
        return;
    };
    let name = setup.available_volume("vol", "Delete").await;
    setup
        .env
        .pvs()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    setup.wait_for_resource_definition_deleted(&name).await;

    let Setup { env, sim, reclaims } = setup;
    let outcome = tokio::spawn(async move { reclaims.finish().await }).await;
    let message = outcome
        .expect_err("a reclaim passed the assertion")
        .into_panic()
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains(&format!("resource definition {name} of PV {name} (uid "))
            && message.contains("deleted with Delete and the provisioner finalizer"),
        "{message}"
    );
    drop(sim);
    env.cleanup().await;
}
