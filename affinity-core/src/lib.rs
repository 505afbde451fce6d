//! Pure affinity engine.
