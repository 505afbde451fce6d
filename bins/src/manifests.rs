//! Writing the replacement PVs of a plan as YAML files for review.

use std::path::{Path, PathBuf};

use affinity_core::Plan;

/// Why manifests cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The directory or a file cannot be written.
    #[error("{path}: {source}", path = .path.display())]
    Write {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PV's name cannot serve as a file name.
    #[error("PV name {0:?} cannot be used as a file name")]
    BadName(String),
    /// YAML encoding failed.
    #[error("PV {pv}: cannot encode as YAML: {source}")]
    Yaml {
        /// Name of the PV.
        pv: String,
        /// The encoder's error.
        source: serde_yaml_ng::Error,
    },
}

/// Writes `<pv-name>.yaml` into `dir` (created when missing) for every
/// replacement of `plan`, and returns the files written.
pub fn write_replacements(plan: &Plan, dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    std::fs::create_dir_all(dir).map_err(|source| ManifestError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    for (decision, replacement) in plan.replacements() {
        let name = replacement
            .pv
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| decision.pv_name.clone());
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Err(ManifestError::BadName(name));
        }
        let yaml = serde_yaml_ng::to_string(&replacement.pv).map_err(|source| ManifestError::Yaml {
            pv: name.clone(),
            source,
        })?;
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).map_err(|source| ManifestError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}
