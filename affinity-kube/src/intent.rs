//! The intent log of the replace protocol: the replacement PV saved on the
//! LINSTOR volume definition before the live PV is touched.

use std::future::Future;

use affinity_core::VolumeId;
use affinity_core::names::SAVED_PV_PROPERTY;
use linstor_api::Client;
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
        let modify = VolumeDefinitionModify {
            override_props: [(SAVED_PV_PROPERTY.to_owned(), saved_pv_json.to_owned())]
                .into_iter()
                .collect(),
            ..VolumeDefinitionModify::default()
        };
        modify_volume_definition(self, volume, &modify, "saving").await
    }

    async fn clear(&self, volume: &VolumeId) -> Result<(), IntentLogError> {
        let modify = VolumeDefinitionModify {
            delete_props: vec![SAVED_PV_PROPERTY.to_owned()],
            ..VolumeDefinitionModify::default()
        };
        modify_volume_definition(self, volume, &modify, "clearing").await
    }
}

async fn modify_volume_definition(
    client: &Client,
    volume: &VolumeId,
    modify: &VolumeDefinitionModify,
    action: &'static str,
) -> Result<(), IntentLogError> {
    client
        .modify_volume_definition(
            &volume.resource_definition,
            i32::from(volume.volume_number),
            modify,
        )
        .await
        .map(drop)
        .map_err(|source| IntentLogError {
            volume: volume.clone(),
            action,
            source,
        })
}
