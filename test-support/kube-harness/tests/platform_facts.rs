//! Facts about the Kubernetes control plane the controller relies on, checked against a real API
//! server, PV binder and scheduler.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Event as CoreEvent, ObjectReference, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use kube_harness::{TestEnv, VolumeOptions, affinity_nodes, hostname_affinity, micro_time_now};
use serde_json::json;

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pvc_phase(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref())
}

#[tokio::test]
async fn pv_node_affinity_is_immutable() {
    let Some(env) = TestEnv::setup("pv_node_affinity_is_immutable").await else {
        return;
    };
    let options = VolumeOptions {
        node_affinity: Some(hostname_affinity(&[env.name("node-a")])),
        ..VolumeOptions::default()
    };
    let bound = env.create_bound_volume("vol", &options).await;
    let pv_name = bound.pv.name_any();

    // Full update with a different affinity.
    let mut changed = bound.pv.clone();
    changed.spec.as_mut().unwrap().node_affinity = Some(hostname_affinity(&[env.name("node-b")]));
    let status = api_error(
        env.pvs()
            .replace(&pv_name, &PostParams::default(), &changed)
            .await,
    );
    eprintln!(
        "update refused: {} {}: {}",
        status.code, status.reason, status.message
    );
    assert_eq!(status.code, 422, "{status:?}");
    assert_eq!(status.reason, "Invalid", "{status:?}");
    assert!(
        status.message.contains("nodeAffinity") && status.message.contains("field is immutable"),
        "unexpected message: {}",
        status.message
    );

    // A merge patch is refused the same way, and removing the affinity too.
    let patch = json!({"spec": {"nodeAffinity": hostname_affinity(&[env.name("node-c")])}});
    let status = api_error(
        env.pvs()
            .patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert!(status.message.contains("field is immutable"), "{status:?}");
    let status = api_error(
        env.pvs()
            .patch(
                &pv_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"nodeAffinity": null}})),
            )
            .await,
    );
    assert!(status.message.contains("field is immutable"), "{status:?}");

    let live = env.pvs().get(&pv_name).await.unwrap();
    assert_eq!(affinity_nodes(&live), vec![env.name("node-a")]);
    env.cleanup().await;
}

/// The PV as it would be submitted again: same name, labels, spec (with the claimRef and its UID).
fn recreation_of(pv: &PersistentVolume) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: pv.metadata.name.clone(),
            labels: pv.metadata.labels.clone(),
            annotations: pv.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: pv.spec.clone(),
        status: None,
    }
}

