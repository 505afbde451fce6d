//! Fencing of the commands that write: they refuse while a controller holds the leader-election
//! Lease, since that controller may write the same PVs and LINSTOR properties at the same time.
//!
//! The Lease is the controller's (`coordination.k8s.io/v1`, named by the same `--lease-lock-name`
//! and `--lease-lock-namespace` flags with the same defaults, which [`Sources`] resolves). It
//! counts as held when its `holderIdentity` is set and `renewTime + leaseDurationSeconds` lies in
//! the future.
//! [`held_by_other`] decides that from a Lease and the time; [`check`] reads the Lease and decides.
//! A controller running without leader election holds no Lease and is not seen.

use affinity_core::k8s_openapi::api::coordination::v1::Lease;
use affinity_core::k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use linstor_api::error::chain;

/// Default of `--lease-lock-name` when `$LEASE_LOCK_NAME` is not set either, the controller's.
pub const DEFAULT_LEASE_NAME: &str = "linstor-affinity-controller";

/// The file holding the namespace of a pod's service account.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Where the controller's Lease is, and whether to look at it: the fencing flags of the commands
/// that write.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct FenceArgs {
    /// Write even while a controller holds the leader-election Lease. Risky: the controller may
    /// replace the same PV or rewrite the same LINSTOR property at the same moment, and the last
    /// writer wins; use it only when the Lease is stale or the controller is known to be stopped.
    #[arg(long)]
    pub ignore_lease: bool,

    /// Name of the controller's Lease (its --lease-lock-name; default: $LEASE_LOCK_NAME, else
    /// linstor-affinity-controller).
    #[arg(long, value_name = "NAME", default_value = "", hide_default_value = true)]
    pub lease_lock_name: String,

    /// Namespace of the controller's Lease (its --lease-lock-namespace; default: $POD_NAMESPACE,
    /// else the service account's namespace, else `default`).
    #[arg(long, value_name = "NAMESPACE", default_value = "", hide_default_value = true)]
    pub lease_lock_namespace: String,
}

impl FenceArgs {
    /// The Lease these flags name, defaults taken from `sources` as the controller takes them.
    pub fn lock(&self, sources: &Sources) -> LeaseLock {
        sources.lock(&self.lease_lock_name, &self.lease_lock_namespace)
    }
}

/// Where the defaults of the leader-election flags come from: environment variables, files and the
/// host name. [`Sources::PROCESS`] reads the process's; tests pass their own.
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    /// The value of an environment variable (`None` when unset).
    pub var: fn(&str) -> Option<String>,
    /// The text of a file (`None` when it cannot be read).
    pub read_file: fn(&str) -> Option<String>,
    /// The host name (`None` when unknown).
    pub host_name: fn() -> Option<String>,
}

impl Sources {
    /// The process's environment, files and host name.
    pub const PROCESS: Sources = Sources {
        var: |name| std::env::var(name).ok(),
        read_file: |path| std::fs::read_to_string(path).ok(),
        host_name,
    };

    /// The identity of a Lease holder: `flag`, else `$LEASE_HOLDER_IDENTITY`, else the host name,
    /// else `linstor-affinity-controller`.
    pub fn identity(&self, flag: &str) -> String {
        non_empty(flag.to_owned())
            .or_else(|| self.var("LEASE_HOLDER_IDENTITY"))
            .or_else(|| (self.host_name)().and_then(non_empty))
            .unwrap_or_else(|| DEFAULT_LEASE_NAME.to_owned())
    }

    /// The Lease of the flags `--lease-lock-name` (`name`) and `--lease-lock-namespace`
    /// (`namespace`): the name defaults to `$LEASE_LOCK_NAME`, else [`DEFAULT_LEASE_NAME`]; the
    /// namespace to `$POD_NAMESPACE`, else the service account's namespace
    /// ([`SERVICE_ACCOUNT_NAMESPACE_FILE`]), else `default`.
    pub fn lock(&self, name: &str, namespace: &str) -> LeaseLock {
        LeaseLock {
            namespace: non_empty(namespace.to_owned())
                .or_else(|| self.var("POD_NAMESPACE"))
                .or_else(|| {
                    (self.read_file)(SERVICE_ACCOUNT_NAMESPACE_FILE)
                        .and_then(|text| non_empty(text.trim().to_owned()))
                })
                .unwrap_or_else(|| "default".to_owned()),
            name: non_empty(name.to_owned())
                .or_else(|| self.var("LEASE_LOCK_NAME"))
                .unwrap_or_else(|| DEFAULT_LEASE_NAME.to_owned()),
        }
    }

    /// A variable's value; empty counts as unset.
    fn var(&self, name: &str) -> Option<String> {
        (self.var)(name).and_then(non_empty)
    }
}

/// This machine's host name; `None` when it is unknown, empty or not UTF-8.
pub fn host_name() -> Option<String> {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .and_then(non_empty)
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// A Lease by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLock {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
}

