//! `linstor-affinity`: shows which Kubernetes PersistentVolumes no longer
//! match where LINSTOR keeps their data, and what the affinity controller
//! would do about it.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use affinity_core::DecisionSettings;
use affinity_core::k8s_openapi::jiff::Timestamp;
use clap::{Parser, Subcommand};
use linstor_affinity_cli::duration::parse_duration;
use linstor_affinity_cli::plan::{PlanOptions, Status, run};
use linstor_affinity_cli::render::Format;
use tracing_subscriber::EnvFilter;

/// Keeps Kubernetes PV node affinity in sync with LINSTOR replica placement.
#[derive(Debug, Parser)]
#[command(name = "linstor-affinity", version)]
struct Cli {
    /// Log verbosity: -v for info, -vv for debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show, for every LINSTOR CSI PV, its current and desired node affinity and the decision.
    #[command(after_long_help = PLAN_HELP)]
    Plan(PlanArgs),
}

const PLAN_HELP: &str = "\
Dump directory (--from-dir):
  pv.json                    kubectl get pv -o json
  storageclasses.json        kubectl get storageclass -o json
  nodes.json                 linstor -m node list
  resources.json             linstor -m resource list
  resource-definitions.json  linstor -m resource-definition list
  volume-definitions.json    linstor -m volume-definition list   (optional: saved replace state)
LINSTOR files may hold `linstor -m` output (the REST answer wrapped in an outer list) or the raw
REST answer.

Decisions: in-sync, replace (trigger drift, resume or recreate), skip (with a reason),
clear-saved-state, error (the volume cannot be decided, for example an invalid override
annotation, a missing StorageClass or an invalid volume handle; nothing would be written for it).

Exit codes:
  0  every volume is in sync or skipped
  1  the plan could not be made (missing or malformed dump file, bad flag, unwritable output)
  2  some volume needs attention: a replace, a recreate, saved state to clear, or a per-volume error

JSON and YAML field names are stable (formatVersion 1): summary {volumes, inSync, replace, skip,
clearSavedState, errors}; volumes[] {pv, resourceDefinition, volumeNumber, storageClass, decision,
trigger, skipReason, message, currentAffinity, desiredAffinity}. An affinity is a list of
Kubernetes nodeSelectorTerms, or null for no node affinity; desiredAffinity is absent when it was
not computed (skips, errors, saved state to clear).

Example:
  linstor-affinity plan --from-dir examples/evacuated-cluster -o json --only-drift";

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// Directory holding a dump of the cluster (see below for its files).
    #[arg(long, value_name = "DIR")]
    from_dir: PathBuf,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,

    /// Show only volumes that need attention (replace, recreate, saved state to clear, errors).
    #[arg(long)]
    only_drift: bool,

    /// Write each replacement PV as <OUTDIR>/<pv-name>.yaml, for review.
    #[arg(long, value_name = "OUTDIR")]
    emit_manifests: Option<PathBuf>,

    /// LINSTOR property namespace of the nodes' topology labels (default: `Aux/topology` when
    /// any node has `Aux/topology/kubernetes.io/hostname`, else `Aux`).
    #[arg(long, value_name = "NS")]
    property_namespace: Option<String>,

    /// PVs created less than this ago are skipped (for example 1m, 90s, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    grace_period: Duration,

    /// The current time (RFC 3339), for reproducible output; default: now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
    now: Option<Timestamp>,
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>()
        .map_err(|error| format!("not an RFC 3339 time such as 2025-06-01T12:00:00Z: {error}"))
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn plan(args: PlanArgs) -> ExitCode {
    let now = args
        .now
        .unwrap_or_else(|| DecisionSettings::at("", Duration::ZERO, SystemTime::now()).now);
    let options = PlanOptions {
        from_dir: args.from_dir,
        format: args.output,
        colour: args.output == Format::Table && std::io::stdout().is_terminal(),
        only_drift: args.only_drift,
        emit_manifests: args.emit_manifests,
        property_namespace: args.property_namespace,
        grace_period: args.grace_period,
        now,
    };
    match run(&options) {
        Ok(outcome) => {
            let mut stdout = std::io::stdout().lock();
            if let Err(error) = stdout
                .write_all(outcome.output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                eprintln!("error: cannot write the plan: {error}");
                return ExitCode::from(Status::Failed.code());
            }
            if let Some(dir) = &options.emit_manifests {
                eprintln!(
                    "wrote {} replacement PV manifest(s) to {}",
                    outcome.manifests.len(),
                    dir.display()
                );
            }
            ExitCode::from(outcome.status.code())
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(Status::Failed.code())
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                Status::Failed.code()
            } else {
                0
            });
        }
    };
    init_logging(cli.verbose);
    match cli.command {
        Command::Plan(args) => plan(args),
    }
}
