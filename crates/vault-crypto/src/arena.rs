//! The locked key arena: the only memory that ever holds key material.
//!
//! Memory comes from anonymous private mappings, each a *chunk* of
//! 64 fixed-size slots framed by two inaccessible guard pages:
//!
//! ```text
//! | guard (PROT_NONE) | slot 0 | slot 1 | … | slot 63 | guard (PROT_NONE) |
//! ```
//!
//! Every chunk is `mlock`ed (never swapped), `MADV_DONTDUMP` (left out of core
//! dumps) and `MADV_DONTFORK` (not inherited by a forked child). A slot is
//! overwritten with zeros when its value is dropped, before it returns to the
//! free list, so a free slot never holds a key. Chunks are never unmapped: a
//! daemon's key count is small and bounded, and keeping the mapping avoids a
//! window in which freed key pages could be handed to another allocation.
//!
//! Locking 64 KiB at a time fits the default `RLIMIT_MEMLOCK` (8 MiB on current
//! kernels) without `CAP_IPC_LOCK` or `mlockall`.
//!
//! Slots come from one of three [`Pool`]s, each with its own chunks and its own
//! budget ([`set_budget`]): the vault's own keys, lease sessions, and unwrapped tenant
//! keys. A pool that reaches its budget refuses further slots with
//! [`CryptoError::PoolExhausted`]; the other pools are not affected, so many tenants
//! can never take the memory sessions need, nor the other way round.
//!
//! This is the one module of the workspace in which `unsafe` is allowed.
#![allow(unsafe_code)] // the only opt-out of the workspace's unsafe ban; every block has a SAFETY note

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags};
use zeroize::Zeroize;

use crate::CryptoError;

/// Bytes in one slot: room for ring's expanded AES-256-GCM key (key schedule and
/// GHASH table) together with the raw key it came from.
pub(crate) const SLOT_SIZE: usize = 1024;
/// Alignment of every slot; covers the alignment of ring's key types.
const SLOT_ALIGN: usize = 64;
/// Slots per chunk: 64 KiB of locked memory per chunk.
const SLOTS_PER_CHUNK: usize = 64;
const CHUNK_DATA: usize = SLOT_SIZE * SLOTS_PER_CHUNK;

/// Which budget a slot counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The vault's own keys: unseal, root and system keys, shares, unseal progress.
    Vault = 0,
    /// Lease session keys.
    Sessions = 1,
    /// Unwrapped tenant keys and what is derived from them.
    Tenants = 2,
}

impl Pool {
    /// The pool's name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Vault => "the vault's own keys",
            Pool::Sessions => "lease sessions",
            Pool::Tenants => "tenant keys",
        }
    }
}

/// Free slots of one pool's chunks. A slot is identified by its address.
struct FreeList {
    slots: Vec<NonNull<u8>>,
    chunks: usize,
    locked_bytes: usize,
    /// The most chunks this pool may map (`usize::MAX`: no budget set).
    max_chunks: usize,
}

impl FreeList {
    const fn new() -> Self {
        Self {
            slots: Vec::new(),
            chunks: 0,
            locked_bytes: 0,
            max_chunks: usize::MAX,
        }
    }
}

// SAFETY: the pointers are addresses of private mappings this module owns and never
// unmaps; the free list only hands each out to one owner at a time, under the mutex.
unsafe impl Send for FreeList {}

static ARENA: Mutex<[FreeList; 3]> =
    Mutex::new([FreeList::new(), FreeList::new(), FreeList::new()]);

/// Locked bytes one chunk holds.
pub const CHUNK_BYTES: usize = CHUNK_DATA;

/// Limits `pool` to `bytes` of locked memory (rounded up to whole 64 KiB chunks, at
/// least one). Chunks already mapped stay; the budget bounds growth from here.
pub fn set_budget(pool: Pool, bytes: usize) {
    list(&mut lock_arena(), pool).max_chunks = bytes.div_ceil(CHUNK_DATA).max(1);
}

/// Statistics of the arena, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaStats {
    /// Chunks mapped so far.
    pub chunks: usize,
    /// Bytes locked in RAM (data pages of every chunk).
    pub locked_bytes: usize,
    /// Slots currently free.
    pub free_slots: usize,
}

/// Reports the arena's size and free slots, all pools together.
pub fn stats() -> ArenaStats {
    let arena = lock_arena();
    ArenaStats {
        chunks: arena.iter().map(|p| p.chunks).sum(),
        locked_bytes: arena.iter().map(|p| p.locked_bytes).sum(),
        free_slots: arena.iter().map(|p| p.slots.len()).sum(),
    }
}