#[tokio::test]
async fn recreated_pv_leaves_claim_lost_until_the_claim_is_updated() {
    let Some(env) = TestEnv::setup("recreated_pv_claim_lost").await else {
        return;
    };
    let options = VolumeOptions {
        node_affinity: Some(hostname_affinity(&[env.name("node-a")])),
        ..VolumeOptions::default()
    };
    let created_at = Instant::now();
    let bound = env.create_bound_volume("vol", &options).await;
    eprintln!(
        "PV and PVC Bound {:.3}s after their creation",
        created_at.elapsed().as_secs_f64()
    );
    let pv_name = bound.pv.name_any();
    let pvc_name = bound.pvc.name_any();
    let claim_uid = bound.pvc.uid().unwrap();

    // The binder also resyncs every claim periodically (15 s by default). Should that resync fall
    // into the observation window, the claim is Bound without an update; then the cycle is repeated.
    const ATTEMPTS: usize = 3;
    const LOST_WINDOW: Duration = Duration::from_secs(1);
    let mut confirmed = false;
    for attempt in 1..=ATTEMPTS {
        let live = env.pvs().get(&pv_name).await.unwrap();
        let claim_ref = live.spec.as_ref().and_then(|s| s.claim_ref.clone()).unwrap();
        assert_eq!(claim_ref.uid.as_deref(), Some(claim_uid.as_str()));

        // Delete with a UID precondition, then drop the pv-protection finalizer that keeps a bound
        // PV from going away.
        let delete = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        env.pvs().delete(&pv_name, &delete).await.unwrap();
        match env
            .pvs()
            .patch(
                &pv_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => panic!("removing finalizers: {e}"),
        }
        let deleted_at = Instant::now();
        env.wait_for_deletion(&env.pvs(), &pv_name).await;
        let lost = env.wait_for_pvc_phase(&pvc_name, "Lost").await;
        eprintln!(
            "attempt {attempt}: claim Lost {:.3}s after the PV was deleted",
            deleted_at.elapsed().as_secs_f64()
        );
        assert_eq!(
            lost.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
            Some(pv_name.as_str())
        );

        // Re-create with the same claimRef: the PV is Bound at once.
        env.pvs()
            .create(&PostParams::default(), &recreation_of(&live))
            .await
            .unwrap();
        let recreated_at = Instant::now();
        env.wait_for_pv_phase(&pv_name, "Bound").await;
        eprintln!(
            "attempt {attempt}: re-created PV Bound after {:.3}s",
            recreated_at.elapsed().as_secs_f64()
        );

        // Without an update the claim stays Lost.
        let mut stayed_lost = true;
        let window = Instant::now();
        while window.elapsed() < LOST_WINDOW {
            let pvc = env.pvcs().get(&pvc_name).await.unwrap();
            if pvc_phase(&pvc) != Some("Lost") {
                stayed_lost = false;
                eprintln!(
                    "attempt {attempt}: claim became {:?} without an update after {:.3}s (periodic resync)",
                    pvc_phase(&pvc),
                    recreated_at.elapsed().as_secs_f64()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !stayed_lost {
            env.wait_for_pvc_phase(&pvc_name, "Bound").await;
            continue;
        }

        // Any update of the claim makes the binder sync it at once (a patch that changes nothing is
        // no update, so the value is new).
        let nudged_at = Instant::now();
        env.pvcs()
            .patch(
                &pvc_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "kube-harness.test/lost-test": format!("{}-{attempt}", env.name("update"))
                }}})),
            )
            .await
            .unwrap();
        let pvc = env
            .wait_for(
                &env.pvcs(),
                &pvc_name,
                "phase Bound after the annotation update",
                Duration::from_secs(10),
                |pvc: &PersistentVolumeClaim| pvc_phase(pvc) == Some("Bound"),
            )
            .await;
        eprintln!(
            "attempt {attempt}: claim Bound {:.3}s after the annotation update (Lost for {:.3}s since the re-create)",
            nudged_at.elapsed().as_secs_f64(),
            recreated_at.elapsed().as_secs_f64()
        );
        assert_eq!(pvc.uid().as_deref(), Some(claim_uid.as_str()));
        confirmed = true;
        break;
    }
    assert!(
        confirmed,
        "in {ATTEMPTS} attempts the claim never stayed Lost for {LOST_WINDOW:?} after the re-create"
    );

    // The binder reported the loss as a warning event on the claim.
    let events: Api<CoreEvent> = Api::namespaced(env.client(), env.namespace());
    let lost_events = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pvc_name}")))
        .await
        .unwrap();
    let reasons: Vec<_> = lost_events
        .items
        .iter()
        .filter_map(|e| Some((e.reason.clone()?, e.type_.clone()?)))
        .collect();
    assert!(
        reasons.iter().any(|(r, t)| r == "ClaimLost" && t == "Warning"),
        "no ClaimLost warning among {reasons:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn pod_is_scheduled_onto_the_node_of_the_pv_affinity() {
    let Some(env) = TestEnv::setup("pod_follows_pv_affinity").await else {
        return;
    };
    for node in ["a", "b", "c"] {
        env.create_node(node).await;
    }
    let sc = env.create_storage_class("sc", "WaitForFirstConsumer").await;
    for (volume, node) in [("vol-b", "b"), ("vol-c", "c")] {
        let options = VolumeOptions {
            storage_class: sc.metadata.name.clone(),
            node_affinity: Some(hostname_affinity(&[env.name(node)])),
            ..VolumeOptions::default()
        };
        env.create_bound_volume(volume, &options).await;
        env.create_pod_with_claim(&format!("pod-{node}"), volume).await;
    }
    for node in ["b", "c"] {
        let pod = env.wait_for_pod_scheduled(&format!("pod-{node}")).await;
        let scheduled = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        eprintln!("pod-{node} scheduled onto {scheduled:?}");
        assert_eq!(scheduled, Some(env.name(node)));
    }
    env.cleanup().await;
}

fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: obj.meta().namespace.clone(),
        name: obj.meta().name.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: None,
        field_path: None,
    }
}

fn events_v1(name: &str, namespace: &str, regarding: ObjectReference) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(micro_time_now()),
        reporting_controller: Some("linstor.csi.linbit.com/affinity-controller".to_owned()),
        reporting_instance: Some("kube-harness".to_owned()),
        action: Some("ReplacePV".to_owned()),
        reason: Some("VolumeAffinityUpdated".to_owned()),
        type_: Some("Normal".to_owned()),
        note: Some("test event".to_owned()),
        regarding: Some(regarding),
        ..Event::default()
    }
}

#[tokio::test]
async fn events_on_claims_and_volumes() {
    let Some(env) = TestEnv::setup("events_on_claims_and_volumes").await else {
        return;
    };
    let bound = env.create_bound_volume("vol", &VolumeOptions::default()).await;
    let version = env.client().apiserver_version().await.unwrap();
    eprintln!("API server {}", version.git_version);

    // A namespaced object (the claim): accepted through events.k8s.io/v1.
    let ns_events: Api<Event> = Api::namespaced(env.client(), env.namespace());
    let name = env.name("pvc-event");
    ns_events
        .create(
            &PostParams::default(),
            &events_v1(&name, env.namespace(), object_ref(&bound.pvc)),
        )
        .await
        .unwrap();
    let stored = ns_events.get(&name).await.unwrap();
    assert_eq!(
        stored.regarding.and_then(|r| r.uid),
        bound.pvc.metadata.uid.clone()
    );

    // A cluster-scoped object (the PV) in namespace "default", as client-go's recorder files it.
    let default_events: Api<Event> = Api::namespaced(env.client(), "default");
    let pv_event = events_v1(&env.name("pv-event"), "default", object_ref(&bound.pv));
    let result = default_events.create(&PostParams::default(), &pv_event).await;
    match &result {
        Ok(_) => eprintln!("events.k8s.io/v1 event about a PV: accepted"),
        Err(e) => eprintln!("events.k8s.io/v1 event about a PV: refused: {e}"),
    }
    if version.major == "1" && version.minor.trim_end_matches('+') == "20" {
        let status = api_error(result);
        assert_eq!(status.code, 422, "{status:?}");
        assert!(
            status.message.contains("does not match event.namespace"),
            "{status:?}"
        );
    }

    // The core/v1 Events API takes the PV event on every version.
    let core_events: Api<CoreEvent> = Api::namespaced(env.client(), "default");
    let now = kube_harness::time_now();
    let core = CoreEvent {
        metadata: ObjectMeta {
            name: Some(env.name("pv-core-event")),
            namespace: Some("default".to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: object_ref(&bound.pv),
        reason: Some("VolumeAffinityUpdated".to_owned()),
        message: Some("test event".to_owned()),
        type_: Some("Normal".to_owned()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("linstor-affinity-controller".to_owned()),
            host: None,
        }),
        ..CoreEvent::default()
    };
    let created = core_events.create(&PostParams::default(), &core).await.unwrap();
    assert_eq!(
        created.involved_object.name.as_deref(),
        Some(bound.pv.name_any().as_str())
    );
    let _ = core_events
        .delete(&created.name_any(), &DeleteParams::default())
        .await;
    env.cleanup().await;
}
