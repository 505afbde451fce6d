//! Decoding saved replace state never panics, and accepted state encodes to
//! a document that decodes and encodes to itself.
#![no_main]

use affinity_core::{VolumeId, decode_saved_pv, encode_saved_pv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &str)| {
    let (number, json) = input;
    let volume = VolumeId::new("pvc-1", number % 4);
    if let Ok(pv) = decode_saved_pv(json, &volume) {
        let encoded = encode_saved_pv(&pv).expect("a decoded PV encodes");
        let again = decode_saved_pv(&encoded, &volume).expect("an encoded PV decodes");
        assert_eq!(encode_saved_pv(&again).ok(), Some(encoded));
    }
});
