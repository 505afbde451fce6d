//! PV node affinity: building the desired one and comparing it with a PV's.

use std::borrow::Borrow;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, VolumeNodeAffinity,
};

use crate::topology::{Accessibility, Segments};

/// Operator of every expression the engine writes and accepts.
const OPERATOR_IN: &str = "In";

/// The node affinity a PV with this accessibility should carry: `None` when
/// accessible from everywhere, otherwise one required term per topology, each
/// with one `In` expression of one value per key, sorted by key.
pub fn desired_node_affinity(accessibility: &Accessibility) -> Option<VolumeNodeAffinity> {
    match accessibility {
        Accessibility::Everywhere => None,
        Accessibility::Restricted(topologies) => Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: topologies.iter().map(term_of).collect(),
            }),
        }),
    }
}

fn term_of(topology: &Segments) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(
            topology
                .iter()
                .map(|(key, value)| NodeSelectorRequirement {
                    key: key.clone(),
                    operator: OPERATOR_IN.to_owned(),
                    values: Some(vec![value.clone()]),
                })
                .collect(),
        ),
        match_fields: None,
    }
}

/// Whether a PV's current node affinity already expresses exactly these
/// topologies.
///
/// No affinity (or no `required` part) matches only an empty list. Otherwise
/// every topology needs an equal term and every term an equal topology; see
/// [`term_matches`].
pub fn affinity_matches<T: Borrow<Segments>>(current: Option<&VolumeNodeAffinity>, topologies: &[T]) -> bool {
    let Some(required) = current.and_then(|affinity| affinity.required.as_ref()) else {
        return topologies.is_empty();
    };
    let terms = &required.node_selector_terms;
    // Affinities this engine writes list their terms in topology order:
    // pairwise equality settles them in one pass.
    let in_order = terms.len() == topologies.len()
        && terms
            .iter()
            .zip(topologies)
            .all(|(term, topology)| term_matches(term, topology.borrow()));
    in_order
        || topologies
            .iter()
            .all(|topology| terms.iter().any(|term| term_matches(term, topology.borrow())))
            && terms.iter().all(|term| {
                topologies
                    .iter()
                    .any(|topology| term_matches(term, topology.borrow()))
            })
}

