//! The one-shot `migrate-properties` operation.
//!
//! Older versions kept the saved PV of a replace on the LINSTOR resource
//! definition; it now lives on the volume definition of the volume it
//! describes (same property key). For every resource definition holding the
//! property, this parses it, finds the volume from the PV's CSI volume
//! handle, copies the JSON to that volume definition (unless it already holds
//! one: that one is newer) and only then deletes the property from the
//! resource definition. A crash between the two steps leaves both copies,
//! which the next run finishes; a run with nothing left to move changes
//! nothing.
//!
//! Meant to run while no controller is writing intents: the check for an
//! existing volume-definition intent uses one listing taken at the start.

use std::fmt;

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::names::{CSI_DRIVER, SAVED_PV_PROPERTY};
use affinity_core::{HandleError, VolumeId};
use linstor_api::models::{ApiCallRc, ResourceDefinition, ResourceDefinitionModify, VolumeDefinitionModify};
use linstor_api::{Client, Reports, ResourceDefinitionFilter};
use tracing::{info, warn};

/// A LINSTOR write of the migration, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateAction {
    /// Copying the saved PV to the volume definition.
    Copy {
        /// The volume definition written.
        volume_number: u16,
    },
    /// Deleting the property from the resource definition.
    Delete,
}

impl fmt::Display for MigrateAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrateAction::Copy { volume_number } => {
                write!(f, "copying the saved PV to volume definition {volume_number}")
            }
            MigrateAction::Delete => {
                f.write_str("deleting the saved PV property from the resource definition")
            }
        }
    }
}

/// Why the migration, or the migration of one resource definition, failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The resource definitions could not be listed; nothing was done.
    #[error("listing resource definitions holding {SAVED_PV_PROPERTY}: {source}")]
    List {
        /// The LINSTOR error (names the endpoint).
        source: linstor_api::Error,
    },
    /// The property is not a PersistentVolume JSON document.
    #[error("resource definition {resource_definition}: saved PV is not valid JSON: {source}")]
    InvalidJson {
        /// The resource definition holding the property.
        resource_definition: String,
        /// The decoder's error, with line and column.
        source: serde_json::Error,
    },
    /// The saved PV is not a LINSTOR CSI volume.
    #[error(
        "resource definition {resource_definition}: saved PV is not a {CSI_DRIVER} volume (CSI driver: {})",
        driver.as_deref().unwrap_or("none")
    )]
    NotLinstorVolume {
        /// The resource definition holding the property.
        resource_definition: String,
        /// The PV's CSI driver, if it has a CSI source.
        driver: Option<String>,
    },
    /// The saved PV's volume handle cannot be parsed.
    #[error("resource definition {resource_definition}: saved PV has an invalid handle: {source}")]
    InvalidHandle {
        /// The resource definition holding the property.
        resource_definition: String,
        /// Why the handle is invalid.
        source: HandleError,
    },
    /// The saved PV describes a volume of another resource definition.
    #[error(
        "resource definition {resource_definition}: saved PV handle {handle} names another resource definition"
    )]
    ForeignHandle {
        /// The resource definition holding the property.
        resource_definition: String,
        /// The saved PV's volume handle.
        handle: String,
    },
    /// The volume the saved PV describes has no volume definition.
    #[error("resource definition {resource_definition}: volume definition {volume_number} does not exist")]
    MissingVolumeDefinition {
        /// The resource definition holding the property.
        resource_definition: String,
        /// The volume number from the saved PV's handle.
        volume_number: u16,
    },
    /// A LINSTOR write failed.
    #[error("resource definition {resource_definition}: {action}: {source}")]
    Linstor {
        /// The resource definition holding the property.
        resource_definition: String,
        /// What was attempted.
        action: MigrateAction,
        /// The LINSTOR error.
        source: linstor_api::Error,
    },
    /// LINSTOR answered a write with success status but error replies.
    #[error("resource definition {resource_definition}: {action}: LINSTOR rejected it: {reports}")]
    Rejected {
        /// The resource definition holding the property.
        resource_definition: String,
        /// What was attempted.
        action: MigrateAction,
        /// The error replies.
        reports: Reports,
    },
}

/// One resource definition whose property could not be migrated; its
/// property was left in place.
#[derive(Debug)]
pub struct MigrationFailure {
    /// The resource definition.
    pub resource_definition: String,
    /// What went wrong (names the resource definition too).
    pub error: MigrateError,
}

/// What a migration run did.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Volumes whose saved PV was copied to the volume definition and removed
    /// from the resource definition.
    pub migrated: Vec<VolumeId>,
    /// Volumes whose volume definition already held a saved PV (kept: it is
    /// newer); the resource-definition property was just removed.
    pub already_present: Vec<VolumeId>,
    /// Resource definitions whose property was empty (no saved PV); the
    /// empty property was just removed.
    pub removed_empty: Vec<String>,
    /// Resource definitions that could not be migrated.
    pub failed: Vec<MigrationFailure>,
}

