//! Keeping the controller's resident memory close to what it keeps.
//!
//! A controller pass decodes the LINSTOR answers (megabytes for thousands of volumes) and frees
//! them when it ends. glibc's allocator gives every thread that allocates concurrently an arena
//! of its own, and keeps freed pages that lie between live allocations mapped until it is asked
//! to give them back; without the two calls here the resident memory would stay at the peak of
//! the last pass, once per arena.

/// Makes every thread allocate from one arena. The controller's threads mostly wait for the
/// network, so they seldom contend for it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn use_one_arena() {
    // SAFETY: mallopt takes plain integers and has no precondition; M_ARENA_MAX only bounds how
    // many arenas later allocations may create.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the allocator's free pages back to the kernel. The cost is mostly paid by the next pass,
/// whose allocations fault those pages in again; the scale benchmark's CPU figures include it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer and has no precondition; it only hands pages that hold
    // no live allocation back to the kernel, and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread allocate from one arena: nothing to do with this C library.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn use_one_arena() {}

/// Gives the allocator's free pages back to the kernel: nothing to do with this C library.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
