//! The engine's lookup tables: hash maps with a fast, non-cryptographic hasher.
//!
//! Keys are names from LINSTOR and Kubernetes, not attacker-chosen input of
//! a network service, so the engine trades SipHash's flooding resistance
//! for speed: lookups by name are a large share of each decision.

/// A `HashMap` hashing with rustc's Fx scheme.
pub(crate) type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;