impl MigrationReport {
    /// Whether every resource definition found was migrated (nothing failed).
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// Whether the run found nothing to do.
    pub fn is_empty(&self) -> bool {
        self.migrated.is_empty()
            && self.already_present.is_empty()
            && self.removed_empty.is_empty()
            && self.failed.is_empty()
    }
}

/// How one resource definition was migrated.
enum Outcome {
    Migrated(VolumeId),
    AlreadyPresent(VolumeId),
    RemovedEmpty,
}

/// Moves every saved PV kept on a resource definition to its volume
/// definition. Fails only when the resource definitions cannot be listed;
/// a resource definition that cannot be migrated is reported in
/// [`MigrationReport::failed`] and keeps its property.
pub async fn migrate_properties(client: &Client) -> Result<MigrationReport, MigrateError> {
    let filter = ResourceDefinitionFilter {
        props: vec![SAVED_PV_PROPERTY.to_owned()],
        with_volume_definitions: true,
        ..ResourceDefinitionFilter::default()
    };
    let mut definitions = client
        .list_resource_definitions(&filter)
        .await
        .map_err(|source| MigrateError::List { source })?;
    definitions.sort_by(|a, b| a.name.cmp(&b.name));

    let mut report = MigrationReport::default();
    for rd in &definitions {
        // Checked here too: a LINSTOR that ignores `props` returns every definition.
        let Some(json) = rd.props.get(SAVED_PV_PROPERTY) else {
            continue;
        };
        match migrate_one(client, rd, json).await {
            Ok(Outcome::Migrated(volume)) => {
                info!(resource_definition = %rd.name, %volume, "moved saved PV to the volume definition");
                report.migrated.push(volume);
            }
            Ok(Outcome::AlreadyPresent(volume)) => {
                info!(
                    resource_definition = %rd.name,
                    %volume,
                    "volume definition already holds a saved PV; removed the older one from the resource definition"
                );
                report.already_present.push(volume);
            }
            Ok(Outcome::RemovedEmpty) => {
                info!(resource_definition = %rd.name, "removed empty saved PV property");
                report.removed_empty.push(rd.name.clone());
            }
            Err(error) => {
                warn!(resource_definition = %rd.name, %error, "cannot migrate saved PV; property kept");
                report.failed.push(MigrationFailure {
                    resource_definition: rd.name.clone(),
                    error,
                });
            }
        }
    }
    Ok(report)
}

async fn migrate_one(client: &Client, rd: &ResourceDefinition, json: &str) -> Result<Outcome, MigrateError> {
    if json.is_empty() {
        // An empty value counts as no saved PV, as it does on volume definitions.
        delete_from_resource_definition(client, &rd.name).await?;
        return Ok(Outcome::RemovedEmpty);
    }
    let volume = saved_volume(&rd.name, json)?;
    let number = i32::from(volume.volume_number);
    let Some(vd) = rd
        .volume_definitions
        .iter()
        .find(|vd| vd.volume_number == Some(number))
    else {
        return Err(MigrateError::MissingVolumeDefinition {
            resource_definition: rd.name.clone(),
            volume_number: volume.volume_number,
        });
    };
    let present = vd.props.get(SAVED_PV_PROPERTY).is_some_and(|v| !v.is_empty());
    if !present {
        // Copy first: a crash before the delete leaves both, and the next run only deletes.
        let modify = VolumeDefinitionModify {
            override_props: [(SAVED_PV_PROPERTY.to_owned(), json.to_owned())]
                .into_iter()
                .collect(),
            ..VolumeDefinitionModify::default()
        };
        let action = MigrateAction::Copy {
            volume_number: volume.volume_number,
        };
        let replies = client
            .modify_volume_definition(&rd.name, number, &modify)
            .await
            .map_err(|source| MigrateError::Linstor {
                resource_definition: rd.name.clone(),
                action,
                source,
            })?;
        check_replies(&rd.name, action, replies)?;
    }
    delete_from_resource_definition(client, &rd.name).await?;
    Ok(if present {
        Outcome::AlreadyPresent(volume)
    } else {
        Outcome::Migrated(volume)
    })
}

async fn delete_from_resource_definition(client: &Client, rd: &str) -> Result<(), MigrateError> {
    let modify = ResourceDefinitionModify {
        delete_props: vec![SAVED_PV_PROPERTY.to_owned()],
        ..ResourceDefinitionModify::default()
    };
    let replies = client
        .modify_resource_definition(rd, &modify)
        .await
        .map_err(|source| MigrateError::Linstor {
            resource_definition: rd.to_owned(),
            action: MigrateAction::Delete,
            source,
        })?;
    check_replies(rd, MigrateAction::Delete, replies)
}

