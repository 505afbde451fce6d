//! Volume identity: LINSTOR CSI volume handles.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::names::CSI_DRIVER;

/// One LINSTOR volume: a resource definition and a volume number in it.
///
/// Parsed from a PV's `spec.csi.volumeHandle`, which is `RESOURCE` (volume 0)
/// or `RESOURCE/N`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeId {
    /// Name of the LINSTOR resource definition.
    pub resource_definition: String,
    /// Volume number inside the resource definition.
    pub volume_number: u16,
}

impl VolumeId {
    /// A volume id from its parts.
    pub fn new(resource_definition: impl Into<String>, volume_number: u16) -> Self {
        Self {
            resource_definition: resource_definition.into(),
            volume_number,
        }
    }
}

impl fmt::Display for VolumeId {
    /// Prints the handle form `RESOURCE/N`, which parses back to the same id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.resource_definition, self.volume_number)
    }
}

/// Why a volume handle could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The handle is the empty string.
    #[error("volume handle is empty")]
    Empty,
    /// Nothing precedes the `/`.
    #[error("volume handle {handle:?} has an empty resource name")]
    EmptyResource {
        /// The handle as given.
        handle: String,
    },
    /// The part after the `/` is not a decimal number below 65536.
    #[error(
        "volume handle {handle:?} has volume number {number:?}, expected a decimal integer from 0 to 65535"
    )]
    InvalidVolumeNumber {
        /// The handle as given.
        handle: String,
        /// The text after the first `/`.
        number: String,
    },
}

impl FromStr for VolumeId {
    type Err = HandleError;

    fn from_str(handle: &str) -> Result<Self, Self::Err> {
        split_handle(handle).map(|(resource, number)| Self::new(resource, number))
    }
}

/// The resource definition name and volume number of a handle, borrowed
/// from it.
pub(crate) fn split_handle(handle: &str) -> Result<(&str, u16), HandleError> {
    if handle.is_empty() {
        return Err(HandleError::Empty);
    }
    let (resource, number) = match handle.split_once('/') {
        Some((resource, number)) => (resource, Some(number)),
        None => (handle, None),
    };
    if resource.is_empty() {
        return Err(HandleError::EmptyResource {
            handle: handle.to_owned(),
        });
    }
    let volume_number = match number {
        None => 0,
        Some(text) => parse_volume_number(text).ok_or_else(|| HandleError::InvalidVolumeNumber {
            handle: handle.to_owned(),
            number: text.to_owned(),
        })?,
    };
    Ok((resource, volume_number))
}

/// Digits only: `u16::from_str` would also take a leading `+`.
fn parse_volume_number(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The volume a LINSTOR CSI PV names, from its handle; `None` for PVs of
/// other drivers and PVs without a CSI source.
pub fn linstor_volume_of(pv: &PersistentVolume) -> Option<Result<VolumeId, HandleError>> {
    linstor_volume_handle(pv).map(str::parse)
}

/// The volume handle of a LINSTOR CSI PV, `None` for other PVs.
pub(crate) fn linstor_volume_handle(pv: &PersistentVolume) -> Option<&str> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    (csi.driver == CSI_DRIVER).then_some(csi.volume_handle.as_str())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolumeSpec};

    use super::*;

    fn csi_pv(driver: &str, handle: &str) -> PersistentVolume {
        PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                csi: Some(CSIPersistentVolumeSource {
                    driver: driver.to_owned(),
                    volume_handle: handle.to_owned(),
                    ..CSIPersistentVolumeSource::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    #[test]
    fn only_linstor_csi_pvs_name_a_volume() {
        assert_eq!(
            linstor_volume_of(&csi_pv(CSI_DRIVER, "pvc-1/2")).map(Result::ok),
            Some(Some(VolumeId::new("pvc-1", 2)))
        );
        assert!(matches!(
            linstor_volume_of(&csi_pv(CSI_DRIVER, "pvc-1/x")),
            Some(Err(_))
        ));
        assert_eq!(linstor_volume_of(&csi_pv("other.csi.example.com", "pvc-1")), None);
        assert_eq!(linstor_volume_of(&PersistentVolume::default()), None);
    }

    #[test]
    fn parses_valid_handles() {
        let cases = [
            ("pvc-1", "pvc-1", 0),
            ("pvc-1/0", "pvc-1", 0),
            ("pvc-1/3", "pvc-1", 3),
            ("pvc-1/007", "pvc-1", 7),
            ("pvc-1/65535", "pvc-1", 65535),
        ];
        for (handle, resource, number) in cases {
            assert_eq!(
                handle.parse::<VolumeId>(),
                Ok(VolumeId::new(resource, number)),
                "{handle}"
            );
        }
    }

    #[test]
    fn rejects_invalid_handles() {
        assert_eq!("".parse::<VolumeId>(), Err(HandleError::Empty));
        for handle in ["/1", "/"] {
            assert!(
                matches!(handle.parse::<VolumeId>(), Err(HandleError::EmptyResource { .. })),
                "{handle}"
            );
        }
        for handle in [
            "r/",
            "r/x",
            "r/-1",
            "r/+1",
            "r/65536",
            "r/1.0",
            "r/ 1",
            "r/1/2",
            "r/99999999999",
        ] {
            assert!(
                matches!(
                    handle.parse::<VolumeId>(),
                    Err(HandleError::InvalidVolumeNumber { .. })
                ),
                "{handle}"
            );
        }
    }

    #[test]
    fn error_names_the_handle() {
        let err = "res/abc".parse::<VolumeId>().unwrap_err().to_string();
        assert!(err.contains("\"res/abc\"") && err.contains("\"abc\""), "{err}");
    }

    #[test]
    fn display_round_trips() {
        let id = VolumeId::new("pvc-9", 2);
        assert_eq!(id.to_string(), "pvc-9/2");
        assert_eq!(id.to_string().parse::<VolumeId>(), Ok(id));
    }
}
