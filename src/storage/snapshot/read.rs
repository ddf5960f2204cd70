//! Reading a snapshot: a pull parser that checks every field against its bound before
//! it allocates, and the SHA-256 at the end.

use std::io::Read;

use ring::digest::{Context, SHA256};

use super::{
    END_TAG, FORMAT_VERSION, HEADER_LEN, Header, MAGIC, MAX_KEY, MAX_NAME, MAX_VALUE,
    SnapshotError, TABLE_TAG, TABLES, TRAILER_LEN, TRAILER_TAG,
};

/// Bytes read into a value at a time: memory grows only as bytes arrive, so a length
/// field that lies costs at most this much before the file runs out.
const STEP: usize = 64 * 1024;

/// One item of a snapshot, in file order.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A table begins; its entries follow.
    Table {
        /// One of [`TABLES`].
        name: &'static str,
        /// How many entries follow.
        entries: u64,
    },
    /// An entry of the current table.
    Entry {
        /// Its key.
        key: Vec<u8>,
        /// Its value: ciphertext or non-secret metadata, as the store held it.
        value: Vec<u8>,
    },
}

/// A snapshot whose every byte was read and whose checksum matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// What its header says.
    pub header: Header,
    /// Its SHA-256 (of every byte before the trailer).
    pub digest: [u8; 32],
    /// Its length in bytes.
    pub bytes: u64,
}

/// Reads a snapshot item by item: [`Reader::open`] checks the header, [`Reader::next_item`]
/// yields tables and entries until the end tag, [`Reader::finish`] checks the trailer.
/// Nothing it yields is trustworthy until `finish` succeeds.
pub struct Reader<R> {
    input: Hashing<R>,
    header: Header,
    /// Tables still to come.
    tables_left: u16,
    /// The table being read and the entries it still owes.
    table: Option<&'static str>,
    entries_left: u64,
    /// The last table's name and the last key of the current table, for ordering.
    last_table: Option<&'static str>,
    last_key: Option<Vec<u8>>,
    /// Entries read over every table.
    records: u64,
    ended: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn open(input: R) -> Result<Self, SnapshotError> {
        let mut input = Hashing::new(input);
        let mut magic = [0u8; 8];
        input.read(&mut magic).map_err(|e| match e {
            SnapshotError::Truncated => SnapshotError::NotASnapshot,
            other => other,
        })?;
        if &magic != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let version = u16::from_be_bytes(input.array()?);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        if u16::from_be_bytes(input.array()?) != HEADER_LEN {
            return Err(SnapshotError::Malformed(
                "the header length is not that of format version 1",
            ));
        }
        let header = Header::decode(&input.array()?)?;
        Ok(Self {
            input,
            tables_left: header.tables,
            header,
            table: None,
            entries_left: 0,
            last_table: None,
            last_key: None,
            records: 0,
            ended: false,
        })
    }

    /// What the header says (not yet vouched for by the checksum).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next table or entry; `None` once the end tag was read.
    pub fn next_item(&mut self) -> Result<Option<Item>, SnapshotError> {
        let malformed = SnapshotError::Malformed;
        if self.ended {
            return Ok(None);
        }
        if self.table.is_some() && self.entries_left > 0 {
            return self.entry().map(Some);
        }
        self.table = None;
        let [tag] = self.input.array()?;
        match tag {
            TABLE_TAG if self.tables_left > 0 => self.table_start().map(Some),
            TABLE_TAG => Err(malformed("more tables than the header says")),
            END_TAG if self.tables_left > 0 => Err(malformed("fewer tables than the header says")),
            END_TAG if self.records != self.header.records => {
                Err(malformed("fewer records than the header says"))
            }
            END_TAG => {
                self.ended = true;
                Ok(None)
            }
            _ => Err(malformed("an unknown tag where a table or the end belongs")),
        }
    }

