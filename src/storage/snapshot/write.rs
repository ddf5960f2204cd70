//! Writing a snapshot from a consistent view of the store.

use std::io::Write;

use ring::digest::{Context, SHA256};

use super::{END_TAG, Header, MAX_KEY, MAX_VALUE, TABLE_TAG, TRAILER_LEN, TRAILER_TAG, WriteError};
use crate::storage::{StoreError, StoreView, TableInfo};

/// What the seal record in the snapshot needs at restore: which root-key version new
/// keys are wrapped under, and which share set opens it. Not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealFacts {
    /// The root-key version new keys are wrapped under.
    pub root_version: u32,
    /// The share-set generation: custodians unseal a restored node with shares of it.
    pub generation: u32,
    /// Shares needed.
    pub threshold: u8,
    /// Shares in the set.
    pub shares: u8,
}

/// A snapshot ready to be written: the view it is read from and its header.
pub struct Snapshot {
    view: Box<dyn StoreView>,
    header: Header,
    tables: Vec<TableInfo>,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Entries written, over every table.
    pub records: u64,
    /// Bytes of the whole snapshot, trailer included.
    pub bytes: u64,
    /// SHA-256 of every byte before the trailer.
    pub digest: [u8; 32],
}

impl Written {
    /// The trailer that ends the snapshot: its tag and the digest.
    pub fn trailer(&self) -> [u8; TRAILER_LEN] {
        let mut trailer = [0u8; TRAILER_LEN];
        let (tag, digest) = trailer.split_at_mut(TRAILER_TAG.len());
        tag.copy_from_slice(TRAILER_TAG);
        digest.copy_from_slice(&self.digest);
        trailer
    }
}

impl Snapshot {
    /// A snapshot of `view`, taken at `created_unix`, whose seal record says `seal`.
    /// Counts the tables and their entries now, in the view.
    pub fn new(
        view: Box<dyn StoreView>,
        created_unix: u64,
        seal: SealFacts,
    ) -> Result<Self, StoreError> {
        let tables = view.tables()?;
        let header = Header {
            vault_id: view.vault_id(),
            created_unix,
            seal,
            tables: u16::try_from(tables.len())
                .map_err(|_| StoreError::Snapshot("too many tables"))?,
            records: tables.iter().map(|t| t.entries).sum(),
        };
        Ok(Self {
            view,
            header,
            tables,
        })
    }

    /// What the header will say.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Writes the header and every table to `out`, flushes it, and returns what it
    /// wrote, with the digest the trailer must carry. The trailer itself is not
    /// written: the caller sends it last ([`Written::trailer`]), once it has recorded
    /// the snapshot, so a snapshot nobody could audit never becomes whole. The view is
    /// released when this returns.
    pub fn write_to(self, out: impl Write) -> Result<Written, WriteError> {
        let mut out = Hashing::new(out);
        out.put(&self.header.encode())?;
        let mut records = 0u64;
        for table in &self.tables {
            let name = table.name.as_bytes();
            let name_len = u8::try_from(name.len())
                .map_err(|_| StoreError::Snapshot("a table name is too long"))?;
            out.put(&[TABLE_TAG, name_len])?;
            out.put(name)?;
            out.put(&table.entries.to_be_bytes())?;
            let mut entries = 0u64;
            self.view.visit(table.name, &mut |key, value| {
                let key_len = length(key.len(), MAX_KEY)?;
                let value_len = length(value.len(), MAX_VALUE)?;
                out.put(&key_len.to_be_bytes())?;
                out.put(key)?;
                out.put(&value_len.to_be_bytes())?;
                out.put(value)?;
                entries += 1;
                Ok(())
            })?;
            if entries != table.entries {
                // One read transaction cannot change; a mismatch is an engine bug.
                return Err(
                    StoreError::Snapshot("a table's count changed while it was read").into(),
                );
            }
            records += entries;
        }
        out.put(&[END_TAG])?;
        out.inner.flush().map_err(WriteError::Sink)?;
        Ok(Written {
            records,
            bytes: out.bytes + TRAILER_LEN as u64,
            digest: out.finish(),
        })
    }

    /// Writes the whole snapshot, trailer included, to `out`.
    pub fn write_all(self, mut out: impl Write) -> Result<Written, WriteError> {
        let written = self.write_to(&mut out)?;
        out.write_all(&written.trailer())
            .and_then(|()| out.flush())
            .map_err(WriteError::Sink)?;
        Ok(written)
    }
}

/// `len` as a length field, if it is within `max`.
fn length(len: usize, max: u32) -> Result<u32, WriteError> {
    u32::try_from(len)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| StoreError::Snapshot("a record is larger than a snapshot may carry").into())
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    context: Context,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            context: Context::new(&SHA256),
            bytes: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.inner.write_all(bytes).map_err(WriteError::Sink)?;
        self.context.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn finish(self) -> [u8; 32] {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(self.context.finish().as_ref());
        digest
    }
}
