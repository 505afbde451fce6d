//! The client against the simulator: every call, evacuation, events, faults, counters, state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{NodeEvents, plain_http};
use linstor_api::models::{
    NodeEvacuate, NodeEvent, NodeModify, NodeRestore, ResourceDefinitionModify, VolumeDefinitionModify, flags,
};
use linstor_api::sim::{
    Fault, FaultKind, SimNode, SimResource, SimResourceDefinition, SimState, Simulator, load_state_file,
};
use linstor_api::{Client, Error, NodeFilter, ResourceDefinitionFilter, ResourceViewFilter};

fn cluster() -> SimState {
    let mut s = SimState::default();
    for (n, zone) in [
        ("node-a", "z1"),
        ("node-b", "z1"),
        ("node-c", "z2"),
        ("node-d", "z2"),
    ] {
        s.nodes
            .push(SimNode::new(n).prop("Aux/topology/topology.kubernetes.io/zone", zone));
    }
    s.resource_definitions.push(
        SimResourceDefinition::new("pvc-1", 1_048_576)
            .resource(SimResource::diskful("node-a"))
            .resource(SimResource::diskful("node-b"))
            .resource(SimResource::diskless("node-c")),
    );
    s.resource_definitions.push(
        SimResourceDefinition::new("pvc-2", 2048)
            .resource(SimResource::diskful("node-b"))
            .resource(SimResource::diskful("node-c")),
    );
    s
}

