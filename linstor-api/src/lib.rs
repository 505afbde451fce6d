//! Async client for the LINSTOR controller REST API (v1).
