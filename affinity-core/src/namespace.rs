//! Guessing the property namespace under which LINSTOR nodes carry their
//! Kubernetes topology labels.

use crate::model::Properties;
use crate::names::{LEGACY_PROPERTY_NAMESPACE, TOPOLOGY_PROPERTY_NAMESPACE};

/// Property Piraeus Operator v2 sets on every node it manages.
const OPERATOR_V2_HOSTNAME_PROPERTY: &str = "Aux/topology/kubernetes.io/hostname";

/// The property namespace: `Aux/topology` when any node carries a non-empty
/// `Aux/topology/kubernetes.io/hostname` (Piraeus Operator v2), else `Aux`.
pub fn guess_property_namespace<'a, I>(node_properties: I) -> &'static str
where
    I: IntoIterator<Item = &'a Properties>,
{
    let operator_v2 = node_properties.into_iter().any(|props| {
        props
            .get(OPERATOR_V2_HOSTNAME_PROPERTY)
            .is_some_and(|value| !value.is_empty())
    });
    if operator_v2 {
        TOPOLOGY_PROPERTY_NAMESPACE
    } else {
        LEGACY_PROPERTY_NAMESPACE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::pairs as props;

    #[test]
    fn guesses_from_the_hostname_property() {
        let v2 = props(&[("Aux/topology/kubernetes.io/hostname", "n1")]);
        let empty_value = props(&[("Aux/topology/kubernetes.io/hostname", "")]);
        let legacy = props(&[("Aux/kubernetes.io/hostname", "n1"), ("Aux/topology/zone", "z")]);
        assert_eq!(guess_property_namespace([&legacy, &v2]), "Aux/topology");
        assert_eq!(guess_property_namespace([&legacy, &empty_value]), "Aux");
        assert_eq!(guess_property_namespace(std::iter::empty()), "Aux");
    }
}
