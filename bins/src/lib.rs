//! The `linstor-affinity` command line tool, as a library: loading dumps of a
//! cluster, turning them into the decision engine's model, and rendering the
//! plan.
//!
//! Each module has one job:
//! - [`dump`] reads and checks the files of a dump directory;
//! - [`convert`] turns LINSTOR and Kubernetes objects into `affinity-core`'s model;
//! - [`report`] turns a plan into the stable report that every output format shows;
//! - [`render`] prints a report as a table, JSON or YAML;
//! - [`manifests`] writes replacement PVs for review;
//! - [`duration`] parses durations such as `1m` or `90s`;
//! - [`plan`] ties them together and picks the exit status.

pub mod convert;
pub mod dump;
pub mod duration;
pub mod manifests;
pub mod plan;
pub mod render;
pub mod report;
