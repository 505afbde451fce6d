//! Remote access policies: which nodes may access a volume, relative to the
//! nodes that hold its data.
//!
//! A policy is a list of rules. Each rule names topology keys (`fromSame`): a
//! node may access the volume when it shares the values of all those keys
//! with a node holding a diskful replica. A rule without keys allows every
//! node; a policy without rules yields no topology at all, which also means
//! "accessible from everywhere".

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_yaml_ng::Value;

use crate::names::NODE_NAME_KEY;
use crate::topology::Segments;

/// One rule of a [`RemoteAccessPolicy`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RemoteAccessRule {
    /// Topology keys whose values a node must share with a diskful node.
    #[serde(rename = "fromSame", skip_serializing_if = "Vec::is_empty")]
    pub from_same: Vec<String>,
}

impl RemoteAccessRule {
    /// A rule requiring the given keys to match.
    pub fn from_same<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Self {
            from_same: keys.into_iter().map(Into::into).collect(),
        }
    }
}

/// A remote access policy, as LINSTOR CSI and the override annotation state it.
///
/// Parse it with [`str::parse`] and print it with [`fmt::Display`]; printing
/// then parsing gives back an equal policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RemoteAccessPolicy {
    rules: Vec<RemoteAccessRule>,
}

impl RemoteAccessPolicy {
    /// A policy from its rules, in order.
    pub fn new(rules: Vec<RemoteAccessRule>) -> Self {
        Self { rules }
    }

    /// Access from every node: one rule with no keys (`true`).
    pub fn anywhere() -> Self {
        Self::new(vec![RemoteAccessRule::default()])
    }

    /// Access only from nodes with a diskful replica (`false`).
    pub fn local_only() -> Self {
        Self::new(vec![RemoteAccessRule::from_same([NODE_NAME_KEY])])
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[RemoteAccessRule] {
        &self.rules
    }

    /// True for the policy printed as `true`.
    pub fn is_anywhere(&self) -> bool {
        matches!(self.rules.as_slice(), [rule] if rule.from_same.is_empty())
    }

    /// True for the policy printed as `false`.
    pub fn is_local_only(&self) -> bool {
        matches!(self.rules.as_slice(), [rule] if rule.from_same == [NODE_NAME_KEY])
    }

    /// The topologies from which one node, described by its segments, can be
    /// reached: one map per rule holding those of the rule's keys the node has,
    /// then [`prune`]d. An empty map in the result means "from everywhere".
    pub fn accessible_segments(&self, segments: &Segments) -> Vec<Segments> {
        let per_rule = self
            .rules
            .iter()
            .map(|rule| {
                rule.from_same
                    .iter()
                    .filter_map(|key| segments.get_key_value(key).map(|(k, v)| (k.clone(), v.clone())))
                    .collect::<Segments>()
            })
            .collect();
        prune(per_rule)
    }
}

/// Drops duplicate maps and every map that is a superset of another one in
/// the list: the more general topology wins. Keeps the first of equal maps
/// and the input order of the rest.
pub fn prune(maps: Vec<Segments>) -> Vec<Segments> {
    let keep: Vec<bool> = maps
        .iter()
        .enumerate()
        .map(|(i, map)| {
            !maps
                .iter()
                .enumerate()
                .any(|(j, other)| j != i && is_subset(other, map) && (other.len() < map.len() || j < i))
        })
        .collect();
    maps.into_iter()
        .zip(keep)
        .filter_map(|(map, keep)| keep.then_some(map))
        .collect()
}

fn is_subset(small: &Segments, large: &Segments) -> bool {
    small.len() <= large.len() && small.iter().all(|(k, v)| large.get(k) == Some(v))
}

/// Why a text is not a remote access policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid remote access policy {text:?}: {reason}")]
pub struct PolicyParseError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for RemoteAccessPolicy {
    type Err = PolicyParseError;

    /// Accepts a boolean in Go `strconv.ParseBool` spelling or a YAML list of
    /// `fromSame` rules. YAML `null` (also the empty text) is a policy with no
    /// rules. Keys are matched without case and unknown keys are ignored, as
    /// the Go JSON decoder LINSTOR CSI uses does.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(allow) = parse_go_bool(text) {
            return Ok(if allow {
                Self::anywhere()
            } else {
                Self::local_only()
            });
        }
        let fail = |reason: String| PolicyParseError {
            text: text.to_owned(),
            reason,
        };
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| fail(e.to_string()))?;
        rules_from_yaml(value).map(Self::new).map_err(fail)
    }
}

