//! Random 96-bit AES-GCM nonces from the operating system's RNG, fetched in batches.
//!
//! A `getrandom` system call costs ~0.5 µs on the reference machine, more than the whole
//! encryption of a short value, so each thread fetches 32 nonces (384 bytes) per call and hands
//! each out exactly once (the slot is wiped when taken). Every nonce is still fresh OS
//! randomness used for one value only. The buffer is per thread, so threads never share one;
//! the only way to duplicate it would be `fork()` without `exec`, which pgcloak never does
//! (child processes such as `postgres` are spawned with fork+exec).

use std::cell::RefCell;

use super::envelope::NONCE_LEN;
use super::CryptoError;

const BATCH: usize = 32;

struct Pool {
    bytes: [u8; BATCH * NONCE_LEN],
    /// Index of the next unused nonce; `BATCH` when the pool is empty.
    next: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; BATCH * NONCE_LEN], next: BATCH }) };
}

/// A fresh random nonce. Fails only if the operating system's RNG fails.
pub(crate) fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let pooled = POOL.try_with(|cell| {
        let mut pool = cell.try_borrow_mut().ok()?;
        if pool.next >= BATCH {
            getrandom::fill(&mut pool.bytes).ok()?;
            pool.next = 0;
        }
        let start = pool.next * NONCE_LEN;
        let slot = pool.bytes.get_mut(start..start + NONCE_LEN)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(slot);
        slot.fill(0);
        pool.next += 1;
        Some(nonce)
    });
    match pooled {
        Ok(Some(nonce)) => Ok(nonce),
        // Thread-local storage torn down, or the RNG failed: one direct attempt.
        _ => {
            let mut nonce = [0u8; NONCE_LEN];
            getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
            Ok(nonce)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_distinct_across_batches_and_threads() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..BATCH * 3 + 1 {
            assert!(seen.insert(random_nonce().unwrap()));
        }
        let other: Vec<_> =
            std::thread::spawn(|| (0..BATCH).map(|_| random_nonce().unwrap()).collect())
                .join()
                .unwrap();
        for nonce in other {
            assert!(seen.insert(nonce));
        }
    }
}
