//! Leader election against a real Kubernetes control plane: two instances share one Lease, a
//! released lease is taken over at once, an abandoned one only after its lease duration; plus
//! settings validation without a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use affinity_core::k8s_openapi::api::coordination::v1::Lease;
use affinity_kube::leader::{LeaderElector, LeaderError, Leadership, LeaseSettings};
use kube::api::Api;
use kube_harness::TestEnv;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// The longest pause between two acquisition attempts: the retry period with full jitter (×2.2).
const MAX_RETRY: Duration = Duration::from_millis(1100);
/// Slack for a busy machine.
const MARGIN: Duration = Duration::from_secs(3);

fn settings(namespace: &str, name: &str, identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        identity: identity.to_owned(),
        lease_duration: LEASE_DURATION,
        renew_deadline: RENEW_DEADLINE,
        retry_period: RETRY_PERIOD,
    }
}

/// One running elector.
struct Instance {
    identity: &'static str,
    leadership: Leadership,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn start(env: &TestEnv, lease: &str, identity: &'static str) -> Instance {
    let elector = LeaderElector::new(env.client(), settings(env.namespace(), lease, identity)).unwrap();
    let leadership = elector.leadership();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(elector.run(shutdown.clone()));
    Instance {
        identity,
        leadership,
        shutdown,
        task,
    }
}

async fn lease(env: &TestEnv, name: &str) -> Lease {
    Api::<Lease>::namespaced(env.client(), env.namespace())
        .get(name)
        .await
        .unwrap()
}

fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default()
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or_default()
}

async fn delete_lease(env: &TestEnv, name: &str) {
    let _ = Api::<Lease>::namespaced(env.client(), env.namespace())
        .delete(name, &Default::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_lease_is_taken_over_at_once() {
    let Some(env) = TestEnv::setup("leader-two-instances").await else {
        return;
    };
    let name = env.name("lease");
    let a = start(&env, &name, "instance-a");
    let b = start(&env, &name, "instance-b");

    let first = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            () = a.leadership.wait_until_leading() => "instance-a",
            () = b.leadership.wait_until_leading() => "instance-b",
        }
    })
    .await
    .expect("one instance leads");
    // Exactly one leads, over several renewal periods.
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        let leading = [&a, &b].iter().filter(|i| i.leadership.is_leading()).count();
        assert_eq!(leading, 1, "exactly one instance leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, follower) = if first == a.identity { (a, b) } else { (b, a) };
    assert!(leader.leadership.is_leading());
    let before = lease(&env, &name).await;
    assert_eq!(holder(&before), leader.identity);

    let released = Instant::now();
    leader.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), leader.task)
        .await
        .expect("run returns on shutdown")
        .unwrap();
    assert!(!leader.leadership.is_leading());
    tokio::time::timeout(Duration::from_secs(1), leader.leadership.lost())
        .await
        .expect("lost() resolves after shutdown");
    tokio::time::timeout(MAX_RETRY + MARGIN, follower.leadership.wait_until_leading())
        .await
        .expect("the other instance takes over a released lease without waiting for it to expire");
    let takeover = released.elapsed();
    eprintln!("takeover after release: {takeover:?}");

    let after = lease(&env, &name).await;
    assert_eq!(holder(&after), follower.identity);
    assert_eq!(transitions(&after), transitions(&before) + 1);

    follower.shutdown.cancel();
    follower.task.await.unwrap();
    let released = lease(&env, &name).await;
    let spec = released.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref().unwrap_or_default(), "");
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert_eq!(spec.lease_transitions, after.spec.unwrap().lease_transitions);

    delete_lease(&env, &name).await;
    env.cleanup().await;
}

