//! The `plan` command: gather PVs and LINSTOR state (from a dump or from the live cluster), decide,
//! report. Offline and live gathering end in the same [`ClusterState`]; everything after is shared.

use std::path::{Path, PathBuf};
use std::time::Duration;

use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::{DecisionSettings, Planner};
use affinity_kube::linstor_state;

use crate::convert::{ClusterState, core_state};
use crate::dump::{DumpError, load_dir};
use crate::kube_args::KubeArgs;
use crate::live::{LiveCluster, LiveError};
use crate::manifests::{ManifestError, write_replacements};
use crate::progress::Spinner;
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

/// Where the state comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A dump directory (offline).
    Dump(PathBuf),
    /// The live cluster: Kubernetes as these flags select it, LINSTOR from the LS_* environment.
    Live(KubeArgs),
}

/// The settings every decision takes, for `plan` and `replace` alike.
#[derive(Clone, Debug)]
pub struct DecisionOptions {
    /// The property namespace; guessed from the nodes when `None`.
    pub property_namespace: Option<String>,
    /// PVs younger than this are skipped.
    pub grace_period: Duration,
    /// The time PV ages are measured against.
    pub now: Timestamp,
}

impl DecisionOptions {
    /// The engine's settings for `state`, guessing the property namespace when none was given.
    /// Logs the parts of the state its conversion left out.
    pub fn settings(&self, state: &ClusterState) -> DecisionSettings {
        for warning in &state.core.warnings {
            tracing::warn!("{warning}");
        }
        let property_namespace = linstor_state::property_namespace(
            self.property_namespace.as_deref(),
            state.core.linstor.nodes().map(|(_, props)| props),
        );
        DecisionSettings {
            property_namespace,
            grace_period: self.grace_period,
            now: self.now,
        }
    }
}

/// What `plan` is asked to do with the state.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Decision settings.
    pub decision: DecisionOptions,
    /// Output format.
    pub format: Format,
    /// Colour the table.
    pub colour: bool,
    /// Show only volumes that need attention.
    pub only_drift: bool,
    /// Where to write replacement PVs, if anywhere.
    pub emit_manifests: Option<PathBuf>,
}

/// Why `plan` failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The dump cannot be used.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// The live cluster cannot be read.
    #[error(transparent)]
    Live(#[from] LiveError),
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

/// Reads the state from `source`; the spinner shows progress of a live read.
pub async fn gather(source: &Source, spinner: &Spinner) -> Result<ClusterState, PlanError> {
    match source {
        Source::Dump(dir) => Ok(load_dump(dir)?),
        Source::Live(kube_args) => {
            let cluster = LiveCluster::connect(kube_args).await?;
            Ok(cluster.read(spinner).await?)
        }
    }
}

/// Reads a dump directory.
pub fn load_dump(dir: &Path) -> Result<ClusterState, DumpError> {
    let dump = load_dir(dir)?;
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
    let core = core_state(&dump);
    Ok(ClusterState { pvs: dump.pvs, core })
}

/// Decides for every volume of `state` and renders the report.
pub fn run(state: &ClusterState, options: &PlanOptions) -> Result<PlanOutcome, PlanError> {
    let settings = options.decision.settings(state);
    let core = &state.core;
    let plan = Planner::new(&core.linstor, &core.storage_classes, &settings).plan(&state.pvs);
    let report = build(&plan, &state.pvs, &core.linstor, &core.storage_classes, &settings);
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