impl fmt::Display for RemoteAccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_anywhere() {
            return f.write_str("true");
        }
        if self.is_local_only() {
            return f.write_str("false");
        }
        match serde_yaml_ng::to_string(&self.rules) {
            Ok(yaml) => f.write_str(&yaml),
            // JSON is YAML too; the YAML emitter has no reason to fail on
            // plain strings, but printing must never panic.
            Err(_) => match serde_json::to_string(&self.rules) {
                Ok(json) => f.write_str(&json),
                Err(_) => Err(fmt::Error),
            },
        }
    }
}

/// `strconv.ParseBool` of Go: exactly these spellings.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn rules_from_yaml(value: Value) -> Result<Vec<RemoteAccessRule>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| rule_from_yaml(item).map_err(|e| format!("rule {index}: {e}")))
            .collect(),
        other => Err(format!(
            "expected a boolean or a list of rules, found {}",
            kind_of(&other)
        )),
    }
}

fn rule_from_yaml(value: Value) -> Result<RemoteAccessRule, String> {
    let mapping = match value {
        Value::Null => return Ok(RemoteAccessRule::default()),
        Value::Mapping(mapping) => mapping,
        other => return Err(format!("expected a map, found {}", kind_of(&other))),
    };
    // Go's JSON decoder matches field names without case; with several
    // spellings present the last key in sorted order wins there.
    let from_same = mapping
        .into_iter()
        .filter_map(|(key, value)| match key {
            Value::String(key) if key.eq_ignore_ascii_case("fromSame") => Some((key, value)),
            _ => None,
        })
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .next_back();
    let keys = match from_same {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(keys)) => keys
            .into_iter()
            .map(|key| match key {
                Value::String(key) => Ok(key),
                Value::Null => Ok(String::new()),
                other => Err(format!(
                    "fromSame: expected a list of strings, found {} in it",
                    kind_of(&other)
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "fromSame: expected a list of strings, found {}",
                kind_of(&other)
            ));
        }
    };
    Ok(RemoteAccessRule { from_same: keys })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::pairs as seg;

    fn rules(keys: &[&[&str]]) -> RemoteAccessPolicy {
        RemoteAccessPolicy::new(
            keys.iter()
                .map(|k| RemoteAccessRule::from_same(k.iter().copied()))
                .collect(),
        )
    }

    #[test]
    fn every_go_boolean_spelling() {
        for text in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(text.parse(), Ok(RemoteAccessPolicy::anywhere()), "{text}");
        }
        for text in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(text.parse(), Ok(RemoteAccessPolicy::local_only()), "{text}");
        }
    }

    #[test]
    fn other_boolean_looking_words_are_not_booleans() {
        // Not accepted by ParseBool, and YAML scalars are not rule lists.
        for text in ["tRUE", "yes", "no", "on", "2", "\"true\"", " true"] {
            let result = text.parse::<RemoteAccessPolicy>();
            assert!(result.is_err(), "{text:?} parsed to {result:?}");
        }
    }

    #[test]
    fn yaml_rules() {
        let cases: &[(&str, RemoteAccessPolicy)] = &[
            (
                "- fromSame: [topology.kubernetes.io/zone]",
                rules(&[&["topology.kubernetes.io/zone"]]),
            ),
            (
                "- fromSame:\n  - a\n  - b\n- fromSame: [c]\n",
                rules(&[&["a", "b"], &["c"]]),
            ),
            ("- {}", rules(&[&[]])),
            ("- fromSame: []", rules(&[&[]])),
            ("- fromSame: null", rules(&[&[]])),
            ("- null", rules(&[&[]])),
            ("[{fromSame: [a]}]", rules(&[&["a"]])),
            ("- fromsame: [a]", rules(&[&["a"]])),
            ("- FROMSAME: [a]", rules(&[&["a"]])),
            ("- fromSame: [a]\n  other: ignored", rules(&[&["a"]])),
            ("- fromSame: [null]", rules(&[&[""]])),
            ("[]", rules(&[])),
            ("", rules(&[])),
            ("null", rules(&[])),
            ("~", rules(&[])),
        ];
        for (text, expected) in cases {
            assert_eq!(&text.parse::<RemoteAccessPolicy>().unwrap(), expected, "{text:?}");
        }
    }

    #[test]
    fn invalid_yaml_names_text_and_reason() {
        let cases = [
            ("- fromSame: a", "fromSame"),
            ("- fromSame: [1]", "number"),
            ("- fromSame: [[a]]", "list"),
            ("fromSame: [a]", "found a map"),
            ("- a", "rule 0"),
            ("- [a]", "rule 0"),
            ("[- ", "invalid remote access policy"),
            ("maybe", "found a string"),
            ("42", "found a number"),
        ];
        for (text, needle) in cases {
            let err = text.parse::<RemoteAccessPolicy>().unwrap_err();
            assert_eq!(err.text, text);
            let shown = err.to_string();
            assert!(shown.contains(needle), "{text:?}: {shown}");
            assert!(shown.contains(&format!("{text:?}")), "{shown}");
        }
    }

    #[test]
    fn prints_booleans_and_yaml() {
        assert_eq!(RemoteAccessPolicy::anywhere().to_string(), "true");
        assert_eq!(RemoteAccessPolicy::local_only().to_string(), "false");
        assert_eq!(rules(&[&["a", "b"]]).to_string(), "- fromSame:\n  - a\n  - b\n");
        assert_eq!(rules(&[&[], &["a"]]).to_string(), "- {}\n- fromSame:\n  - a\n");
        assert_eq!(rules(&[]).to_string(), "[]\n");
    }

    #[test]
    fn print_then_parse_is_identity_on_examples() {
        for policy in [
            RemoteAccessPolicy::anywhere(),
            RemoteAccessPolicy::local_only(),
            rules(&[]),
            rules(&[&[], &[]]),
            rules(&[&["true"], &["- x", "y: z", "#c", "'q'", "\"dq\"", ""]]),
            rules(&[&[NODE_NAME_KEY, "zone"]]),
        ] {
            assert_eq!(policy.to_string().parse(), Ok(policy.clone()), "{policy}");
        }
    }

    #[test]
    fn applies_rules_to_segments() {
        let node = seg(&[(NODE_NAME_KEY, "n1"), ("zone", "z1"), ("region", "r1")]);
        assert_eq!(
            RemoteAccessPolicy::local_only().accessible_segments(&node),
            vec![seg(&[(NODE_NAME_KEY, "n1")])]
        );
        assert_eq!(
            RemoteAccessPolicy::anywhere().accessible_segments(&node),
            vec![seg(&[])]
        );
        assert_eq!(
            rules(&[&["zone", "region"]]).accessible_segments(&node),
            vec![seg(&[("zone", "z1"), ("region", "r1")])]
        );
        // Keys the node lacks are left out of the map.
        assert_eq!(
            rules(&[&["zone", "rack"]]).accessible_segments(&node),
            vec![seg(&[("zone", "z1")])]
        );
        assert_eq!(rules(&[&["rack"]]).accessible_segments(&node), vec![seg(&[])]);
        // Two rules, neither more general than the other.
        assert_eq!(
            rules(&[&["zone"], &["region"]]).accessible_segments(&node),
            vec![seg(&[("zone", "z1")]), seg(&[("region", "r1")])]
        );
        // The more general rule wins.
        assert_eq!(
            rules(&[&["zone", "region"], &["zone"]]).accessible_segments(&node),
            vec![seg(&[("zone", "z1")])]
        );
        assert!(rules(&[]).accessible_segments(&node).is_empty());
    }

    #[test]
    fn prune_examples() {
        assert_eq!(
            prune(vec![
                seg(&[("a", "1")]),
                seg(&[("a", "1"), ("b", "1")]),
                seg(&[("a", "1"), ("b", "2")]),
            ]),
            vec![seg(&[("a", "1")])]
        );
        assert_eq!(
            prune(vec![seg(&[("a", "1")]), seg(&[("a", "1")])]),
            vec![seg(&[("a", "1")])]
        );
        assert_eq!(
            prune(vec![seg(&[("a", "1")]), seg(&[("a", "2")])]),
            vec![seg(&[("a", "1")]), seg(&[("a", "2")])]
        );
        assert_eq!(
            prune(vec![seg(&[("a", "1"), ("b", "1")]), seg(&[])]),
            vec![seg(&[])]
        );
        assert_eq!(
            prune(vec![
                seg(&[("a", "1"), ("b", "1")]),
                seg(&[("b", "1"), ("c", "1")])
            ]),
            vec![seg(&[("a", "1"), ("b", "1")]), seg(&[("b", "1"), ("c", "1")])]
        );
        assert!(prune(Vec::new()).is_empty());
    }
}