/// A shutdown that awaits the spawned election finds the lease released as soon as the wait returns:
/// no moment needs to be guessed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_election_after_shutdown_finds_the_lease_released() {
    let Some(env) = TestEnv::setup("leader-shutdown-release").await else {
        return;
    };
    let name = env.name("lease");
    let elector = LeaderElector::new(env.client(), settings(env.namespace(), &name, "instance-a")).unwrap();
    let leadership = elector.leadership();
    let shutdown = CancellationToken::new();
    let election = elector.spawn(shutdown.clone());
    tokio::time::timeout(Duration::from_secs(30), leadership.wait_until_leading())
        .await
        .expect("the only instance leads");
    let held = lease(&env, &name).await;
    assert_eq!(holder(&held), "instance-a");

    shutdown.cancel();
    assert!(
        election.wait_released(RENEW_DEADLINE + MARGIN).await,
        "the election ends, the lease released, within the bound"
    );
    assert!(!leadership.is_leading());
    let released = lease(&env, &name).await;
    let spec = released.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref().unwrap_or_default(), "");
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert_eq!(spec.lease_transitions, held.spec.unwrap().lease_transitions);

    delete_lease(&env, &name).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_lease_is_taken_over_after_its_duration() {
    let Some(env) = TestEnv::setup("leader-abandoned").await else {
        return;
    };
    let name = env.name("lease");
    let a = start(&env, &name, "instance-a");
    tokio::time::timeout(Duration::from_secs(30), a.leadership.wait_until_leading())
        .await
        .expect("the only instance leads");
    let b = start(&env, &name, "instance-b");
    // b observes a renewing and stays a follower.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.leadership.is_leading());
    assert!(!b.leadership.is_leading());
    let before = lease(&env, &name).await;
    assert_eq!(holder(&before), "instance-a");

    // a stops renewing without releasing, as if its process froze.
    a.task.abort();
    let abandoned = Instant::now();
    assert!(a.task.await.unwrap_err().is_cancelled());

    // a's view turns false once the renew deadline passed, without anyone telling it.
    tokio::time::timeout(RENEW_DEADLINE + MARGIN, a.leadership.lost())
        .await
        .expect("lost() resolves once the renew deadline passed");
    let lost_after = abandoned.elapsed();
    assert!(!a.leadership.is_leading());
    // The last renewal was at most about one retry period before the abort.
    assert!(
        lost_after + RETRY_PERIOD + Duration::from_millis(500) >= RENEW_DEADLINE,
        "{lost_after:?}"
    );

    tokio::time::timeout(
        LEASE_DURATION + 2 * MAX_RETRY + MARGIN,
        b.leadership.wait_until_leading(),
    )
    .await
    .expect("the other instance takes over an expired lease");
    let takeover = abandoned.elapsed();
    eprintln!("lost() after abort: {lost_after:?}; takeover after abort: {takeover:?}");
    // b must wait a full lease duration from the last renewal it saw (at most a retry period
    // before the abort).
    assert!(
        takeover + RETRY_PERIOD + Duration::from_millis(500) >= LEASE_DURATION,
        "{takeover:?}"
    );

    let after = lease(&env, &name).await;
    assert_eq!(holder(&after), "instance-b");
    assert_eq!(transitions(&after), transitions(&before) + 1);

    b.shutdown.cancel();
    b.task.await.unwrap();
    delete_lease(&env, &name).await;
    env.cleanup().await;
}

/// A client that is never contacted: building an elector talks to nobody.
fn offline_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn reference_settings() -> LeaseSettings {
    LeaseSettings {
        namespace: "kube-system".to_owned(),
        name: "linstor-affinity-controller".to_owned(),
        identity: "pod-0".to_owned(),
        lease_duration: Duration::from_secs(30),
        renew_deadline: Duration::from_secs(25),
        retry_period: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn settings_are_validated_like_client_go() {
    assert!(LeaderElector::new(offline_client(), reference_settings()).is_ok());

    let check = |settings: LeaseSettings| match LeaderElector::new(offline_client(), settings) {
        Ok(_) => panic!("invalid settings accepted"),
        Err(e) => e,
    };

    let e = check(LeaseSettings {
        renew_deadline: Duration::from_secs(30),
        ..reference_settings()
    });
    assert!(
        matches!(e, LeaderError::LeaseDurationNotAboveRenewDeadline { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("30s"), "{e}");

    // renew deadline must exceed 1.2 × retry period: 12 s is not above 12 s.
    let e = check(LeaseSettings {
        renew_deadline: Duration::from_secs(12),
        ..reference_settings()
    });
    assert!(matches!(e, LeaderError::RenewDeadlineTooShort { .. }), "{e:?}");
    assert!(
        e.to_string().contains("12s") && e.to_string().contains("10s"),
        "{e}"
    );
    assert!(
        LeaderElector::new(
            offline_client(),
            LeaseSettings {
                renew_deadline: Duration::from_millis(12_001),
                ..reference_settings()
            }
        )
        .is_ok()
    );

    let e = check(LeaseSettings {
        retry_period: Duration::ZERO,
        ..reference_settings()
    });
    assert!(matches!(e, LeaderError::Zero { what: "retry period" }), "{e:?}");

    let e = check(LeaseSettings {
        identity: String::new(),
        ..reference_settings()
    });
    assert!(matches!(e, LeaderError::Empty { what: "identity" }), "{e:?}");

    let e = check(LeaseSettings {
        lease_duration: Duration::from_secs(u64::from(u32::MAX)),
        ..reference_settings()
    });
    assert!(matches!(e, LeaderError::LeaseDurationTooLong { .. }), "{e:?}");
}

#[tokio::test]
async fn always_leads_and_never_loses() {
    let leadership = Leadership::always();
    assert!(leadership.is_leading());
    tokio::time::timeout(Duration::from_secs(1), leadership.wait_until_leading())
        .await
        .expect("wait_until_leading() resolves at once");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), leadership.lost())
            .await
            .is_err(),
        "lost() never resolves"
    );
}
