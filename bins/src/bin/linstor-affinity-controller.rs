//! `linstor-affinity-controller`: keeps the node affinity of LINSTOR CSI
//! PersistentVolumes in sync with where LINSTOR keeps their data, replacing
//! PVs in place when it changed. Accepts the flags and the LS_* environment
//! of the Go `linstor-affinity-controller`, read as Go reads them: `-flag` or
//! `--flag`, `=value` or a separate value, booleans as `--flag` or
//! `--flag=true|false`, durations such as `90s` or `1.5m`; a repeated flag
//! takes its last value.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM, Ctrl-C) or a complete
//! migration; 1 when it cannot go on (or a migration left failures); 2 for
//! unusable flags, kubeconfig or LS_* environment; 3 when an endpoint
//! address cannot be bound.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use affinity_core::drain::{DeletePolicy, DrainPolicy, DrainSettings, PolicyNameError};
use affinity_core::names::EVENT_REPORTING_CONTROLLER;
use affinity_kube::controller::{Controller, ControllerParts, ControllerSettings};
use affinity_kube::drain::{DrainConfig, DrainReconciler};
use affinity_kube::events::EventReporter;
use affinity_kube::http::{Readiness, bind_health, bind_metrics};
use affinity_kube::leader::{LeaderElector, LeaseSettings};
use affinity_kube::metrics::Metrics;
use affinity_kube::migrate::migrate_properties;
use affinity_kube::permissions::{self, Grants, Paths};
use affinity_kube::replace::{DEFAULT_REBIND_ANNOTATION, StepObserver};
use affinity_kube::throttle::ThrottleLayer;
use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};
use linstor_affinity_cli::duration::parse_duration;
use linstor_affinity_cli::go_flags::{self, FlagNames};
use linstor_affinity_cli::kube_args::{self, KubeArgs};
use linstor_affinity_cli::lease::Sources;
use linstor_affinity_cli::memory::{release_free_memory, use_one_arena};
use linstor_affinity_cli::signals::stop_requested;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

const LINSTOR_ENV_HELP: &str = concat!(
    "LINSTOR connection, the environment of the Go LINSTOR client:\n",
    linstor_affinity_cli::linstor_environment_help!(),
    "\n\
Flags are read as Go reads them: -flag is --flag, a value follows after = or as the next argument,
a boolean is --flag or --flag=BOOL (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False; never
a separate argument), a repeated flag takes its last value. Durations as Go writes them: 90s, 1.5m,
1h30m, 500ms.

Endpoints: /healthz and /readyz (ready once the PV cache synced) on --bind-address; /metrics on
--metrics-address when set.

Exit codes: 0 clean shutdown (SIGTERM, Ctrl-C) or complete migration; 1 cannot go on, or a
migration left failures; 2 unusable flags, kubeconfig or LS_* environment; 3 an endpoint address
cannot be bound."
);

/// Keeps Kubernetes PV node affinity in sync with LINSTOR replica placement.
///
/// Every --reconcile-rate it compares each LINSTOR CSI PV's node affinity with the nodes LINSTOR
/// keeps the volume on and, when they differ, replaces the PV in place (the saved replacement on the
/// LINSTOR volume definition makes every step recoverable). PV changes are acted on at once.
#[derive(Debug, Parser)]
#[command(
    name = "linstor-affinity-controller",
    version,
    after_long_help = LINSTOR_ENV_HELP,
    args_override_self = true
)]
struct Cli {
    /// How often every PV is checked against LINSTOR.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    reconcile_rate: Duration,

    /// Accepted for compatibility and unused: the caches are kept by watches that resume from
    /// their last resourceVersion and never need listing again, and every --reconcile-rate a full
    /// pass decides for every cached PV again, which is what a resync achieves elsewhere.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    resync_rate: Duration,

    /// Bound of the operations of one reconcile.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    timeout: Duration,

    /// PVs younger than this are left alone, while LINSTOR may still place their replicas
    /// (default: the --timeout value).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    grace_period: Option<Duration>,

    /// Address of the health endpoints (/healthz, /readyz).
    #[arg(long, value_name = "ADDR", default_value = "[::]:8000")]
    bind_address: String,

    /// Address of the Prometheus endpoint (/metrics); empty: off.
    #[arg(long, value_name = "ADDR", default_value = "")]
    metrics_address: String,

    /// LINSTOR property namespace of the node topology labels; empty: `Aux/topology` when a node has
    /// `Aux/topology/kubernetes.io/hostname`, else `Aux`.
    #[arg(long, value_name = "NAMESPACE", default_value = "")]
    property_namespace: String,

