//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Follows client-go's `tools/leaderelection` with a Lease lock, so this controller and the Go
//! `linstor-affinity-controller` can take turns on the same lease: the record lives in the Lease's
//! spec, another holder's lease counts as expired once *our observation* of it has not changed for
//! its `leaseDurationSeconds`, and every write carries the `resourceVersion` it was based on.
//!
//! [`LeaderElector::run`] drives the election ([`LeaderElector::spawn`] starts it as a task whose
//! end, the lease released, a shutdown can await); [`Leadership`] is the cheap view the workers
//! consult before they write.
//!
//! It is written here by hand rather than taken from a crate because it must share one Lease with
//! the Go `linstor-affinity-controller` and follow client-go's leader election semantics exactly
//! (the record in the Lease's spec, expiry judged by the observed time of the last change, release
//! on shutdown), which no leader election crate for this version of kube offers.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use affinity_core::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use affinity_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use affinity_core::k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// client-go's `JitterFactor`: acquisition attempts are spaced by `retry_period * (1 + rand * 1.2)`.
const JITTER_FACTOR: f64 = 1.2;

/// Settings of the election (the reference's flags: `--leader-election-lease-duration 30s`,
/// `--leader-election-renew-deadline 25s`, `--leader-election-retry-period 10s`).
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This instance's identity, written to `spec.holderIdentity` (usually the pod name).
    pub identity: String,
    /// How long other instances wait, from their last observed change of the lease, before they
    /// take it over. Written to `spec.leaseDurationSeconds`, rounded up to whole seconds.
    pub lease_duration: Duration,
    /// How long the leader may go without a successful renewal before it stops leading.
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew the lease.
    pub retry_period: Duration,
}

/// Why the election cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// A name of the settings is empty.
    #[error("leader election: the lease {what} is empty")]
    Empty {
        /// Which one: "namespace", "name" or "identity".
        what: &'static str,
    },
    /// A duration of the settings is zero.
    #[error("leader election: the {what} must be greater than zero")]
    Zero {
        /// Which one: "lease duration", "renew deadline" or "retry period".
        what: &'static str,
    },
    /// The lease would expire for others while the leader still considers itself leading.
    #[error(
        "leader election: the lease duration ({lease_duration:?}) must be greater than the renew \
         deadline ({renew_deadline:?})"
    )]
    LeaseDurationNotAboveRenewDeadline {
        /// The configured lease duration.
        lease_duration: Duration,
        /// The configured renew deadline.
        renew_deadline: Duration,
    },
    /// The leader would not get a second renewal attempt before its deadline.
    #[error(
        "leader election: the renew deadline ({renew_deadline:?}) must be greater than {JITTER_FACTOR} \
         times the retry period ({retry_period:?})"
    )]
    RenewDeadlineTooShort {
        /// The configured renew deadline.
        renew_deadline: Duration,
        /// The configured retry period.
        retry_period: Duration,
    },
    /// The lease duration does not fit `spec.leaseDurationSeconds` (an int32).
    #[error(
        "leader election: the lease duration ({lease_duration:?}) exceeds {} seconds",
        i32::MAX
    )]
    LeaseDurationTooLong {
        /// The configured lease duration.
        lease_duration: Duration,
    },
}

/// Checks the settings like client-go's `NewLeaderElector` and returns `leaseDurationSeconds`.
fn validate(settings: &LeaseSettings) -> Result<i32, LeaderError> {
    for (what, value) in [
        ("namespace", &settings.namespace),
        ("name", &settings.name),
        ("identity", &settings.identity),
    ] {
        if value.is_empty() {
            return Err(LeaderError::Empty { what });
        }
    }
    for (what, value) in [
        ("lease duration", settings.lease_duration),
        ("renew deadline", settings.renew_deadline),
        ("retry period", settings.retry_period),
    ] {
        if value.is_zero() {
            return Err(LeaderError::Zero { what });
        }
    }
    if settings.lease_duration <= settings.renew_deadline {
        return Err(LeaderError::LeaseDurationNotAboveRenewDeadline {
            lease_duration: settings.lease_duration,
            renew_deadline: settings.renew_deadline,
        });
    }
    if settings.renew_deadline.as_secs_f64() <= JITTER_FACTOR * settings.retry_period.as_secs_f64() {
        return Err(LeaderError::RenewDeadlineTooShort {
            renew_deadline: settings.renew_deadline,
            retry_period: settings.retry_period,
        });
    }
    // Rounded up, not truncated like client-go: others must never see a shorter lease than the one
    // our renew deadline was checked against.
    let seconds = settings.lease_duration.as_secs() + u64::from(settings.lease_duration.subsec_nanos() > 0);
    i32::try_from(seconds).map_err(|_| LeaderError::LeaseDurationTooLong {
        lease_duration: settings.lease_duration,
    })
}

