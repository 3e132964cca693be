//! Handing freed heap memory back to the system. glibc's allocator keeps
//! what a burst freed (the minting of thousands of keys, the startup list
//! of their Secrets) mapped for reuse, so the operator's resident size would
//! stay at its high-water mark for good; `malloc_trim` releases the free
//! pages, including those between live allocations.

/// Releases the allocator's free pages (glibc; elsewhere nothing to do).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its locks; it
    // touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
