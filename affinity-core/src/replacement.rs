//! The replacement PV and its saved form, the intent log of a replace.

use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeSpec, VolumeNodeAffinity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::decision::RetiredPv;
use crate::handle::{HandleError, VolumeId};
use crate::names::{
    CSI_DRIVER, DEFAULT_VOLUME_MODE, RECLAIM_RETAIN, RESTORE_RECLAIM_POLICY_ANNOTATION, SAVED_RETIRES_KEY,
};

/// The PV to create in place of `base`: the same object as far as a client
/// may set it (name, labels, annotations, finalizers, owner references and
/// every spec field, `mountOptions` and `volumeAttributesClassName` included),
/// with `nodeAffinity` replaced and the volume mode defaulted to
/// `Filesystem`. Fields the API server owns (uid, resource version, creation
/// and deletion time, managed fields, status) are left out so the result can
/// be saved and server-side applied as is.
pub fn replacement_pv(
    base: &PersistentVolume,
    node_affinity: Option<VolumeNodeAffinity>,
) -> PersistentVolume {
    let meta = &base.metadata;
    let spec = base.spec.clone().unwrap_or_default();
    PersistentVolume {
        metadata: ObjectMeta {
            name: meta.name.clone(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            finalizers: meta.finalizers.clone(),
            owner_references: meta.owner_references.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            node_affinity,
            volume_mode: Some(
                spec.volume_mode
                    .clone()
                    .unwrap_or_else(|| DEFAULT_VOLUME_MODE.to_owned()),
            ),
            ..spec
        }),
        status: None,
    }
}

/// The saved form of a replacement PV: its JSON apply document, as the
/// reference controller writes it.
pub fn encode_saved_pv(pv: &PersistentVolume) -> Result<String, serde_json::Error> {
    serde_json::to_string(pv)
}

/// A replace intent as saved on the volume definition: the replacement PV
/// and, when it was written by this project, the PV it retires.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedIntent {
    /// The replacement PV, with the original reclaim policy and annotations.
    pub pv: PersistentVolume,
    /// The live PV the replace retires (UID and resource version as read
    /// when the replacement was built); `None` for intents of the reference
    /// controller, which records neither, and for re-creations.
    pub retires: Option<RetiredPv>,
}

/// The saved form of an intent: the replacement's JSON apply document with
/// the retired PV's UID and resource version under [`SAVED_RETIRES_KEY`],
/// a key that readers decoding a PersistentVolume ignore.
pub fn encode_intent(
    pv: &PersistentVolume,
    retires: Option<&RetiredPv>,
) -> Result<String, serde_json::Error> {
    let mut document = serde_json::to_value(pv)?;
    if let (Some(retires), Some(object)) = (retires, document.as_object_mut()) {
        object.insert(
            SAVED_RETIRES_KEY.to_owned(),
            serde_json::json!({ "uid": retires.uid, "resourceVersion": retires.resource_version }),
        );
    }
    serde_json::to_string(&document)
}

/// The PV as this project creates it in place of a retired one: reclaim
/// policy `Retain`, with the original policy in
/// [`RESTORE_RECLAIM_POLICY_ANNOTATION`] until the claim owns the PV
/// again. A replacement whose policy already is `Retain` is unchanged.
pub fn held_at_retain(replacement: &PersistentVolume) -> PersistentVolume {
    let mut held = replacement.clone();
    let spec = held.spec.get_or_insert_with(Default::default);
    let original = spec.persistent_volume_reclaim_policy.clone().unwrap_or_default();
    if original == RECLAIM_RETAIN {
        return held;
    }
    spec.persistent_volume_reclaim_policy = Some(RECLAIM_RETAIN.to_owned());
    held.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(RESTORE_RECLAIM_POLICY_ANNOTATION.to_owned(), original);
    held
}

/// Where saved replace state was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavedStateLocation {
    /// The volume definition of this volume, where saved state is kept.
    Volume(VolumeId),
    /// This resource definition, where older versions kept it.
    ResourceDefinition(String),
}

impl fmt::Display for SavedStateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Volume(volume) => write!(f, "volume {volume}"),
            Self::ResourceDefinition(name) => write!(f, "resource definition {name}"),
        }
    }
}