    /// PV replacements run in parallel.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,

    /// Elect a leader among the instances through a Lease; only the leader writes.
    #[arg(
        long,
        value_name = "BOOL",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = go_flags::parse_bool
    )]
    leader_election: bool,

    /// Identity of this instance in the Lease (default: $LEASE_HOLDER_IDENTITY, else the host
    /// name).
    #[arg(long, value_name = "ID", default_value = "", hide_default_value = true)]
    leader_election_id: String,

    /// Name of the Lease (default: $LEASE_LOCK_NAME, else linstor-affinity-controller).
    #[arg(long, value_name = "NAME", default_value = "", hide_default_value = true)]
    lease_lock_name: String,

    /// Namespace of the Lease (default: $POD_NAMESPACE, else the service account's namespace, else
    /// `default`).
    #[arg(long, value_name = "NAMESPACE", default_value = "", hide_default_value = true)]
    lease_lock_namespace: String,

    /// How long a Lease holds without renewal.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops writing.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    leader_election_renew_deadline: Duration,

    /// Time between attempts to acquire or renew the Lease.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    leader_election_retry_period: Duration,

    /// What a cordon (spec.unschedulable) does to the node's LINSTOR node: Ignore; NoSchedule (no
    /// new replicas: AutoplaceTarget=false, existing replicas stay); Evacuate (LINSTOR moves the
    /// replicas elsewhere, keeping one in use until it is no longer). The taint
    /// piraeus.io/evacuate evacuates whatever this says. Uncordoning undoes exactly what was done.
    #[arg(long, value_name = "POLICY", default_value = "Ignore", value_parser = parse_drain_policy)]
    node_drain_policy: DrainPolicy,

    /// What deleting a Kubernetes node does to its LINSTOR node: Orphan (nothing) or Evacuate.
    #[arg(long, value_name = "POLICY", default_value = "Orphan", value_parser = parse_delete_policy)]
    node_delete_policy: DeletePolicy,

    /// Nodes evacuated at once; further nodes wait, with an event saying so.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_evacuations: u32,

    /// Kubernetes API requests per second, on average (0: no client-side limit).
    #[arg(long, value_name = "QPS", default_value_t = 300.0)]
    kube_api_qps: f64,

    /// Kubernetes API requests allowed in a burst above --kube-api-qps.
    #[arg(long, value_name = "N", default_value_t = 600)]
    kube_api_burst: u32,

    #[command(flatten)]
    kube: KubeArgs,

    /// Log verbosity, as klog counts it: 0 warnings, 1-2 info, 3-4 debug, 5 and more trace
    /// (RUST_LOG overrides).
    #[arg(short = 'v', long = "v", value_name = "LEVEL", default_value_t = 2)]
    verbosity: u8,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Stop every replace after this protocol step and wait to be killed (for crash tests; only in
    /// builds with the `test-hooks` feature).
    #[cfg(feature = "test-hooks")]
    #[arg(long, value_name = "STEP", hide = true)]
    debug_halt_after: Option<affinity_kube::replace::ReplaceStep>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Move saved PVs kept on LINSTOR resource definitions by older versions to their volume
    /// definitions, then exit. Talks to LINSTOR only; safe to run again.
    MigrateProperties,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Exit codes.
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_BIND: u8 = 3;

/// Pause between attempts to ask the API server for the permissions.
const PERMISSION_RETRY: Duration = Duration::from_secs(2);
/// How long a shutdown waits for the elector to release the Lease (a read
/// and a write); past it the Lease expires after its duration.
const LEASE_RELEASE_BOUND: Duration = Duration::from_secs(5);

/// Threads of the async runtime: the controller mostly waits for the network, and one thread per
/// core of a large node would only add stacks and allocator state.
const RUNTIME_THREADS: usize = 2;

fn parse_drain_policy(text: &str) -> Result<DrainPolicy, PolicyNameError> {
    text.parse()
}

fn parse_delete_policy(text: &str) -> Result<DeletePolicy, PolicyNameError> {
    text.parse()
}

/// Parses a command line as Go's `flag` package reads it (see [`go_flags`]).
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let names = FlagNames::of(&Cli::command());
    Cli::try_parse_from(go_flags::normalise(args, |name| names.is_go_long(name)))
}

