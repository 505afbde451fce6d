//! Events announcing a replaced PV, on the PV and on its claim, warning
//! events on a PV the controller cannot decide for, and events on a node
//! about its drain.
//!
//! Claims (namespaced) get `events.k8s.io/v1` events. PVs are cluster-scoped,
//! and API servers before 1.22 refuse `events.k8s.io/v1` events about
//! cluster-scoped objects, so PV events go through the core/v1 Events API,
//! which every version accepts, in the `default` namespace. Where RBAC grants
//! only one of the two APIs, that one is used for both. A refused event is
//! logged, the other API tried, and it never fails the replace. Nodes are
//! cluster-scoped too: their events go the same way as PV events.

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

use crate::permissions::EventApis;

/// Namespace of events about cluster-scoped objects.
const CLUSTER_EVENT_NAMESPACE: &str = "default";

/// Posts the controller's events through the Event APIs it may use.
#[derive(Clone)]
pub struct EventReporter {
    client: Client,
    instance: String,
    /// The controller named as the events' reporter.
    reporting_controller: String,
    apis: EventApis,
}

/// The two Event APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventApi {
    Core,
    EventsV1,
}

impl EventReporter {
    /// A reporter posting through `client` with both APIs; `instance` names
    /// this controller instance, and the events name
    /// [`EVENT_REPORTING_CONTROLLER`] as their reporter until
    /// [`Self::with_reporting_controller`] says otherwise.
    pub fn new(client: Client, instance: impl Into<String>) -> Self {
        Self {
            client,
            instance: instance.into(),
            reporting_controller: EVENT_REPORTING_CONTROLLER.to_owned(),
            apis: EventApis::ALL,
        }
    }

    /// Names `reporting_controller` as the events' reporter (their
    /// `reportingController`, `reportingComponent` and `source.component`).
    pub fn with_reporting_controller(mut self, reporting_controller: impl Into<String>) -> Self {
        self.reporting_controller = reporting_controller.into();
        self
    }

    /// Uses only the Event APIs `apis` allows.
    pub fn with_apis(mut self, apis: EventApis) -> Self {
        self.apis = apis;
        self
    }

    /// Emits the "volume affinity updated" event on `pv` and, when it has a
    /// claim, on the claim.
    pub async fn announce_replacement(&self, pv: &PersistentVolume) {
        let pv_ref = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("PersistentVolume".to_owned()),
            name: pv.metadata.name.clone(),
            uid: pv.metadata.uid.clone(),
            resource_version: pv.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        let replaced = EventText {
            type_: "Normal",
            action: EVENT_ACTION,
            reason: EVENT_REASON,
            message: EVENT_NOTE,
        };
        self.post(None, &pv_ref, &replaced).await;

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
        self.post(Some(&namespace), &claim_ref, &replaced).await;
    }

    /// Emits a warning event with `reason` on PV `pv_name` (with `pv_uid`
    /// when known) saying why the controller leaves it alone, for example an
    /// invalid override annotation.
    pub async fn warn_about_pv(
        &self,
        pv_name: &str,
        pv_uid: Option<&str>,
        reason: &'static str,
        message: &str,
    ) {
        let pv_ref = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("PersistentVolume".to_owned()),
            name: Some(pv_name.to_owned()),
            uid: pv_uid.map(str::to_owned),
            ..ObjectReference::default()
        };
        let text = EventText {
            type_: "Warning",
            action: WARNING_ACTION,
            reason,
            message,
        };
        self.post(None, &pv_ref, &text).await;
    }

    /// Emits an event with `reason` on Kubernetes node `node` about its drain
    /// (a warning when `warning`).
    pub async fn report_on_node(&self, node: &str, warning: bool, reason: &'static str, message: &str) {
        let node_ref = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        };
        let text = EventText {
            type_: if warning { "Warning" } else { "Normal" },
            action: DRAIN_ACTION,
            reason,
            message,
        };
        self.post(None, &node_ref, &text).await;
    }

    /// Posts an event about `regarding`, an object in `namespace` (`None`:
    /// cluster-scoped), through the first allowed API that accepts it.
    async fn post(&self, namespace: Option<&str>, regarding: &ObjectReference, text: &EventText<'_>) {
        let order = match namespace {
            None => [EventApi::Core, EventApi::EventsV1],
            Some(_) => [EventApi::EventsV1, EventApi::Core],
        };
        let namespace = namespace.unwrap_or(CLUSTER_EVENT_NAMESPACE);
        let now = Timestamp::now();
        for api in order.into_iter().filter(|api| self.allows(*api)) {
            let posted = match api {
                EventApi::Core => self.post_core(namespace, regarding, text, now).await,
                EventApi::EventsV1 => self.post_v1(namespace, regarding, text, now).await,
            };
            match posted {
                Ok(()) => return,
                Err(error) => warn!(%namespace, object = ?regarding.name, ?api, %error, "event refused"),
            }
        }
    }

    fn allows(&self, api: EventApi) -> bool {
        match api {
            EventApi::Core => self.apis.core,
            EventApi::EventsV1 => self.apis.events_v1,
        }
    }

    async fn post_v1(
        &self,
        namespace: &str,
        regarding: &ObjectReference,
        text: &EventText<'_>,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let event = Event {
            metadata: event_meta(namespace, regarding, now),
            event_time: Some(MicroTime(now)),
            action: Some(text.action.to_owned()),
            reason: Some(text.reason.to_owned()),
            note: Some(text.message.to_owned()),
            type_: Some(text.type_.to_owned()),
            reporting_controller: Some(self.reporting_controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            regarding: Some(regarding.clone()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        events.create(&PostParams::default(), &event).await.map(drop)
    }

    async fn post_core(
        &self,
        namespace: &str,
        regarding: &ObjectReference,
        text: &EventText<'_>,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let event = CoreEvent {
            metadata: event_meta(namespace, regarding, now),
            involved_object: regarding.clone(),
            action: Some(text.action.to_owned()),
            reason: Some(text.reason.to_owned()),
            message: Some(text.message.to_owned()),
            type_: Some(text.type_.to_owned()),
            source: Some(EventSource {
                component: Some(self.reporting_controller.clone()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.reporting_controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..CoreEvent::default()
        };
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), namespace);
        events.create(&PostParams::default(), &event).await.map(drop)
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

/// Action of the events about a node's drain.
const DRAIN_ACTION: &str = "Drain";

/// Type, action, reason and message of an event.
struct EventText<'a> {
    type_: &'static str,
    action: &'static str,
    reason: &'static str,
    message: &'a str,
}

/// Name and namespace of a new event about `regarding`.
fn event_meta(namespace: &str, regarding: &ObjectReference, now: Timestamp) -> ObjectMeta {
    ObjectMeta {
        name: Some(event_name(regarding, now)),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
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
