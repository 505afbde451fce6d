//! LINSTOR CSI StorageClass parameters, as far as the remote access policy
//! depends on them.

use k8s_openapi::api::storage::v1::StorageClass;

use crate::model::Properties;
use crate::names::{
    ALLOW_REMOTE_VOLUME_ACCESS_PARAMETER, LAYER_LIST_PARAMETER, STORAGE_CLASS_PARAMETER_PREFIX,
};
use crate::policy::{PolicyParseError, RemoteAccessPolicy};

/// Layer list LINSTOR CSI assumes when a StorageClass names none.
pub const DEFAULT_LAYER_LIST: &str = "drbd storage";

/// LINSTOR layer kinds LINSTOR CSI accepts in `layerList` (lower case).
pub const LAYER_KINDS: [&str; 9] = [
    "drbd",
    "storage",
    "luks",
    "nvme",
    "writecache",
    "cache",
    "bcache",
    "openflex",
    "exos",
];

/// Why a StorageClass's parameters give no remote access policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageClassError {
    /// `allowRemoteVolumeAccess` holds no valid policy.
    #[error("parameter {key}: {source}")]
    InvalidPolicy {
        /// The parameter key as written in the StorageClass.
        key: String,
        /// Why the value is not a policy.
        source: PolicyParseError,
    },
    /// `layerList` names an unknown layer or none.
    #[error("parameter {key}={value:?}: {reason}")]
    InvalidLayerList {
        /// The parameter key as written in the StorageClass.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same parameter is given twice (with and without prefix, or in
    /// different case) with different values.
    #[error("parameters {first} and {second} set the same option to different values")]
    Conflict {
        /// One spelling of the key.
        first: String,
        /// The other spelling.
        second: String,
    },
}

/// The remote access policy of volumes of a StorageClass with these
/// parameters.
///
/// `allowRemoteVolumeAccess` if present; otherwise "anywhere" when the layer
/// list (default [`DEFAULT_LAYER_LIST`]) contains `drbd` or `nvme`, which
/// attach over the network, else "local only". Keys may carry the
/// `linstor.csi.linbit.com/` prefix and are matched without case; keys the
/// policy does not depend on are ignored.
pub fn policy_from_parameters(parameters: &Properties) -> Result<RemoteAccessPolicy, StorageClassError> {
    let mut allow_remote: Option<(&str, &str)> = None;
    let mut layer_list: Option<(&str, &str)> = None;
    for (key, value) in parameters {
        let slot = if option_name_is(key, ALLOW_REMOTE_VOLUME_ACCESS_PARAMETER) {
            &mut allow_remote
        } else if option_name_is(key, LAYER_LIST_PARAMETER) {
            &mut layer_list
        } else {
            continue;
        };
        if let Some((first, first_value)) = *slot
            && first_value != value
        {
            return Err(StorageClassError::Conflict {
                first: first.to_owned(),
                second: key.clone(),
            });
        }
        *slot = Some((key, value));
    }
    if let Some((key, value)) = allow_remote {
        return value.parse().map_err(|source| StorageClassError::InvalidPolicy {
            key: key.to_owned(),
            source,
        });
    }
    let (key, value) = layer_list.unwrap_or((LAYER_LIST_PARAMETER, DEFAULT_LAYER_LIST));
    let layers = parse_layer_list(value).map_err(|reason| StorageClassError::InvalidLayerList {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    })?;
    if layers.iter().any(|layer| *layer == "drbd" || *layer == "nvme") {
        Ok(RemoteAccessPolicy::anywhere())
    } else {
        Ok(RemoteAccessPolicy::local_only())
    }
}

/// Whether `key` names `option`, bare or with the LINSTOR CSI prefix, in any case.
fn option_name_is(key: &str, option: &str) -> bool {
    let bare = match key.get(..STORAGE_CLASS_PARAMETER_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(STORAGE_CLASS_PARAMETER_PREFIX) => {
            &key[STORAGE_CLASS_PARAMETER_PREFIX.len()..]
        }
        _ => key,
    };
    bare.eq_ignore_ascii_case(option)
}

