//! The pipelines' memory allocator: mimalloc, set to keep freed memory for reuse.
//!
//! A streaming run allocates and frees its working set over and over: every epoch's windows, stashes and
//! synthetic flows are built, read by the next stages and dropped. glibc's allocator handed much of that back to
//! the kernel and took it again, so a tenth of the workers' time went to page faults; mimalloc with its default
//! purge (freed memory returned after 1 s) still spent a fifth there, in the one-second cadence of the epochs. Kept
//! for reuse (no purge), the end-to-end benchmark ran about 1.2x faster than with either (`kafka_end_to_end`,
//! side by side). The price is that the process keeps the peak of its heap: the pipeline's own bounds
//! (`--max-in-flight`, the pair-state memory budget) are what bound that peak. Setting `MIMALLOC_PURGE_DELAY`
//! (milliseconds; `-1` never) in the environment chooses otherwise and is respected.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e` of mimalloc 3, the version `Cargo.lock`
/// pins; the bindings name only some options). Checked by the test below against the option's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory for reuse from now on, unless `MIMALLOC_PURGE_DELAY` is set. Called at the start of every
/// pipeline run; cheap and idempotent.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is thread-safe in mimalloc (an atomic store), and -1 is a valid purge delay.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_option_is_the_one_set() {
        // The documented default of mimalloc 3's purge delay (ms) identifies the option; then it takes our value.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(
            before == 1000 || before == -1,
            "option {MI_OPTION_PURGE_DELAY} is not mimalloc's purge delay (value {before})"
        );
        keep_freed_memory();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            -1
        );
    }
}