/// Reports one pool's size and free slots.
pub fn pool_stats(pool: Pool) -> ArenaStats {
    let mut arena = lock_arena();
    let list = list(&mut arena, pool);
    ArenaStats {
        chunks: list.chunks,
        locked_bytes: list.locked_bytes,
        free_slots: list.slots.len(),
    }
}

/// The free list of `pool`.
fn list(arena: &mut [FreeList; 3], pool: Pool) -> &mut FreeList {
    let [vault, sessions, tenants] = arena;
    match pool {
        Pool::Vault => vault,
        Pool::Sessions => sessions,
        Pool::Tenants => tenants,
    }
}

fn lock_arena() -> std::sync::MutexGuard<'static, [FreeList; 3]> {
    // A poisoned lock only means another thread panicked while holding it; the free
    // list is a Vec of addresses that is valid after any partial update, so go on.
    ARENA
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take_slot(pool: Pool) -> Result<NonNull<u8>, CryptoError> {
    list(&mut lock_arena(), pool).take(pool)
}

impl FreeList {
    /// A free slot, mapping a new chunk if none is free and the budget allows.
    fn take(&mut self, pool: Pool) -> Result<NonNull<u8>, CryptoError> {
        if self.slots.is_empty() {
            if self.chunks >= self.max_chunks {
                return Err(CryptoError::PoolExhausted {
                    pool,
                    budget_bytes: self.max_chunks.saturating_mul(CHUNK_DATA),
                });
            }
            let base = map_chunk()?;
            self.chunks += 1;
            self.locked_bytes += CHUNK_DATA;
            // Hand out low addresses first (pop takes from the end).
            for i in (0..SLOTS_PER_CHUNK).rev() {
                // SAFETY: `base` is the start of CHUNK_DATA mapped bytes and
                // i * SLOT_SIZE < CHUNK_DATA, so the offset stays inside the mapping.
                let slot = unsafe { base.add(i * SLOT_SIZE) };
                self.slots.push(slot);
            }
        }
        self.slots.pop().ok_or(CryptoError::LockedMemory {
            operation: "allocate",
            source: rustix::io::Errno::NOMEM.into(),
        })
    }
}

fn return_slot(pool: Pool, slot: NonNull<u8>) {
    list(&mut lock_arena(), pool).slots.push(slot);
}

/// Maps, guards, locks and excludes from dumps and forks one chunk; returns the
/// address of its first data byte.
fn map_chunk() -> Result<NonNull<u8>, CryptoError> {
    let page = rustix::param::page_size();
    let data_len = CHUNK_DATA.div_ceil(page) * page;
    let total = data_len + 2 * page;
    let fail = |operation: &'static str| {
        move |errno: rustix::io::Errno| CryptoError::LockedMemory {
            operation,
            source: errno.into(),
        }
    };
    // SAFETY: a fresh anonymous private mapping at an address of the kernel's
    // choosing aliases no existing Rust object.
    let base = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            total,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .map_err(fail("mmap"))?;
    let base = base.cast::<u8>();
    // SAFETY: page < total, so `data` lies inside the mapping just created.
    let data = unsafe { base.add(page) };
    // SAFETY: `data + data_len` is the last page of the mapping (total = data_len + 2 pages).
    let tail_guard = unsafe { data.add(data_len) };
    let setup = || -> Result<(), CryptoError> {
        // SAFETY: each call covers whole pages of the mapping created above, which no
        // Rust reference points into yet; changing protection or advice on it cannot
        // invalidate any live object.
        unsafe {
            rustix::mm::mprotect(base.cast(), page, MprotectFlags::empty())
                .map_err(fail("mprotect"))?;
            rustix::mm::mprotect(tail_guard.cast(), page, MprotectFlags::empty())
                .map_err(fail("mprotect"))?;
            rustix::mm::mlock(data.cast(), data_len).map_err(fail("mlock"))?;
            rustix::mm::madvise(data.cast(), data_len, Advice::LinuxDontDump)
                .map_err(fail("madvise(MADV_DONTDUMP)"))?;
            rustix::mm::madvise(data.cast(), data_len, Advice::LinuxDontFork)
                .map_err(fail("madvise(MADV_DONTFORK)"))?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        // SAFETY: the mapping was created above and nothing refers into it yet.
        let _ = unsafe { rustix::mm::munmap(base.cast(), total) };
        return Err(e);
    }
    // mmap never returns a null mapping on success.
    NonNull::new(data).ok_or(CryptoError::LockedMemory {
        operation: "mmap",
        source: rustix::io::Errno::NOMEM.into(),
    })
}