/// Layer names of a `layerList` value, separated by spaces or commas,
/// normalised to lower case.
pub fn parse_layer_list(value: &str) -> Result<Vec<&'static str>, String> {
    let layers = value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .map(|word| {
            LAYER_KINDS
                .iter()
                .find(|kind| kind.eq_ignore_ascii_case(word))
                .copied()
                .ok_or_else(|| {
                    format!(
                        "unknown layer {word:?}, expected one of {}",
                        LAYER_KINDS.join(", ")
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if layers.is_empty() {
        return Err("no layer given".to_owned());
    }
    Ok(layers)
}

/// A StorageClass as the engine reads it: its name and its parameters
/// (keyed by class name in a [`crate::StorageClassSource`]). `None` for a
/// class without a name, which no PV can name.
pub fn class_parameters(class: &StorageClass) -> Option<(String, Properties)> {
    let name = class.metadata.name.as_deref().filter(|name| !name.is_empty())?;
    Some((name.to_owned(), class.parameters.clone().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::policy::RemoteAccessRule;
    use crate::test_util::pairs as params;

    #[test]
    fn explicit_policy_in_every_key_spelling() {
        for key in [
            "allowRemoteVolumeAccess",
            "allowremotevolumeaccess",
            "ALLOWREMOTEVOLUMEACCESS",
            "linstor.csi.linbit.com/allowRemoteVolumeAccess",
            "Linstor.CSI.Linbit.com/allowremotevolumeaccess",
        ] {
            assert_eq!(
                policy_from_parameters(&params(&[(key, "false")])),
                Ok(RemoteAccessPolicy::local_only()),
                "{key}"
            );
        }
        assert_eq!(
            policy_from_parameters(&params(&[(
                "allowRemoteVolumeAccess",
                "- fromSame: [topology.kubernetes.io/zone]"
            )])),
            Ok(RemoteAccessPolicy::new(vec![RemoteAccessRule::from_same([
                "topology.kubernetes.io/zone"
            ])]))
        );
        // The explicit policy wins over the layer list.
        assert_eq!(
            policy_from_parameters(&params(&[
                ("allowRemoteVolumeAccess", "true"),
                ("layerList", "storage")
            ])),
            Ok(RemoteAccessPolicy::anywhere())
        );
    }

    #[test]
    fn default_follows_the_layer_list() {
        let cases = [
            (None, RemoteAccessPolicy::anywhere()),
            (Some("drbd storage"), RemoteAccessPolicy::anywhere()),
            (Some("DRBD,LUKS,STORAGE"), RemoteAccessPolicy::anywhere()),
            (Some("nvme storage"), RemoteAccessPolicy::anywhere()),
            (Some("storage"), RemoteAccessPolicy::local_only()),
            (Some("luks storage"), RemoteAccessPolicy::local_only()),
            (
                Some(" writecache  cache storage "),
                RemoteAccessPolicy::local_only(),
            ),
        ];
        for (layers, expected) in cases {
            let mut p = params(&[("csi.storage.k8s.io/fstype", "xfs"), ("autoPlace", "2")]);
            if let Some(layers) = layers {
                p.insert("linstor.csi.linbit.com/layerList".to_owned(), layers.to_owned());
            }
            assert_eq!(policy_from_parameters(&p), Ok(expected), "{layers:?}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let p = params(&[
            ("someFutureOption", "whatever"),
            ("linstor.csi.linbit.com/storagePool", "pool"),
        ]);
        assert_eq!(policy_from_parameters(&p), Ok(RemoteAccessPolicy::anywhere()));
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let err = policy_from_parameters(&params(&[(
            "linstor.csi.linbit.com/allowRemoteVolumeAccess",
            "maybe",
        )]))
        .unwrap_err();
        assert!(
            matches!(&err, StorageClassError::InvalidPolicy { key, .. } if key == "linstor.csi.linbit.com/allowRemoteVolumeAccess"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"maybe\""), "{err}");
        for value in ["drbd zfs", "", " , "] {
            let err = policy_from_parameters(&params(&[("layerList", value)])).unwrap_err();
            assert!(
                matches!(err, StorageClassError::InvalidLayerList { .. }),
                "{value:?}: {err:?}"
            );
            assert!(err.to_string().contains("layerList"), "{err}");
        }
    }

    #[test]
    fn conflicting_spellings_are_errors_equal_ones_are_not() {
        let p = params(&[
            ("allowRemoteVolumeAccess", "true"),
            ("linstor.csi.linbit.com/allowRemoteVolumeAccess", "false"),
        ]);
        assert!(matches!(
            policy_from_parameters(&p),
            Err(StorageClassError::Conflict { .. })
        ));
        let p = params(&[
            ("allowRemoteVolumeAccess", "false"),
            ("linstor.csi.linbit.com/allowRemoteVolumeAccess", "false"),
        ]);
        assert_eq!(policy_from_parameters(&p), Ok(RemoteAccessPolicy::local_only()));
    }

    #[test]
    fn a_class_gives_its_name_and_parameters() {
        let class = |name: Option<&str>, parameters: Option<Properties>| StorageClass {
            metadata: ObjectMeta {
                name: name.map(str::to_owned),
                ..ObjectMeta::default()
            },
            provisioner: "linstor.csi.linbit.com".to_owned(),
            parameters,
            ..StorageClass::default()
        };
        let parameters = params(&[("allowRemoteVolumeAccess", "false")]);
        assert_eq!(
            class_parameters(&class(Some("local"), Some(parameters.clone()))),
            Some(("local".to_owned(), parameters))
        );
        assert_eq!(
            class_parameters(&class(Some("plain"), None)),
            Some(("plain".to_owned(), Properties::new()))
        );
        assert_eq!(class_parameters(&class(None, None)), None);
        assert_eq!(class_parameters(&class(Some(""), None)), None);
    }
}