/// A valid hold of a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHold {
    /// `spec.holderIdentity`.
    pub holder: String,
    /// When the hold ends unless renewed: `renewTime + leaseDurationSeconds`.
    pub until: Timestamp,
}

/// Why a command that writes does not go on.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Another instance holds the Lease.
    #[error(
        "refusing to write: Lease {namespace}/{name} is held by {holder} until {until} ({remaining} s \
         from now, unless renewed): a controller with leader election is running and may write the same \
         PVs and LINSTOR properties; stop it or wait until its Lease expired, or pass --ignore-lease to \
         write anyway",
        namespace = .lock.namespace,
        name = .lock.name,
        holder = .hold.holder,
        until = .hold.until,
    )]
    Held {
        /// The Lease.
        lock: LeaseLock,
        /// Its holder and until when.
        hold: LeaseHold,
        /// Whole seconds from now until the hold ends.
        remaining: i64,
    },
    /// The Lease could not be read, so no one can say whether a controller is running.
    #[error(
        "cannot read Lease {namespace}/{name} to check that no controller is writing: {reason}; pass \
         --ignore-lease to write without this check",
        namespace = .lock.namespace,
        name = .lock.name,
    )]
    Read {
        /// The Lease.
        lock: LeaseLock,
        /// The client's error, with its causes.
        reason: String,
    },
}

/// The hold of `lease` by anyone other than `identity` that is valid at `now`, if any.
///
/// A hold is valid when `spec.holderIdentity` is not empty and `spec.renewTime` (else
/// `spec.acquireTime`) plus `spec.leaseDurationSeconds` is after `now`. A Lease without a time or
/// without a positive duration holds nothing, and neither does a released one (empty holder).
pub fn held_by_other(lease: &Lease, identity: &str, now: Timestamp) -> Option<LeaseHold> {
    let spec = lease.spec.as_ref()?;
    let holder = spec
        .holder_identity
        .as_deref()
        .filter(|holder| !holder.is_empty())?;
    if holder == identity {
        return None;
    }
    let since = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let seconds = spec.lease_duration_seconds.filter(|seconds| *seconds > 0)?;
    let until = since
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(Timestamp::MAX);
    (until > now).then(|| LeaseHold {
        holder: holder.to_owned(),
        until,
    })
}

/// Reads the Lease `lock` names (`None` when it does not exist).
pub async fn read(kube: kube::Client, lock: &LeaseLock) -> Result<Option<Lease>, FenceError> {
    Api::<Lease>::namespaced(kube, &lock.namespace)
        .get_opt(&lock.name)
        .await
        .map_err(|source| FenceError::Read {
            lock: lock.clone(),
            reason: chain(&source),
        })
}

