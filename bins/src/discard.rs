//! The `discard-intent` command: remove the intent of a replace (the saved PV on a LINSTOR volume
//! definition) on purpose, for example after the PV was changed by hand and the saved replacement
//! no longer applies.

use affinity_core::VolumeId;
use affinity_core::names::SAVED_PV_PROPERTY;
use affinity_kube::{IntentLog, IntentLogError};
use linstor_api::ResourceDefinitionFilter;

/// Characters of an unparseable intent shown when it is discarded.
const SHOWN_CHARS: usize = 80;

/// Why `discard-intent` discarded nothing.
#[derive(Debug, thiserror::Error)]
pub enum DiscardError {
    /// LINSTOR has no resource definition of that name.
    #[error("volume {volume}: LINSTOR has no resource definition {}: nothing discarded", .volume.resource_definition)]
    UnknownResourceDefinition {
        /// The volume asked for.
        volume: VolumeId,
    },
    /// The resource definition has no volume of that number.
    #[error(
        "volume {volume}: resource definition {} has no volume definition {}: nothing discarded",
        .volume.resource_definition,
        .volume.volume_number
    )]
    UnknownVolume {
        /// The volume asked for.
        volume: VolumeId,
    },
    /// The volume definition holds no intent.
    #[error("volume {volume}: no intent to discard (property {SAVED_PV_PROPERTY} is not set)")]
    NoIntent {
        /// The volume asked for.
        volume: VolumeId,
    },
    /// The intent changed between showing it and the confirmation.
    #[error("volume {volume}: the intent changed while waiting for the confirmation; run the command again")]
    Changed {
        /// The volume asked for.
        volume: VolumeId,
    },
    /// LINSTOR could not be read.
    #[error("volume {volume}: reading its volume definition: {source}")]
    Read {
        /// The volume asked for.
        volume: VolumeId,
        /// The LINSTOR error.
        source: Box<linstor_api::Error>,
    },
    /// The property could not be removed.
    #[error(transparent)]
    Clear(Box<IntentLogError>),
}

impl From<IntentLogError> for DiscardError {
    fn from(error: IntentLogError) -> Self {
        Self::Clear(Box::new(error))
    }
}

/// The intent saved on one volume definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// The volume whose definition holds it.
    pub volume: VolumeId,
    /// The property's text: the saved PV as JSON, normally.
    pub text: String,
}

impl Intent {
    /// What the intent stands for, in one line: the saved PV's name, or the start of the text when
    /// it is not a saved PV.
    pub fn describe(&self) -> String {
        describe_intent(&self.text)
    }
}

/// One line about an intent's text: `saved PV NAME` when it is JSON with `metadata.name`, else
/// `unparseable text "…"` with its first characters.
pub fn describe_intent(text: &str) -> String {
    let name = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|value| value.pointer("/metadata/name")?.as_str().map(str::to_owned));
    match name {
        Some(name) => format!("saved PV {name}"),
        None => {
            let mut shown: String = text.chars().take(SHOWN_CHARS).collect();
            if text.chars().nth(SHOWN_CHARS).is_some() {
                shown.push('…');
            }
            format!(
                "unparseable text {shown:?} ({} bytes; not a saved PV)",
                text.len()
            )
        }
    }
}

/// Reads the intent of `volume` from its LINSTOR volume definition.
pub async fn read_intent(linstor: &linstor_api::Client, volume: &VolumeId) -> Result<Intent, DiscardError> {
    let filter = ResourceDefinitionFilter {
        resource_definitions: vec![volume.resource_definition.clone()],
        with_volume_definitions: true,
        ..ResourceDefinitionFilter::default()
    };
    let definitions = linstor
        .list_resource_definitions(&filter)
        .await
        .map_err(|source| match source {
            linstor_api::Error::NotFound { .. } => DiscardError::UnknownResourceDefinition {
                volume: volume.clone(),
            },
            source => DiscardError::Read {
                volume: volume.clone(),
                source: Box::new(source),
            },
        })?;
    // LINSTOR names are case-insensitive.
    let definition = definitions
        .iter()
        .find(|definition| definition.name.eq_ignore_ascii_case(&volume.resource_definition))
        .ok_or_else(|| DiscardError::UnknownResourceDefinition {
            volume: volume.clone(),
        })?;
    let volume_definition = definition
        .volume_definitions
        .iter()
        .find(|vd| vd.volume_number == Some(i32::from(volume.volume_number)))
        .ok_or_else(|| DiscardError::UnknownVolume {
            volume: volume.clone(),
        })?;
    let text = volume_definition
        .props
        .get(SAVED_PV_PROPERTY)
        .ok_or_else(|| DiscardError::NoIntent {
            volume: volume.clone(),
        })?;
    Ok(Intent {
        volume: volume.clone(),
        text: text.clone(),
    })
}

/// Removes `intent` through the intent log, after checking that it is still the one shown: fails
/// with [`DiscardError::Changed`] when the property now holds something else, and with the error
/// of [`read_intent`] when it is gone.
pub async fn discard(linstor: &linstor_api::Client, intent: &Intent) -> Result<(), DiscardError> {
    let now = read_intent(linstor, &intent.volume).await?;
    if now != *intent {
        return Err(DiscardError::Changed {
            volume: intent.volume.clone(),
        });
    }
    linstor.clear(&intent.volume).await?;
    tracing::info!(volume = %intent.volume, what = %intent.describe(), "intent discarded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_pv_is_described_by_its_name() {
        let text = r#"{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"pvc-1"},"spec":{}}"#;
        assert_eq!(describe_intent(text), "saved PV pvc-1");
    }

    #[test]
    fn other_text_is_shown_abbreviated() {
        assert_eq!(
            describe_intent("garbage"),
            r#"unparseable text "garbage" (7 bytes; not a saved PV)"#
        );
        let long = "x".repeat(200);
        let described = describe_intent(&long);
        assert!(
            described.starts_with(&format!("unparseable text \"{}…\"", "x".repeat(SHOWN_CHARS))),
            "{described}"
        );
        assert!(described.ends_with("(200 bytes; not a saved PV)"), "{described}");
        // JSON without a PV name is no saved PV either.
        assert!(describe_intent(r#"{"metadata":{}}"#).starts_with("unparseable text"));
    }
}
