//! `linstor-affinity`: shows which Kubernetes PersistentVolumes no longer
//! match where LINSTOR keeps their data, what the affinity controller would
//! do about it, replaces single PVs on request and discards the intent of a
//! replace. The commands that write refuse while a controller holds its
//! leader-election Lease (exit code 3), unless told to ignore it.
//!
//! Long flags take one dash or two (`-only-drift` is `--only-drift`), as in
//! Go tools. Installed as `kubectl-linstor_affinity` on the PATH (a symlink
//! to this binary), it is the kubectl plugin `kubectl linstor-affinity`,
//! which finds the cluster as kubectl does (`$KUBECONFIG`, `~/.kube/config`).

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use affinity_core::k8s_openapi::jiff::Timestamp;
use affinity_core::{VolumeId, decision_time};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use linstor_affinity_cli::discard::{self, DiscardError};
use linstor_affinity_cli::drain_status::{self, DrainStatusError};
use linstor_affinity_cli::duration::parse_duration;
use linstor_affinity_cli::go_flags::{self, FlagNames};
use linstor_affinity_cli::kube_args::KubeArgs;
use linstor_affinity_cli::lease::{self, FenceArgs, FenceError, Sources};
use linstor_affinity_cli::live::{LiveCluster, LiveError, kube_client};
use linstor_affinity_cli::plan::{self, DecisionOptions, PlanError, PlanOptions, Source, Status};
use linstor_affinity_cli::progress::Spinner;
use linstor_affinity_cli::render::{Format, RenderError, affinity_text, render};
use linstor_affinity_cli::replace::{self, Proposal, ReplaceCommandError};
use tracing_subscriber::EnvFilter;

/// Keeps Kubernetes PV node affinity in sync with LINSTOR replica placement.
#[derive(Debug, Parser)]
#[command(name = "linstor-affinity", version, after_long_help = CLI_HELP)]
struct Cli {
    /// Log verbosity: -v for info, -vv for debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show, for every LINSTOR CSI PV, its current and desired node affinity and the decision
    /// (live cluster, or a dump with --from-dir).
    #[command(after_long_help = PLAN_HELP)]
    Plan(PlanArgs),
    /// Replace one PV whose node affinity no longer matches LINSTOR (live cluster only).
    #[command(after_long_help = REPLACE_HELP)]
    Replace(ReplaceArgs),
    /// Discard the intent of a replace (the saved PV on a LINSTOR volume definition), on purpose.
    #[command(after_long_help = DISCARD_HELP)]
    DiscardIntent(DiscardArgs),
    /// Show where each node's drain stands: request, state, replicas left, since, why blocked.
    #[command(after_long_help = DRAIN_STATUS_HELP)]
    DrainStatus(DrainStatusArgs),
}

/// Exit code of a command that did not write because a controller holds its Lease.
const EXIT_FENCED: u8 = 3;

/// The file name under which kubectl runs this binary as its plugin `linstor-affinity`.
const PLUGIN_FILE_NAME: &str = "kubectl-linstor_affinity";

/// The command as kubectl's plugin.
const PLUGIN_COMMAND: &str = "kubectl linstor-affinity";

const CLI_HELP: &str = "\
Long flags take one dash or two: -only-drift is --only-drift.

kubectl plugin: a symlink named kubectl-linstor_affinity on the PATH makes this tool
`kubectl linstor-affinity` (kubectl maps the dash to an underscore in the file name):
  ln -s \"$(command -v linstor-affinity)\" /usr/local/bin/kubectl-linstor_affinity
  kubectl linstor-affinity plan --only-drift
As a plugin it finds the cluster as kubectl does: $KUBECONFIG, else ~/.kube/config (kubectl's own
flags are not passed on to plugins; give --kubeconfig or --context after the command).";

/// The LINSTOR environment, the same for every live command.
macro_rules! linstor_env_help {
    () => {
        concat!(
            "LINSTOR connection (live mode), the environment of the Go LINSTOR client:\n",
            linstor_affinity_cli::linstor_environment_help!()
        )
    };
}

