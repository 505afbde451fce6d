//! Printing a report: an aligned table for people, JSON or YAML for tools.

use std::fmt::Write as _;

use affinity_core::k8s_openapi::api::core::v1::NodeSelectorTerm;

use crate::report::{DecisionKind, PlanReport, VolumeReport};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// An aligned table with a summary line.
    #[default]
    Table,
    /// The report as JSON.
    Json,
    /// The report as YAML.
    Yaml,
}

/// Why a report cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// JSON encoding failed.
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// YAML encoding failed.
    #[error("cannot encode the report as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// Renders `report` in `format`; the table uses ANSI colours when `colour` is set.
pub fn render(report: &PlanReport, format: Format, colour: bool) -> Result<String, RenderError> {
    Ok(match format {
        Format::Table => table(report, colour),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(report)?;
            text.push('\n');
            text
        }
        Format::Yaml => serde_yaml_ng::to_string(report)?,
    })
}

const HEADERS: [&str; 5] = ["PV", "VOLUME", "DECISION", "CURRENT AFFINITY", "DESIRED AFFINITY"];

fn table(report: &PlanReport, colour: bool) -> String {
    let rows: Vec<[String; 5]> = report.volumes.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = HEADERS.iter().map(|h| (*h).to_owned()).collect();
    push_line(&mut out, &header, &widths, None, "DETAIL");
    for (volume, row) in report.volumes.iter().zip(&rows) {
        let paint = colour.then(|| colour_of(volume.decision));
        let detail = match volume.decision {
            DecisionKind::InSync | DecisionKind::Replace => "",
            _ => volume.message.as_deref().unwrap_or(""),
        };
        push_line(&mut out, row, &widths, paint, detail);
    }
    let summary = report.summary;
    let _ = writeln!(
        out,
        "\n{} volumes: {} in sync, {} to replace, {} skipped, {} with saved state to clear, {} held at \
         Retain, {} with errors (property namespace {})",
        summary.volumes,
        summary.in_sync,
        summary.replace,
        summary.skip,
        summary.clear_saved_state,
        summary.restore_reclaim_policy,
        summary.errors,
        report.property_namespace
    );
    out
}

fn push_line(out: &mut String, cells: &[String], widths: &[usize; 5], paint: Option<&str>, detail: &str) {
    let mut line = String::new();
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        let padding = width.saturating_sub(cell.chars().count());
        match paint {
            Some(code) if index == 2 => {
                let _ = write!(line, "\x1b[{code}m{cell}\x1b[0m");
            }
            _ => line.push_str(cell),
        }
        line.extend(std::iter::repeat_n(' ', padding + 2));
    }
    line.push_str(detail);
    out.push_str(line.trim_end());
    out.push('\n');
}

fn colour_of(decision: DecisionKind) -> &'static str {
    match decision {
        DecisionKind::InSync => "32",
        DecisionKind::Replace | DecisionKind::ClearSavedState | DecisionKind::RestoreReclaimPolicy => "33",
        DecisionKind::Skip => "2",
        DecisionKind::Error => "31",
    }
}

fn row(volume: &VolumeReport) -> [String; 5] {
    let id = match (&volume.resource_definition, volume.volume_number) {
        (Some(definition), Some(number)) => format!("{definition}/{number}"),
        _ => "-".to_owned(),
    };
    let decision = match (volume.decision, volume.trigger, volume.skip_reason) {
        (DecisionKind::Replace, Some(trigger), _) => {
            format!("replace ({})", serde_plain(&trigger))
        }
        (DecisionKind::Skip, _, Some(reason)) => format!("skip ({reason})"),
        (kind, _, _) => serde_plain(&kind),
    };
    [
        volume.pv.clone(),
        id,
        decision,
        affinity_text(volume.current_affinity.as_ref()),
        affinity_text(volume.desired_affinity.as_ref()),
    ]
}

fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => "?".to_owned(),
    }
}

/// `-` when unknown, `none` without affinity, `key=a|b` when every term is
/// one `In` expression with one value on the same key, else terms separated
/// by ` | `, each `key=value` pairs separated by `,` (other operators spelled
/// out).
pub fn affinity_text(affinity: Option<&Option<Vec<NodeSelectorTerm>>>) -> String {
    match affinity {
        None => "-".to_owned(),
        Some(None) => "none".to_owned(),
        Some(Some(terms)) if terms.is_empty() => "none".to_owned(),
        Some(Some(terms)) => same_key_text(terms)
            .unwrap_or_else(|| terms.iter().map(term_text).collect::<Vec<_>>().join(" | ")),
    }
}

fn same_key_text(terms: &[NodeSelectorTerm]) -> Option<String> {
    let mut key: Option<&str> = None;
    let mut values = Vec::with_capacity(terms.len());
    for term in terms {
        if term
            .match_fields
            .as_ref()
            .is_some_and(|fields| !fields.is_empty())
        {
            return None;
        }
        let [expression] = term.match_expressions.as_deref()? else {
            return None;
        };
        let [value] = expression.values.as_deref()? else {
            return None;
        };
        if expression.operator != "In" || key.is_some_and(|key| key != expression.key) {
            return None;
        }
        key = Some(&expression.key);
        values.push(value.as_str());
    }
    key.map(|key| format!("{key}={}", values.join("|")))
}

fn term_text(term: &NodeSelectorTerm) -> String {
    let expressions = term.match_expressions.iter().flatten().map(|expression| {
        let values = expression.values.as_deref().unwrap_or_default();
        match (expression.operator.as_str(), values) {
            ("In", [value]) => format!("{}={value}", expression.key),
            (operator, values) => format!("{} {operator} ({})", expression.key, values.join(",")),
        }
    });
    let fields = term.match_fields.iter().flatten().map(|field| {
        let values = field.values.as_deref().unwrap_or_default();
        format!("field {} {} ({})", field.key, field.operator, values.join(","))
    });
    let parts: Vec<String> = expressions.chain(fields).collect();
    if parts.is_empty() {
        "(empty term)".to_owned()
    } else {
        parts.join(",")
    }
}