fn main() -> ExitCode {
    use_one_arena();
    let cli = parse(std::env::args_os()).unwrap_or_else(|error| error.exit());
    init_logging(cli.verbosity, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            error!(error = %failure.message, "stopping");
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(verbosity: u8, format: LogFormat) {
    let level = match verbosity {
        0 => "warn",
        1 | 2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,affinity_kube={level},affinity_core={level},linstor_api={level},\
             linstor_affinity_controller={level}"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Why the process stops, and its exit code.
struct Failure {
    code: u8,
    message: String,
}

fn failure(code: u8, message: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        message: message.to_string(),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let linstor = linstor_api::Client::from_env().map_err(|e| failure(EXIT_CONFIG, e))?;
    if let Some(Command::MigrateProperties) = cli.command {
        return migrate(&linstor).await;
    }
    let config = cli.kube.config().await.map_err(|e| failure(EXIT_CONFIG, e))?;
    let metrics = Arc::new(Metrics::new());
    let throttle =
        ThrottleLayer::new(cli.kube_api_qps, cli.kube_api_burst).counting(metrics.kubernetes_requests());
    let kube = kube_args::client(config, &throttle).map_err(|e| failure(EXIT_CONFIG, e))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let readiness = Readiness::new();
    let (health_address, health) = bind_health(&cli.bind_address, readiness.clone(), shutdown.clone())
        .await
        .map_err(|e| failure(EXIT_BIND, e))?;
    info!(address = %health_address, "health endpoints");
    tokio::spawn(health);
    if !cli.metrics_address.is_empty() {
        let (address, serve) = bind_metrics(&cli.metrics_address, Arc::clone(&metrics), shutdown.clone())
            .await
            .map_err(|e| failure(EXIT_BIND, e))?;
        info!(%address, "metrics endpoint");
        tokio::spawn(serve);
    }

    let identity = Sources::PROCESS.identity(&cli.leader_election_id);
    let lock = Sources::PROCESS.lock(&cli.lease_lock_name, &cli.lease_lock_namespace);
    let mut settings = ControllerSettings {
        reconcile_rate: cli.reconcile_rate,
        timeout: cli.timeout,
        grace_period: cli.grace_period.unwrap_or(cli.timeout),
        workers: usize::try_from(cli.workers).unwrap_or(usize::MAX),
        property_namespace: non_empty(&cli.property_namespace),
        instance: format!("linstor-affinity-controller@{identity}"),
        reporting_controller: EVENT_REPORTING_CONTROLLER.to_owned(),
        rebind_annotation: DEFAULT_REBIND_ANNOTATION.to_owned(),
        // Set below, from what the API server grants.
        paths: Paths::ALL,
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        reconcile_rate = ?settings.reconcile_rate,
        resync_rate = ?cli.resync_rate,
        timeout = ?settings.timeout,
        grace_period = ?settings.grace_period,
        workers = settings.workers,
        property_namespace = settings.property_namespace.as_deref().unwrap_or("(guessed)"),
        leader_election = cli.leader_election,
        node_drain_policy = %cli.node_drain_policy,
        node_delete_policy = %cli.node_delete_policy,
        max_concurrent_evacuations = cli.max_concurrent_evacuations,
        "starting"
    );
    let drain_settings = DrainSettings {
        drain_policy: cli.node_drain_policy,
        delete_policy: cli.node_delete_policy,
        max_concurrent_evacuations: usize::try_from(cli.max_concurrent_evacuations).unwrap_or(usize::MAX),
        ..DrainSettings::default()
    };
    let drain_policies_set = drain_settings.drain_policy != DrainPolicy::Ignore
        || drain_settings.delete_policy != DeletePolicy::Orphan;
    if cli.leader_election {
        info!(lease = %lock.name, namespace = %lock.namespace, %identity, "leader election on");
    }

    // Before the Lease is taken: a role that is not enough stops the start.
    let Some(grants) = ask_permissions(&kube, &lock.namespace, &shutdown).await else {
        return Ok(());
    };
    settings.paths = grants
        .paths(cli.leader_election, drain_policies_set)
        .map_err(|e| {
            failure(
                EXIT_FAILURE,
                format!("the controller's RBAC role is not enough: {e}"),
            )
        })?;
    for cost in settings.paths.off_explained() {
        warn!(path_off = cost, "RBAC does not grant a faster path");
    }
    metrics.set_paths(&settings.paths);

    let (leadership, election) = if cli.leader_election {
        let lease = LeaseSettings {
            namespace: lock.namespace,
            name: lock.name,
            identity,
            lease_duration: cli.leader_election_lease_duration,
            renew_deadline: cli.leader_election_renew_deadline,
            retry_period: cli.leader_election_retry_period,
        };
        let elector = LeaderElector::new(kube.clone(), lease).map_err(|e| failure(EXIT_CONFIG, e))?;
        let leadership = elector.leadership();
        (leadership, Some(elector.spawn(shutdown.clone())))
    } else {
        (affinity_kube::leader::Leadership::always(), None)
    };
    let observer = step_observer(&cli);
    let drain = settings.paths.node_drain.then(|| {
        let config = DrainConfig {
            decisions: drain_settings,
            reconcile_rate: settings.reconcile_rate,
            property_namespace: settings.property_namespace.clone(),
        };
        let events = EventReporter::new(kube.clone(), &settings.instance)
            .with_apis(settings.paths.events)
            .with_reporting_controller(&settings.reporting_controller);
        DrainReconciler::new(
            config,
            kube.clone(),
            linstor.clone(),
            leadership.clone(),
            Arc::clone(&metrics),
            events,
        )
    });
    let parts = ControllerParts {
        kube,
        linstor,
        leadership,
        metrics,
        readiness,
        observer,
        after_pass: Some(Arc::new(release_free_memory)),
        drain_focus: drain.as_ref().map(DrainReconciler::focus),
    };
    let controller = Controller::new(settings, parts);
    match &drain {
        Some(drain) => {
            tokio::join!(controller.run(shutdown.clone()), drain.run(shutdown.clone()));
        }
        None => controller.run(shutdown.clone()).await,
    }
    // The elector releases the Lease before the runtime stops.
    shutdown.cancel();
    if let Some(election) = election {
        election.wait_released(LEASE_RELEASE_BOUND).await;
    }
    info!("stopped");
    Ok(())
}

/// Asks the API server what this controller may do, again every few
/// seconds while it cannot answer; `None` on shutdown. Where the question
/// itself is forbidden, every path is tried as if granted.
async fn ask_permissions(
    kube: &kube::Client,
    lease_namespace: &str,
    shutdown: &CancellationToken,
) -> Option<Grants> {
    loop {
        match permissions::probe(kube, lease_namespace).await {
            Ok(grants) => return Some(grants),
            Err(error) if matches!(&*error.source, kube::Error::Api(status) if status.code == 403) => {
                warn!(%error, "cannot ask which permissions are granted: assuming all are");
                return Some(Grants::all());
            }
            Err(error) => warn!(%error, "cannot ask which permissions are granted yet; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(PERMISSION_RETRY) => {}
        }
    }
}

async fn migrate(linstor: &linstor_api::Client) -> Result<(), Failure> {
    let report = migrate_properties(linstor)
        .await
        .map_err(|e| failure(EXIT_FAILURE, e))?;
    info!(
        migrated = report.migrated.len(),
        already_present = report.already_present.len(),
        failed = report.failed.len(),
        "migration done"
    );
    if report.is_complete() {
        Ok(())
    } else {
        Err(failure(
            EXIT_FAILURE,
            format!(
                "{} resource definitions could not be migrated",
                report.failed.len()
            ),
        ))
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    stop_requested().await;
    info!("shutdown requested");
    shutdown.cancel();
}

/// The observer of replace steps: the `--debug-halt-after` test hook, when built in and set.
#[cfg(feature = "test-hooks")]
fn step_observer(cli: &Cli) -> Option<Arc<dyn StepObserver>> {
    cli.debug_halt_after
        .map(|step| Arc::new(test_hooks::HaltAfter(step)) as Arc<dyn StepObserver>)
}

/// The observer of replace steps: none without the `test-hooks` feature.
#[cfg(not(feature = "test-hooks"))]
fn step_observer(_cli: &Cli) -> Option<Arc<dyn StepObserver>> {
    None
}

/// Hooks for the crash tests, built only with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use affinity_kube::replace::{ReplaceStep, StepObserver};
    use futures::future::BoxFuture;
    use tracing::warn;

    /// Stops every replace after one step, so a test can kill the process there.
    pub(super) struct HaltAfter(pub(super) ReplaceStep);

    impl StepObserver for HaltAfter {
        fn step_done(&self, pv: &str, step: ReplaceStep) -> BoxFuture<'static, ()> {
            if step == self.0 {
                warn!(%pv, %step, "halting after replace step");
                Box::pin(std::future::pending())
            } else {
                Box::pin(std::future::ready(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use clap::error::ErrorKind;

    use super::Cli;

    const HALT: [&str; 3] = [
        "linstor-affinity-controller",
        "--debug-halt-after",
        "intent-saved",
    ];

    #[cfg(not(feature = "test-hooks"))]
    #[test]
    fn without_test_hooks_the_halt_flag_is_unknown() {
        let error = Cli::try_parse_from(HALT).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::UnknownArgument, "{error}");
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn with_test_hooks_the_halt_flag_is_accepted_and_hidden() {
        let cli = Cli::try_parse_from(HALT).unwrap();
        assert!(cli.debug_halt_after.is_some());
        let help = Cli::try_parse_from(["linstor-affinity-controller", "--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert!(!help.to_string().contains("debug-halt-after"), "{help}");
    }

    #[test]
    fn the_arguments_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn parsed(args: &[&str]) -> Result<Cli, clap::Error> {
        super::parse(
            ["/linstor-affinity-controller"]
                .iter()
                .chain(args)
                .map(std::ffi::OsString::from),
        )
    }

    #[test]
    fn the_piraeus_operators_arguments_parse() {
        let cli = parsed(&[
            "--v=1",
            "--leader-election=true",
            "--property-namespace=Aux/topology",
            "--bind-address=:8000",
            "--metrics-address=:8081",
        ])
        .unwrap();
        assert_eq!(cli.verbosity, 1);
        assert!(cli.leader_election);
        assert_eq!(cli.property_namespace, "Aux/topology");
        assert_eq!(cli.bind_address, ":8000");
        assert_eq!(cli.metrics_address, ":8081");
    }

    #[test]
    fn the_charts_arguments_parse() {
        let cli = parsed(&[
            "--v=1",
            "--leader-election=true",
            "--reconcile-rate=15s",
            "--resync-rate=15m",
            "--workers=10",
            "--timeout=1.5m",
        ])
        .unwrap();
        assert!(cli.leader_election);
        assert_eq!(cli.reconcile_rate, Duration::from_secs(15));
        assert_eq!(cli.resync_rate, Duration::from_secs(900));
        assert_eq!(cli.timeout, Duration::from_secs(90));
        assert_eq!(cli.workers, 10);
    }

    #[test]
    fn single_and_double_dashes_and_separate_values_are_the_same() {
        for args in [&["-v=3"][..], &["--v=3"], &["-v", "3"], &["--v", "3"]] {
            assert_eq!(parsed(args).unwrap().verbosity, 3, "{args:?}");
        }
        assert_eq!(parsed(&[]).unwrap().verbosity, 2);
        let cli = parsed(&[
            "-workers",
            "4",
            "-lease-lock-name=x",
            "-leader-election",
            "-timeout=2m",
        ])
        .unwrap();
        assert_eq!((cli.workers, cli.lease_lock_name.as_str()), (4, "x"));
        assert!(cli.leader_election);
        assert_eq!(cli.timeout, Duration::from_secs(120));
    }

    #[test]
    fn booleans_take_every_go_spelling_after_an_equals_sign_only() {
        for (text, value) in [
            ("1", true),
            ("t", true),
            ("True", true),
            ("0", false),
            ("F", false),
        ] {
            let cli = parsed(&[&format!("--leader-election={text}")]).unwrap();
            assert_eq!(cli.leader_election, value, "{text}");
        }
        assert!(!parsed(&[]).unwrap().leader_election);
        let error = parsed(&["--leader-election", "true"]).unwrap_err();
        assert!(error.to_string().contains("'true'"), "{error}");
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        let cli = parsed(&[
            "--workers=3",
            "-workers=5",
            "--leader-election",
            "--leader-election=false",
        ])
        .unwrap();
        assert_eq!(cli.workers, 5);
        assert!(!cli.leader_election);
    }

    #[test]
    fn unknown_flags_are_named_and_help_stays_short_and_long() {
        for (args, flag) in [
            (["-no-such-flag"], "'--no-such-flag'"),
            (["--nope=1"], "'--nope'"),
        ] {
            let error = parsed(&args).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::UnknownArgument, "{error}");
            assert!(error.to_string().contains(flag), "{error}");
        }
        for help in ["-h", "--help", "-help"] {
            assert_eq!(
                parsed(&[help]).unwrap_err().kind(),
                ErrorKind::DisplayHelp,
                "{help}"
            );
        }
        let subcommand = parsed(&["-v=3", "migrate-properties"]).unwrap();
        assert!(matches!(
            subcommand.command,
            Some(super::Command::MigrateProperties)
        ));
    }
}