/// The fencing of the commands that write, the same for each.
macro_rules! fencing_help {
    () => {
        "\
Fencing: before writing (and again after the confirmation) the command reads the controller's
leader-election Lease (coordination.k8s.io/v1; --lease-lock-name and --lease-lock-namespace, the
controller's flags with its defaults) and refuses, with exit code 3, while another holder's lease
is valid (holderIdentity set, renewTime + leaseDurationSeconds in the future): that controller may
write the same PV or property at the same time. A missing, released or expired Lease lets it go
on; a Lease that cannot be read stops it (exit code 1). --ignore-lease skips the check: only when
the Lease is stale or the controller is known to be stopped. A controller running without
--leader-election holds no Lease and is not seen.
"
    };
}

/// The Kubernetes connection, the same for every live command.
macro_rules! kubernetes_help {
    () => {
        "\
Kubernetes connection (live mode): --kubeconfig, --context, --cluster and --user as kubectl has
them; without --kubeconfig, $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
"
    };
}

const PLAN_HELP: &str = concat!(
    "\
Sources:
  live (default)  PVs and StorageClasses from the Kubernetes API server, LINSTOR state from its
                  controller (three requests). plan only reads: listing PVs and StorageClasses is
                  all the Kubernetes permission it needs.
  --from-dir DIR  offline, from a dump directory holding:
    pv.json                    kubectl get pv -o json
    storageclasses.json        kubectl get storageclass -o json
    nodes.json                 linstor -m node list
    resources.json             linstor -m resource list
    resource-definitions.json  linstor -m resource-definition list
    volume-definitions.json    linstor -m volume-definition list   (optional: saved replace state)
  LINSTOR files may hold `linstor -m` output (the REST answer wrapped in an outer list) or the
  raw REST answer. --from-dir and the Kubernetes flags exclude each other.

",
    kubernetes_help!(),
    "\n",
    linstor_env_help!(),
    "
Decisions: in-sync, replace (trigger drift, resume or recreate), skip (with a reason),
clear-saved-state, error (the volume cannot be decided, for example an invalid override
annotation, a missing StorageClass or an invalid volume handle; nothing would be written for it).

Exit codes:
  0  every volume is in sync or skipped
  1  no plan could be made: Kubernetes or LINSTOR unreachable or answering nonsense, missing or
     malformed dump file, bad flag, unwritable output
  2  some volume needs attention: a replace, a recreate, saved state to clear, or a per-volume error

While reading the live cluster, a spinner on stderr shows what is pending (on a terminal only).

JSON and YAML field names are stable (formatVersion 1): summary {volumes, inSync, replace, skip,
clearSavedState, errors}; volumes[] {pv, resourceDefinition, volumeNumber, storageClass, decision,
trigger, skipReason, message, currentAffinity, desiredAffinity}. An affinity is a list of
Kubernetes nodeSelectorTerms, or null for no node affinity; desiredAffinity is absent when it was
not computed (skips, errors, saved state to clear).

Examples:
  LS_CONTROLLERS=http://linstor-controller:3370 linstor-affinity plan --context prod --only-drift
  linstor-affinity plan --from-dir examples/evacuated-cluster -o json --only-drift"
);

const REPLACE_HELP: &str = concat!(
    "\
Reads the PVs, the StorageClasses and LINSTOR, decides for the PV's volume exactly as the
controller does, shows the current and the desired node affinity and asks for confirmation
(--yes skips the question; without a terminal on stdin --yes is required). Then it runs the
controller's replace protocol: the replacement PV is saved on the LINSTOR volume definition, the
live PV is set to reclaim policy Retain and deleted, the replacement (every field kept but the
node affinity) is created, the claim is bound again, the saved state is cleared, and events are
posted on the PV and its claim. An interrupted run is finished by running it again or by the
controller.

Nothing is done, with exit code 1 and the reason, when the PV is in sync, skipped (skip
annotation or property, Released, in its grace period, no healthy diskful replica, ...), left
saved state of a finished replace behind (the controller clears it), cannot be decided, does not
exist or is not a LINSTOR CSI volume.

",
    fencing_help!(),
    "\n",
    kubernetes_help!(),
    "\n",
    linstor_env_help!(),
    "
Exit codes:
  0  the PV was replaced
  1  nothing was replaced: see the message (declined, not needed, not possible, or a failure)
  3  nothing was replaced: a controller holds its leader-election Lease (see Fencing)

Example:
  LS_CONTROLLERS=http://linstor-controller:3370 linstor-affinity replace pvc-0b6f1c2e --yes"
);

const DISCARD_HELP: &str = concat!(
    "\
A replace first saves the replacement PV on the LINSTOR volume definition (property
Aux/affinity-updater-saved-pv): its intent, which the controller and `replace` finish from. When
that intent must not be finished (the PV was changed on purpose since), discard it with this
command: it reads the volume definition, prints what it discards (the saved PV's name, or the
start of the text when it is no saved PV), asks for confirmation (--yes skips the question;
without a terminal on stdin --yes is required), checks that the property still holds the same
text and removes it. The PV is not touched.

VOLUME is a LINSTOR volume as in a CSI volume handle: RESOURCE_DEFINITION, or
RESOURCE_DEFINITION/VOLUME_NUMBER (default volume 0).

Nothing is changed, with exit code 1 and the reason, when the resource definition or the volume
does not exist, the volume definition holds no intent, the answer is not y, or the intent changed
meanwhile.

",
    fencing_help!(),
    "With --ignore-lease, discard-intent does not contact Kubernetes at all.

",
    kubernetes_help!(),
    "\n",
    linstor_env_help!(),
    "
Exit codes:
  0  the intent was discarded
  1  nothing was discarded: see the message (declined, no such volume, no intent, or a failure)
  3  nothing was discarded: a controller holds its leader-election Lease (see Fencing)

Example:
  LS_CONTROLLERS=http://linstor-controller:3370 linstor-affinity discard-intent pvc-0b6f1c2e/0"
);