async fn start() -> (Simulator, Client) {
    let sim = Simulator::start(cluster()).await.unwrap();
    let client = Client::builder()
        .controllers([sim.http_url().unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (sim, client)
}

fn replicas(view: &[linstor_api::models::ResourceWithVolumes], rd: &str) -> Vec<(String, bool)> {
    let mut v: Vec<_> = view
        .iter()
        .filter(|r| r.name == rd)
        .map(|r| (r.node_name.clone(), r.is_diskless()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn nodes_list_filter_get_and_modify() {
    let (sim, c) = start().await;
    let all = c.list_nodes(&NodeFilter::default()).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].net_interfaces[0].name, "default");
    let some = c
        .list_nodes(&NodeFilter {
            nodes: vec!["node-a".into(), "NODE-C".into()],
            props: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        some.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["node-a", "node-c"]
    );
    let z2 = c
        .list_nodes(&NodeFilter {
            nodes: vec![],
            props: vec!["Aux/topology/topology.kubernetes.io/zone=z2".into()],
        })
        .await
        .unwrap();
    assert_eq!(
        z2.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["node-c", "node-d"]
    );
    let n = c.get_node("node-b").await.unwrap();
    assert_eq!(n.name, "node-b");
    assert!(c.get_node("node-x").await.unwrap_err().is_not_found());

    c.modify_node(
        "node-b",
        &NodeModify {
            override_props: [("AutoplaceTarget".to_owned(), "false".to_owned())].into(),
            delete_props: vec!["Aux/topology/topology.kubernetes.io/zone".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let n = c.get_node("node-b").await.unwrap();
    assert_eq!(n.props.get("AutoplaceTarget").map(String::as_str), Some("false"));
    assert!(!n.props.contains_key("Aux/topology/topology.kubernetes.io/zone"));
    assert_eq!(
        sim.state().nodes[1]
            .props
            .get("AutoplaceTarget")
            .map(String::as_str),
        Some("false")
    );
    let e = c.modify_node("node-x", &NodeModify::default()).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("node-x"), "{e}");
}

#[tokio::test]
async fn resources_view_and_definitions() {
    let (_sim, c) = start().await;
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(view.len(), 5);
    assert_eq!(
        replicas(&view, "pvc-1"),
        vec![
            ("node-a".into(), false),
            ("node-b".into(), false),
            ("node-c".into(), true)
        ]
    );
    let a = view
        .iter()
        .find(|r| r.name == "pvc-1" && r.node_name == "node-a")
        .unwrap();
    assert_eq!(a.volumes.len(), 1);
    assert_eq!(a.volumes[0].volume_number, Some(0));
    let drbd = a.layer_object.as_ref().unwrap().drbd.as_ref().unwrap();
    assert_eq!(drbd.connections.len(), 2);
    assert_eq!(a.in_use(), Some(false));

    let filtered = c
        .view_resources(&ResourceViewFilter {
            nodes: vec!["node-b".into()],
            resources: vec!["pvc-2".into()],
        })
        .await
        .unwrap();
    assert_eq!(replicas(&filtered, "pvc-2"), vec![("node-b".into(), false)]);
    assert_eq!(filtered.len(), 1);

    let rs = c.list_resources("pvc-2").await.unwrap();
    assert_eq!(rs.len(), 2);
    assert!(rs.iter().all(|r| r.name == "pvc-2"));
    assert!(c.list_resources("nope").await.unwrap_err().is_not_found());

    let rds = c
        .list_resource_definitions(&ResourceDefinitionFilter {
            with_volume_definitions: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rds.len(), 2);
    assert_eq!(rds[0].volume_definitions[0].size_kib, 1_048_576);
    let without = c
        .list_resource_definitions(&ResourceDefinitionFilter {
            resource_definitions: vec!["pvc-2".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(without.len(), 1);
    assert!(without[0].volume_definitions.is_empty());
}

#[tokio::test]
async fn definition_properties_round_trip() {
    let (_sim, c) = start().await;
    c.modify_resource_definition(
        "pvc-1",
        &ResourceDefinitionModify {
            override_props: [("Aux/affinity-updater-skip".to_owned(), "yes".to_owned())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let skip = c
        .list_resource_definitions(&ResourceDefinitionFilter {
            props: vec!["Aux/affinity-updater-skip".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        skip.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["pvc-1"]
    );

    let saved = r#"{"kind":"PersistentVolume","spec":{"a,b":"c=d"}}"#;
    c.modify_volume_definition(
        "pvc-1",
        0,
        &VolumeDefinitionModify {
            override_props: [("Aux/affinity-updater-saved-pv".to_owned(), saved.to_owned())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let rds = c
        .list_resource_definitions(&ResourceDefinitionFilter {
            resource_definitions: vec!["pvc-1".into()],
            with_volume_definitions: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rds[0].volume_definitions[0]
            .props
            .get("Aux/affinity-updater-saved-pv")
            .map(String::as_str),
        Some(saved)
    );
    c.modify_volume_definition(
        "pvc-1",
        0,
        &VolumeDefinitionModify {
            delete_props: vec!["Aux/affinity-updater-saved-pv".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let rds = c
        .list_resource_definitions(&ResourceDefinitionFilter {
            resource_definitions: vec!["pvc-1".into()],
            with_volume_definitions: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(rds[0].volume_definitions[0].props.is_empty());
    let e = c
        .modify_volume_definition("pvc-1", 7, &VolumeDefinitionModify::default())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn names_with_slash_space_and_percent_reach_the_simulator_intact() {
    let node = "odd node/%41";
    let rd = "odd rd/a%20b";
    let mut state = cluster();
    state.nodes.push(SimNode::new(node));
    state
        .resource_definitions
        .push(SimResourceDefinition::new(rd, 1024).resource(SimResource::diskful(node)));
    let sim = Simulator::start(state).await.unwrap();
    let c = Client::builder()
        .controllers([sim.http_url().unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    c.modify_node(
        node,
        &NodeModify {
            override_props: [("Aux/x".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // One segment each: the `/` in the name did not split it.
    assert_eq!(sim.count("PUT /v1/nodes/{node}"), 1);
    let got = c.get_node(node).await.unwrap();
    assert_eq!(got.name, node);
    assert_eq!(got.props.get("Aux/x").map(String::as_str), Some("1"));
    assert!(!c.get_node("node-a").await.unwrap().props.contains_key("Aux/x"));

    let resources = c.list_resources(rd).await.unwrap();
    assert_eq!(
        resources
            .iter()
            .map(|r| (r.name.as_str(), r.node_name.as_str()))
            .collect::<Vec<_>>(),
        [(rd, node)]
    );
    c.modify_volume_definition(
        rd,
        0,
        &VolumeDefinitionModify {
            override_props: [("Aux/y".to_owned(), "2".to_owned())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sim.count("PUT /v1/resource-definitions/{resource}/volume-definitions/{volume_number}"),
        1
    );
    let rds = c
        .list_resource_definitions(&ResourceDefinitionFilter {
            resource_definitions: vec![rd.into()],
            with_volume_definitions: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rds.len(), 1);
    assert_eq!(rds[0].name, rd);
    assert_eq!(
        rds[0].volume_definitions[0]
            .props
            .get("Aux/y")
            .map(String::as_str),
        Some("2")
    );
}

#[tokio::test]
async fn query_values_decode_plus_and_percent_twenty_as_space() {
    let mut state = SimState::default();
    state.nodes.push(SimNode::new("n1").prop("Aux/x", "a b+c"));
    state.nodes.push(SimNode::new("n2").prop("Aux/x", "a b c"));
    let sim = Simulator::start(state).await.unwrap();
    let base = sim.http_url().unwrap();
    let http = plain_http();
    let names = |query: &'static str| {
        let http = http.clone();
        let url = format!("{base}/v1/nodes?{query}");
        async move {
            let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
            let nodes: Vec<linstor_api::models::Node> = serde_json::from_slice(&body).unwrap();
            nodes.into_iter().map(|n| n.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(names("props=Aux/x=a+b%2Bc").await, ["n1"]);
    assert_eq!(names("props=Aux%2Fx%3Da%20b%2Bc").await, ["n1"]);
    assert_eq!(names("props=Aux/x=a+b+c").await, ["n2"]);
    assert_eq!(names("props=Aux/x=a%20b%20c&&nodes=N2,&").await, ["n2"]);
    assert!(names("props=Aux/x=a%2520b%2520c").await.is_empty());
    // Property values with `+` and spaces also arrive intact from the client.
    let c = Client::builder().controllers([base.clone()]).build().unwrap();
    let found = c
        .list_nodes(&NodeFilter {
            nodes: vec![],
            props: vec!["Aux/x=a b+c".into()],
        })
        .await
        .unwrap();
    assert_eq!(found.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["n1"]);
}

#[tokio::test]
async fn controller_version_answers() {
    let (_sim, c) = start().await;
    let v = c.controller_version().await.unwrap();
    assert_eq!(v.version.as_deref(), Some("1.28.0"));
}

#[tokio::test]
async fn evacuation_moves_replicas_and_restore_clears_the_flag() {
    let (sim, c) = start().await;
    sim.set_in_use("pvc-2", "node-b", true).unwrap();
    c.evacuate_node("node-b", &NodeEvacuate::default()).await.unwrap();
    let node = c.get_node("node-b").await.unwrap();
    assert!(node.has_flag(flags::EVACUATE));
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    // pvc-1: node-b's replica is not in use, so it is gone; node-c (diskless) became diskful.
    assert_eq!(
        replicas(&view, "pvc-1"),
        vec![("node-a".into(), false), ("node-c".into(), false)]
    );
    // pvc-2: in use on node-b, so kept next to its replacement on the least loaded eligible
    // node (node-d holds nothing).
    assert_eq!(
        replicas(&view, "pvc-2"),
        vec![
            ("node-b".into(), false),
            ("node-c".into(), false),
            ("node-d".into(), false)
        ]
    );
    // Once not in use, the old replica goes away.
    sim.set_in_use("pvc-2", "node-b", false).unwrap();
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert!(!view.iter().any(|r| r.node_name == "node-b"));
    assert_eq!(
        replicas(&view, "pvc-2"),
        vec![("node-c".into(), false), ("node-d".into(), false)]
    );
    // New placements avoid the evacuating node.
    c.restore_node("node-b", &NodeRestore::default()).await.unwrap();
    assert!(!c.get_node("node-b").await.unwrap().has_flag(flags::EVACUATE));
    assert!(
        c.evacuate_node("ghost", &NodeEvacuate::default())
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn evacuation_respects_autoplace_target_and_do_not_target() {
    let (_sim, c) = start().await;
    c.modify_node(
        "node-d",
        &NodeModify {
            override_props: [("AutoplaceTarget".to_owned(), "false".to_owned())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // pvc-2 lives on b and c; evacuating c may only use a (d is excluded, b holds a replica).
    c.evacuate_node(
        "node-c",
        &NodeEvacuate {
            do_not_target: vec![],
            target: vec![],
        },
    )
    .await
    .unwrap();
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(
        replicas(&view, "pvc-2"),
        vec![("node-a".into(), false), ("node-b".into(), false)]
    );
    // pvc-1 had a diskless replica on c: removed without replacement.
    assert_eq!(
        replicas(&view, "pvc-1"),
        vec![("node-a".into(), false), ("node-b".into(), false)]
    );
}

#[tokio::test]
async fn node_event_stream() {
    let (sim, c) = start().await;
    let mut events = NodeEvents::open(&plain_http(), &sim.http_url().unwrap()).await;
    assert_eq!(events.content_type(), Some("text/event-stream"));
    c.modify_node(
        "node-a",
        &NodeModify {
            override_props: [("Aux/x".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.evacuate_node("node-d", &NodeEvacuate::default()).await.unwrap();
    c.restore_node("node-d", &NodeRestore::default()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(events.next().await);
    }
    match &got[0] {
        NodeEvent::Modified(m) => {
            assert!(!m.old_node.as_ref().unwrap().props.contains_key("Aux/x"));
            assert_eq!(
                m.new_node
                    .as_ref()
                    .unwrap()
                    .props
                    .get("Aux/x")
                    .map(String::as_str),
                Some("1")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    match &got[1] {
        NodeEvent::Evacuating(e) => {
            let n = e.node.as_ref().unwrap();
            assert_eq!(n.name, "node-d");
            assert!(n.has_flag(flags::EVACUATE));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(got[2].name(), "node-restored");
}

#[tokio::test]
async fn injected_faults() {
    let (sim, c) = start().await;
    sim.add_fault(
        Fault::new(FaultKind::Error {
            status: 500,
            message: "database on fire".into(),
        })
        .on_path("/v1/nodes")
        .times(1),
    );
    let e = c.list_nodes(&NodeFilter::default()).await.unwrap_err();
    match &e {
        Error::Status {
            status: 500, reports, ..
        } => assert_eq!(reports.0[0].message, "database on fire"),
        other => panic!("unexpected {other:?}"),
    }
    // Only once.
    c.list_nodes(&NodeFilter::default()).await.unwrap();

    sim.add_fault(
        Fault::new(FaultKind::MalformedJson)
            .on_path("/v1/view/resources")
            .times(1),
    );
    let e = c
        .view_resources(&ResourceViewFilter::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e:?}");

    sim.add_fault(Fault::new(FaultKind::Drop).on_path("/v1/controller").times(1));
    let e = c.controller_version().await.unwrap_err();
    assert!(
        matches!(e, Error::Transfer { .. } | Error::Connection { .. }),
        "{e:?}"
    );
    c.controller_version().await.unwrap();

    sim.add_fault(
        Fault::new(FaultKind::Latency { ms: 2000 })
            .on_method("GET")
            .times(1),
    );
    let quick = Client::builder()
        .controllers([sim.http_url().unwrap()])
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let e = quick.controller_version().await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn dropped_connections_fail_over_to_another_controller() {
    let a = Simulator::start(cluster()).await.unwrap();
    let b = Simulator::start(cluster()).await.unwrap();
    a.add_fault(Fault::new(FaultKind::Drop));
    let c = Client::builder()
        .controllers([a.http_url().unwrap(), b.http_url().unwrap()])
        .build()
        .unwrap();
    let nodes = c.list_nodes(&NodeFilter::default()).await.unwrap();
    assert_eq!(nodes.len(), 4);
    assert_eq!(b.count("GET /v1/nodes"), 1);
    assert!(a.count("GET /v1/nodes") >= 1);
}

#[tokio::test]
async fn request_counters_per_endpoint() {
    let (sim, c) = start().await;
    c.list_nodes(&NodeFilter::default()).await.unwrap();
    c.list_nodes(&NodeFilter::default()).await.unwrap();
    c.evacuate_node("node-a", &NodeEvacuate::default()).await.unwrap();
    c.modify_volume_definition("pvc-1", 0, &VolumeDefinitionModify::default())
        .await
        .unwrap();
    assert_eq!(sim.count("GET /v1/nodes"), 2);
    assert_eq!(sim.count("PUT /v1/nodes/{node}/evacuate"), 1);
    assert_eq!(
        sim.count("PUT /v1/resource-definitions/{resource}/volume-definitions/{volume_number}"),
        1
    );
    sim.reset_counters();
    assert!(sim.counters().is_empty());
}

async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http
        .request(method, url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    (status, v)
}

#[tokio::test]
async fn cluster_set_up_over_http_and_state_save_load() {
    let sim = Simulator::start(SimState::default()).await.unwrap();
    let base = sim.http_url().unwrap();
    let http = plain_http();
    use reqwest::Method as M;
    use serde_json::json;
    for n in ["n1", "n2", "n3"] {
        let (s, _) = raw(
            &http,
            M::POST,
            format!("{base}/v1/nodes"),
            json!({"name": n, "type": "Satellite", "props": {"Aux/rack": n}}),
        )
        .await;
        assert_eq!(s, 201);
    }
    let (s, v) = raw(
        &http,
        M::POST,
        format!("{base}/v1/nodes"),
        json!({"name": "n1", "type": "Satellite"}),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        raw(
            &http,
            M::POST,
            format!("{base}/v1/resource-definitions"),
            json!({"resource_definition": {"name": "r1"}})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            &http,
            M::POST,
            format!("{base}/v1/resource-definitions/r1/volume-definitions"),
            json!({"volume_definition": {"size_kib": 4096}})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            &http,
            M::POST,
            format!("{base}/v1/resource-definitions/r1/resources"),
            json!([{"resource": {"node_name": "n1"}}, {"resource": {"node_name": "n2"}}])
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            &http,
            M::POST,
            format!("{base}/v1/resource-definitions/r1/resources/n3"),
            json!({"resource": {"flags": ["DISKLESS"]}})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            &http,
            M::PUT,
            format!("{base}/sim/resources/r1/n1"),
            json!({"in_use": true})
        )
        .await
        .0,
        200
    );
    let c = Client::builder().controllers([&base]).build().unwrap();
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(
        replicas(&view, "r1"),
        vec![("n1".into(), false), ("n2".into(), false), ("n3".into(), true)]
    );
    assert_eq!(
        view.iter().find(|r| r.node_name == "n1").unwrap().in_use(),
        Some(true)
    );
    assert_eq!(
        raw(
            &http,
            M::DELETE,
            format!("{base}/v1/resource-definitions/r1/resources/n2"),
            json!({})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        raw(
            &http,
            M::DELETE,
            format!("{base}/v1/resource-definitions/r1/resources/n2"),
            json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        raw(
            &http,
            M::PUT,
            format!("{base}/sim/nodes/n3"),
            json!({"connection_status": "OFFLINE"})
        )
        .await
        .0,
        200
    );
    let n3 = c.get_node("n3").await.unwrap();
    assert_eq!(
        n3.connection_status,
        Some(linstor_api::models::ConnectionStatus::Offline)
    );

    // Save, load into a fresh simulator, and compare answers.
    let dir = std::env::temp_dir().join(format!("linstor-sim-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("state.json");
    sim.save_state(&file).unwrap();
    let loaded = load_state_file(&file).unwrap();
    assert_eq!(loaded, sim.state());
    let sim2 = Simulator::start(loaded).await.unwrap();
    let c2 = Client::builder()
        .controllers([sim2.http_url().unwrap()])
        .build()
        .unwrap();
    let view2 = c2.view_resources(&ResourceViewFilter::default()).await.unwrap();
    let view1 = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(view1.len(), 2);
    assert_eq!(view1, view2);
    // The state endpoint serves the same JSON.
    let (s, state_json) = raw(&http, M::GET, format!("{base}/sim/state"), json!({})).await;
    assert_eq!(s, 200);
    let from_http: SimState = serde_json::from_value(state_json).unwrap();
    assert_eq!(from_http, sim.state());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bundled_scenario_loads_and_serves() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/small-cluster.json");
    let state = load_state_file(&path).unwrap();
    assert!(state.nodes.len() >= 3);
    let sim = Simulator::start(state.clone()).await.unwrap();
    let c = Client::builder()
        .controllers([sim.http_url().unwrap()])
        .build()
        .unwrap();
    let nodes = c.list_nodes(&NodeFilter::default()).await.unwrap();
    assert_eq!(nodes.len(), state.nodes.len());
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    let expected: usize = state.resource_definitions.iter().map(|r| r.resources.len()).sum();
    assert_eq!(view.len(), expected);
}

#[test]
fn broken_state_files_are_rejected_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("linstor-sim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.json");
    std::fs::write(
        &f,
        r#"{"nodes":[{"name":"a"}],"resource_definitions":[{"name":"r","resources":[{"node_name":"zz"}]}]}"#,
    )
    .unwrap();
    let e = load_state_file(&f).unwrap_err().to_string();
    assert!(e.contains("unknown node") && e.contains("zz"), "{e}");
    std::fs::write(&f, r#"{"nodes":[{"name":1}]}"#).unwrap();
    let e = load_state_file(&f).unwrap_err().to_string();
    assert!(e.contains("nodes[0].name"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits until `cond` holds, checking every 20 ms, for at most 10 s.
async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn refused_evacuation_is_an_error_and_changes_nothing() {
    let (sim, c) = start().await;
    let before = sim.state();
    // pvc-2 (node-b, node-c) has nowhere to go from node-b once node-a and node-d are excluded;
    // pvc-1 alone could go on (node-c's diskless replica would become diskful).
    let e = c
        .evacuate_node(
            "node-b",
            &NodeEvacuate {
                do_not_target: vec!["node-a".into(), "node-d".into()],
                target: vec![],
            },
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(
            "Evacuation of node 'node-b' refused: no eligible node for a replacement of resource 'pvc-2' \
             (needs 1 more diskful replica; excluded: node-a (do_not_target), node-b (evacuated), \
             node-c (holds a replica), node-d (do_not_target))"
        ),
        "{text}"
    );
    assert!(text.contains("correction: Add nodes"), "{text}");
    match &e {
        Error::Status {
            status: 500, reports, ..
        } => assert!(reports.0[0].is_error(), "{e:?}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(sim.state(), before);
    assert!(!c.get_node("node-b").await.unwrap().has_flag(flags::EVACUATE));

    // A node that is not online cannot be evacuated either.
    sim.with_state(|s| {
        s.set_node_state(
            "node-d",
            None,
            Some(linstor_api::models::ConnectionStatus::Offline),
        )
    })
    .unwrap();
    let before = sim.state();
    let e = c
        .evacuate_node("node-d", &NodeEvacuate::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Node 'node-d' is OFFLINE; it cannot be evacuated"),
        "{e}"
    );
    assert!(matches!(e, Error::Status { status: 500, .. }), "{e:?}");
    assert_eq!(sim.state(), before);
}

#[tokio::test]
async fn evacuation_honours_do_not_target_and_target() {
    let (sim, c) = start().await;
    // Without restrictions pvc-2's replacement would go to node-d, which holds nothing.
    c.evacuate_node(
        "node-b",
        &NodeEvacuate {
            do_not_target: vec!["node-d".into()],
            target: vec![],
        },
    )
    .await
    .unwrap();
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(
        replicas(&view, "pvc-2"),
        vec![("node-a".into(), false), ("node-c".into(), false)]
    );
    assert_eq!(
        replicas(&view, "pvc-1"),
        vec![("node-a".into(), false), ("node-c".into(), false)]
    );
    assert!(!view.iter().any(|r| r.node_name == "node-d"));
    let pvc2 = sim
        .state()
        .resource_definitions
        .into_iter()
        .find(|r| r.name == "pvc-2")
        .unwrap();
    assert_eq!(pvc2.place_count, Some(2));

    // `target` limits the candidates to the nodes named.
    c.evacuate_node(
        "node-c",
        &NodeEvacuate {
            do_not_target: vec![],
            target: vec!["node-d".into()],
        },
    )
    .await
    .unwrap();
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(
        replicas(&view, "pvc-2"),
        vec![("node-a".into(), false), ("node-d".into(), false)]
    );
    assert_eq!(
        replicas(&view, "pvc-1"),
        vec![("node-a".into(), false), ("node-d".into(), false)]
    );
}

#[tokio::test]
async fn restorer_restores_evacuated_nodes_and_re_evacuation_adds_no_replica() {
    let mut state = cluster();
    state
        .resource_definitions
        .push(SimResourceDefinition::new("pvc-3", 1024).resource(SimResource::diskful("node-d")));
    let sim = Simulator::builder()
        .state(state)
        .restore_evacuated_every(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let base = sim.http_url().unwrap();
    let c = Client::builder().controllers([&base]).build().unwrap();
    let http = plain_http();
    let mut events = NodeEvents::open(&http, &base).await;
    let (s, v) = raw(
        &http,
        reqwest::Method::GET,
        format!("{base}/sim/restorer"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["every_seconds"], serde_json::json!(0.2));

    // pvc-3 is in use on node-d: its evacuation places a replica elsewhere and keeps node-d's.
    sim.set_in_use("pvc-3", "node-d", true).unwrap();
    c.evacuate_node("node-d", &NodeEvacuate::default()).await.unwrap();
    wait_for("node-d restored", || async {
        !c.get_node("node-d").await.unwrap().has_flag(flags::EVACUATE)
    })
    .await;
    assert!(sim.restorations() >= 1);
    let mut names = Vec::new();
    while !names.iter().any(|n| n == "node-restored") {
        let ev = events.next().await;
        if let NodeEvent::Restored(r) = &ev {
            assert_eq!(r.node.as_ref().unwrap().name, "node-d");
        }
        names.push(ev.name().to_owned());
    }
    assert_eq!(names, ["node-evacuate", "node-restored"]);
    let (_, v) = raw(
        &http,
        reqwest::Method::GET,
        format!("{base}/sim/restorer"),
        serde_json::json!({}),
    )
    .await;
    assert!(v["restorations"].as_u64().unwrap() >= 1, "{v}");

    // The restore cancelled the removal of node-d's replica: both stay.
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    let placed = replicas(&view, "pvc-3");
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert!(view.iter().all(|r| !r.flags.iter().any(|f| f == "EVACUATE")));

    // Turned off, it restores nothing more; evacuating again adds no third replica.
    let (s, v) = raw(
        &http,
        reqwest::Method::PUT,
        format!("{base}/sim/restorer"),
        serde_json::json!({"every_seconds": null}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["every_seconds"], serde_json::Value::Null);
    let count = sim.restorations();
    c.evacuate_node("node-d", &NodeEvacuate::default()).await.unwrap();
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(replicas(&view, "pvc-3"), placed);
    assert!(c.get_node("node-d").await.unwrap().has_flag(flags::EVACUATE));
    sim.set_in_use("pvc-3", "node-d", false).unwrap();
    let view = c.view_resources(&ResourceViewFilter::default()).await.unwrap();
    assert_eq!(replicas(&view, "pvc-3").len(), 1);
    assert!(!view.iter().any(|r| r.node_name == "node-d"));

    // On again (through the control API), it restores the node once more.
    let (s, v) = raw(
        &http,
        reqwest::Method::PUT,
        format!("{base}/sim/restorer"),
        serde_json::json!({"every_seconds": 0.2}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    wait_for("node-d restored again", || async {
        !c.get_node("node-d").await.unwrap().has_flag(flags::EVACUATE)
    })
    .await;
    assert!(sim.restorations() > count);

    // Bad periods are refused.
    for body in [
        serde_json::json!({}),
        serde_json::json!({"every_seconds": 0}),
        serde_json::json!({"every_seconds": -1}),
        serde_json::json!({"every_seconds": "5"}),
    ] {
        let (s, v) = raw(
            &http,
            reqwest::Method::PUT,
            format!("{base}/sim/restorer"),
            body.clone(),
        )
        .await;
        assert_eq!(s, 400, "{body}: {v}");
    }
}

#[tokio::test(start_paused = true)]
async fn restorer_period_changes_take_effect_at_once() {
    // Virtual time: the runtime jumps to the next timer when idle, so the periods are exact.
    let sim = Simulator::builder()
        .state(cluster())
        .restore_evacuated_every(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let evacuate = || {
        sim.with_state(|s| s.evacuate_node("node-d", &NodeEvacuate::default()))
            .unwrap();
    };
    let flagged = || sim.state().nodes[3].flags.iter().any(|f| f == flags::EVACUATE);
    evacuate();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(flagged());
    assert_eq!(sim.restorations(), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!flagged());
    assert_eq!(sim.restorations(), 1);

    // Off: nothing is restored, however long it waits.
    sim.set_restore_evacuated_every(None);
    evacuate();
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    assert!(flagged());
    assert_eq!(sim.restorations(), 1);

    // A shorter period counts from when it is set.
    sim.set_restore_evacuated_every(Some(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(flagged());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!flagged());
    assert_eq!(sim.restorations(), 2);

    // Evicted nodes are restored too.
    sim.with_state(|s| s.set_node_state("node-a", Some(vec![flags::EVICTED.to_owned()]), None))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sim.state().nodes[0].flags.is_empty());
    assert_eq!(sim.restorations(), 3);
}