    fn table_start(&mut self) -> Result<Item, SnapshotError> {
        let malformed = SnapshotError::Malformed;
        let [len] = self.input.array()?;
        let len = usize::from(len);
        if len == 0 || len > MAX_NAME {
            return Err(malformed("a table name's length is out of range"));
        }
        let name = self.input.vec(len)?;
        let name = TABLES
            .iter()
            .find(|known| known.as_bytes() == name.as_slice())
            .copied()
            .ok_or(malformed("it holds a table this vaultd does not know"))?;
        if self.last_table.is_some_and(|last| last >= name) {
            return Err(malformed("its tables are out of order or repeated"));
        }
        let entries = u64::from_be_bytes(self.input.array()?);
        if entries > self.header.records.saturating_sub(self.records) {
            return Err(malformed("more records than the header says"));
        }
        self.tables_left -= 1;
        self.last_table = Some(name);
        self.last_key = None;
        self.table = Some(name);
        self.entries_left = entries;
        Ok(Item::Table { name, entries })
    }

    fn entry(&mut self) -> Result<Item, SnapshotError> {
        let malformed = SnapshotError::Malformed;
        let key_len = u32::from_be_bytes(self.input.array()?);
        if key_len > MAX_KEY {
            return Err(malformed("a key is longer than the format allows"));
        }
        let key = self.input.vec(key_len as usize)?;
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(malformed(
                "the keys of a table are out of order or repeated",
            ));
        }
        let value_len = u32::from_be_bytes(self.input.array()?);
        if value_len > MAX_VALUE {
            return Err(malformed("a value is larger than the format allows"));
        }
        let value = self.input.vec(value_len as usize)?;
        self.last_key = Some(key.clone());
        self.entries_left -= 1;
        self.records += 1;
        Ok(Item::Entry { key, value })
    }

    /// Reads the trailer after the last item: the SHA-256 must match every byte before
    /// it, and nothing may follow.
    pub fn finish(mut self) -> Result<Verified, SnapshotError> {
        if !self.ended {
            return Err(SnapshotError::Malformed("it was not read to its end"));
        }
        let bytes = self.input.bytes + TRAILER_LEN as u64;
        let digest = self.input.digest();
        let mut trailer = [0u8; TRAILER_LEN];
        self.input.raw(&mut trailer)?;
        let (tag, stored) = trailer.split_at(TRAILER_TAG.len());
        if tag != TRAILER_TAG {
            return Err(SnapshotError::Malformed("the trailer is missing"));
        }
        if stored != digest {
            return Err(SnapshotError::Checksum);
        }
        let mut more = [0u8; 1];
        if self.input.raw_some(&mut more)? {
            return Err(SnapshotError::Malformed("bytes follow the trailer"));
        }
        Ok(Verified {
            header: self.header,
            digest,
            bytes,
        })
    }
}

/// Reads the whole snapshot from `input` and checks its checksum; writes nothing.
pub fn verify(input: impl Read) -> Result<Verified, SnapshotError> {
    let mut reader = Reader::open(input)?;
    while reader.next_item()?.is_some() {}
    reader.finish()
}

/// A reader that hashes and counts what it reads (up to the trailer).
struct Hashing<R> {
    inner: R,
    context: Context,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            context: Context::new(&SHA256),
            bytes: 0,
        }
    }

    /// Fills `buf` and hashes it.
    fn read(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.inner.read_exact(buf)?;
        self.context.update(buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        self.read(&mut out)?;
        Ok(out)
    }

    /// `len` bytes, read `STEP` at a time.
    fn vec(&mut self, len: usize) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::with_capacity(len.min(STEP));
        while out.len() < len {
            let start = out.len();
            let end = start + (len - start).min(STEP);
            out.resize(end, 0);
            let fresh = out
                .get_mut(start..end)
                .ok_or(SnapshotError::Malformed("a length overflowed"))?;
            self.read(fresh)?;
        }
        Ok(out)
    }

    /// Fills `buf` without hashing it (the trailer).
    fn raw(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        Ok(self.inner.read_exact(buf)?)
    }

    /// Whether any byte is left.
    fn raw_some(&mut self, buf: &mut [u8; 1]) -> Result<bool, SnapshotError> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SnapshotError::Read(e)),
            }
        }
    }

    fn digest(&self) -> [u8; 32] {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(self.context.clone().finish().as_ref());
        digest
    }
}