/// A value of type `T` stored in a locked, guarded, dump-excluded slot, wiped on drop.
///
/// `T` must fit in one slot ([`SLOT_SIZE`] bytes, 64-byte alignment); this is checked
/// at compile time. `T` must not own heap memory, or that memory would live outside
/// the arena: it is used for byte arrays and ring's inline key types only.
pub(crate) struct Locked<T> {
    ptr: NonNull<T>,
    pool: Pool,
    _owns: PhantomData<T>,
}

// SAFETY: `Locked<T>` owns its `T` exclusively, like a `Box<T>`.
unsafe impl<T: Send> Send for Locked<T> {}
// SAFETY: shared access to `Locked<T>` only gives `&T`, like `Box<T>`.
unsafe impl<T: Sync> Sync for Locked<T> {}

impl<T> Locked<T> {
    /// Moves `value` into a fresh slot of the vault's own pool.
    pub(crate) fn new(value: T) -> Result<Self, CryptoError> {
        Self::new_in(Pool::Vault, value)
    }

    /// Moves `value` into a fresh slot of `pool`.
    ///
    /// The caller's copy of `value` (on the stack) is not wiped by this; call
    /// [`scrub_stack`] after constructing keys from secret bytes.
    pub(crate) fn new_in(pool: Pool, value: T) -> Result<Self, CryptoError> {
        const {
            assert!(
                size_of::<T>() <= SLOT_SIZE,
                "type does not fit in an arena slot"
            );
            assert!(
                align_of::<T>() <= SLOT_ALIGN,
                "type alignment exceeds slot alignment"
            );
        }
        let slot = take_slot(pool)?;
        let ptr = slot.cast::<T>();
        // SAFETY: the slot is SLOT_SIZE bytes, SLOT_ALIGN-aligned (chunks are page
        // aligned and SLOT_SIZE is a multiple of SLOT_ALIGN), exclusively ours until
        // returned, and T fits (checked above). Writing initialises it.
        unsafe { ptr.as_ptr().write(value) };
        Ok(Self {
            ptr,
            pool,
            _owns: PhantomData,
        })
    }
}

