//! `linstor-sim`: an in-memory LINSTOR controller serving the REST API (v1) on loopback.
//!
//! Exit codes: 0 after a clean shutdown (Ctrl-C or SIGTERM), 2 for usage errors, 3 when the
//! scenario file cannot be used, 4 when a listener or the TLS material cannot be set up, 5 when
//! the state cannot be saved at shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use linstor_api::sim::{SimTls, Simulator, SimulatorBuilder, load_state_file};

/// In-memory LINSTOR controller simulator.
///
/// Serves the LINSTOR REST API (v1) paths used by the affinity controller and its tests, plus a
/// control API under /sim/ (state, request counters, fault injection, in_use and flags, node
/// restorer).
#[derive(Debug, Parser)]
#[command(name = "linstor-sim", version)]
#[command(about = "In-memory LINSTOR controller simulator serving the LINSTOR REST API (v1) on loopback")]
#[command(after_help = "Examples:\n  \
    linstor-sim --scenario linstor-api/scenarios/small-cluster.json\n  \
    curl -s http://127.0.0.1:3370/v1/nodes\n  \
    curl -s -X POST http://127.0.0.1:3370/sim/faults -d '{\"kind\":\"error\",\"path\":\"/v1/nodes\",\"times\":1}'\n  \
    curl -s -X PUT http://127.0.0.1:3370/sim/resources/RESOURCE/NODE -d '{\"in_use\":false}'\n  \
    curl -s -X PUT http://127.0.0.1:3370/sim/restorer -d '{\"every_seconds\":5}'")]
struct Args {
    /// Scenario or saved state file (JSON) to start from; empty cluster when absent.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,

    /// Address of the plain HTTP listener (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3370")]
    listen: SocketAddr,

    /// Do not serve plain HTTP.
    #[arg(long)]
    no_http: bool,

    /// Address of the HTTPS listener (needs --tls-cert and --tls-key).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3371")]
    https_listen: SocketAddr,

    /// Server certificate chain (PEM) for HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// Server private key (PEM) for HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// CA (PEM) that client certificates must chain to; makes client certificates mandatory.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,

    /// Write the whole state (JSON) to this file at shutdown.
    #[arg(long, value_name = "FILE")]
    save_state: Option<PathBuf>,

    /// Restore every node flagged EVACUATE or EVICTED every SECONDS (fractions allowed), as the
    /// Piraeus Operator does for a running satellite; off when absent (see PUT /sim/restorer).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    restore_evacuated_every: Option<Duration>,
}

/// A positive, finite number of seconds.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?} is not a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut builder = SimulatorBuilder::new();
    if let Some(path) = &args.scenario {
        match load_state_file(path) {
            Ok(state) => builder = builder.state(state),
            Err(e) => {
                eprintln!("linstor-sim: {e}");
                return ExitCode::from(3);
            }
        }
    }
    if let Some(every) = args.restore_evacuated_every {
        builder = builder.restore_evacuated_every(every);
    }
    builder = if args.no_http {
        builder.no_http()
    } else {
        builder.http_addr(args.listen)
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = (|| -> Result<SimTls, String> {
            Ok(SimTls {
                cert_pem: read(cert, "TLS certificate")?,
                key_pem: read(key, "TLS key")?,
                client_ca_pem: match &args.client_ca {
                    Some(ca) => Some(read(ca, "client CA")?),
                    None => None,
                },
            })
        })();
        match tls {
            Ok(tls) => builder = builder.https(args.https_listen, tls),
            Err(e) => {
                eprintln!("linstor-sim: {e}");
                return ExitCode::from(4);
            }
        }
    } else if args.no_http {
        eprintln!("linstor-sim: --no-http needs --tls-cert and --tls-key (nothing to serve)");
        return ExitCode::from(2);
    }

    let sim: Simulator = match builder.start().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linstor-sim: {e}");
            return ExitCode::from(4);
        }
    };
    if let Some(url) = sim.http_url() {
        println!("linstor-sim: serving {url}");
    }
    if let Some(url) = sim.https_url() {
        println!("linstor-sim: serving {url}");
    }

    linstor_affinity_cli::signals::stop_requested().await;
    tracing::info!("shutting down");
    if let Some(path) = &args.save_state {
        if let Err(e) = sim.save_state(path) {
            eprintln!("linstor-sim: {e}");
            return ExitCode::from(5);
        }
        println!("linstor-sim: state saved to {}", path.display());
    }
    sim.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_period_parses_positive_seconds() {
        assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "inf", "NaN", "soon", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad:?} accepted");
        }
        let args = Args::try_parse_from(["linstor-sim", "--restore-evacuated-every", "2"]).unwrap();
        assert_eq!(args.restore_evacuated_every, Some(Duration::from_secs(2)));
        assert!(Args::try_parse_from(["linstor-sim", "--restore-evacuated-every", "0"]).is_err());
        let args = Args::try_parse_from(["linstor-sim"]).unwrap();
        assert_eq!(args.restore_evacuated_every, None);
    }
}
