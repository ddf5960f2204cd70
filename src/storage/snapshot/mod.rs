//! Snapshots: the whole store as one self-checking file, for backup and disaster
//! recovery.
//!
//! A snapshot is read from one [`StoreView`](super::StoreView) (one read transaction: a consistent view
//! while writes go on) and holds every table's entries exactly as the data file holds
//! them — ciphertext envelopes and non-secret metadata, never a key or a value in
//! clear. It is written by the daemon ([`Snapshot::write_to`], streamed by the
//! `Snapshot` RPC), checked by [`verify`] and put back into a new data file by
//! [`restore()`], offline (`vaultd snapshot verify|restore`, in the binary).
//!
//! # Format, version 1
//!
//! Every integer is unsigned and big-endian.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "VAULTSNP"
//!      8     2  format version: 1
//!     10     2  header length H: 44 in version 1 (the bytes from offset 12 to 56)
//!     12    16  vault id (drawn when the vault's data file was created)
//!     28     8  created: when the view was taken, Unix seconds
//!     36     4  root-key version new keys are wrapped under (from the seal record)
//!     40     4  share-set generation of the seal record
//!     44     1  threshold: shares needed to unseal
//!     45     1  shares in the set
//!     46     2  tables T: 1 or 2
//!     48     8  records R: entries over every table
//!     56        T tables, names strictly ascending, each:
//!                 1  tag 0x54 'T'
//!                 1  name length N, 1..=64
//!                 N  name: "vaultd_meta" or "vaultd_records"
//!                 8  entries E in this table
//!                 E entries, keys strictly ascending bytewise, each:
//!                     4  key length K, 0..=65,536;   K  key
//!                     4  value length V, 0..=64 MiB; V  value
//!               1  tag 0x45 'E': end of the tables
//!               8  trailer tag "SHA-256:"
//!              32  SHA-256 of every byte before the trailer tag
//!                  and nothing after it
//! ```
//!
//! The checksum detects damage (a bad disk, a truncated copy, a flipped bit) before
//! anything is restored. It is not a MAC: anyone who can write the file can recompute
//! it, so it says nothing about who wrote the snapshot. What protects the contents is
//! what protects the data file: every value is an envelope under a key that only the
//! unseal quorum opens, bound by its associated data to its tenant, name and version.
//!
//! Readers treat the file as hostile input: every length is checked against its bound
//! before anything is allocated, and memory grows only as bytes actually arrive.

mod read;
mod restore;
mod write;

use std::io;

pub use read::{Item, Reader, Verified, verify};
pub use restore::{Previous, RestoreError, RestoreOptions, Restored, restore};
pub use write::{SealFacts, Snapshot, Written};

use super::{StoreError, VaultId};

/// The first eight bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"VAULTSNP";

/// The format version this vaultd writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// The header length of version 1: the bytes after the length field, up to the tables.
pub const HEADER_LEN: u16 = 44;

/// Marks the start of a table.
pub const TABLE_TAG: u8 = b'T';

/// Marks the end of the tables.
pub const END_TAG: u8 = b'E';

/// Starts the trailer; the SHA-256 follows.
pub const TRAILER_TAG: &[u8; 8] = b"SHA-256:";

/// The trailer: its tag and the 32-byte SHA-256.
pub const TRAILER_LEN: usize = 40;

/// The longest table name.
pub const MAX_NAME: usize = 64;

/// The longest key a snapshot carries (vaultd's keys are validated names, far shorter).
pub const MAX_KEY: u32 = 64 * 1024;

/// The largest value a snapshot carries (a record is at most a few request-sized
/// envelopes; requests are bounded at 1 MiB).
pub const MAX_VALUE: u32 = 64 * 1024 * 1024;

/// The table of the vault's own facts (its identity).
pub const META_TABLE: &str = "vaultd_meta";

/// The table of the records.
pub const RECORDS_TABLE: &str = "vaultd_records";

/// Every table a version 1 snapshot may hold, in ascending order.
pub const TABLES: [&str; 2] = [META_TABLE, RECORDS_TABLE];