const DRAIN_STATUS_HELP: &str = concat!(
    "\
Reads the Kubernetes nodes and LINSTOR (the nodes, and the resources on the nodes that drain) and
shows one row per node with a drain record (the controller's Aux/linstor-affinity/drain property on
the LINSTOR node) and per Kubernetes node cordoned or tainted piraeus.io/evacuate without one:
  REQUEST  cordon, taint or deleted, with the mode (cordon/Evacuate, cordon/NoSchedule)
  STATE    NoSchedule (no new replicas), Queued (waits for --max-concurrent-evacuations),
           Evacuating, Completed (no replica left), Blocked (see BLOCKED), NotHandled (the node
           asks but the controller's policy ignores it, or it has not acted yet)
Only reads; it needs list on nodes.

",
    kubernetes_help!(),
    "\n",
    linstor_env_help!(),
    "
Exit codes:
  0  no drain is blocked
  1  the status could not be read
  2  some drain is blocked

JSON and YAML field names are stable (formatVersion 1): nodes[] {node, linstorNode, request, state,
replicasLeft, since, blockedReason}.

Example:
  LS_CONTROLLERS=http://linstor-controller:3370 linstor-affinity drain-status -o json"
);

#[derive(Debug, clap::Args)]
struct DrainStatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,

    /// LINSTOR property namespace of the nodes' topology labels, where
    /// kubernetes.io/hostname ties a LINSTOR node to its Kubernetes node (default: guessed as the
    /// controller does).
    #[arg(long, value_name = "NS")]
    property_namespace: Option<String>,

    #[command(flatten, next_help_heading = "Kubernetes")]
    kube: KubeArgs,
}

/// The settings shared by every decision.
#[derive(Debug, clap::Args)]
struct DecisionArgs {
    /// LINSTOR property namespace of the nodes' topology labels (default: `Aux/topology` when
    /// any node has `Aux/topology/kubernetes.io/hostname`, else `Aux`).
    #[arg(long, value_name = "NS")]
    property_namespace: Option<String>,

    /// PVs created less than this ago are skipped, as the controller's --timeout does (for
    /// example 1m, 90s, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    grace_period: Duration,
}

