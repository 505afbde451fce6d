#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The controller's memory calls: freed heap memory really leaves the process.

use linstor_affinity_cli::memory::{release_free_memory, use_one_arena};

/// Resident anonymous memory of this process, in KiB.
fn resident_anonymous_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_memory_between_live_allocations_is_returned() {
    use_one_arena();
    // 64 MiB in small blocks, as decoded JSON leaves it; every 64th block stays alive, so the
    // freed space lies between live blocks and cannot simply be cut off the top of the heap.
    let mut blocks: Vec<Vec<u8>> = (0..131_072).map(|i| vec![(i % 251) as u8; 512]).collect();
    let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
    drop(blocks);
    let before = resident_anonymous_kib();
    release_free_memory();
    let after = resident_anonymous_kib();
    assert!(
        before.saturating_sub(after) > 32 * 1024,
        "resident anonymous memory went from {before} KiB to {after} KiB"
    );
    // The kept blocks are intact.
    assert!(
        kept.iter()
            .enumerate()
            .all(|(i, block)| block.len() == 512 && block[0] == ((i * 64) % 251) as u8)
    );
}
