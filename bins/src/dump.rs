//! Reading a dump directory: Kubernetes lists made with `kubectl get ... -o
//! json`, and LINSTOR lists made with `linstor -m ... list` (which wraps the
//! REST answer in an outer list) or taken straight from the REST API.
//!
//! Every failure names the file and says why: missing, unreadable, not JSON
//! (with line and column), not the expected shape, or a field of the wrong
//! type (with the JSON path of the element).

use std::path::{Path, PathBuf};

use affinity_core::k8s_openapi::api::core::v1::PersistentVolume;
use affinity_core::k8s_openapi::api::storage::v1::StorageClass;
use linstor_api::models::{Node, ResourceDefinition, ResourceWithVolumes};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// PVs: `kubectl get pv -o json`.
pub const PV_FILE: &str = "pv.json";
/// StorageClasses: `kubectl get storageclass -o json`.
pub const STORAGE_CLASS_FILE: &str = "storageclasses.json";
/// LINSTOR nodes: `linstor -m node list`.
pub const NODE_FILE: &str = "nodes.json";
/// LINSTOR resources (the resource view): `linstor -m resource list`.
pub const RESOURCE_FILE: &str = "resources.json";
/// LINSTOR resource definitions: `linstor -m resource-definition list`.
pub const RESOURCE_DEFINITION_FILE: &str = "resource-definitions.json";
/// Optional LINSTOR volume definitions: `linstor -m volume-definition list`.
pub const VOLUME_DEFINITION_FILE: &str = "volume-definitions.json";

/// The command that makes each file of a dump, for error messages and help.
pub const FILE_COMMANDS: [(&str, &str); 6] = [
    (PV_FILE, "kubectl get pv -o json"),
    (STORAGE_CLASS_FILE, "kubectl get storageclass -o json"),
    (NODE_FILE, "linstor -m node list"),
    (RESOURCE_FILE, "linstor -m resource list"),
    (RESOURCE_DEFINITION_FILE, "linstor -m resource-definition list"),
    (VOLUME_DEFINITION_FILE, "linstor -m volume-definition list"),
];

/// Everything read from a dump directory.
#[derive(Debug, Default)]
pub struct Dump {
    /// The PVs.
    pub pvs: Vec<PersistentVolume>,
    /// The StorageClasses.
    pub storage_classes: Vec<StorageClass>,
    /// The LINSTOR nodes.
    pub nodes: Vec<Node>,
    /// The LINSTOR resources with their volumes.
    pub resources: Vec<ResourceWithVolumes>,
    /// The LINSTOR resource definitions, with volume definitions when the
    /// dump holds them.
    pub resource_definitions: Vec<ResourceDefinition>,
    /// The resource definitions of `volume-definitions.json`, when present:
    /// the source of volume definition properties.
    pub volume_definitions: Option<Vec<ResourceDefinition>>,
}

/// Why a dump file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// A required file does not exist.
    #[error("{path}: missing (make it with `{command} > {path}`)", path = .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The command that makes it.
        command: &'static str,
    },
    /// The file exists but cannot be read.
    #[error("{path}: cannot read: {source}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: not valid JSON: {source}", path = .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// The file is JSON but not the expected kind of document.
    #[error("{path}: {why}", path = .path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// What was expected and found.
        why: String,
    },
    /// An element of the file has a field of the wrong type or lacks one.
    #[error("{path}: at {json_path}: {why}", path = .path.display())]
    Element {
        /// The file.
        path: PathBuf,
        /// JSON path of the failing value, such as `[0][3].props`.
        json_path: String,
        /// What is wrong there.
        why: String,
    },
}

/// Reads every file of the dump directory `dir`.
pub fn load_dir(dir: &Path) -> Result<Dump, DumpError> {
    let pvs = kubernetes_list(
        &read_required(dir, PV_FILE)?,
        dir.join(PV_FILE),
        "PersistentVolume",
    )?;
    let storage_classes = kubernetes_list(
        &read_required(dir, STORAGE_CLASS_FILE)?,
        dir.join(STORAGE_CLASS_FILE),
        "StorageClass",
    )?;
    let nodes = linstor_list(
        &read_required(dir, NODE_FILE)?,
        dir.join(NODE_FILE),
        "node",
        &["name"],
    )?;
    let resources = linstor_list(
        &read_required(dir, RESOURCE_FILE)?,
        dir.join(RESOURCE_FILE),
        "resource",
        &["name", "node_name"],
    )?;
    let resource_definitions = linstor_list(
        &read_required(dir, RESOURCE_DEFINITION_FILE)?,
        dir.join(RESOURCE_DEFINITION_FILE),
        "resource definition",
        &["name"],
    )?;
    let volume_definitions = match read_optional(dir, VOLUME_DEFINITION_FILE)? {
        Some(value) => Some(linstor_list(
            &value,
            dir.join(VOLUME_DEFINITION_FILE),
            "resource definition with volume definitions",
            &["name"],
        )?),
        None => None,
    };
    Ok(Dump {
        pvs,
        storage_classes,
        nodes,
        resources,
        resource_definitions,
        volume_definitions,
    })
}