impl DecisionArgs {
    fn options(self, now: Timestamp) -> DecisionOptions {
        DecisionOptions {
            property_namespace: self.property_namespace,
            grace_period: self.grace_period,
            now,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// Decide offline from this dump directory instead of the live cluster (see below for its
    /// files).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kubeconfig", "context", "cluster", "user"])]
    from_dir: Option<PathBuf>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,

    /// Show only volumes that need attention (replace, recreate, saved state to clear, errors).
    #[arg(long)]
    only_drift: bool,

    /// Write each replacement PV as OUTDIR/PV-NAME.yaml, for review.
    #[arg(long, value_name = "OUTDIR")]
    emit_manifests: Option<PathBuf>,

    #[command(flatten)]
    decision: DecisionArgs,

    /// The current time (RFC 3339), for reproducible output; default: now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
    now: Option<Timestamp>,

    #[command(flatten, next_help_heading = "Kubernetes (live mode)")]
    kube: KubeArgs,
}

#[derive(Debug, clap::Args)]
struct ReplaceArgs {
    /// Name of the PV to replace.
    #[arg(value_name = "PV_NAME")]
    pv: String,

    /// Replace without asking (required when stdin is not a terminal).
    #[arg(short, long)]
    yes: bool,

    #[command(flatten)]
    decision: DecisionArgs,

    #[command(flatten, next_help_heading = "Fencing")]
    fence: FenceArgs,

    #[command(flatten, next_help_heading = "Kubernetes")]
    kube: KubeArgs,
}

#[derive(Debug, clap::Args)]
struct DiscardArgs {
    /// The LINSTOR volume: RESOURCE_DEFINITION or RESOURCE_DEFINITION/VOLUME_NUMBER.
    #[arg(value_name = "VOLUME")]
    volume: VolumeId,

    /// Discard without asking (required when stdin is not a terminal).
    #[arg(short, long)]
    yes: bool,

    #[command(flatten, next_help_heading = "Fencing")]
    fence: FenceArgs,

    #[command(flatten, next_help_heading = "Kubernetes (for the Lease)")]
    kube: KubeArgs,
}

/// Why a command failed (exit code 1, or 3 when fenced).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Discard(#[from] DiscardError),
    #[error(transparent)]
    DrainStatus(#[from] DrainStatusError),
    #[error("LINSTOR client configuration (LS_* environment): {0}")]
    LinstorConfig(#[from] linstor_api::ConfigError),
    #[error(
        "refusing to discard the intent of volume {volume} without confirmation: standard input is not a \
         terminal; pass --yes to discard it anyway"
    )]
    DiscardNeedsConfirmation { volume: VolumeId },
    #[error("intent of volume {volume} not discarded")]
    DiscardDeclined { volume: VolumeId },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Replace(#[from] ReplaceCommandError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error(
        "refusing to replace PV {pv} without confirmation: standard input is not a terminal; pass --yes \
         to replace it anyway"
    )]
    NeedsConfirmation { pv: String },
    #[error("cannot read the answer: {0}")]
    Prompt(std::io::Error),
    #[error("PV {pv} not replaced")]
    Declined { pv: String },
}

impl CliError {
    /// The process exit code.
    fn code(&self) -> u8 {
        match self {
            Self::Fence(FenceError::Held { .. }) => EXIT_FENCED,
            _ => Status::Failed.code(),
        }
    }
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>()
        .map_err(|error| format!("not an RFC 3339 time such as 2025-06-01T12:00:00Z: {error}"))
}

fn now() -> Timestamp {
    decision_time(SystemTime::now())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        // kube logs each failed request as an error; the failure is reported once, with context.
        0 => "warn,kube_client=off",
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

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::Output)
}

fn plan(args: PlanArgs) -> Result<Status, CliError> {
    let source = match args.from_dir {
        Some(dir) => Source::Dump(dir),
        None => Source::Live(args.kube),
    };
    let options = PlanOptions {
        decision: args.decision.options(args.now.unwrap_or_else(now)),
        format: args.output,
        colour: args.output == Format::Table && std::io::stdout().is_terminal(),
        only_drift: args.only_drift,
        emit_manifests: args.emit_manifests,
    };
    let state = runtime()?.block_on(async {
        let spinner = match source {
            Source::Live(_) => Spinner::start("connecting…"),
            Source::Dump(_) => Spinner::hidden(),
        };
        plan::gather(&source, &spinner).await
    })?;
    let outcome = plan::run(&state, &options)?;
    write_stdout(&outcome.output)?;
    if let Some(dir) = &options.emit_manifests {
        eprintln!(
            "wrote {} replacement PV manifest(s) to {}",
            outcome.manifests.len(),
            dir.display()
        );
    }
    Ok(outcome.status)
}

/// Reads the live cluster and decides for `pv`.
async fn propose(
    cluster: &LiveCluster,
    pv: &str,
    options: &DecisionOptions,
) -> Result<Proposal, ReplaceCommandError> {
    let spinner = Spinner::start("connecting…");
    let state = cluster.read(&spinner).await?;
    spinner.finish();
    replace::propose(&state, pv, options)
}

