//! Policy parsing never panics; every parsed policy prints to text that
//! parses back to it.
#![no_main]

use affinity_core::RemoteAccessPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(policy) = text.parse::<RemoteAccessPolicy>() {
        let printed = policy.to_string();
        assert_eq!(
            printed.parse::<RemoteAccessPolicy>().ok(),
            Some(policy),
            "{printed:?}"
        );
    }
});
