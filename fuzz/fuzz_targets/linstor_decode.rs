//! Decoding arbitrary bytes as any LINSTOR answer never panics, and whatever decodes encodes
//! to JSON that decodes to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linstor_api::client::{decode_json, decode_reports};
use linstor_api::models::{
    ApiCallRc, ControllerVersion, Node, NodeEvent, Resource, ResourceDefinition, ResourceWithVolumes,
    VolumeDefinition,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(value) = decode_json::<T>("fuzz", body) {
        let encoded = serde_json::to_vec(&value).expect("a decoded answer encodes");
        let again = decode_json::<T>("fuzz", &encoded).expect("an encoded answer decodes");
        assert_eq!(value, again);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 10 {
        0 => round_trip::<Vec<Node>>(body),
        1 => round_trip::<Vec<ResourceWithVolumes>>(body),
        2 => round_trip::<Vec<Resource>>(body),
        3 => round_trip::<Vec<ResourceDefinition>>(body),
        4 => round_trip::<Vec<VolumeDefinition>>(body),
        5 => round_trip::<Vec<ApiCallRc>>(body),
        6 => round_trip::<ControllerVersion>(body),
        7 => {
            let _ = decode_reports(body);
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let (event, data) = text.split_once('\n').unwrap_or(("node-modified", &text));
            if let Ok(ev) = NodeEvent::decode(event, data) {
                let _ = ev.data_json();
                assert_eq!(ev.name(), event);
            }
        }
    }
});