fn confirm(question: &str) -> Result<bool, CliError> {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(CliError::Prompt)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

fn replace(args: ReplaceArgs) -> Result<Status, CliError> {
    let pv = args.pv;
    // Refuse before any request: a script without --yes must not wait on a prompt.
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(CliError::NeedsConfirmation { pv });
    }
    let decision = args.decision;
    let runtime = runtime()?;
    let cluster = runtime
        .block_on(LiveCluster::connect(&args.kube))
        .map_err(ReplaceCommandError::from)?;
    let kube = cluster.kube();
    let fence = Fence::new(&args.fence, Some(&kube));
    // Before anything is shown: no question to answer when the answer cannot be acted on.
    fence.check(&runtime)?;
    let options = decision.options(now());
    let mut proposal = runtime.block_on(propose(&cluster, &pv, &options))?;
    let colour = std::io::stdout().is_terminal();
    write_stdout(&render(&proposal.report, Format::Table, colour)?)?;
    if !args.yes {
        if !confirm(&format!("Replace PV {pv}?"))? {
            return Err(CliError::Declined { pv });
        }
        // The answer may have taken a while: act only on the decision that was shown.
        let options = DecisionOptions {
            now: now(),
            ..options
        };
        let fresh = runtime.block_on(propose(&cluster, &pv, &options))?;
        if !fresh.same_as(&proposal) {
            return Err(ReplaceCommandError::Changed { pv }.into());
        }
        proposal = fresh;
        // A controller may have started while the question waited.
        fence.check(&runtime)?;
    }
    let spinner = Spinner::start(format!("replacing PV {pv}…"));
    let applied = runtime.block_on(replace::execute(&cluster, &proposal, &replace::instance_name()))?;
    spinner.finish();
    let shown = proposal.report.volumes.first();
    let affinity = applied
        .spec
        .as_ref()
        .and_then(|spec| spec.node_affinity.as_ref())
        .and_then(|affinity| affinity.required.as_ref())
        .map(|required| required.node_selector_terms.clone());
    write_stdout(&format!(
        "PV {pv} replaced: node affinity {} (was {}); every other field kept\n",
        affinity_text(Some(&affinity)),
        affinity_text(shown.and_then(|volume| volume.current_affinity.as_ref())),
    ))?;
    Ok(Status::Clean)
}

/// The Lease check of one command that writes.
struct Fence<'a> {
    /// The Kubernetes client; `None` with --ignore-lease.
    kube: Option<&'a kube::Client>,
    lock: lease::LeaseLock,
}

impl<'a> Fence<'a> {
    /// The check `args` ask for; with --ignore-lease it says once on stderr that it checks nothing.
    fn new(args: &FenceArgs, kube: Option<&'a kube::Client>) -> Self {
        let lock = args.lock(&Sources::PROCESS);
        if args.ignore_lease {
            eprintln!(
                "warning: --ignore-lease: not checking whether a controller holds Lease {}/{}",
                lock.namespace, lock.name
            );
        }
        Self {
            kube: kube.filter(|_| !args.ignore_lease),
            lock,
        }
    }

    /// Fails when another instance holds the Lease now (or the Lease cannot be read).
    fn check(&self, runtime: &tokio::runtime::Runtime) -> Result<(), CliError> {
        let Some(kube) = self.kube else {
            return Ok(());
        };
        let identity = replace::instance_name();
        runtime.block_on(lease::check(kube.clone(), &self.lock, &identity, now()))?;
        Ok(())
    }
}

fn discard_intent(args: DiscardArgs) -> Result<Status, CliError> {
    let volume = args.volume;
    // Refuse before any request: a script without --yes must not wait on a prompt.
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(CliError::DiscardNeedsConfirmation { volume });
    }
    let runtime = runtime()?;
    let linstor = linstor_api::Client::from_env().map_err(LiveError::from)?;
    // Kubernetes only holds the Lease: not needed when it is ignored.
    let kube = if args.fence.ignore_lease {
        None
    } else {
        Some(runtime.block_on(kube_client(&args.kube))?.0)
    };
    let fence = Fence::new(&args.fence, kube.as_ref());
    let intent = runtime.block_on(discard::read_intent(&linstor, &volume))?;
    let what = intent.describe();
    write_stdout(&format!(
        "Volume {volume} holds the intent of a replace: {what}\n"
    ))?;
    fence.check(&runtime)?;
    if !args.yes {
        if !confirm(&format!("Discard the intent of volume {volume}?"))? {
            return Err(CliError::DiscardDeclined { volume });
        }
        fence.check(&runtime)?;
    }
    runtime.block_on(discard::discard(&linstor, &intent))?;
    write_stdout(&format!(
        "Intent of volume {volume} discarded ({what}); the PV was not touched\n"
    ))?;
    Ok(Status::Clean)
}

