//! Two controller instances with leader election on one cluster and one
//! LINSTOR: only the holder of the Lease writes; when it is SIGKILLed in the
//! middle of a replace the other takes over once the lease expired and
//! finishes the work; when it is stopped with SIGTERM it releases the lease
//! and the other takes over at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use affinity_core::k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_harness::BoundVolume;
use support::{ControllerProcess, Scenario, affinity_nodes, controller_has_test_hooks};

/// The endpoint key of the intent log writes in the simulator's counters.
const VOLUME_DEFINITION_PUT: &str =
    "PUT /v1/resource-definitions/{resource}/volume-definitions/{volume_number}";
/// Logged by a follower each time it finds the lease held and not expired.
const FOLLOWING: &str = "the lease is held by another instance and has not expired yet";

/// Short election timings: lease, renew deadline, retry period.
const LEASE: Duration = Duration::from_secs(4);
const SHORT_TIMINGS: [&str; 3] = ["4s", "3s", "1s"];
/// client-go's jitter: an attempt follows the previous one after up to 2.2 retry periods.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(2200);

/// The election flags of instance `id`.
fn election(scenario: &Scenario, id: &str, lease: &str, timings: [&str; 3]) -> Vec<String> {
    [
        "--leader-election",
        "--leader-election-id",
        id,
        "--lease-lock-name",
        lease,
        "--lease-lock-namespace",
        scenario.env.namespace(),
        "--leader-election-lease-duration",
        timings[0],
        "--leader-election-renew-deadline",
        timings[1],
        "--leader-election-retry-period",
        timings[2],
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

fn start(scenario: &Scenario, flags: &[String]) -> ControllerProcess {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    scenario.controller(&flags)
}

/// `spec.holderIdentity` and `spec.leaseTransitions` of the lease, if it exists.
async fn lease_holder(scenario: &Scenario, lease: &str) -> Option<(String, i32)> {
    let api: Api<Lease> = Api::namespaced(scenario.env.client(), scenario.env.namespace());
    let spec = api.get_opt(lease).await.unwrap()?.spec?;
    Some((
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
    ))
}

/// Waits until the lease names a holder that `accept`s; returns it.
async fn wait_for_holder(
    scenario: &Scenario,
    lease: &str,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> (String, i32) {
    let deadline = Instant::now() + timeout;
    loop {
        let holder = lease_holder(scenario, lease).await;
        if let Some((identity, transitions)) = &holder
            && accept(identity)
        {
            return (identity.clone(), *transitions);
        }
        assert!(
            Instant::now() < deadline,
            "lease {lease}: holder {holder:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the volume's PV was replaced (another UID) with affinity on
/// node 1, its intent is cleared and its claim is bound.
async fn wait_converged(scenario: &Scenario, bound: &BoundVolume, timeout: Duration) {
    let name = bound.pv.metadata.name.clone().unwrap();
    let uid = bound.pv.metadata.uid.clone().unwrap();
    scenario
        .wait_for_pv(&name, "replaced with affinity on node 1", timeout, |pv| {
            pv.metadata.uid.as_deref() != Some(uid.as_str()) && affinity_nodes(pv) == [scenario.node(1)]
        })
        .await;
    let deadline = Instant::now() + timeout;
    while scenario.saved_pv(&name).is_some() {
        assert!(Instant::now() < deadline, "intent of {name} not cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let claim = bound.pvc.metadata.name.clone().unwrap();
    scenario.env.wait_for_pvc_phase(&claim, "Bound").await;
}

fn pv_name(bound: &BoundVolume) -> String {
    bound.pv.metadata.name.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes() {
    let Some(scenario) = Scenario::new("leader-only", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let mut volumes = Vec::new();
    for index in 0..3 {
        volumes.push(scenario.volume(&format!("v{index}"), &class, 0, 0).await);
    }
    let lease = scenario.env.name("lease");
    let a = start(&scenario, &election(&scenario, "a", &lease, SHORT_TIMINGS));
    let b = start(&scenario, &election(&scenario, "b", &lease, SHORT_TIMINGS));

    let (leader_id, _) =
        wait_for_holder(&scenario, &lease, Duration::from_secs(30), |id| !id.is_empty()).await;
    let (leader, follower) = match leader_id.as_str() {
        "a" => (&a, &b),
        "b" => (&b, &a),
        other => panic!("unexpected holder {other:?}"),
    };
    leader
        .wait_for_line("became leader", Duration::from_secs(30))
        .await;
    for instance in [leader, follower] {
        instance
            .wait_for_line("PV cache synced", Duration::from_secs(30))
            .await;
    }
    follower.wait_for_line(FOLLOWING, Duration::from_secs(30)).await;

    // Drift appears while both run.
    scenario.sim.reset_counters();
    for bound in &volumes {
        scenario.move_replica(&pv_name(bound), 0, 1);
    }
    for bound in &volumes {
        wait_converged(&scenario, bound, Duration::from_secs(60)).await;
    }
    leader
        .wait_for_count("PV replaced", volumes.len(), Duration::from_secs(30))
        .await;
    // Room for a follower that would act late: it looks at the lease twice more.
    let looked = follower.count(FOLLOWING);
    follower
        .wait_for_count(FOLLOWING, looked + 2, Duration::from_secs(30))
        .await;

    assert_eq!(leader.count("PV replaced"), volumes.len(), "{}", leader.log());
    for needle in [
        "PV replaced",
        "replace step done",
        "became leader",
        "pass done",
        "pass failed",
    ] {
        assert_eq!(
            follower.count(needle),
            0,
            "follower logged {needle:?}:\n{}",
            follower.log()
        );
    }
    assert!(follower.count(FOLLOWING) >= 2, "{}", follower.log());
    // Every intent write is the leader's: one save and one clear per replace.
    assert_eq!(
        scenario.sim.count(VOLUME_DEFINITION_PUT),
        2 * leader.count("PV replaced") as u64,
        "{:?}",
        scenario.sim.counters()
    );
    let (holder, _) = lease_holder(&scenario, &lease).await.unwrap();
    assert_eq!(holder, leader_id, "leadership changed hands");
    drop(a);
    drop(b);
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_after_its_lease_expired_and_its_work_finished() {
    if !controller_has_test_hooks("leader-kill") {
        return;
    }
    let Some(scenario) = Scenario::new("leader-kill", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    // Drifted from the start: the PVs name node 0, the data is on node 1.
    let volumes = [
        scenario.volume("v0", &class, 0, 1).await,
        scenario.volume("v1", &class, 0, 1).await,
    ];
    let lease = scenario.env.name("lease");

    // a leads and gets stuck in both replaces right after saving the intent.
    let mut flags = election(&scenario, "a", &lease, SHORT_TIMINGS);
    flags.extend(["--debug-halt-after".to_owned(), "intent-saved".to_owned()]);
    let mut a = start(&scenario, &flags);
    a.wait_for_line("became leader", Duration::from_secs(30)).await;
    a.wait_for_count(
        "halting after replace step",
        volumes.len(),
        Duration::from_secs(60),
    )
    .await;
    let (holder, transitions_before) =
        wait_for_holder(&scenario, &lease, Duration::from_secs(10), |id| !id.is_empty()).await;
    assert_eq!(holder, "a");

    let b = start(&scenario, &election(&scenario, "b", &lease, SHORT_TIMINGS));
    b.wait_for_line("PV cache synced", Duration::from_secs(30)).await;
    b.wait_for_line(FOLLOWING, Duration::from_secs(30)).await;

    // Work remains, and the follower does not touch it.
    scenario.sim.reset_counters();
    let looked = b.count(FOLLOWING);
    b.wait_for_count(FOLLOWING, looked + 2, Duration::from_secs(30))
        .await;
    assert_eq!(
        scenario.sim.count(VOLUME_DEFINITION_PUT),
        0,
        "{:?}",
        scenario.sim.counters()
    );
    for needle in ["PV replaced", "replace step done", "became leader"] {
        assert_eq!(b.count(needle), 0, "{needle:?}:\n{}", b.log());
    }
    for bound in &volumes {
        let name = pv_name(bound);
        assert!(scenario.saved_pv(&name).is_some(), "intent of {name} saved");
        let live = scenario.env.pvs().get(&name).await.unwrap();
        assert_eq!(live.metadata.uid, bound.pv.metadata.uid);
        assert_eq!(affinity_nodes(&live), [scenario.node(0)]);
    }
    assert_eq!(lease_holder(&scenario, &lease).await.unwrap().0, "a");

    let killed = Instant::now();
    a.kill();
    b.wait_for_line("became leader", Duration::from_secs(60)).await;
    let takeover = killed.elapsed();
    let (holder, transitions) =
        wait_for_holder(&scenario, &lease, Duration::from_secs(10), |id| !id.is_empty()).await;
    assert_eq!(holder, "b");
    assert_eq!(transitions, transitions_before + 1);
    for bound in &volumes {
        wait_converged(&scenario, bound, Duration::from_secs(60)).await;
    }
    b.wait_for_count("PV replaced", volumes.len(), Duration::from_secs(30))
        .await;
    let converged = killed.elapsed();
    eprintln!("leader SIGKILLed: takeover after {takeover:?}, PVs converged after {converged:?}");

    // The lease was respected: not taken while a's last renewal (at most a
    // renew deadline before the kill) was valid, and taken soon after it
    // expired (one retry period with jitter, plus a margin for a busy machine).
    assert!(
        takeover >= LEASE - Duration::from_secs(3),
        "taken over {takeover:?} after the kill:\n{}",
        b.log()
    );
    let bound = LEASE + MAX_RETRY_PAUSE + Duration::from_secs(4);
    assert!(
        takeover <= bound,
        "taken over {takeover:?} after the kill (bound {bound:?}):\n{}",
        b.log()
    );
    assert_eq!(a.count("PV replaced"), 0, "{}", a.log());
    assert_eq!(b.count("PV replaced"), volumes.len(), "{}", b.log());
    // Every intent write since the kill is b's: the live PVs were exactly as
    // a's intents recorded them (same UID and resource version), so b
    // resumed those replaces (one save and one clear each) rather than
    // removing the intents first.
    let resets = b.count("saved state of a finished replace removed");
    assert_eq!(resets, 0, "{}", b.log());
    assert_eq!(
        scenario.sim.count(VOLUME_DEFINITION_PUT),
        (2 * b.count("PV replaced")) as u64,
        "{:?}\n{}",
        scenario.sim.counters(),
        b.log()
    );
    drop(b);
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_releases_the_lease_and_the_other_takes_over_at_once() {
    // A lease long enough that waiting for its expiry (about 14 s at least)
    // and taking over a released lease (one retry period, at most 2.2 s)
    // cannot be confused.
    const LONG_LEASE: Duration = Duration::from_secs(15);
    let timings = ["15s", "10s", "1s"];
    let Some(scenario) = Scenario::new("leader-term", 2).await else {
        return;
    };
    let class = scenario.local_only_class().await;
    let bound = scenario.volume("vol", &class, 0, 0).await;
    let lease = scenario.env.name("lease");
    let mut a = start(&scenario, &election(&scenario, "a", &lease, timings));
    a.wait_for_line("became leader", Duration::from_secs(30)).await;
    a.wait_for_line("PV cache synced", Duration::from_secs(30)).await;
    let b = start(&scenario, &election(&scenario, "b", &lease, timings));
    b.wait_for_line("PV cache synced", Duration::from_secs(30)).await;
    b.wait_for_line(FOLLOWING, Duration::from_secs(30)).await;
    assert_eq!(lease_holder(&scenario, &lease).await.unwrap().0, "a");

    let terminated = Instant::now();
    let status = a.terminate().await;
    assert!(status.success(), "{status:?}:\n{}", a.log());
    assert_eq!(a.count("released the lease"), 1, "{}", a.log());
    b.wait_for_line("became leader", LONG_LEASE + Duration::from_secs(30))
        .await;
    let takeover = terminated.elapsed();
    eprintln!("leader SIGTERMed: takeover after {takeover:?} (lease duration {LONG_LEASE:?})");
    assert!(
        takeover < LONG_LEASE - Duration::from_secs(5),
        "taken over {takeover:?} after SIGTERM: the lease was not released\n{}\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(lease_holder(&scenario, &lease).await.unwrap().0, "b");

    // The new leader writes.
    scenario.move_replica(&pv_name(&bound), 0, 1);
    wait_converged(&scenario, &bound, Duration::from_secs(60)).await;
    b.wait_for_count("PV replaced", 1, Duration::from_secs(30)).await;
    assert_eq!(a.count("PV replaced"), 0);
    drop(b);
    scenario.finish().await;
}
