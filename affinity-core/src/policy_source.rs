//! Where a PV's remote access policy comes from, first match wins:
//! an override annotation, the CSI volume context, the StorageClass.

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::names::{OVERRIDE_ANNOTATION_PREFIX, VOLUME_CONTEXT_MARKER, VOLUME_CONTEXT_POLICY};
use crate::policy::{PolicyParseError, RemoteAccessPolicy};
use crate::source::StorageClassSource;
use crate::storage_class::{StorageClassError, policy_from_parameters};

/// Where the text of a PV's policy is to be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOrigin<'a> {
    /// A PV annotation whose key starts with [`OVERRIDE_ANNOTATION_PREFIX`]
    /// (the first in key order when there are several).
    OverrideAnnotation {
        /// The annotation key.
        key: &'a str,
        /// The annotation value.
        value: &'a str,
    },
    /// The policy attribute of the CSI volume context.
    VolumeContext {
        /// The attribute value.
        value: &'a str,
    },
    /// The parameters of the PV's StorageClass.
    StorageClass {
        /// Name of the StorageClass, `None` when the PV names none.
        name: Option<&'a str>,
    },
}

impl<'a> PolicyOrigin<'a> {
    /// Finds where the policy of `pv` comes from.
    ///
    /// The volume context counts only when the marker attribute is present and
    /// the policy attribute is not empty.
    pub fn of(pv: &'a PersistentVolume) -> Self {
        let override_annotation = pv
            .metadata
            .annotations
            .iter()
            .flatten()
            .find(|(key, _)| key.starts_with(OVERRIDE_ANNOTATION_PREFIX));
        if let Some((key, value)) = override_annotation {
            return Self::OverrideAnnotation { key, value };
        }
        let spec = pv.spec.as_ref();
        let attributes = spec
            .and_then(|spec| spec.csi.as_ref())
            .and_then(|csi| csi.volume_attributes.as_ref());
        if let Some(attributes) = attributes
            && attributes.contains_key(VOLUME_CONTEXT_MARKER)
            && let Some(value) = attributes.get(VOLUME_CONTEXT_POLICY).filter(|v| !v.is_empty())
        {
            return Self::VolumeContext { value };
        }
        Self::StorageClass {
            name: spec
                .and_then(|spec| spec.storage_class_name.as_deref())
                .filter(|name| !name.is_empty()),
        }
    }
}

/// Why no remote access policy could be determined for a PV.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The override annotation holds no valid policy.
    #[error("PV {pv}: annotation {key}: {source}")]
    InvalidOverride {
        /// Name of the PV.
        pv: String,
        /// The annotation key.
        key: String,
        /// Why its value is not a policy.
        source: PolicyParseError,
    },
    /// The volume context holds no valid policy.
    #[error("PV {pv}: volume attribute {VOLUME_CONTEXT_POLICY}: {source}")]
    InvalidVolumeContext {
        /// Name of the PV.
        pv: String,
        /// Why its value is not a policy.
        source: PolicyParseError,
    },
    /// The PV names no StorageClass and carries no policy of its own.
    #[error("PV {pv} names no StorageClass and its volume context holds no remote access policy")]
    NoStorageClass {
        /// Name of the PV.
        pv: String,
    },
    /// The PV's StorageClass does not exist.
    #[error("PV {pv}: StorageClass {storage_class} not found")]
    StorageClassNotFound {
        /// Name of the PV.
        pv: String,
        /// Name of the missing StorageClass.
        storage_class: String,
    },
    /// The PV's StorageClass has a bad parameter.
    #[error("PV {pv}: StorageClass {storage_class}: {source}")]
    InvalidStorageClass {
        /// Name of the PV.
        pv: String,
        /// Name of the StorageClass.
        storage_class: String,
        /// What is wrong with its parameters.
        source: Box<StorageClassError>,
    },
}

/// The remote access policy of `pv`, parsed without caching.
///
/// [`crate::Planner`] does the same with parsed policies cached per text and
/// per StorageClass.
pub fn resolve_policy<S>(
    pv: &PersistentVolume,
    storage_classes: &S,
) -> Result<RemoteAccessPolicy, PolicyError>
where
    S: StorageClassSource + ?Sized,
{
    let origin = PolicyOrigin::of(pv);
    policy_for_origin(
        pv_name(pv),
        &origin,
        |text| text.parse(),
        |name| {
            storage_classes
                .storage_class_parameters(name)
                .map(policy_from_parameters)
        },
    )
}

/// Turns an origin into a policy or an error naming the PV, given how to
/// parse a policy text and how to get a StorageClass's policy (`None` when
/// the StorageClass does not exist).
pub(crate) fn policy_for_origin<P>(
    pv: &str,
    origin: &PolicyOrigin<'_>,
    parse: impl FnOnce(&str) -> Result<P, PolicyParseError>,
    storage_class_policy: impl FnOnce(&str) -> Option<Result<P, StorageClassError>>,
) -> Result<P, PolicyError> {
    match *origin {
        PolicyOrigin::OverrideAnnotation { key, value } => {
            parse(value).map_err(|source| PolicyError::InvalidOverride {
                pv: pv.to_owned(),
                key: key.to_owned(),
                source,
            })
        }
        PolicyOrigin::VolumeContext { value } => {
            parse(value).map_err(|source| PolicyError::InvalidVolumeContext {
                pv: pv.to_owned(),
                source,
            })
        }
        PolicyOrigin::StorageClass { name: None } => Err(PolicyError::NoStorageClass { pv: pv.to_owned() }),
        PolicyOrigin::StorageClass { name: Some(name) } => match storage_class_policy(name) {
            None => Err(PolicyError::StorageClassNotFound {
                pv: pv.to_owned(),
                storage_class: name.to_owned(),
            }),
            Some(result) => result.map_err(|source| PolicyError::InvalidStorageClass {
                pv: pv.to_owned(),
                storage_class: name.to_owned(),
                source: Box::new(source),
            }),
        },
    }
}