/// A cheap, cloneable view of whether this instance may write now.
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: LeadershipInner,
}

#[derive(Clone, Debug)]
enum LeadershipInner {
    Always,
    Elected {
        /// When the last successful acquisition or renewal started; `None` while not leading.
        renewed_at: watch::Receiver<Option<Instant>>,
        renew_deadline: Duration,
    },
}

/// Whether a lease renewed at `renewed_at` still allows writes at `now`.
fn within_deadline(renewed_at: Option<Instant>, renew_deadline: Duration, now: Instant) -> bool {
    renewed_at.is_some_and(|at| now.saturating_duration_since(at) < renew_deadline)
}

impl Leadership {
    /// Always leading: leader election is off.
    pub fn always() -> Self {
        Self {
            inner: LeadershipInner::Always,
        }
    }

    /// True while this instance holds the lease and its last successful renewal is younger than
    /// the renew deadline.
    ///
    /// Checked against the clock at each call, so a stalled renew loop stops writes at once, even
    /// before the loop notices.
    pub fn is_leading(&self) -> bool {
        match &self.inner {
            LeadershipInner::Always => true,
            LeadershipInner::Elected {
                renewed_at,
                renew_deadline,
            } => within_deadline(*renewed_at.borrow(), *renew_deadline, Instant::now()),
        }
    }

    /// True while this instance leads and will still lead `margin` from now
    /// if no renewal succeeds meanwhile: a write bounded by `margin` that
    /// starts now lands while the lease is ours.
    pub fn is_leading_for(&self, margin: Duration) -> bool {
        match &self.inner {
            LeadershipInner::Always => true,
            LeadershipInner::Elected {
                renewed_at,
                renew_deadline,
            } => within_deadline(
                *renewed_at.borrow(),
                renew_deadline.saturating_sub(margin),
                Instant::now(),
            ),
        }
    }

    /// How long one write may take so that [`Self::is_leading_for`] can
    /// hold for it between renewals: `ceiling`, and at most half the renew
    /// deadline.
    pub fn write_budget(&self, ceiling: Duration) -> Duration {
        match &self.inner {
            LeadershipInner::Always => ceiling,
            LeadershipInner::Elected { renew_deadline, .. } => ceiling.min(*renew_deadline / 2),
        }
    }

    /// Resolves when this instance becomes leader (immediately if it is).
    ///
    /// Never resolves once the elector has stopped without leading.
    pub async fn wait_until_leading(&self) {
        let LeadershipInner::Elected {
            renewed_at,
            renew_deadline,
        } = &self.inner
        else {
            return;
        };
        let mut renewed_at = renewed_at.clone();
        let renew_deadline = *renew_deadline;
        let leading = renewed_at
            .wait_for(|at| within_deadline(*at, renew_deadline, Instant::now()))
            .await
            .is_ok();
        if !leading {
            // The elector is gone: this instance will not lead any more.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when leadership is lost (immediately if not leading): when the elector gives up or
    /// stops, or when the renew deadline passes without a successful renewal.
    ///
    /// With [`Leadership::always`] it never resolves.
    pub async fn lost(&self) {
        let LeadershipInner::Elected {
            renewed_at,
            renew_deadline,
        } = &self.inner
        else {
            return std::future::pending().await;
        };
        let mut renewed_at = renewed_at.clone();
        loop {
            let Some(at) = *renewed_at.borrow_and_update() else {
                return;
            };
            let Some(deadline) = at.checked_add(*renew_deadline) else {
                // A deadline beyond the clock's range never passes.
                return std::future::pending().await;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                changed = renewed_at.changed() => {
                    if changed.is_err() {
                        // The elector is gone (e.g. its task was aborted): nothing renews any more.
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                }
            }
        }
    }
}

/// The leader election record of a Lease, as client-go's `LeaderElectionRecord`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Record {
    holder_identity: String,
    lease_duration_seconds: i32,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    lease_transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let Some(spec) = &lease.spec else {
            return Self::default();
        };
        Self {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.clone(),
            renew_time: spec.renew_time.clone(),
            lease_transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    /// `spec` with the record's fields set; other fields (strategy, preferredHolder) are kept.
    fn apply_to(self, spec: Option<LeaseSpec>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder_identity),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time,
            renew_time: self.renew_time,
            lease_transitions: Some(self.lease_transitions),
            ..spec.unwrap_or_default()
        }
    }
}

/// The last lease record seen and when it was first seen (client-go's `observedRecord` and
/// `observedTime`).
#[derive(Debug)]
struct Observation {
    record: Record,
    since: Instant,
}

/// How a leadership term ended.
enum TermEnd {
    /// The lease could not be renewed in time, or another instance holds it.
    Lost,
    /// `shutdown` was cancelled.
    Shutdown,
}

/// Runs the leader election of one instance.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    lease_duration_seconds: i32,
    renewed_at: watch::Sender<Option<Instant>>,
    observed: Option<Observation>,
}