fn check_replies(rd: &str, action: MigrateAction, replies: Vec<ApiCallRc>) -> Result<(), MigrateError> {
    Reports::errors_of(replies).map_err(|reports| MigrateError::Rejected {
        resource_definition: rd.to_owned(),
        action,
        reports,
    })
}

/// The volume a saved PV found on resource definition `rd` describes.
fn saved_volume(rd: &str, json: &str) -> Result<VolumeId, MigrateError> {
    let pv: PersistentVolume = serde_json::from_str(json).map_err(|source| MigrateError::InvalidJson {
        resource_definition: rd.to_owned(),
        source,
    })?;
    let csi = pv.spec.and_then(|spec| spec.csi);
    let handle = match csi {
        Some(csi) if csi.driver == CSI_DRIVER => csi.volume_handle,
        other => {
            return Err(MigrateError::NotLinstorVolume {
                resource_definition: rd.to_owned(),
                driver: other.map(|csi| csi.driver),
            });
        }
    };
    let volume: VolumeId = handle.parse().map_err(|source| MigrateError::InvalidHandle {
        resource_definition: rd.to_owned(),
        source,
    })?;
    // LINSTOR names are case-insensitive.
    if !volume.resource_definition.eq_ignore_ascii_case(rd) {
        return Err(MigrateError::ForeignHandle {
            resource_definition: rd.to_owned(),
            handle,
        });
    }
    Ok(VolumeId::new(rd, volume.volume_number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv_json(driver: &str, handle: &str) -> String {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": { "name": "pvc-1" },
            "spec": { "csi": { "driver": driver, "volumeHandle": handle } }
        })
        .to_string()
    }

    #[test]
    fn handle_without_number_is_volume_zero() {
        let v = saved_volume("pvc-1", &pv_json(CSI_DRIVER, "pvc-1")).unwrap();
        assert_eq!(v, VolumeId::new("pvc-1", 0));
    }

    #[test]
    fn handle_number_selects_the_volume() {
        let v = saved_volume("pvc-1", &pv_json(CSI_DRIVER, "pvc-1/3")).unwrap();
        assert_eq!(v, VolumeId::new("pvc-1", 3));
    }

    #[test]
    fn resource_names_compare_without_case() {
        let v = saved_volume("PVC-1", &pv_json(CSI_DRIVER, "pvc-1/1")).unwrap();
        assert_eq!(v, VolumeId::new("PVC-1", 1));
    }

    #[test]
    fn invalid_json_names_the_resource_definition() {
        let e = saved_volume("pvc-1", "{not json").unwrap_err();
        assert!(matches!(e, MigrateError::InvalidJson { .. }));
        let text = e.to_string();
        assert!(
            text.starts_with("resource definition pvc-1: saved PV is not valid JSON: "),
            "{text}"
        );
    }

    #[test]
    fn foreign_handle_is_rejected() {
        let e = saved_volume("pvc-1", &pv_json(CSI_DRIVER, "pvc-2/0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resource definition pvc-1: saved PV handle pvc-2/0 names another resource definition"
        );
    }

    #[test]
    fn other_driver_is_rejected() {
        let e = saved_volume("pvc-1", &pv_json("rbd.csi.ceph.com", "pvc-1")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, MigrateError::NotLinstorVolume { .. }));
        assert!(
            text.contains("pvc-1") && text.contains("rbd.csi.ceph.com"),
            "{text}"
        );
        let no_csi = r#"{"metadata":{"name":"x"},"spec":{}}"#;
        let text = saved_volume("pvc-1", no_csi).unwrap_err().to_string();
        assert!(text.contains("CSI driver: none"), "{text}");
    }

    #[test]
    fn invalid_handle_is_rejected() {
        let e = saved_volume("pvc-1", &pv_json(CSI_DRIVER, "pvc-1/x")).unwrap_err();
        assert!(matches!(e, MigrateError::InvalidHandle { .. }));
        assert!(e.to_string().starts_with("resource definition pvc-1: "), "{e}");
    }

    #[test]
    fn missing_volume_definition_message() {
        let e = MigrateError::MissingVolumeDefinition {
            resource_definition: "pvc-1".to_owned(),
            volume_number: 3,
        };
        assert_eq!(
            e.to_string(),
            "resource definition pvc-1: volume definition 3 does not exist"
        );
    }

    #[test]
    fn rejected_replies_are_errors() {
        let replies = vec![ApiCallRc {
            ret_code: ApiCallRc::MASK_ERROR | 1,
            message: "nope".to_owned(),
            ..ApiCallRc::default()
        }];
        let e = check_replies("pvc-1", MigrateAction::Delete, replies).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resource definition pvc-1: deleting the saved PV property from the resource definition: \
             LINSTOR rejected it: nope"
        );
        assert!(check_replies("pvc-1", MigrateAction::Copy { volume_number: 0 }, Vec::new()).is_ok());
    }
}
