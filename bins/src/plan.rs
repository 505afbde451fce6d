//! The offline `plan` command: load a dump, decide, report.

use std::path::PathBuf;
use std::time::Duration;

use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::{DecisionSettings, Planner, guess_property_namespace};

use crate::convert::core_state;
use crate::dump::{DumpError, load_dir};
use crate::manifests::{ManifestError, write_replacements};
use crate::render::{Format, RenderError, render};
use crate::report::{PlanReport, build};

/// Exit status of `plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every volume is in sync or skipped (exit code 0).
    Clean,
    /// The plan could not be made (exit code 1).
    Failed,
    /// Some volume needs a write or could not be decided (exit code 2).
    Attention,
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Clean => 0,
            Self::Failed => 1,
            Self::Attention => 2,
        }
    }
}

/// What `plan` is asked to do.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// The dump directory.
    pub from_dir: PathBuf,
    /// Output format.
    pub format: Format,
    /// Colour the table.
    pub colour: bool,
    /// Show only volumes that need attention.
    pub only_drift: bool,
    /// Where to write replacement PVs, if anywhere.
    pub emit_manifests: Option<PathBuf>,
    /// The property namespace; guessed from the nodes when `None`.
    pub property_namespace: Option<String>,
    /// PVs younger than this are skipped.
    pub grace_period: Duration,
    /// The time PV ages are measured against.
    pub now: Timestamp,
}

/// Why `plan` failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The dump cannot be used.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// Replacement manifests cannot be written.
    #[error("cannot write manifests: {0}")]
    Manifests(#[from] ManifestError),
    /// The report cannot be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// The result of a `plan` run.
#[derive(Debug)]
pub struct PlanOutcome {
    /// The full report (before `--only-drift` filtering).
    pub report: PlanReport,
    /// The rendered output.
    pub output: String,
    /// Manifest files written.
    pub manifests: Vec<PathBuf>,
    /// Exit status.
    pub status: Status,
}

/// Runs `plan` on a dump directory.
pub fn run(options: &PlanOptions) -> Result<PlanOutcome, PlanError> {
    let dump = load_dir(&options.from_dir)?;
    let state = core_state(&dump);
    for warning in &state.warnings {
        tracing::warn!("{warning}");
    }
    if dump.volume_definitions.is_none()
        && dump
            .resource_definitions
            .iter()
            .all(|definition| definition.volume_definitions.is_empty())
    {
        tracing::warn!(
            "the dump holds no volume definitions, so saved replace state is not seen; add \
             volume-definitions.json (`linstor -m volume-definition list`)"
        );
    }
    let property_namespace = match &options.property_namespace {
        Some(namespace) => namespace.clone(),
        None => {
            let guessed = guess_property_namespace(dump.nodes.iter().map(|node| &node.props));
            tracing::info!(namespace = guessed, "property namespace guessed from the nodes");
            guessed.to_owned()
        }
    };
    let settings = DecisionSettings {
        property_namespace,
        grace_period: options.grace_period,
        now: options.now,
    };
    let plan = Planner::new(&state.linstor, &state.storage_classes, &settings).plan(&dump.pvs);
    let report = build(
        &plan,
        &dump.pvs,
        &state.linstor,
        &state.storage_classes,
        &settings,
    );
    let status = if report.volumes.iter().any(|v| v.decision.needs_attention()) {
        Status::Attention
    } else {
        Status::Clean
    };
    let manifests = match &options.emit_manifests {
        Some(dir) => write_replacements(&plan, dir)?,
        None => Vec::new(),
    };
    let shown = if options.only_drift {
        let mut shown = report.clone();
        shown.volumes.retain(|volume| volume.decision.needs_attention());
        shown
    } else {
        report.clone()
    };
    let output = render(&shown, options.format, options.colour)?;
    Ok(PlanOutcome {
        report,
        output,
        manifests,
        status,
    })
}
