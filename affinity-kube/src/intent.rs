//! The intent log of the replace protocol: the replacement PV saved on the
//! LINSTOR volume definition before the live PV is touched.

use std::future::Future;

use affinity_core::VolumeId;
use affinity_core::names::SAVED_PV_PROPERTY;
use linstor_api::Client;
use linstor_api::error::Reports;
use linstor_api::models::VolumeDefinitionModify;

/// Why the intent log could not be written.
#[derive(Debug, thiserror::Error)]
#[error("volume {volume}: {action} the saved PV property: {source}")]
pub struct IntentLogError {
    /// The volume whose definition holds the intent.
    pub volume: VolumeId,
    /// What was attempted: "saving" or "clearing".
    pub action: &'static str,
    /// The LINSTOR error.
    pub source: linstor_api::Error,
}

/// Where replace intents are kept.
pub trait IntentLog {
    /// Saves `saved_pv_json` as the intent for `volume`, replacing any earlier one.
    fn save(
        &self,
        volume: &VolumeId,
        saved_pv_json: &str,
    ) -> impl Future<Output = Result<(), IntentLogError>> + Send;

    /// Removes the intent of `volume`; removing an absent intent succeeds.
    fn clear(&self, volume: &VolumeId) -> impl Future<Output = Result<(), IntentLogError>> + Send;
}

impl IntentLog for Client {
    async fn save(&self, volume: &VolumeId, saved_pv_json: &str) -> Result<(), IntentLogError> {
        write_saved_pv(self, volume, saved_pv_json)
            .await
            .map_err(|source| IntentLogError {
                volume: volume.clone(),
                action: "saving",
                source,
            })
    }

    async fn clear(&self, volume: &VolumeId) -> Result<(), IntentLogError> {
        let modify = VolumeDefinitionModify {
            delete_props: vec![SAVED_PV_PROPERTY.to_owned()],
            ..VolumeDefinitionModify::default()
        };
        modify_volume_definition(self, volume, &modify)
            .await
            .map_err(|source| IntentLogError {
                volume: volume.clone(),
                action: "clearing",
                source,
            })
    }
}

/// Writes `saved_pv_json` as the saved PV of `volume` on its LINSTOR volume
/// definition, replacing any earlier one. Error replies inside a successful
/// answer fail it ([`linstor_api::Error::Refused`]): the property was not
/// written, and whoever relies on it being saved must not go on.
pub async fn write_saved_pv(
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
        assert!(
            matches!(error.source, linstor_api::Error::Refused { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("property rejected"), "{error}");

        sim.clear_faults();
        client.save(&volume, "{}").await.unwrap();
        client.clear(&volume).await.unwrap();
    }
}
