//! The intent log of the replace protocol: the replacement PV saved before
//! the live PV is touched.
//!
//! [`IntentLog`] is where intents are kept. Its default implementation, on
//! [`linstor_api::Client`], keeps each intent in a property of the volume's
//! LINSTOR volume definition, where the controller's next pass finds it; an
//! embedder may keep them elsewhere by implementing the trait.

use std::fmt;
use std::future::Future;

use affinity_core::VolumeId;
use affinity_core::names::SAVED_PV_PROPERTY;
use linstor_api::Client;
use linstor_api::error::Reports;
use linstor_api::models::VolumeDefinitionModify;

/// The error of an intent store, whatever its kind.
pub type IntentStoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What was done to the intent log when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentAction {
    /// Saving an intent.
    Saving,
    /// Clearing an intent.
    Clearing,
}

impl fmt::Display for IntentAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Saving => "saving",
            Self::Clearing => "clearing",
        })
    }
}

/// Why the intent log could not be written. Whatever the cause, the write
/// counts as not done: the protocol does not go on after a failed save.
#[derive(Debug, thiserror::Error)]
#[error("volume {volume}: {action} the saved PV: {source}")]
pub struct IntentLogError {
    /// The volume whose intent it is.
    pub volume: VolumeId,
    /// What was attempted.
    pub action: IntentAction,
    /// The store's own error; for the LINSTOR store a [`linstor_api::Error`].
    pub source: IntentStoreError,
}

impl IntentLogError {
    /// `action` on the intent of `volume` failed because of `source`.
    pub fn new(volume: &VolumeId, action: IntentAction, source: impl Into<IntentStoreError>) -> Self {
        Self {
            volume: volume.clone(),
            action,
            source: source.into(),
        }
    }
}

/// Where replace intents are kept. An implementation must report success
/// only once the intent is stored durably: the protocol deletes the live PV
/// after a successful [`Self::save`], relying on the intent to re-create it.
pub trait IntentLog: Send + Sync {
    /// Saves `saved_pv_json` as the intent for `volume`, replacing any earlier one.
    fn save(
        &self,
        volume: &VolumeId,
        saved_pv_json: &str,
    ) -> impl Future<Output = Result<(), IntentLogError>> + Send;

    /// Removes the intent of `volume`; removing an absent intent succeeds.
    fn clear(&self, volume: &VolumeId) -> impl Future<Output = Result<(), IntentLogError>> + Send;
}

/// The default store: a property of the volume's LINSTOR volume definition.
/// Error replies inside a successful answer are a failed write.
impl IntentLog for Client {
    async fn save(&self, volume: &VolumeId, saved_pv_json: &str) -> Result<(), IntentLogError> {
        write_saved_pv(self, volume, saved_pv_json)
            .await
            .map_err(|source| IntentLogError::new(volume, IntentAction::Saving, source))
    }

    async fn clear(&self, volume: &VolumeId) -> Result<(), IntentLogError> {
        let modify = VolumeDefinitionModify {
            delete_props: vec![SAVED_PV_PROPERTY.to_owned()],
            ..VolumeDefinitionModify::default()
        };
        modify_volume_definition(self, volume, &modify)
            .await
            .map_err(|source| IntentLogError::new(volume, IntentAction::Clearing, source))
    }
}

/// Writes `saved_pv_json` as the saved PV of `volume` on its LINSTOR volume
/// definition, replacing any earlier one. Error replies inside a successful
/// answer fail it ([`linstor_api::Error::Refused`]): the property was not
/// written, and whoever relies on it being saved must not go on.
pub(crate) async fn write_saved_pv(
    client: &Client,
    volume: &VolumeId,
    saved_pv_json: &str,
) -> Result<(), linstor_api::Error> {
    let modify = VolumeDefinitionModify {
        override_props: [(SAVED_PV_PROPERTY.to_owned(), saved_pv_json.to_owned())]
            .into_iter()
            .collect(),
        ..VolumeDefinitionModify::default()
    };
    modify_volume_definition(client, volume, &modify).await
}

/// Applies `modify` to the volume definition of `volume`; error replies
/// inside a successful answer are [`linstor_api::Error::Refused`].
async fn modify_volume_definition(
    client: &Client,
    volume: &VolumeId,
    modify: &VolumeDefinitionModify,
) -> Result<(), linstor_api::Error> {
    let replies = client
        .modify_volume_definition(
            &volume.resource_definition,
            i32::from(volume.volume_number),
            modify,
        )
        .await?;
    Reports::errors_of(replies).map_err(|reports| linstor_api::Error::Refused {
        endpoint: format!(
            "PUT /v1/resource-definitions/{}/volume-definitions/{}",
            volume.resource_definition, volume.volume_number
        ),
        reports,
    })
}

#[cfg(test)]
mod tests {
    use linstor_api::sim::{Fault, FaultKind, SimResourceDefinition, SimState, Simulator};

    use super::*;

    #[tokio::test]
    async fn error_replies_in_a_success_answer_are_a_failed_save() {
        let state = SimState {
            resource_definitions: vec![SimResourceDefinition::new("pvc-1", 1024)],
            ..SimState::default()
        };
        let sim = Simulator::start(state).await.unwrap();
        let client = sim.http_client().unwrap().unwrap();
        let volume = VolumeId::new("pvc-1", 0);
        sim.add_fault(
            Fault::new(FaultKind::Error {
                status: 200,
                message: "property rejected".to_owned(),
            })
            .on_method("PUT")
            .on_path("/v1/resource-definitions/pvc-1/volume-definitions"),
        );
        let error = client.save(&volume, "{}").await.unwrap_err();
        assert_eq!(error.action, IntentAction::Saving);
        assert!(
            matches!(
                error.source.downcast_ref::<linstor_api::Error>(),
                Some(linstor_api::Error::Refused { .. })
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("property rejected"), "{error}");

        sim.clear_faults();
        client.save(&volume, "{}").await.unwrap();
        client.clear(&volume).await.unwrap();
    }
}