/// A term equals a topology when it has no `matchFields`, exactly as many
/// expressions as the topology has pairs, and every expression is `In` with
/// exactly one value, under a key the topology maps to that value.
pub fn term_matches(term: &NodeSelectorTerm, topology: &Segments) -> bool {
    if term
        .match_fields
        .as_ref()
        .is_some_and(|fields| !fields.is_empty())
    {
        return false;
    }
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    expressions.len() == topology.len()
        && expressions.iter().all(|expression| {
            expression.operator == OPERATOR_IN
                && matches!(expression.values.as_deref(), Some([value])
                    if topology.get(&expression.key) == Some(value))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::pairs as seg;
    use k8s_openapi::api::core::v1::NodeSelectorRequirement as Req;

    fn req(key: &str, operator: &str, values: &[&str]) -> Req {
        Req {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn term(expressions: Vec<Req>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(expressions),
            match_fields: None,
        }
    }

    fn affinity(terms: Vec<NodeSelectorTerm>) -> VolumeNodeAffinity {
        VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: terms,
            }),
        }
    }

    #[test]
    fn builds_sorted_terms() {
        let access = Accessibility::Restricted(vec![
            seg(&[("zone", "a"), ("region", "r")]),
            seg(&[("zone", "b")]),
        ]);
        assert_eq!(
            desired_node_affinity(&access),
            Some(affinity(vec![
                term(vec![req("region", "In", &["r"]), req("zone", "In", &["a"])]),
                term(vec![req("zone", "In", &["b"])]),
            ]))
        );
        assert_eq!(desired_node_affinity(&Accessibility::Everywhere), None);
    }

    #[test]
    fn missing_affinity_matches_only_no_topology() {
        let one = [seg(&[("zone", "a")])];
        assert!(affinity_matches::<Segments>(None, &[]));
        assert!(!affinity_matches(None, &one));
        let no_required = VolumeNodeAffinity { required: None };
        assert!(affinity_matches::<Segments>(Some(&no_required), &[]));
        assert!(!affinity_matches(Some(&no_required), &one));
        // A required affinity never matches "everywhere" unless it has no term.
        let restricted = affinity(vec![term(vec![req("zone", "In", &["a"])])]);
        assert!(!affinity_matches::<Segments>(Some(&restricted), &[]));
        assert!(affinity_matches::<Segments>(Some(&affinity(vec![])), &[]));
    }

    #[test]
    fn comparison_ignores_order_and_needs_both_directions() {
        let topologies = [seg(&[("zone", "a")]), seg(&[("zone", "b"), ("rack", "1")])];
        let same = affinity(vec![
            term(vec![req("zone", "In", &["b"]), req("rack", "In", &["1"])]),
            term(vec![req("zone", "In", &["a"])]),
        ]);
        assert!(affinity_matches(Some(&same), &topologies));
        let missing_term = affinity(vec![term(vec![req("zone", "In", &["a"])])]);
        assert!(!affinity_matches(Some(&missing_term), &topologies));
        let extra_term = affinity(vec![
            term(vec![req("zone", "In", &["a"])]),
            term(vec![req("zone", "In", &["b"]), req("rack", "In", &["1"])]),
            term(vec![req("zone", "In", &["c"])]),
        ]);
        assert!(!affinity_matches(Some(&extra_term), &topologies));
        let duplicated_term = affinity(vec![
            term(vec![req("zone", "In", &["a"])]),
            term(vec![req("zone", "In", &["a"])]),
        ]);
        assert!(affinity_matches(Some(&duplicated_term), &[seg(&[("zone", "a")])]));
    }

    #[test]
    fn term_equality_rules() {
        let topology = seg(&[("zone", "a"), ("rack", "1")]);
        let good = term(vec![req("zone", "In", &["a"]), req("rack", "In", &["1"])]);
        assert!(term_matches(&good, &topology));
        let cases = [
            term(vec![req("zone", "In", &["a"])]),
            term(vec![req("zone", "In", &["a"]), req("rack", "NotIn", &["1"])]),
            term(vec![req("zone", "In", &["a"]), req("rack", "In", &["1", "2"])]),
            term(vec![req("zone", "In", &["a"]), req("rack", "In", &[])]),
            term(vec![req("zone", "In", &["a"]), req("rack", "In", &["2"])]),
            term(vec![req("zone", "In", &["a"]), req("row", "In", &["1"])]),
            term(vec![
                req("zone", "In", &["a"]),
                req("rack", "In", &["1"]),
                req("row", "In", &["1"]),
            ]),
        ];
        for bad in &cases {
            assert!(!term_matches(bad, &topology), "{bad:?}");
        }
        let mut with_fields = good.clone();
        with_fields.match_fields = Some(vec![req("metadata.name", "In", &["n1"])]);
        assert!(!term_matches(&with_fields, &topology));
        let mut empty_fields = good.clone();
        empty_fields.match_fields = Some(vec![]);
        assert!(term_matches(&empty_fields, &topology));
        let mut no_values = good;
        no_values.match_expressions = Some(vec![
            Req {
                values: None,
                ..req("zone", "In", &[])
            },
            req("rack", "In", &["1"]),
        ]);
        assert!(!term_matches(&no_values, &topology));
    }

    #[test]
    fn desired_affinity_matches_itself() {
        let access = Accessibility::Restricted(vec![seg(&[("a", "1"), ("b", "2")]), seg(&[("c", "3")])]);
        let desired = desired_node_affinity(&access);
        assert!(affinity_matches(desired.as_ref(), access.topologies()));
    }
}
