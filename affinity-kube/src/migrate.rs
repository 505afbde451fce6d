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

use affinity_core::names::SAVED_PV_PROPERTY;
use affinity_core::{SavedStateError, VolumeId, decode_saved_pv_on_resource_definition};
use linstor_api::models::{ApiCallRc, ResourceDefinition, ResourceDefinitionModify};
use linstor_api::{Client, Reports, ResourceDefinitionFilter};
use tracing::{info, warn};

use crate::intent::write_saved_pv;

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
    /// The saved PV cannot be used: it is not a named LINSTOR CSI PV of a
    /// volume of the resource definition holding it (the error names the
    /// resource definition).
    #[error("{source}")]
    SavedPv {
        /// The resource definition holding the property.
        resource_definition: String,
        /// What is wrong with the saved PV (boxed: it is large).
        #[source]
        source: Box<SavedStateError>,
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

/// What migrating the saved PV of one resource definition takes.
#[derive(Debug, PartialEq, Eq)]
enum Migration {
    /// The property is empty, which counts as no saved PV (as it does on
    /// volume definitions): remove it.
    RemoveEmpty,
    /// Copy the saved PV to the volume definition of this volume, then
    /// remove it from the resource definition.
    Move(VolumeId),
    /// The volume definition of this volume holds a saved PV already, which
    /// is newer: remove the resource definition's.
    RemoveOlder(VolumeId),
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
        let migrated = match migration_of(rd, json) {
            Ok(migration) => migrate(client, &rd.name, json, &migration)
                .await
                .map(|()| migration),
            Err(error) => Err(error),
        };
        match migrated {
            Ok(Migration::Move(volume)) => {
                info!(resource_definition = %rd.name, %volume, "moved saved PV to the volume definition");
                report.migrated.push(volume);
            }
            Ok(Migration::RemoveOlder(volume)) => {
                info!(
                    resource_definition = %rd.name,
                    %volume,
                    "volume definition already holds a saved PV; removed the older one from the resource definition"
                );
                report.already_present.push(volume);
            }
            Ok(Migration::RemoveEmpty) => {
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

/// Decides how to migrate `json`, the saved PV on `rd` (as listed, with its
/// volume definitions).
fn migration_of(rd: &ResourceDefinition, json: &str) -> Result<Migration, MigrateError> {
    if json.is_empty() {
        return Ok(Migration::RemoveEmpty);
    }
    let (volume, _) =
        decode_saved_pv_on_resource_definition(json, &rd.name).map_err(|source| MigrateError::SavedPv {
            resource_definition: rd.name.clone(),
            source: Box::new(source),
        })?;
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
    Ok(if present {
        Migration::RemoveOlder(volume)
    } else {
        Migration::Move(volume)
    })
}

/// Carries out `migration` of resource definition `rd`, whose saved PV is
/// `json`. The copy comes first: a crash before the delete leaves both, and
/// the next run only deletes.
async fn migrate(client: &Client, rd: &str, json: &str, migration: &Migration) -> Result<(), MigrateError> {
    if let Migration::Move(volume) = migration {
        let action = MigrateAction::Copy {
            volume_number: volume.volume_number,
        };
        write_saved_pv(client, volume, json)
            .await
            .map_err(|source| write_error(rd, action, source))?;
    }
    delete_from_resource_definition(client, rd).await
}

async fn delete_from_resource_definition(client: &Client, rd: &str) -> Result<(), MigrateError> {
    let modify = ResourceDefinitionModify {
        delete_props: vec![SAVED_PV_PROPERTY.to_owned()],
        ..ResourceDefinitionModify::default()
    };
    let replies = client
        .modify_resource_definition(rd, &modify)
        .await
        .map_err(|source| write_error(rd, MigrateAction::Delete, source))?;
    check_replies(rd, MigrateAction::Delete, replies)
}

/// The error of write `action` on resource definition `rd`; error replies
/// inside a successful answer are [`MigrateError::Rejected`].
fn write_error(rd: &str, action: MigrateAction, source: linstor_api::Error) -> MigrateError {
    match source {
        linstor_api::Error::Refused { reports, .. } => MigrateError::Rejected {
            resource_definition: rd.to_owned(),
            action,
            reports,
        },
        source => MigrateError::Linstor {
            resource_definition: rd.to_owned(),
            action,
            source,
        },
    }
}

fn check_replies(rd: &str, action: MigrateAction, replies: Vec<ApiCallRc>) -> Result<(), MigrateError> {
    Reports::errors_of(replies).map_err(|reports| MigrateError::Rejected {
        resource_definition: rd.to_owned(),
        action,
        reports,
    })
}

#[cfg(test)]
mod tests {
    use affinity_core::names::CSI_DRIVER;

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

    /// Resource definition `name` with volume definitions `volumes`, those
    /// in `holding` holding a saved PV already.
    fn rd(name: &str, volumes: &[i32], holding: &[i32]) -> ResourceDefinition {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "volume_definitions": volumes
                .iter()
                .map(|&n| {
                    let props = if holding.contains(&n) {
                        serde_json::json!({ SAVED_PV_PROPERTY: pv_json(CSI_DRIVER, name) })
                    } else {
                        serde_json::json!({})
                    };
                    serde_json::json!({ "volume_number": n, "size_kib": 1, "props": props })
                })
                .collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn handle_without_number_is_volume_zero() {
        let m = migration_of(&rd("pvc-1", &[0], &[]), &pv_json(CSI_DRIVER, "pvc-1")).unwrap();
        assert_eq!(m, Migration::Move(VolumeId::new("pvc-1", 0)));
    }

    #[test]
    fn handle_number_selects_the_volume() {
        let m = migration_of(&rd("pvc-1", &[0, 3], &[0]), &pv_json(CSI_DRIVER, "pvc-1/3")).unwrap();
        assert_eq!(m, Migration::Move(VolumeId::new("pvc-1", 3)));
    }

    #[test]
    fn resource_names_compare_without_case() {
        let m = migration_of(&rd("PVC-1", &[0, 1], &[]), &pv_json(CSI_DRIVER, "pvc-1/1")).unwrap();
        assert_eq!(m, Migration::Move(VolumeId::new("PVC-1", 1)));
    }

    #[test]
    fn a_saved_pv_on_the_volume_definition_is_newer_and_kept() {
        let m = migration_of(&rd("pvc-1", &[0], &[0]), &pv_json(CSI_DRIVER, "pvc-1")).unwrap();
        assert_eq!(m, Migration::RemoveOlder(VolumeId::new("pvc-1", 0)));
    }

    #[test]
    fn an_empty_property_is_only_removed() {
        let m = migration_of(&rd("pvc-1", &[], &[]), "").unwrap();
        assert_eq!(m, Migration::RemoveEmpty);
    }

    #[test]
    fn unusable_saved_pvs_are_errors_naming_the_resource_definition() {
        let definition = rd("pvc-1", &[0], &[]);
        let cases = [
            ("{not json".to_owned(), "is not a PersistentVolume JSON document"),
            (
                pv_json(CSI_DRIVER, "pvc-2/0"),
                "names volume pvc-2/0 in its handle",
            ),
            (
                pv_json("rbd.csi.ceph.com", "pvc-1"),
                "is not a linstor.csi.linbit.com volume",
            ),
            (
                r#"{"metadata":{"name":"x"},"spec":{}}"#.to_owned(),
                "is not a linstor.csi.linbit.com volume",
            ),
            (pv_json(CSI_DRIVER, "pvc-1/x"), "volume number"),
        ];
        for (json, needle) in cases {
            let e = migration_of(&definition, &json).unwrap_err();
            assert!(matches!(e, MigrateError::SavedPv { .. }), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains("resource definition pvc-1") && text.contains(needle),
                "{json}: {text}"
            );
        }
    }

    #[test]
    fn missing_volume_definition_is_an_error() {
        let e = migration_of(&rd("pvc-1", &[0], &[]), &pv_json(CSI_DRIVER, "pvc-1/3")).unwrap_err();
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
        let e = check_replies("pvc-1", MigrateAction::Delete, replies.clone()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resource definition pvc-1: deleting the saved PV property from the resource definition: \
             LINSTOR rejected it: nope"
        );
        assert!(check_replies("pvc-1", MigrateAction::Copy { volume_number: 0 }, Vec::new()).is_ok());
        let refused = linstor_api::Error::Refused {
            endpoint: "PUT /v1/resource-definitions/pvc-1/volume-definitions/0".to_owned(),
            reports: Reports(replies),
        };
        let e = write_error("pvc-1", MigrateAction::Copy { volume_number: 0 }, refused);
        assert_eq!(
            e.to_string(),
            "resource definition pvc-1: copying the saved PV to volume definition 0: LINSTOR rejected it: nope"
        );
    }
}
