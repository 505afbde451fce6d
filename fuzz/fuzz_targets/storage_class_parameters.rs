//! StorageClass parameter parsing never panics on any map of parameters.
#![no_main]

use std::collections::BTreeMap;

use affinity_core::policy_from_parameters;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|parameters: BTreeMap<String, String>| {
    let _ = policy_from_parameters(&parameters);
});