/// What a snapshot's header says. Nothing secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The vault the records belong to.
    pub vault_id: VaultId,
    /// When the view was taken, Unix seconds.
    pub created_unix: u64,
    /// The seal record's facts: which root-key version and share set the data needs.
    pub seal: SealFacts,
    /// Tables that follow.
    pub tables: u16,
    /// Entries over every table.
    pub records: u64,
}

impl Header {
    /// The header's bytes: magic, version, length and fields.
    fn encode(&self) -> [u8; 12 + HEADER_LEN as usize] {
        let mut out = [0u8; 12 + HEADER_LEN as usize];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(slot) = out.get_mut(at..at + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        put(MAGIC);
        put(&FORMAT_VERSION.to_be_bytes());
        put(&HEADER_LEN.to_be_bytes());
        put(self.vault_id.as_bytes());
        put(&self.created_unix.to_be_bytes());
        put(&self.seal.root_version.to_be_bytes());
        put(&self.seal.generation.to_be_bytes());
        put(&[self.seal.threshold, self.seal.shares]);
        put(&self.tables.to_be_bytes());
        put(&self.records.to_be_bytes());
        out
    }

    /// Parses the header fields that follow the length (`HEADER_LEN` bytes).
    fn decode(fields: &[u8; HEADER_LEN as usize]) -> Result<Self, SnapshotError> {
        let malformed = SnapshotError::Malformed;
        let (id, rest) = fields
            .split_first_chunk::<16>()
            .ok_or(malformed("short header"))?;
        let (created, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(malformed("short header"))?;
        let (root, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(malformed("short header"))?;
        let (generation, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(malformed("short header"))?;
        let (&[threshold, shares], rest) = rest
            .split_first_chunk::<2>()
            .ok_or(malformed("short header"))?;
        let (tables, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(malformed("short header"))?;
        let (records, _) = rest
            .split_first_chunk::<8>()
            .ok_or(malformed("short header"))?;
        let header = Self {
            vault_id: VaultId::from_bytes(id).ok_or(malformed("short header"))?,
            created_unix: u64::from_be_bytes(*created),
            seal: SealFacts {
                root_version: u32::from_be_bytes(*root),
                generation: u32::from_be_bytes(*generation),
                threshold,
                shares,
            },
            tables: u16::from_be_bytes(*tables),
            records: u64::from_be_bytes(*records),
        };
        if header.seal.threshold == 0 || header.seal.shares < header.seal.threshold {
            return Err(malformed("the header's share set is impossible"));
        }
        if header.seal.root_version == 0 || header.seal.generation == 0 {
            return Err(malformed(
                "the header names root-key version or generation 0",
            ));
        }
        if header.tables == 0 || usize::from(header.tables) > TABLES.len() {
            return Err(malformed("the header's table count is out of range"));
        }
        Ok(header)
    }
}

/// Why a file is not a snapshot this vaultd can restore. Says what is wrong, never
/// anything the file holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file could not be read.
    #[error("cannot read the snapshot: {0}")]
    Read(#[source] io::Error),
    /// The file does not begin with the magic.
    #[error("this is not a vaultd snapshot (it does not begin with \"VAULTSNP\")")]
    NotASnapshot,
    /// The format version is not one this vaultd reads.
    #[error(
        "the snapshot is in format version {0}, which this vaultd does not read (it reads \
         version 1): restore it with a vaultd at least as new as the one that took it"
    )]
    Version(u16),
    /// The file ends before the snapshot does.
    #[error("the snapshot ends early: it was cut short (an interrupted copy or transfer)")]
    Truncated,
    /// A field is out of its bounds or out of order.
    #[error("the snapshot is damaged: {0}")]
    Malformed(&'static str),
    /// The SHA-256 of the contents is not the one in the trailer.
    #[error(
        "the snapshot's SHA-256 checksum does not match its contents: the file was damaged \
         or altered after it was taken"
    )]
    Checksum,
}

impl From<io::Error> for SnapshotError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
            _ => SnapshotError::Read(e),
        }
    }
}

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Reading the store failed, or it holds what the format cannot carry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The destination refused bytes: the reader went away, the daemon is stopping, or
    /// a disk is full.
    #[error("the snapshot's destination failed: {0}")]
    Sink(#[source] io::Error),
}

#[cfg(test)]
mod tests;
