//! Reads a LINSTOR cluster's nodes and resources and prints a short summary: every node with its
//! type and connection state and the resources it holds, diskful or diskless.
//!
//! The controller is found through the environment of the Go LINSTOR client (`LS_CONTROLLERS`,
//! `LS_ROOT_CA`, `LS_USER_CERTIFICATE`, ...; see [`linstor_api::config`]):
//!
//! ```sh
//! LS_CONTROLLERS=http://127.0.0.1:3370 cargo run -p linstor-api --example read_cluster
//! ```
//!
//! Against the simulator:
//!
//! ```sh
//! cargo run -p linstor-affinity-bins --bin linstor-sim -- \
//!     --scenario linstor-api/scenarios/small-cluster.json --listen 127.0.0.1:3370 &
//! LS_CONTROLLERS=http://127.0.0.1:3370 cargo run -p linstor-api --example read_cluster
//! ```
//!
//! Exits with 1 when the configuration is unusable or LINSTOR cannot be read.

use std::collections::BTreeMap;
use std::process::ExitCode;

use linstor_api::models::ResourceWithVolumes;
use linstor_api::{Client, NodeFilter, ResourceViewFilter};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("read_cluster: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), linstor_api::Error> {
    let client = Client::from_env()?;
    let nodes = client.list_nodes(&NodeFilter::default()).await?;
    let resources = client.view_resources(&ResourceViewFilter::default()).await?;

    let mut by_node: BTreeMap<&str, Vec<&ResourceWithVolumes>> = BTreeMap::new();
    for resource in &resources {
        by_node.entry(&resource.node_name).or_default().push(resource);
    }
    let diskless = resources.iter().filter(|r| r.is_diskless()).count();
    println!(
        "{} nodes, {} resources ({} diskful, {diskless} diskless)",
        nodes.len(),
        resources.len(),
        resources.len() - diskless,
    );
    for node in &nodes {
        let connection = node
            .connection_status
            .as_ref()
            .map_or("unknown", |status| status.as_str());
        let held = by_node.remove(node.name.as_str()).unwrap_or_default();
        println!(
            "{} ({}, {connection}): {}",
            node.name,
            node.node_type,
            describe(&held)
        );
    }
    // Resources on nodes the node list did not name (a node deleted meanwhile).
    for (node, held) in by_node {
        println!("{node} (not listed): {}", describe(&held));
    }
    Ok(())
}

/// `name (diskful), name (diskless), ...`, or `no resources`.
fn describe(resources: &[&ResourceWithVolumes]) -> String {
    if resources.is_empty() {
        return "no resources".to_owned();
    }
    resources
        .iter()
        .map(|resource| {
            let kind = if resource.is_diskless() {
                "diskless"
            } else {
                "diskful"
            };
            format!("{} ({kind})", resource.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