impl LeaderElector {
    /// Checks the settings as client-go does (all durations > 0, `lease_duration > renew_deadline`,
    /// `renew_deadline > 1.2 * retry_period`) and prepares the election; nothing is contacted yet.
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Result<Self, LeaderError> {
        let lease_duration_seconds = validate(&settings)?;
        Ok(Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            lease_duration_seconds,
            renewed_at: watch::Sender::new(None),
            observed: None,
        })
    }

    /// The view of this elector's leadership, for the workers.
    pub fn leadership(&self) -> Leadership {
        Leadership {
            inner: LeadershipInner::Elected {
                renewed_at: self.renewed_at.subscribe(),
                renew_deadline: self.settings.renew_deadline,
            },
        }
    }

    /// Runs the election as a task of the current runtime until `shutdown` is cancelled; the
    /// returned handle waits for it to end, the lease released.
    pub fn spawn(self, shutdown: CancellationToken) -> RunningElection {
        let lease = self.lease_ref();
        RunningElection {
            task: tokio::spawn(self.run(shutdown)),
            lease,
        }
    }

    /// Runs the election until `shutdown` is cancelled.
    ///
    /// Tries to acquire the lease every retry period (with jitter) and renews it every retry period
    /// while leading; when it cannot renew within the renew deadline it stops leading and goes back
    /// to acquiring. On shutdown it releases a lease it holds (like client-go's `ReleaseOnCancel`),
    /// so another instance takes over at once. API failures are logged and retried.
    pub async fn run(mut self, shutdown: CancellationToken) {
        while let Some(acquired_at) = self.acquire(&shutdown).await {
            self.renewed_at.send_replace(Some(acquired_at));
            info!(
                identity = %self.settings.identity,
                lease = %self.lease_ref(),
                "became leader"
            );
            let end = self.renew(&shutdown, acquired_at).await;
            self.renewed_at.send_replace(None);
            match end {
                TermEnd::Lost => info!(
                    identity = %self.settings.identity,
                    lease = %self.lease_ref(),
                    "lost leadership"
                ),
                TermEnd::Shutdown => {
                    info!(
                        identity = %self.settings.identity,
                        lease = %self.lease_ref(),
                        "stopping to lead: shutting down"
                    );
                    break;
                }
            }
        }
        self.renewed_at.send_replace(None);
        self.release().await;
    }

    /// `namespace/name` of the lease, for logs.
    fn lease_ref(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }

    /// Tries to acquire the lease until it succeeds, returning when the successful attempt
    /// started, or until `shutdown` is cancelled.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> Option<Instant> {
        loop {
            let started = Instant::now();
            // Bounded, so a hanging API server cannot stall the election.
            let attempt = tokio::time::timeout(self.settings.renew_deadline, self.try_acquire_or_renew());
            let acquired = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                result = attempt => result.unwrap_or_else(|_| {
                    warn!(lease = %self.lease_ref(), "acquiring the lease timed out");
                    false
                }),
            };
            if acquired {
                return Some(started);
            }
            let pause = jittered(self.settings.retry_period);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Renews the lease every retry period until a renewal does not succeed within the renew
    /// deadline, another instance holds the lease, or `shutdown` is cancelled.
    async fn renew(&mut self, shutdown: &CancellationToken, mut renewed_at: Instant) -> TermEnd {
        let retry = self.settings.retry_period;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return TermEnd::Shutdown,
                () = tokio::time::sleep(retry) => {}
            }
            let Some(deadline) = renewed_at.checked_add(self.settings.renew_deadline) else {
                return TermEnd::Lost;
            };
            // Retry every retry period until the deadline, like client-go's PollImmediateUntil.
            loop {
                let started = Instant::now();
                if started >= deadline {
                    warn!(
                        identity = %self.settings.identity,
                        lease = %self.lease_ref(),
                        renew_deadline = ?self.settings.renew_deadline,
                        "could not renew the lease within the renew deadline"
                    );
                    return TermEnd::Lost;
                }
                let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew());
                let renewed = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return TermEnd::Shutdown,
                    result = attempt => result.unwrap_or(false),
                };
                if renewed {
                    renewed_at = started;
                    self.renewed_at.send_replace(Some(started));
                    break;
                }
                if let Some(holder) = self.held_by_other() {
                    // Someone took over; waiting for the deadline would only delay the inevitable.
                    warn!(
                        identity = %self.settings.identity,
                        lease = %self.lease_ref(),
                        %holder,
                        "the lease is held by another instance"
                    );
                    return TermEnd::Lost;
                }
                let next = started
                    .checked_add(retry)
                    .map_or(deadline, |next| next.min(deadline));
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return TermEnd::Shutdown,
                    () = tokio::time::sleep_until(next) => {}
                }
            }
        }
    }

    /// The holder of the observed record when it is neither this instance nor empty.
    fn held_by_other(&self) -> Option<String> {
        let holder = &self.observed.as_ref()?.record.holder_identity;
        (!holder.is_empty() && *holder != self.settings.identity).then(|| holder.clone())
    }

    /// client-go's `IsLeader`: the observed record names this instance.
    fn observed_as_holder(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| o.record.holder_identity == self.settings.identity)
    }

    /// client-go's `isLeaseValid`: the observed record changed less than its lease duration ago.
    fn observed_lease_valid(&self, now: Instant) -> bool {
        self.observed.as_ref().is_some_and(|o| {
            let duration = Duration::from_secs(u64::try_from(o.record.lease_duration_seconds).unwrap_or(0));
            now.saturating_duration_since(o.since) < duration
        })
    }

    /// Remembers `record` as observed now; the observation time only moves when the record changed.
    fn observe(&mut self, record: Record) {
        match &mut self.observed {
            Some(observed) if observed.record == record => {}
            _ => {
                self.observed = Some(Observation {
                    record,
                    since: Instant::now(),
                });
            }
        }
    }

    /// client-go's `tryAcquireOrRenew`: one attempt to create, take over or renew the lease.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let now = Some(MicroTime(Timestamp::now()));
        let mut desired = Record {
            holder_identity: self.settings.identity.clone(),
            lease_duration_seconds: self.lease_duration_seconds,
            acquire_time: now.clone(),
            renew_time: now,
            lease_transitions: 0,
        };

        // 1. Obtain or create the lease.
        let current = match self.api.get_opt(&self.settings.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return self.create(desired).await,
            Err(error) => {
                warn!(lease = %self.lease_ref(), %error, "cannot read the lease");
                return false;
            }
        };

        // 2. Check the holder and whether its lease has expired in our observation.
        let old = Record::of(&current);
        self.observe(old.clone());
        let is_holder = self.observed_as_holder();
        if !old.holder_identity.is_empty() && !is_holder && self.observed_lease_valid(Instant::now()) {
            debug!(
                lease = %self.lease_ref(),
                holder = %old.holder_identity,
                "the lease is held by another instance and has not expired yet"
            );
            return false;
        }

        // 3. Take over or renew.
        if is_holder {
            desired.acquire_time = old.acquire_time;
            desired.lease_transitions = old.lease_transitions;
        } else {
            desired.lease_transitions = old.lease_transitions.saturating_add(1);
        }
        self.update(current, desired).await
    }

    /// Creates the lease holding `record`; false if that failed (also when another instance was
    /// faster).
    async fn create(&mut self, record: Record) -> bool {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(record.apply_to(None)),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.observe_written(&created);
                true
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(lease = %self.lease_ref(), "another instance created the lease first");
                false
            }
            Err(error) => {
                warn!(lease = %self.lease_ref(), %error, "cannot create the lease");
                false
            }
        }
    }

    /// Writes `record` into `lease`, guarded by the resourceVersion `lease` was read with; false if
    /// that failed (also when the lease changed since, i.e. another instance won).
    async fn update(&mut self, mut lease: Lease, record: Record) -> bool {
        lease.spec = Some(record.apply_to(lease.spec.take()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe_written(&updated);
                true
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(lease = %self.lease_ref(), "the lease changed concurrently");
                false
            }
            Err(error) => {
                warn!(lease = %self.lease_ref(), %error, "cannot update the lease");
                false
            }
        }
    }

    /// Records our own successful write as observed now, like client-go's `setObservedRecord`.
    fn observe_written(&mut self, lease: &Lease) {
        self.observed = Some(Observation {
            record: Record::of(lease),
            since: Instant::now(),
        });
    }

    /// Gives up the lease if this instance holds it: empty holder, a lease duration of one second
    /// and renewTime now, like client-go's `release`, so another instance takes over at once.
    async fn release(&mut self) {
        let attempt = tokio::time::timeout(self.settings.renew_deadline, self.try_release());
        if attempt.await.is_err() {
            warn!(lease = %self.lease_ref(), "releasing the lease timed out");
        }
    }

    async fn try_release(&mut self) {
        // Read afresh rather than trusting our observation: an attempt cancelled by the shutdown
        // may have been written, and a lease taken over meanwhile must not be touched.
        let lease = match self.api.get_opt(&self.settings.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(error) => {
                warn!(lease = %self.lease_ref(), %error, "cannot read the lease to release it");
                return;
            }
        };
        let old = Record::of(&lease);
        if old.holder_identity != self.settings.identity {
            return;
        }
        let now = Some(MicroTime(Timestamp::now()));
        let released = Record {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: now.clone(),
            renew_time: now,
            lease_transitions: old.lease_transitions,
        };
        if self.update(lease, released).await {
            info!(
                identity = %self.settings.identity,
                lease = %self.lease_ref(),
                "released the lease"
            );
        }
    }
}