/// The command's name in usage and help: `kubectl linstor-affinity` when kubectl runs this binary
/// as its plugin (file name `kubectl-linstor_affinity`), else the file name.
fn bin_name(program: Option<&OsString>) -> Option<String> {
    let file_name = Path::new(program?).file_name()?.to_str()?;
    Some(if file_name == PLUGIN_FILE_NAME {
        PLUGIN_COMMAND.to_owned()
    } else {
        file_name.to_owned()
    })
}

/// Parses a command line, long flags with one dash or two.
fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    if let Some(name) = bin_name(args.first()) {
        command = command.bin_name(name);
    }
    let names = FlagNames::of(&command);
    let matches = command.try_get_matches_from(go_flags::normalise(args, |name| names.is_long(name)))?;
    Cli::from_arg_matches(&matches)
}

fn drain_status(args: DrainStatusArgs) -> Result<Status, CliError> {
    let linstor = linstor_api::Client::from_env()?;
    let report = runtime()?.block_on(async {
        let (kube, _) = kube_client(&args.kube).await?;
        let report = drain_status::gather(&kube, &linstor, args.property_namespace.as_deref()).await?;
        Ok::<_, CliError>(report)
    })?;
    write_stdout(&drain_status::render(&report, args.output)?)?;
    Ok(if report.any_blocked() {
        Status::Attention
    } else {
        Status::Clean
    })
}

fn main() -> ExitCode {
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Usage errors exit 1: 2 means "volumes need attention" for plan.
            return ExitCode::from(if error.use_stderr() {
                Status::Failed.code()
            } else {
                0
            });
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Plan(args) => plan(args),
        Command::Replace(args) => replace(args),
        Command::DiscardIntent(args) => discard_intent(args),
        Command::DrainStatus(args) => drain_status(args),
    };
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn discard_intent_takes_a_volume_and_the_fencing_flags() {
        let cli = Cli::try_parse_from([
            "linstor-affinity",
            "discard-intent",
            "pvc-1/2",
            "--yes",
            "--ignore-lease",
            "--lease-lock-name",
            "lock",
            "--lease-lock-namespace",
            "piraeus",
        ])
        .unwrap();
        let Command::DiscardIntent(args) = cli.command else {
            panic!("not discard-intent: {cli:?}");
        };
        assert_eq!(args.volume, VolumeId::new("pvc-1", 2));
        assert!(args.yes && args.fence.ignore_lease);
        assert_eq!(args.fence.lease_lock_name, "lock");
        assert_eq!(args.fence.lease_lock_namespace, "piraeus");
        let bad = Cli::try_parse_from(["linstor-affinity", "discard-intent", "pvc-1/x"]).unwrap_err();
        assert!(bad.to_string().contains("pvc-1/x"), "{bad}");
    }

    #[test]
    fn the_lease_defaults_are_the_controllers() {
        let cli = Cli::try_parse_from(["linstor-affinity", "replace", "pv"]).unwrap();
        let Command::Replace(args) = cli.command else {
            panic!("not replace: {cli:?}");
        };
        assert!(!args.fence.ignore_lease);
        let nothing = Sources {
            var: |_| None,
            read_file: |_| None,
            host_name: || None,
        };
        assert_eq!(
            args.fence.lock(&nothing),
            lease::LeaseLock {
                namespace: "default".to_owned(),
                name: "linstor-affinity-controller".to_owned(),
            }
        );
    }

    fn parsed(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn long_flags_take_one_dash_or_two_and_short_ones_stay() {
        let cli = parsed(&[
            "linstor-affinity",
            "-vv",
            "plan",
            "-only-drift",
            "-o",
            "json",
            "-grace-period=1.5m",
            "-from-dir",
            "dump",
        ])
        .unwrap();
        assert_eq!(cli.verbose, 2);
        let Command::Plan(args) = cli.command else {
            panic!("not plan: {cli:?}");
        };
        assert!(args.only_drift);
        assert_eq!(args.output, Format::Json);
        assert_eq!(args.decision.grace_period, Duration::from_secs(90));
        assert_eq!(args.from_dir, Some(PathBuf::from("dump")));
    }

    #[test]
    fn as_a_kubectl_plugin_usage_names_kubectl() {
        for (program, name) in [
            (
                "/usr/local/bin/kubectl-linstor_affinity",
                "kubectl linstor-affinity",
            ),
            ("kubectl-linstor_affinity", "kubectl linstor-affinity"),
            ("/usr/bin/linstor-affinity", "linstor-affinity"),
        ] {
            let error = parsed(&[program, "plan", "--no-such-flag"])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("Usage: {name} plan")),
                "{program}: {error}"
            );
        }
    }
}