impl<T> Deref for Locked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `ptr` points to an initialised T owned by self for its lifetime.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Locked<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` guarantees exclusive access.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for Locked<T> {
    fn drop(&mut self) {
        let slot = self.ptr.cast::<u8>();
        // SAFETY: the T is initialised and owned by self; it is dropped exactly once,
        // here, and never used again.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: the slot is SLOT_SIZE bytes of mapped, writable memory that only we
        // own; after drop_in_place it holds no live object, so viewing it as bytes is sound.
        let bytes = unsafe { std::slice::from_raw_parts_mut(slot.as_ptr(), SLOT_SIZE) };
        // zeroize writes volatilely, so the compiler cannot elide the wipe.
        bytes.zeroize();
        return_slot(self.pool, slot);
    }
}

/// Overwrites 32 KiB of the stack below the caller's frame with zeros.
///
/// Constructing ring's key types moves them through stack temporaries, and the key
/// schedule of AES-256 begins with the raw key. Calling this after such work (and on
/// seal) overwrites those stale copies, which a memory scan would otherwise find.
pub fn scrub_stack() {
    scrub::<4096>();
}

/// Overwrites the 4 KiB of stack below the caller's frame: enough for the frames of
/// one ring AES-GCM or HMAC call, which copy a final partial block (plaintext or key
/// state) into a stack buffer. Called after every such operation, on whatever thread
/// ran it, so no copy waits for a seal on another thread to be wiped.
pub(crate) fn scrub_operation_stack() {
    scrub::<512>();
}

/// Zeroes `WORDS` words in a fresh frame below the caller's. The zeroing is a plain
/// memset (vector stores), which an assembly block then receives the address of: the
/// compiler must assume the block reads that memory, so it can neither drop the stores
/// nor move them past it. This is a guarantee of `asm!`, where `black_box` is only a
/// hint; word-by-word volatile writes, the other guaranteed way, cost twice as much.
#[inline(never)]
fn scrub<const WORDS: usize>() {
    let mut area = [0u64; WORDS];
    // SAFETY: the block is empty: it reads, writes and jumps nowhere, and touches no
    // register but the input; it only makes `area`'s zeroes observable.
    unsafe {
        std::arch::asm!(
            "/* {0} */",
            in(reg) area.as_mut_ptr(),
            options(nostack, preserves_flags)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: u8 = 0xa5;

    /// Leaves 2 KiB of canary bytes in a frame that then returns; their address.
    #[inline(never)]
    fn leave_canary() -> usize {
        let mut area = [CANARY; 2048];
        std::hint::black_box(&mut area);
        area.as_ptr() as usize
    }

    /// How many bytes of the deepest KiB of the 2 KiB at `addr` (dead stack, below the
    /// caller) still hold the canary. Only the deepest: the frames of this reader and
    /// of the calls before it lie in the upper part, and the pointers they hold
    /// (randomised by ASLR) have a byte equal to the canary now and then.
    #[inline(never)]
    fn canaries_left(addr: usize) -> usize {
        let mut left = 0;
        for i in 0..1024 {
            // SAFETY: test only. The bytes are stack this thread mapped and used a
            // moment ago; nothing else writes them, and they are only read.
            if unsafe { std::ptr::read_volatile((addr + i) as *const u8) } == CANARY {
                left += 1;
            }
        }
        left
    }

    #[test]
    fn a_scrub_wipes_what_an_operation_left_below_the_callers_frame() {
        let addr = leave_canary();
        // Without a scrub the bytes stay.
        assert!(canaries_left(addr) > 1000, "the test must be able to fail");
        let addr = leave_canary();
        scrub_operation_stack();
        assert_eq!(canaries_left(addr), 0);
    }

    fn page_flags_of(addr: usize) -> Option<(String, String)> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut current: Option<(usize, usize)> = None;
        let mut locked = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                current = Some((lo, hi));
                locked = None;
                continue;
            }
            let inside = current.is_some_and(|(lo, hi)| lo <= addr && addr < hi);
            if !inside {
                continue;
            }
            if let Some(v) = line.strip_prefix("Locked:") {
                locked = Some(v.trim().to_string());
            }
            if let Some(v) = line.strip_prefix("VmFlags:") {
                return Some((locked.clone().unwrap_or_default(), v.trim().to_string()));
            }
        }
        None
    }

    #[test]
    fn slots_are_locked_and_excluded_from_dumps_and_forks() {
        let key = Locked::new([7u8; 32]).unwrap();
        let addr = key.as_ptr() as usize;
        let (locked, flags) = page_flags_of(addr).expect("slot is in a mapping");
        assert_ne!(locked, "0 kB", "arena pages must be locked");
        let flags: Vec<&str> = flags.split_whitespace().collect();
        for flag in ["lo", "dd", "dc"] {
            assert!(flags.contains(&flag), "missing VmFlag {flag}: {flags:?}");
        }
    }

    #[test]
    fn drop_wipes_the_slot_before_reuse() {
        let key = Locked::new([0xA5u8; 32]).unwrap();
        let ptr = key.as_ptr();
        drop(key);
        // Take slots until we are handed the same one back (other tests run in
        // parallel and may hold it for a while); it must hold zeros, not our pattern.
        // Storing a zero-sized value writes nothing, so the slot is read as it was left.
        let mut held = Vec::new();
        for _ in 0..(SLOTS_PER_CHUNK * 64) {
            let slot = Locked::new(Untouched).unwrap();
            if slot.ptr.cast::<u8>().as_ptr().cast_const() == ptr {
                // SAFETY: the slot is SLOT_SIZE mapped bytes owned by `slot`.
                let bytes = unsafe { std::slice::from_raw_parts(ptr, 32) };
                assert!(
                    bytes.iter().all(|b| *b == 0),
                    "slot was not wiped: {bytes:?}"
                );
                return;
            }
            held.push(slot);
        }
        panic!("the freed slot was never handed out again");
    }

    /// A zero-sized value: storing it writes nothing into the slot.
    struct Untouched;

    #[test]
    fn a_pool_at_its_budget_refuses() {
        // A free list of its own, so other tests' pools are not touched.
        let mut list = FreeList::new();
        list.max_chunks = 1;
        let mut taken = 0;
        let refused = loop {
            match list.take(Pool::Tenants) {
                Ok(_) => taken += 1,
                Err(e) => break e,
            }
            assert!(taken <= SLOTS_PER_CHUNK, "the budget did not hold");
        };
        assert_eq!(taken, SLOTS_PER_CHUNK);
        assert!(
            matches!(
                refused,
                CryptoError::PoolExhausted {
                    pool: Pool::Tenants,
                    budget_bytes: CHUNK_DATA
                }
            ),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("tenant keys"), "{refused}");
        assert_eq!(list.chunks, 1);
        // Pools are separate: another pool is unaffected by this one being full.
        Locked::new_in(Pool::Sessions, [4u8; 32]).unwrap();
    }

    #[test]
    fn values_do_not_overlap() {
        let a = Locked::new([1u8; SLOT_SIZE]).unwrap();
        let b = Locked::new([2u8; SLOT_SIZE]).unwrap();
        assert!(a.iter().all(|x| *x == 1));
        assert!(b.iter().all(|x| *x == 2));
    }
}