/// Why saved replace state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SavedStateError {
    /// The property is not a PersistentVolume JSON document.
    #[error("saved PV of {saved_on} is not a PersistentVolume JSON document ({text:?}): {source}")]
    InvalidJson {
        /// Where the property was found.
        saved_on: SavedStateLocation,
        /// The property's text; past its first 64 characters cut and marked `...`.
        text: String,
        /// The decoder's error, with line and column.
        source: serde_json::Error,
    },
    /// The saved PV has no name.
    #[error("saved PV of {saved_on} has no name")]
    MissingName {
        /// Where the property was found.
        saved_on: SavedStateLocation,
    },
    /// The saved PV is not a LINSTOR CSI volume.
    #[error("saved PV {pv} of {saved_on} is not a {CSI_DRIVER} volume")]
    NotLinstorVolume {
        /// The saved PV's name.
        pv: String,
        /// Where the property was found.
        saved_on: SavedStateLocation,
    },
    /// The saved PV's volume handle cannot be parsed.
    #[error("saved PV {pv} of {saved_on}: {source}")]
    InvalidHandle {
        /// The saved PV's name.
        pv: String,
        /// Where the property was found.
        saved_on: SavedStateLocation,
        /// Why the handle is invalid.
        source: HandleError,
    },
    /// The record of the retired PV is not an object of strings.
    #[error(
        "saved PV {pv} of {saved_on}: {SAVED_RETIRES_KEY} is not an object of uid and resourceVersion: {source}"
    )]
    InvalidRetires {
        /// The saved PV's name.
        pv: String,
        /// Where the property was found.
        saved_on: SavedStateLocation,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// The saved PV describes another volume than the one it is saved on
    /// (saved on a resource definition: a volume of another one).
    #[error("saved PV {pv} on {saved_on} names volume {found} in its handle")]
    VolumeMismatch {
        /// The saved PV's name.
        pv: String,
        /// Where the property was found.
        saved_on: SavedStateLocation,
        /// The volume its handle names.
        found: VolumeId,
    },
}

/// How much of an unreadable saved PV an error shows.
pub const SHOWN_TEXT_CHARS: usize = 64;

