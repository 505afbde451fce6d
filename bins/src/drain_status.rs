//! `drain-status`: where each node's drain stands, read from the drain
//! records on the LINSTOR nodes, LINSTOR's resources and the Kubernetes
//! nodes (see [`affinity_core::drain::drain_status`]).

use std::fmt::Write as _;

use affinity_core::drain::{KubeNodeView, NodeDrainStatus, drain_status};
use affinity_core::k8s_openapi::api::core::v1::Node;
use affinity_core::names::DRAIN_RECORD_PROPERTY;
use affinity_kube::drain::{DrainError, read_linstor_nodes};
use affinity_kube::node_cache::view_of;
use kube::api::{Api, ListParams};
use linstor_api::error::chain;
use serde::Serialize;

use crate::render::{Format, RenderError};

/// Version of the JSON and YAML field names.
const FORMAT_VERSION: u32 = 1;

/// The report every output format shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    /// Version of the field names.
    pub format_version: u32,
    /// One row per node draining or asking to.
    pub nodes: Vec<NodeDrainStatus>,
}

impl DrainReport {
    /// Whether any drain is blocked.
    pub fn any_blocked(&self) -> bool {
        self.nodes.iter().any(NodeDrainStatus::is_blocked)
    }
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DrainStatusError {
    /// The Kubernetes nodes could not be listed.
    #[error("Kubernetes API server: listing nodes: {}", chain(.0))]
    Nodes(#[source] kube::Error),
    /// LINSTOR could not be read.
    #[error(transparent)]
    Linstor(#[from] DrainError),
}

/// Reads the Kubernetes nodes and LINSTOR (nodes, and resources on the
/// nodes with a drain record or asking for one).
pub async fn gather(
    kube: &kube::Client,
    linstor: &linstor_api::Client,
    property_namespace: Option<&str>,
) -> Result<DrainReport, DrainStatusError> {
    let nodes: Api<Node> = Api::all(kube.clone());
    let listed = nodes
        .list(&ListParams::default())
        .await
        .map_err(DrainStatusError::Nodes)?;
    let views: Vec<KubeNodeView> = listed.items.iter().filter_map(view_of).collect();
    let linstor = read_linstor_nodes(linstor, property_namespace, |node, hostname_property| {
        node.properties.contains_key(DRAIN_RECORD_PROPERTY)
            || views
                .iter()
                .any(|k| (k.unschedulable || k.evacuate_taint) && node.belongs_to(k, hostname_property))
    })
    .await?;
    Ok(DrainReport {
        format_version: FORMAT_VERSION,
        nodes: drain_status(&views, &linstor.nodes, &linstor.hostname_property),
    })
}

const HEADERS: [&str; 7] = [
    "NODE",
    "LINSTOR NODE",
    "REQUEST",
    "STATE",
    "REPLICAS LEFT",
    "SINCE",
    "BLOCKED",
];

/// Renders `report` in `format`.
pub fn render(report: &DrainReport, format: Format) -> Result<String, RenderError> {
    Ok(match format {
        Format::Table => table(report),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(report)?;
            text.push('\n');
            text
        }
        Format::Yaml => serde_yaml_ng::to_string(report)?,
    })
}

fn table(report: &DrainReport) -> String {
    if report.nodes.is_empty() {
        return "no node is draining\n".to_owned();
    }
    let dash = || "-".to_owned();
    let rows: Vec<[String; 7]> = report
        .nodes
        .iter()
        .map(|row| {
            [
                row.node.clone(),
                row.linstor_node.clone().unwrap_or_else(dash),
                row.request.clone(),
                row.state.clone(),
                row.replicas_left.map_or_else(dash, |left| left.to_string()),
                row.since.clone().unwrap_or_else(dash),
                row.blocked_reason.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, state: &str, blocked: Option<&str>) -> NodeDrainStatus {
        NodeDrainStatus {
            node: node.to_owned(),
            linstor_node: Some(node.to_owned()),
            request: "cordon/Evacuate".to_owned(),
            state: state.to_owned(),
            replicas_left: Some(2),
            since: Some("2026-12-01T10:00:00Z".to_owned()),
            blocked_reason: blocked.map(str::to_owned),
        }
    }

    #[test]
    fn the_table_aligns_and_json_keeps_the_field_names() {
        let report = DrainReport {
            format_version: FORMAT_VERSION,
            nodes: vec![
                row("worker-1", "Evacuating", None),
                row("w2", "Blocked", Some("LINSTOR refused")),
            ],
        };
        let table = render(&report, Format::Table).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NODE      LINSTOR NODE"), "{table}");
        assert!(lines[2].ends_with("LINSTOR refused"), "{table}");
        assert!(report.any_blocked());
        let json: serde_json::Value = serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json["formatVersion"], 1);
        assert_eq!(json["nodes"][1]["blockedReason"], "LINSTOR refused");
        assert_eq!(json["nodes"][0]["replicasLeft"], 2);
        let empty = DrainReport {
            format_version: FORMAT_VERSION,
            nodes: vec![],
        };
        assert_eq!(render(&empty, Format::Table).unwrap(), "no node is draining\n");
        assert!(!empty.any_blocked());
    }
}
