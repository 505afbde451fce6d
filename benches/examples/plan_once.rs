//! Builds the synthetic cluster of the `decide` benchmark and decides it
//! once, for instruction counting under valgrind:
//!
//! `valgrind --tool=callgrind --toggle-collect='*Planner*plan*' target/release/examples/plan_once 10000`

use std::process::ExitCode;

use affinity_benches::cluster;
use affinity_core::Planner;

fn main() -> ExitCode {
    let Some(volumes) = std::env::args().nth(1).and_then(|arg| arg.parse::<usize>().ok()) else {
        eprintln!("usage: plan_once VOLUMES");
        return ExitCode::from(2);
    };
    let fixture = cluster(volumes);
    let plan = Planner::new(&fixture.linstor, &fixture.storage_classes, &fixture.settings).plan(&fixture.pvs);
    println!("{volumes} volumes: {:?}", plan.summary());
    ExitCode::SUCCESS
}
