//! The `linstor-affinity` command line tool, as a library: reading the state of a cluster (a dump
//! or the live cluster), turning it into the decision engine's model, rendering the plan,
//! replacing single PVs, discarding the intent of a replace and showing node drains.
//!
//! Each module has one job:
//! - [`dump`] reads and checks the files of a dump directory;
//! - [`kube_args`] holds kubectl's kubeconfig flags and turns them into a client configuration;
//! - [`live`] reads PVs, StorageClasses and LINSTOR state from the live cluster;
//! - [`convert`] turns LINSTOR and Kubernetes objects into `affinity-core`'s model;
//! - [`report`] turns a plan into the stable report that every output format shows;
//! - [`render`] prints a report as a table, JSON or YAML;
//! - [`manifests`] writes replacement PVs for review;
//! - [`duration`] parses durations as Go does, such as `1m`, `90s` or `1.5h`;
//! - [`go_flags`] reads command lines as Go's `flag` package does (`-flag`, `--flag=true`);
//! - [`memory`] keeps the controller's resident memory close to what it keeps;
//! - [`signals`] waits for SIGTERM or Ctrl-C;
//! - [`progress`] shows a spinner on a terminal while the tool waits;
//! - [`plan`] ties them together for `plan` and picks the exit status;
//! - [`replace`] decides for one PV and runs the replace protocol;
//! - [`discard`] removes the intent of a replace from a LINSTOR volume definition;
//! - [`lease`] fences the commands that write while a controller holds its Lease;
//! - [`drain_status`] reads and shows where each node's drain stands.
//!
//! The `linstor-affinity` binary is also the kubectl plugin `kubectl linstor-affinity` (kubectl maps
//! the dash of a plugin command to an underscore in its file name); install it with
//! `ln -s "$(command -v linstor-affinity)" /usr/local/bin/kubectl-linstor_affinity`.

pub mod convert;
pub mod discard;
pub mod drain_status;
pub mod dump;
pub mod duration;
pub mod go_flags;
pub mod kube_args;
pub mod lease;
pub mod live;
pub mod manifests;
pub mod memory;
pub mod plan;
pub mod progress;
pub mod render;
pub mod replace;
pub mod report;
pub mod signals;

/// The `LS_*` environment of the Go LINSTOR client, as a string literal for `--help` texts (a
/// macro, so that `concat!` can join it with the rest of a help text).
#[macro_export]
macro_rules! linstor_environment_help {
    () => {
        "  LS_CONTROLLERS   comma-separated controllers: host, host:port, http://, https://, linstor://,
                   linstor+ssl://; default localhost, port 3370 (http) or 3371 (https); https when
                   any TLS variable is set
  LS_USER_CERTIFICATE, LS_USER_KEY, LS_ROOT_CA                 mutual TLS, PEM text
  LS_USER_CERTIFICATE_FILE, LS_USER_KEY_FILE, LS_ROOT_CA_FILE  mutual TLS, file paths
  LS_USERNAME, LS_PASSWORD                                     basic auth
  LS_BEARER_TOKEN_FILE                                         bearer token (text or JSON `token`)
"
    };
}
