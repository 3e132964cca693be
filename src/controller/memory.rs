//! Handing freed heap memory back to the system. glibc's allocator keeps
//! what a burst freed (the minting of thousands of keys, the startup list
//! of their Secrets) mapped for reuse, so the operator's resident size would
//! stay at its high-water mark for good; `malloc_trim` releases the free
//! pages, including those between live allocations. A hash table keeps its
//! largest size after entries leave, so the tables that grow with the keys
//! shrink themselves once mostly empty.

use std::collections::HashMap;
use std::hash::Hash;

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

/// Gives a map's table back once most of it is empty (after 10,000 keys
/// were minted, say): its entries left, its capacity did not.
pub fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 4 * map.len() + 64 {
        map.shrink_to_fit();
    }
}