/// An election running as a task, started by [`LeaderElector::spawn`].
#[derive(Debug)]
pub struct RunningElection {
    task: JoinHandle<()>,
    /// `namespace/name` of the lease, for logs.
    lease: String,
}

impl RunningElection {
    /// Waits for the election to end once its shutdown token is cancelled: by then a lease this
    /// instance held is released, so another instance takes over at once. Waits at most `bound`
    /// (the release itself gives up after the renew deadline); past it the election is stopped
    /// where it is, a warning logged and `false` returned, and the lease expires after its
    /// duration. Returns `true` when the election ended in time.
    pub async fn wait_released(self, bound: Duration) -> bool {
        let RunningElection { mut task, lease } = self;
        match tokio::time::timeout(bound, &mut task).await {
            Ok(Ok(())) => true,
            Ok(Err(failure)) => {
                error!(%lease, error = %failure, "the leader election task failed; the lease expires by itself");
                false
            }
            Err(_) => {
                task.abort();
                warn!(
                    %lease,
                    bound = ?bound,
                    "the lease was not released in time; it expires after its duration"
                );
                false
            }
        }
    }
}

/// `period` stretched by a random factor in `[1, 1 + JITTER_FACTOR)`, like client-go's
/// `wait.Jitter`, so competing instances do not retry in lockstep.
fn jittered(period: Duration) -> Duration {
    // A fresh RandomState is randomly keyed: enough randomness for spreading retries.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    #[allow(clippy::cast_precision_loss)] // only the leading bits matter
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    Duration::try_from_secs_f64(period.as_secs_f64() * (1.0 + fraction * JITTER_FACTOR)).unwrap_or(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "ns".to_owned(),
            name: "lease".to_owned(),
            identity: "me".to_owned(),
            lease_duration: Duration::from_secs(30),
            renew_deadline: Duration::from_secs(25),
            retry_period: Duration::from_secs(10),
        }
    }

    #[test]
    fn lease_duration_is_rounded_up_to_seconds() {
        assert_eq!(validate(&settings()).ok(), Some(30));
        let fractional = LeaseSettings {
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
            ..settings()
        };
        assert_eq!(validate(&fractional).ok(), Some(3));
    }

    #[test]
    fn jitter_stays_within_the_factor() {
        let period = Duration::from_millis(500);
        for _ in 0..1000 {
            let pause = jittered(period);
            assert!(
                pause >= period && pause < period.mul_f64(1.0 + JITTER_FACTOR),
                "{pause:?}"
            );
        }
    }

    #[test]
    fn record_round_trips_through_the_spec_and_keeps_other_fields() {
        let record = Record {
            holder_identity: "a".to_owned(),
            lease_duration_seconds: 3,
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            lease_transitions: 4,
        };
        let spec = record.clone().apply_to(Some(LeaseSpec {
            strategy: Some("OldestEmulationVersion".to_owned()),
            ..LeaseSpec::default()
        }));
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
        let lease = Lease {
            spec: Some(spec),
            ..Lease::default()
        };
        assert_eq!(Record::of(&lease), record);
        assert_eq!(Record::of(&Lease::default()), Record::default());
    }

    fn elected(renew_deadline: Duration) -> (watch::Sender<Option<Instant>>, Leadership) {
        let (sender, receiver) = watch::channel(None);
        let leadership = Leadership {
            inner: LeadershipInner::Elected {
                renewed_at: receiver,
                renew_deadline,
            },
        };
        (sender, leadership)
    }

    #[test]
    fn a_write_needs_the_lease_for_its_whole_budget() {
        let (sender, leadership) = elected(Duration::from_secs(25));
        let budget = leadership.write_budget(Duration::from_secs(10));
        assert_eq!(budget, Duration::from_secs(10));
        assert_eq!(
            elected(Duration::from_secs(2))
                .1
                .write_budget(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            Leadership::always().write_budget(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert!(!leadership.is_leading_for(budget), "not leading at all");
        let now = Instant::now();
        sender.send_replace(Some(now));
        assert!(leadership.is_leading_for(budget));
        // Renewed 20 s ago: 5 s of the renew deadline left, less than a
        // 10 s write could take, though the lease itself is still ours.
        let Some(long_ago) = now.checked_sub(Duration::from_secs(20)) else {
            return;
        };
        sender.send_replace(Some(long_ago));
        assert!(leadership.is_leading());
        assert!(!leadership.is_leading_for(budget));
        assert!(Leadership::always().is_leading_for(Duration::MAX));
    }

    #[tokio::test]
    async fn leadership_follows_renewals_and_the_deadline() {
        let deadline = Duration::from_millis(300);
        let (sender, leadership) = elected(deadline);
        assert!(!leadership.is_leading());
        tokio::time::timeout(Duration::from_secs(1), leadership.lost())
            .await
            .expect("lost() resolves at once when not leading");

        let waiter = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.wait_until_leading().await }
        });
        let renewed = Instant::now();
        sender.send_replace(Some(renewed));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_until_leading() resolves on acquisition")
            .expect("the waiter does not panic");

        // Without renewals the deadline ends leadership, even with the sender still around.
        tokio::time::timeout(Duration::from_secs(5), leadership.lost())
            .await
            .expect("lost() resolves once the deadline passed");
        assert!(renewed.elapsed() >= deadline, "{:?}", renewed.elapsed());
        assert!(!leadership.is_leading());

        // A stale renewal does not count as leading; a fresh one does.
        let waiter = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.wait_until_leading().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        sender.send_replace(Some(Instant::now()));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait_until_leading() resolves on renewal")
            .expect("the waiter does not panic");
    }

    #[tokio::test]
    async fn leadership_ends_when_the_elector_gives_up_or_is_gone() {
        let (sender, leadership) = elected(Duration::from_secs(60));
        sender.send_replace(Some(Instant::now()));
        assert!(leadership.is_leading());
        let lost = tokio::spawn({
            let leadership = leadership.clone();
            async move { leadership.lost().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!lost.is_finished());
        sender.send_replace(None);
        tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("lost() resolves when the elector gives up")
            .expect("the waiter does not panic");
        assert!(!leadership.is_leading());

        // A vanished elector leaves the last renewal standing until its deadline.
        let (sender, leadership) = elected(Duration::from_millis(300));
        let renewed = Instant::now();
        sender.send_replace(Some(renewed));
        drop(sender);
        assert!(leadership.is_leading());
        tokio::time::timeout(Duration::from_secs(5), leadership.lost())
            .await
            .expect("lost() resolves at the deadline");
        assert!(renewed.elapsed() >= Duration::from_millis(300));
        assert!(!leadership.is_leading());
    }
}