/// `text`, cut to [`SHOWN_TEXT_CHARS`] characters and marked when cut.
fn abbreviated(text: &str) -> String {
    match text.char_indices().nth(SHOWN_TEXT_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Decodes saved replace state found on `volume` and checks that it is a
/// named LINSTOR CSI PV of that very volume.
pub fn decode_saved_pv(json: &str, volume: &VolumeId) -> Result<PersistentVolume, SavedStateError> {
    decode_intent(json, volume).map(|intent| intent.pv)
}

/// Decodes a saved PV found on resource definition `resource_definition`,
/// where older versions kept it, and returns it with the volume it is for:
/// the one its handle names, which must be a volume of that resource
/// definition (names compared without case, as LINSTOR compares them; the
/// volume is named as the resource definition spells it). Otherwise checked
/// as [`decode_saved_pv`] checks saved state found on a volume.
pub fn decode_saved_pv_on_resource_definition(
    json: &str,
    resource_definition: &str,
) -> Result<(VolumeId, PersistentVolume), SavedStateError> {
    let (intent, found) = decode_found_on(json, SavedOn::ResourceDefinition(resource_definition))?;
    Ok((VolumeId::new(resource_definition, found.volume_number), intent.pv))
}

/// What [`SAVED_RETIRES_KEY`] holds.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetiresRecord {
    uid: Option<String>,
    resource_version: Option<String>,
}

/// Decodes a saved intent found on `volume` (written by this project or by
/// the reference controller) and checks that its PV is a named LINSTOR CSI
/// PV of that very volume.
pub fn decode_intent(json: &str, volume: &VolumeId) -> Result<SavedIntent, SavedStateError> {
    decode_found_on(json, SavedOn::Volume(volume)).map(|(intent, _)| intent)
}

/// Where saved state being decoded was found.
#[derive(Clone, Copy)]
enum SavedOn<'a> {
    Volume(&'a VolumeId),
    ResourceDefinition(&'a str),
}

impl SavedOn<'_> {
    fn location(self) -> SavedStateLocation {
        match self {
            Self::Volume(volume) => SavedStateLocation::Volume(volume.clone()),
            Self::ResourceDefinition(name) => SavedStateLocation::ResourceDefinition(name.to_owned()),
        }
    }

    /// Whether saved state found here may describe volume `found`.
    fn may_describe(self, found: &VolumeId) -> bool {
        match self {
            Self::Volume(volume) => found == volume,
            Self::ResourceDefinition(name) => found.resource_definition.eq_ignore_ascii_case(name),
        }
    }
}

/// Decodes a saved intent found on `saved_on` and checks that its PV is a
/// named LINSTOR CSI PV of a volume saved state found there may describe;
/// returns it with the volume its handle names.
fn decode_found_on(json: &str, saved_on: SavedOn<'_>) -> Result<(SavedIntent, VolumeId), SavedStateError> {
    let invalid = |source| SavedStateError::InvalidJson {
        saved_on: saved_on.location(),
        text: abbreviated(json),
        source,
    };
    let mut document: serde_json::Value = serde_json::from_str(json).map_err(invalid)?;
    let retires = document
        .as_object_mut()
        .and_then(|object| object.remove(SAVED_RETIRES_KEY));
    let pv: PersistentVolume = serde_json::from_value(document).map_err(invalid)?;
    let name = match pv.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => {
            return Err(SavedStateError::MissingName {
                saved_on: saved_on.location(),
            });
        }
    };
    let csi = pv
        .spec
        .as_ref()
        .and_then(|spec| spec.csi.as_ref())
        .filter(|csi| csi.driver == CSI_DRIVER);
    let Some(csi) = csi else {
        return Err(SavedStateError::NotLinstorVolume {
            pv: name,
            saved_on: saved_on.location(),
        });
    };
    let found: VolumeId = csi
        .volume_handle
        .parse()
        .map_err(|source| SavedStateError::InvalidHandle {
            pv: name.clone(),
            saved_on: saved_on.location(),
            source,
        })?;
    if !saved_on.may_describe(&found) {
        return Err(SavedStateError::VolumeMismatch {
            pv: name,
            saved_on: saved_on.location(),
            found,
        });
    }
    let retires = match retires {
        None => None,
        Some(record) => {
            let record: RetiresRecord =
                serde_json::from_value(record).map_err(|source| SavedStateError::InvalidRetires {
                    pv: name.clone(),
                    saved_on: saved_on.location(),
                    source,
                })?;
            Some(RetiredPv {
                name,
                uid: record.uid,
                resource_version: record.resource_version,
            })
        }
    };
    Ok((SavedIntent { pv, retires }, found))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, NodeSelector, ObjectReference};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn live_pv() -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv-1".to_owned()),
                uid: Some("uid-1".to_owned()),
                resource_version: Some("42".to_owned()),
                creation_timestamp: Some(Time(Timestamp::UNIX_EPOCH)),
                generation: Some(3),
                labels: Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])),
                annotations: Some(BTreeMap::from([(
                    "pv.kubernetes.io/provisioned-by".to_owned(),
                    CSI_DRIVER.to_owned(),
                )])),
                finalizers: Some(vec!["kubernetes.io/pv-protection".to_owned()]),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".to_owned(),
                    kind: "ConfigMap".to_owned(),
                    name: "owner".to_owned(),
                    uid: "uid-owner".to_owned(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                capacity: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("1Gi".to_owned()),
                )])),
                claim_ref: Some(ObjectReference {
                    name: Some("data".to_owned()),
                    namespace: Some("default".to_owned()),
                    uid: Some("uid-claim".to_owned()),
                    ..ObjectReference::default()
                }),
                csi: Some(CSIPersistentVolumeSource {
                    driver: CSI_DRIVER.to_owned(),
                    volume_handle: "pvc-1/2".to_owned(),
                    fs_type: Some("ext4".to_owned()),
                    ..CSIPersistentVolumeSource::default()
                }),
                mount_options: Some(vec!["noatime".to_owned()]),
                volume_attributes_class_name: Some("gold".to_owned()),
                persistent_volume_reclaim_policy: Some("Delete".to_owned()),
                storage_class_name: Some("local".to_owned()),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector::default()),
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn keeps_every_client_field_and_replaces_the_affinity() {
        let live = live_pv();
        let new = replacement_pv(&live, None);
        let (lm, nm) = (&live.metadata, &new.metadata);
        assert_eq!(nm.name, lm.name);
        assert_eq!(nm.labels, lm.labels);
        assert_eq!(nm.annotations, lm.annotations);
        assert_eq!(nm.finalizers, lm.finalizers);
        assert_eq!(nm.owner_references, lm.owner_references);
        assert_eq!(nm.uid, None);
        assert_eq!(nm.resource_version, None);
        assert_eq!(nm.creation_timestamp, None);
        assert_eq!(nm.generation, None);
        let mut expected_spec = live.spec.clone().unwrap();
        expected_spec.node_affinity = None;
        expected_spec.volume_mode = Some("Filesystem".to_owned());
        assert_eq!(new.spec, Some(expected_spec));
        assert_eq!(new.status, None);
    }

    #[test]
    fn keeps_an_explicit_volume_mode() {
        let mut live = live_pv();
        if let Some(spec) = live.spec.as_mut() {
            spec.volume_mode = Some("Block".to_owned());
        }
        let new = replacement_pv(&live, None);
        assert_eq!(new.spec.and_then(|s| s.volume_mode).as_deref(), Some("Block"));
    }

    #[test]
    fn saved_form_round_trips_as_an_apply_document() {
        let new = replacement_pv(&live_pv(), None);
        let json = encode_saved_pv(&new).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["apiVersion"], "v1");
        assert_eq!(value["kind"], "PersistentVolume");
        assert_eq!(value["spec"]["mountOptions"][0], "noatime");
        assert_eq!(value["spec"]["volumeAttributesClassName"], "gold");
        assert!(value["metadata"].get("uid").is_none());
        let decoded = decode_saved_pv(&json, &VolumeId::new("pvc-1", 2)).unwrap();
        assert_eq!(decoded, new);
    }

    #[test]
    fn rejects_unusable_saved_state() {
        let volume = VolumeId::new("pvc-1", 2);
        let good = encode_saved_pv(&replacement_pv(&live_pv(), None)).unwrap();
        let other_volume = good.replace("pvc-1/2", "pvc-1/3");
        let other_rd = good.replace("pvc-1/2", "pvc-7/2");
        let bad_handle = good.replace("pvc-1/2", "pvc-1/x");
        let other_driver = good.replace("\"driver\":\"linstor.csi.linbit.com\"", "\"driver\":\"other\"");
        let nameless = good.replace("\"name\":\"pv-1\",", "");
        let cases: [(&str, &str); 8] = [
            ("{", "not a PersistentVolume JSON document"),
            ("", "not a PersistentVolume JSON document"),
            (
                "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}",
                "not a PersistentVolume JSON document",
            ),
            (&other_volume, "names volume pvc-1/3"),
            (&other_rd, "names volume pvc-7/2"),
            (&bad_handle, "volume number"),
            (&other_driver, "is not a linstor.csi.linbit.com volume"),
            (&nameless, "has no name"),
        ];
        for (json, needle) in cases {
            let err = decode_saved_pv(json, &volume).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("pvc-1/2"), "{json}: {err}");
        }
    }

    #[test]
    fn an_unreadable_saved_pv_is_shown_abbreviated() {
        let volume = VolumeId::new("pvc-1", 0);
        let err = decode_saved_pv("{not json", &volume).unwrap_err().to_string();
        assert!(err.contains("\"{not json\""), "{err}");
        let long = format!("{{{}", "é".repeat(200));
        let err = decode_saved_pv(&long, &volume).unwrap_err().to_string();
        let shown = format!("\"{{{}...\"", "é".repeat(SHOWN_TEXT_CHARS - 1));
        assert!(err.contains(&shown), "{err}");
        assert!(!err.contains(&"é".repeat(SHOWN_TEXT_CHARS)), "{err}");
    }

    #[test]
    fn a_saved_pv_on_a_resource_definition_is_for_the_volume_its_handle_names() {
        let good = encode_saved_pv(&replacement_pv(&live_pv(), None)).unwrap();
        let (volume, pv) = decode_saved_pv_on_resource_definition(&good, "PVC-1").unwrap();
        assert_eq!(volume, VolumeId::new("PVC-1", 2));
        assert_eq!(pv, replacement_pv(&live_pv(), None));

        let other_rd = good.replace("pvc-1/2", "pvc-7/2");
        let err = decode_saved_pv_on_resource_definition(&other_rd, "pvc-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "saved PV pv-1 on resource definition pvc-1 names volume pvc-7/2 in its handle"
        );
        let err = decode_saved_pv_on_resource_definition("{", "pvc-1").unwrap_err();
        assert!(
            matches!(&err, SavedStateError::InvalidJson { saved_on: SavedStateLocation::ResourceDefinition(name), .. } if name == "pvc-1"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("saved PV of resource definition pvc-1 is not a PersistentVolume JSON document"),
            "{err}"
        );
        let nameless = good.replace("\"name\":\"pv-1\",", "");
        let err = decode_saved_pv_on_resource_definition(&nameless, "pvc-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "saved PV of resource definition pvc-1 has no name"
        );
    }
}
