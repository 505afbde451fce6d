//! Volume handle parsing never panics, and what parses prints back to an
//! equal id.
#![no_main]

use affinity_core::VolumeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|handle: &str| {
    if let Ok(id) = handle.parse::<VolumeId>() {
        assert!(!id.resource_definition.is_empty());
        assert_eq!(id.to_string().parse::<VolumeId>().ok(), Some(id));
    }
});