/// Fails with [`FenceError::Held`] when someone other than `identity` holds the Lease `lock` names
/// at `now`. A missing Lease, a released or an expired one let the command go on.
pub async fn check(
    kube: kube::Client,
    lock: &LeaseLock,
    identity: &str,
    now: Timestamp,
) -> Result<(), FenceError> {
    let Some(lease) = read(kube, lock).await? else {
        tracing::debug!(namespace = %lock.namespace, name = %lock.name, "no Lease: no elected controller");
        return Ok(());
    };
    match held_by_other(&lease, identity, now) {
        Some(hold) => Err(FenceError::Held {
            lock: lock.clone(),
            remaining: hold.until.duration_since(now).as_secs(),
            hold,
        }),
        None => {
            tracing::debug!(namespace = %lock.namespace, name = %lock.name, "Lease not held");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use affinity_core::k8s_openapi::api::coordination::v1::LeaseSpec;
    use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<&str>, seconds: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed.map(|time| MicroTime(at(time))),
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    const NOW: &str = "2025-06-01T12:00:00Z";
    const ME: &str = "linstor-affinity-cli@host";

    #[test]
    fn a_renewed_lease_of_another_holder_is_held_until_renewal_plus_duration() {
        let lease = lease(Some("controller-0"), Some("2025-06-01T11:59:50Z"), Some(30));
        assert_eq!(
            held_by_other(&lease, ME, at(NOW)),
            Some(LeaseHold {
                holder: "controller-0".to_owned(),
                until: at("2025-06-01T12:00:20Z"),
            })
        );
        // Still held one second before the end, no longer at the end.
        assert!(held_by_other(&lease, ME, at("2025-06-01T12:00:19Z")).is_some());
        assert_eq!(held_by_other(&lease, ME, at("2025-06-01T12:00:20Z")), None);
    }

    #[test]
    fn an_expired_released_or_own_lease_is_not_held_by_another() {
        let expired = lease(Some("controller-0"), Some("2025-06-01T11:00:00Z"), Some(30));
        assert_eq!(held_by_other(&expired, ME, at(NOW)), None);
        for holder in [None, Some("")] {
            let released = lease(holder, Some("2025-06-01T11:59:59Z"), Some(30));
            assert_eq!(held_by_other(&released, ME, at(NOW)), None);
        }
        let own = lease(Some(ME), Some("2025-06-01T11:59:59Z"), Some(30));
        assert_eq!(held_by_other(&own, ME, at(NOW)), None);
    }

    #[test]
    fn a_lease_without_time_or_positive_duration_holds_nothing() {
        assert_eq!(held_by_other(&Lease::default(), ME, at(NOW)), None);
        let no_time = lease(Some("controller-0"), None, Some(30));
        assert_eq!(held_by_other(&no_time, ME, at(NOW)), None);
        for seconds in [None, Some(0), Some(-5)] {
            let no_duration = lease(Some("controller-0"), Some("2025-06-01T11:59:59Z"), seconds);
            assert_eq!(held_by_other(&no_duration, ME, at(NOW)), None);
        }
    }

    #[test]
    fn the_acquire_time_stands_in_for_a_missing_renew_time() {
        let mut acquired = lease(Some("controller-0"), None, Some(30));
        if let Some(spec) = acquired.spec.as_mut() {
            spec.acquire_time = Some(MicroTime(at("2025-06-01T11:59:45Z")));
        }
        let hold = held_by_other(&acquired, ME, at(NOW)).unwrap();
        assert_eq!(hold.until, at("2025-06-01T12:00:15Z"));
    }

    #[test]
    fn the_refusal_names_the_lease_the_holder_and_the_end() {
        let error = FenceError::Held {
            lock: LeaseLock {
                namespace: "piraeus".to_owned(),
                name: DEFAULT_LEASE_NAME.to_owned(),
            },
            hold: LeaseHold {
                holder: "controller-0".to_owned(),
                until: at("2025-06-01T12:00:20Z"),
            },
            remaining: 20,
        }
        .to_string();
        assert!(
            error.starts_with(
                "refusing to write: Lease piraeus/linstor-affinity-controller is held by controller-0 until \
                 2025-06-01T12:00:20Z (20 s from now"
            ),
            "{error}"
        );
        assert!(error.ends_with("pass --ignore-lease to write anyway"), "{error}");
    }

    fn unset(_: &str) -> Option<String> {
        None
    }

    /// Sources with every variable set (to `$NAME-value`), a namespace file and a host name.
    const EVERYTHING: Sources = Sources {
        var: |name| Some(format!("{name}-value")),
        read_file: |path| (path == SERVICE_ACCOUNT_NAMESPACE_FILE).then(|| " from-file\n".to_owned()),
        host_name: || Some("host".to_owned()),
    };

    /// Sources with nothing set and nothing to read.
    const NOTHING: Sources = Sources {
        var: unset,
        read_file: unset,
        host_name: || None,
    };

    #[test]
    fn flags_win_over_every_default() {
        let lock = EVERYTHING.lock("lock", "piraeus");
        assert_eq!(
            lock,
            LeaseLock {
                namespace: "piraeus".to_owned(),
                name: "lock".to_owned(),
            }
        );
        assert_eq!(EVERYTHING.identity("me"), "me");
    }

    #[test]
    fn the_environment_comes_next() {
        let lock = EVERYTHING.lock("", "");
        assert_eq!(lock.namespace, "POD_NAMESPACE-value");
        assert_eq!(lock.name, "LEASE_LOCK_NAME-value");
        assert_eq!(EVERYTHING.identity(""), "LEASE_HOLDER_IDENTITY-value");
    }

    #[test]
    fn then_the_service_account_file_and_the_host_name() {
        let sources = Sources {
            var: |name| (name == "UNRELATED").then(|| "x".to_owned()),
            ..EVERYTHING
        };
        assert_eq!(sources.lock("", "").namespace, "from-file");
        assert_eq!(sources.identity(""), "host");
        // Empty variables count as unset.
        let empty = Sources {
            var: |_| Some(String::new()),
            ..EVERYTHING
        };
        assert_eq!(empty.lock("", "").namespace, "from-file");
        assert_eq!(empty.identity(""), "host");
    }

    #[test]
    fn without_anything_the_upstream_defaults_hold() {
        assert_eq!(
            NOTHING.lock("", ""),
            LeaseLock {
                namespace: "default".to_owned(),
                name: DEFAULT_LEASE_NAME.to_owned(),
            }
        );
        let blank_file = Sources {
            read_file: |_| Some(" \n".to_owned()),
            ..NOTHING
        };
        assert_eq!(blank_file.lock("", "").namespace, "default");
        assert_eq!(NOTHING.identity(""), "linstor-affinity-controller");
    }

    #[test]
    fn the_fencing_flags_resolve_as_the_controllers() {
        let args = FenceArgs {
            ignore_lease: false,
            lease_lock_name: String::new(),
            lease_lock_namespace: "piraeus".to_owned(),
        };
        assert_eq!(
            args.lock(&EVERYTHING),
            LeaseLock {
                namespace: "piraeus".to_owned(),
                name: "LEASE_LOCK_NAME-value".to_owned(),
            }
        );
    }
}