/// The PV's name, empty when it has none.
pub(crate) fn pv_name(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolumeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::model::Properties;
    use crate::policy::RemoteAccessRule;
    use crate::test_util::pairs as map;

    fn pv(
        annotations: &[(&str, &str)],
        attributes: &[(&str, &str)],
        storage_class: Option<&str>,
    ) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pv-1".to_owned()),
                annotations: Some(map(annotations)),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: storage_class.map(str::to_owned),
                csi: Some(CSIPersistentVolumeSource {
                    driver: "linstor.csi.linbit.com".to_owned(),
                    volume_handle: "pvc-1".to_owned(),
                    volume_attributes: Some(map(attributes)),
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            status: None,
        }
    }

    fn classes() -> BTreeMap<String, Properties> {
        let mut classes = BTreeMap::new();
        classes.insert("local".to_owned(), map(&[("allowRemoteVolumeAccess", "false")]));
        classes.insert("plain".to_owned(), map(&[]));
        classes.insert(
            "broken".to_owned(),
            map(&[("allowRemoteVolumeAccess", "sometimes")]),
        );
        classes
    }

    const MARKER: (&str, &str) = (VOLUME_CONTEXT_MARKER, "true");
    const ZONE: &str = "- fromSame: [zone]";

    fn zone() -> RemoteAccessPolicy {
        RemoteAccessPolicy::new(vec![RemoteAccessRule::from_same(["zone"])])
    }

    #[test]
    fn override_annotation_wins() {
        let pv = pv(
            &[("override.piraeus.io/remote-access-policy", ZONE)],
            &[MARKER, (VOLUME_CONTEXT_POLICY, "true")],
            Some("local"),
        );
        assert_eq!(resolve_policy(&pv, &classes()), Ok(zone()));
        // Any key with the prefix counts.
        let pv2 = pv_with_annotation("override.piraeus.io", "true");
        assert_eq!(
            resolve_policy(&pv2, &classes()),
            Ok(RemoteAccessPolicy::anywhere())
        );
    }

    fn pv_with_annotation(key: &str, value: &str) -> PersistentVolume {
        pv(&[(key, value)], &[], Some("local"))
    }

    #[test]
    fn empty_override_is_a_policy_without_rules() {
        let pv = pv_with_annotation("override.piraeus.io/policy", "");
        assert_eq!(
            resolve_policy(&pv, &classes()),
            Ok(RemoteAccessPolicy::new(Vec::new()))
        );
    }

    #[test]
    fn volume_context_needs_the_marker_and_a_value() {
        let with = pv(&[], &[MARKER, (VOLUME_CONTEXT_POLICY, ZONE)], Some("local"));
        assert_eq!(resolve_policy(&with, &classes()), Ok(zone()));
        let no_marker = pv(&[], &[(VOLUME_CONTEXT_POLICY, ZONE)], Some("local"));
        assert_eq!(
            resolve_policy(&no_marker, &classes()),
            Ok(RemoteAccessPolicy::local_only())
        );
        let empty = pv(&[], &[MARKER, (VOLUME_CONTEXT_POLICY, "")], Some("plain"));
        assert_eq!(
            resolve_policy(&empty, &classes()),
            Ok(RemoteAccessPolicy::anywhere())
        );
        let missing = pv(&[], &[MARKER], Some("local"));
        assert_eq!(
            resolve_policy(&missing, &classes()),
            Ok(RemoteAccessPolicy::local_only())
        );
        // The volume context is enough without a StorageClass.
        let no_class = pv(&[], &[MARKER, (VOLUME_CONTEXT_POLICY, "false")], None);
        assert_eq!(
            resolve_policy(&no_class, &classes()),
            Ok(RemoteAccessPolicy::local_only())
        );
    }

    #[test]
    fn storage_class_is_the_last_resort() {
        let pv1 = pv(&[("other", "x")], &[], Some("plain"));
        assert_eq!(
            resolve_policy(&pv1, &classes()),
            Ok(RemoteAccessPolicy::anywhere())
        );
    }

    #[test]
    fn errors_name_the_pv_and_the_value() {
        let cases: Vec<(PersistentVolume, &str)> = vec![
            (
                pv_with_annotation("override.piraeus.io/x", "maybe"),
                "annotation override.piraeus.io/x",
            ),
            (
                pv(&[], &[MARKER, (VOLUME_CONTEXT_POLICY, "maybe")], None),
                "volume attribute",
            ),
            (pv(&[], &[], Some("broken")), "StorageClass broken"),
            (pv(&[], &[], Some("gone")), "StorageClass gone not found"),
            (pv(&[], &[], None), "names no StorageClass"),
            (pv(&[], &[], Some("")), "names no StorageClass"),
        ];
        for (pv, needle) in cases {
            let err = resolve_policy(&pv, &classes()).unwrap_err().to_string();
            assert!(err.contains("PV pv-1") && err.contains(needle), "{err}");
        }
        let err = resolve_policy(&pv_with_annotation("override.piraeus.io/x", "maybe"), &classes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"maybe\""), "{err}");
    }
}