fn command_for(file: &str) -> &'static str {
    FILE_COMMANDS
        .iter()
        .find(|(name, _)| *name == file)
        .map_or("", |(_, command)| command)
}

fn read_required(dir: &Path, file: &'static str) -> Result<Value, DumpError> {
    read_optional(dir, file)?.ok_or_else(|| DumpError::Missing {
        path: dir.join(file),
        command: command_for(file),
    })
}

fn read_optional(dir: &Path, file: &str) -> Result<Option<Value>, DumpError> {
    let path = dir.join(file);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DumpError::Read { path, source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| DumpError::Syntax { path, source })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The items of a Kubernetes list (`kind: List` or `<Kind>List`), of a bare
/// JSON array of objects, or a single object of kind `kind`.
fn kubernetes_list<T: DeserializeOwned>(
    value: &Value,
    path: PathBuf,
    kind: &str,
) -> Result<Vec<T>, DumpError> {
    let (items, prefix): (Vec<&Value>, &str) = match value {
        Value::Object(object) => match (object.get("items"), object.get("kind").and_then(Value::as_str)) {
            (Some(Value::Array(items)), _) => (items.iter().collect(), "items"),
            (Some(other), _) => {
                return Err(DumpError::Shape {
                    path,
                    why: format!("`items` is {}, expected a list of {kind} objects", kind_of(other)),
                });
            }
            (None, Some(found)) if found == kind => (vec![value], ""),
            (None, found) => {
                return Err(DumpError::Shape {
                    path,
                    why: format!(
                        "expected a Kubernetes list of {kind} objects (`kubectl get ... -o json`), found an \
                         object of kind {}",
                        found.unwrap_or("(none)")
                    ),
                });
            }
        },
        Value::Array(items) => (items.iter().collect(), ""),
        other => {
            return Err(DumpError::Shape {
                path,
                why: format!(
                    "expected a Kubernetes list of {kind} objects (`kubectl get ... -o json`), found {}",
                    kind_of(other)
                ),
            });
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| element(item, &path, &format!("{prefix}[{index}]")))
        .collect()
}

/// The elements of a LINSTOR list: the REST answer (a list of objects) or
/// `linstor -m` output (a list wrapping such lists). Each object must carry
/// the non-empty string fields `required`, so that a file of another list
/// is caught.
fn linstor_list<T: DeserializeOwned>(
    value: &Value,
    path: PathBuf,
    what: &str,
    required: &[&str],
) -> Result<Vec<T>, DumpError> {
    let expected = format!(
        "expected a list of LINSTOR {what} objects (REST answer) or a list wrapping one (`linstor -m` output)"
    );
    let Value::Array(outer) = value else {
        return Err(DumpError::Shape {
            path,
            why: format!("{expected}, found {}", kind_of(value)),
        });
    };
    let wrapped = !outer.is_empty() && outer.iter().all(Value::is_array);
    let mut elements: Vec<(String, &Value)> = Vec::new();
    if wrapped {
        for (i, inner) in outer.iter().enumerate() {
            if let Value::Array(inner) = inner {
                elements.extend(inner.iter().enumerate().map(|(j, v)| (format!("[{i}][{j}]"), v)));
            }
        }
    } else {
        elements.extend(outer.iter().enumerate().map(|(i, v)| (format!("[{i}]"), v)));
    }
    let mut decoded = Vec::with_capacity(elements.len());
    for (json_path, item) in elements {
        let Value::Object(object) = item else {
            return Err(DumpError::Element {
                path,
                json_path,
                why: format!("{expected}, found {} here", kind_of(item)),
            });
        };
        if object.contains_key("ret_code") {
            let message = object.get("message").and_then(Value::as_str).unwrap_or_default();
            return Err(DumpError::Element {
                path,
                json_path,
                why: format!("a LINSTOR error reply instead of a {what}: {message}"),
            });
        }
        for field in required {
            match object.get(*field) {
                Some(Value::String(text)) if !text.is_empty() => {}
                Some(Value::String(_)) => {
                    return Err(DumpError::Element {
                        path,
                        json_path: format!("{json_path}.{field}"),
                        why: format!("empty {field}; is this a list of {what} objects?"),
                    });
                }
                Some(other) => {
                    return Err(DumpError::Element {
                        path,
                        json_path: format!("{json_path}.{field}"),
                        why: format!("{field} is {}, expected a string", kind_of(other)),
                    });
                }
                None => {
                    return Err(DumpError::Element {
                        path,
                        json_path,
                        why: format!("missing field `{field}`; is this a list of {what} objects?"),
                    });
                }
            }
        }
        decoded.push(element(item, &path, &json_path)?);
    }
    Ok(decoded)
}

fn element<T: DeserializeOwned>(item: &Value, path: &Path, prefix: &str) -> Result<T, DumpError> {
    serde_path_to_error::deserialize(item).map_err(|error| {
        let inner = error.path().to_string();
        let json_path = match inner.as_str() {
            "." | "" => prefix.to_owned(),
            inner if inner.starts_with('[') => format!("{prefix}{inner}"),
            inner => format!("{prefix}.{inner}"),
        };
        DumpError::Element {
            path: path.to_owned(),
            json_path,
            why: error.into_inner().to_string(),
        }
    })
}
