//! Events announcing a replaced PV, on the PV and on its claim, and warning
//! events on a PV the controller cannot decide for.
//!
//! Claims (namespaced) get `events.k8s.io/v1` events. PVs are cluster-scoped,
//! and API servers before 1.22 refuse `events.k8s.io/v1` events about
//! cluster-scoped objects, so PV events go through the core/v1 Events API,
//! which every version accepts, in the `default` namespace. A refused event
//! is logged and never fails the replace.

use std::time::{SystemTime, UNIX_EPOCH};

use affinity_core::k8s_openapi::api::core::v1::{
    Event as CoreEvent, EventSource, ObjectReference, PersistentVolume,
};
use affinity_core::k8s_openapi::api::events::v1::Event;
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::names::{EVENT_ACTION, EVENT_NOTE, EVENT_REASON, EVENT_REPORTING_CONTROLLER};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::warn;

/// Namespace of events about cluster-scoped objects.
const CLUSTER_EVENT_NAMESPACE: &str = "default";

/// Emits the "volume affinity updated" event on `pv` and, when it has a
/// claim, on the claim. `instance` names this controller instance.
pub async fn announce_replacement(client: &Client, pv: &PersistentVolume, instance: &str) {
    let now = now();
    let pv_ref = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("PersistentVolume".to_owned()),
        name: pv.metadata.name.clone(),
        uid: pv.metadata.uid.clone(),
        resource_version: pv.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    let replaced = CoreEventText {
        type_: "Normal",
        action: EVENT_ACTION,
        reason: EVENT_REASON,
        message: EVENT_NOTE,
    };
    post_core_event(client, CLUSTER_EVENT_NAMESPACE, &pv_ref, &replaced, instance, now).await;

    let claim = pv.spec.as_ref().and_then(|spec| spec.claim_ref.clone());
    let Some(claim) = claim else {
        return;
    };
    let Some(namespace) = claim.namespace.clone() else {
        return;
    };
    let claim_ref = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("PersistentVolumeClaim".to_owned()),
        ..claim
    };
    let event = Event {
        metadata: ObjectMeta {
            name: Some(event_name(&claim_ref, now)),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(EVENT_ACTION.to_owned()),
        reason: Some(EVENT_REASON.to_owned()),
        note: Some(EVENT_NOTE.to_owned()),
        type_: Some("Normal".to_owned()),
        reporting_controller: Some(EVENT_REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        regarding: Some(claim_ref.clone()),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        warn!(%namespace, %error, "events.k8s.io/v1 refused the claim event, using core/v1");
        post_core_event(client, &namespace, &claim_ref, &replaced, instance, now).await;
    }
}

/// Reason of the warning event on a PV the controller cannot decide for.
pub const WARNING_REASON: &str = "AffinityNotManaged";

/// Reason of the warning event on a PV kept at reclaim policy `Retain`
/// because the claim that owned it let go of it.
pub const CLAIM_GONE_REASON: &str = "ClaimGone";

/// Reason of the warning event on a PV whose saved replace intent the
/// cluster contradicts: nothing is written and the intent is kept.
pub const REPLACE_HELD_REASON: &str = "ReplaceHeld";

/// Action of the warning event.
const WARNING_ACTION: &str = "Left unchanged";

/// Emits a warning event with `reason` on PV `pv_name` (with `pv_uid` when
/// known) saying why the controller leaves it alone, for example an invalid
/// override annotation. `instance` names this controller instance.
pub async fn warn_about_pv(
    client: &Client,
    pv_name: &str,
    pv_uid: Option<&str>,
    reason: &'static str,
    message: &str,
    instance: &str,
) {
    let pv_ref = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("PersistentVolume".to_owned()),
        name: Some(pv_name.to_owned()),
        uid: pv_uid.map(str::to_owned),
        ..ObjectReference::default()
    };
    let text = CoreEventText {
        type_: "Warning",
        action: WARNING_ACTION,
        reason,
        message,
    };
    post_core_event(client, CLUSTER_EVENT_NAMESPACE, &pv_ref, &text, instance, now()).await;
}

/// Type, reason and message of a core/v1 event.
struct CoreEventText<'a> {
    type_: &'static str,
    action: &'static str,
    reason: &'static str,
    message: &'a str,
}

async fn post_core_event(
    client: &Client,
    namespace: &str,
    regarding: &ObjectReference,
    text: &CoreEventText<'_>,
    instance: &str,
    now: Timestamp,
) {
    let event = CoreEvent {
        metadata: ObjectMeta {
            name: Some(event_name(regarding, now)),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: regarding.clone(),
        action: Some(text.action.to_owned()),
        reason: Some(text.reason.to_owned()),
        message: Some(text.message.to_owned()),
        type_: Some(text.type_.to_owned()),
        source: Some(EventSource {
            component: Some(EVENT_REPORTING_CONTROLLER.to_owned()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(EVENT_REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        ..CoreEvent::default()
    };
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), namespace);
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        warn!(%namespace, object = ?regarding.name, %error, "event refused");
    }
}

/// `<object>.<hex nanoseconds>`, as Kubernetes clients name events.
fn event_name(regarding: &ObjectReference, now: Timestamp) -> String {
    format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or("object"),
        now.as_nanosecond()
    )
}

fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_micros()).ok())
        .and_then(|micros| Timestamp::from_microsecond(micros).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}
