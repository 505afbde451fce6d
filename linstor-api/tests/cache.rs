//! The read cache against the simulator: time-to-live, single-flight, invalidation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use linstor_api::sim::{Fault, FaultKind, SimNode, SimResource, SimResourceDefinition, SimState, Simulator};
use linstor_api::{CachedClient, Client};

async fn setup(ttl: Duration) -> (Simulator, CachedClient) {
    let mut s = SimState::default();
    s.nodes.push(SimNode::new("a"));
    s.nodes.push(SimNode::new("b"));
    s.resource_definitions
        .push(SimResourceDefinition::new("r", 1024).resource(SimResource::diskful("a")));
    let sim = Simulator::start(s).await.unwrap();
    let client = Client::builder()
        .controllers([sim.http_url().unwrap()])
        .build()
        .unwrap();
    (sim, CachedClient::new(client, ttl))
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let (sim, cache) = setup(Duration::from_secs(600)).await;
    // Slow answers make the callers overlap.
    sim.add_fault(Fault::new(FaultKind::Latency { ms: 200 }));
    let calls: Vec<_> = (0..10).map(|_| cache.nodes()).collect();
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert_eq!(r.as_ref().unwrap().len(), 2);
    }
    assert_eq!(sim.count("GET /v1/nodes"), 1);
    let views: Vec<_> = (0..10).map(|_| cache.resource_view()).collect();
    for r in futures::future::join_all(views).await {
        assert_eq!(r.unwrap().len(), 1);
    }
    assert_eq!(sim.count("GET /v1/view/resources"), 1);
    // Fresh answers come from the cache.
    cache.nodes().await.unwrap();
    assert_eq!(sim.count("GET /v1/nodes"), 1);
}

#[tokio::test]
async fn stale_answers_are_fetched_again_and_invalidate_drops_them() {
    let (sim, cache) = setup(Duration::from_millis(50)).await;
    cache.nodes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    cache.nodes().await.unwrap();
    assert_eq!(sim.count("GET /v1/nodes"), 2);

    let (sim, cache) = setup(Duration::from_secs(600)).await;
    cache.resource_view().await.unwrap();
    sim.add_resource("r", SimResource::diskless("b")).unwrap();
    assert_eq!(cache.resource_view().await.unwrap().len(), 1);
    cache.invalidate().await;
    assert_eq!(cache.resource_view().await.unwrap().len(), 2);
    assert_eq!(sim.count("GET /v1/view/resources"), 2);
}

#[tokio::test]
async fn failures_are_not_cached() {
    let (sim, cache) = setup(Duration::from_secs(600)).await;
    sim.add_fault(
        Fault::new(FaultKind::Error {
            status: 500,
            message: "x".into(),
        })
        .times(1),
    );
    assert!(cache.nodes().await.is_err());
    assert_eq!(cache.nodes().await.unwrap().len(), 2);
    assert_eq!(sim.count("GET /v1/nodes"), 2);
}
