//! Helpers shared by the unit tests.

use std::collections::BTreeMap;

/// A string map from literal pairs: segments, properties or parameters.
pub(crate) fn pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
