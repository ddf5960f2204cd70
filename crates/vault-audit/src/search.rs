//! Reading a log back: the event records that match a filter, in log order, with their
//! lines exactly as written (so each can be checked against the chain), and following a
//! log as it grows.
//!
//! Reading never touches the writer: it opens the file on its own descriptor, reads
//! lines of at most [`MAX_LINE`](crate::record) bytes (longer ones are skipped, never
//! buffered whole), and takes no lock the writer waits on.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::event::{Decision, Event};
use crate::record::{MAX_LINE, Payload, Record};

/// Which event records to return. Every field set must match; unset fields match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The tenant the request concerned.
    pub tenant: Option<String>,
    /// The caller's identity.
    pub identity: Option<String>,
    /// The operation: exact (`broker.lease`), or a prefix ending in `*` (`admin.*`).
    pub operation: Option<String>,
    /// The decision.
    pub decision: Option<Decision>,
    /// Records at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    /// Records before this time (Unix ms).
    pub until_ms: Option<u64>,
}

impl Filter {
    /// Whether `entry` matches.
    pub fn matches(&self, entry: &Entry) -> bool {
        let event = &entry.event;
        self.tenant
            .as_ref()
            .is_none_or(|t| event.tenant.as_ref() == Some(t))
            && self.identity.as_ref().is_none_or(|i| &event.identity == i)
            && self
                .operation
                .as_ref()
                .is_none_or(|op| match op.strip_suffix('*') {
                    Some(prefix) => event.operation.starts_with(prefix),
                    None => &event.operation == op,
                })
            && self.decision.is_none_or(|d| event.decision == d)
            && self.since_ms.is_none_or(|t| entry.time_ms >= t)
            && self.until_ms.is_none_or(|t| entry.time_ms < t)
    }
}

/// One event record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the chain.
    pub seq: u64,
    /// When it was written (Unix ms).
    pub time_ms: u64,
    /// The node that wrote it.
    pub node: String,
    /// Its chain value (hex), as in the line.
    pub chain: String,
    /// What it records.
    pub event: Event,
    /// The line exactly as written, without its newline.
    pub line: String,
}

impl Entry {
    /// The event record on `line` (without its newline); `None` for other records
    /// (start, checkpoint, recovery, continuation) and for lines that are not records.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let record = Record::parse(line).ok()?;
        let Payload::Event(event) = record.body.payload else {
            return None;
        };
        Some(Self {
            seq: record.body.seq,
            time_ms: record.body.time_ms,
            node: record.body.node,
            chain: vault_crypto::hex::encode(&record.chain.0).to_string(),
            event: *event,
            line: String::from_utf8(line.to_vec()).ok()?,
        })
    }
}

/// Reads a log's lines from the start, bounded, remembering where it got to so it can
/// follow the file as it grows.
pub struct Reader {
    reader: BufReader<File>,
    /// Bytes consumed so far.
    offset: u64,
    /// The file's identity, to notice a rotation (rename and reopen by the writer).
    inode: (u64, u64),
    line: Vec<u8>,
}

/// What [`Reader::next_line`] found.
pub enum Line<'a> {
    /// A whole line (without its newline).
    Whole(&'a [u8]),
    /// A line longer than the limit, skipped.
    Skipped,
    /// The end of what is written so far (a partial last line is left for later).
    End,
}

impl Reader {
    /// Opens `path` for reading. Only a regular file can be read back (a FIFO's
    /// records are with whoever reads it).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the audit sink is not a regular file (a FIFO or device): search the copy its reader keeps",
            ));
        }
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, file),
            offset: 0,
            inode: (meta.dev(), meta.ino()),
            line: Vec::new(),
        })
    }

    /// The next line.
    pub fn next_line(&mut self) -> io::Result<Line<'_>> {
        self.line.clear();
        let limit = MAX_LINE as u64;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.line)?;
        if read == 0 {
            return Ok(Line::End);
        }
        if self.line.last() == Some(&b'\n') {
            self.offset += read as u64;
            self.line.pop();
            return Ok(Line::Whole(&self.line));
        }
        if (read as u64) < limit {
            // A partial last line: the writer is mid-write. Read it again later.
            self.reader.seek(SeekFrom::Start(self.offset))?;
            return Ok(Line::End);
        }
        // Longer than any record: skip to its end without keeping it.
        self.offset += read as u64;
        loop {
            self.line.clear();
            let more = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.line)?;
            self.offset += more as u64;
            if more == 0 || self.line.last() == Some(&b'\n') {
                return Ok(Line::Skipped);
            }
        }
    }

    /// Whether `path` now names another file than the one being read (the log was
    /// rotated) or this one was cut shorter than what was read: a follower reopens.
    pub fn replaced(&self, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(meta) => (meta.dev(), meta.ino()) != self.inode || meta.len() < self.offset,
            Err(_) => false,
        }
    }
}

/// Calls `found` with every event record of the log at `path` that matches `filter`,
/// in order, until it returns `false` or the log ends. Returns how many lines were
/// skipped (too long, or not records).
pub fn search(
    path: &Path,
    filter: &Filter,
    mut found: impl FnMut(Entry) -> bool,
) -> io::Result<u64> {
    let mut reader = Reader::open(path)?;
    let mut skipped = 0;
    loop {
        match reader.next_line()? {
            Line::End => return Ok(skipped),
            Line::Skipped => skipped += 1,
            Line::Whole(line) => match Entry::parse(line) {
                Some(entry) if filter.matches(&entry) => {
                    if !found(entry) {
                        return Ok(skipped);
                    }
                }
                Some(_) => {}
                None => {
                    if Record::parse(line).is_err() {
                        skipped += 1;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn lines_are_read_whole_partial_lines_wait_and_overlong_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"one\n").unwrap();
        file.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        file.write_all(b"\ntwo\npart").unwrap();
        file.flush().unwrap();
        let mut reader = Reader::open(&path).unwrap();
        assert!(matches!(reader.next_line().unwrap(), Line::Whole(b"one")));
        assert!(matches!(reader.next_line().unwrap(), Line::Skipped));
        assert!(matches!(reader.next_line().unwrap(), Line::Whole(b"two")));
        assert!(matches!(reader.next_line().unwrap(), Line::End));
        file.write_all(b"ial\n").unwrap();
        file.flush().unwrap();
        assert!(matches!(
            reader.next_line().unwrap(),
            Line::Whole(b"partial")
        ));
        assert!(!reader.replaced(&path));
        std::fs::rename(&path, dir.path().join("old")).unwrap();
        File::create(&path).unwrap();
        assert!(reader.replaced(&path));
    }

    #[test]
    fn filters_match_every_field_they_set() {
        let entry = Entry {
            seq: 7,
            time_ms: 1_000,
            node: "n".into(),
            chain: String::new(),
            event: Event {
                identity: "spiffe://a/b".into(),
                operation: "broker.lease".into(),
                tenant: Some("acme".into()),
                decision: Decision::Allow,
                ..Event::default()
            },
            line: String::new(),
        };
        let yes = [
            Filter::default(),
            Filter {
                tenant: Some("acme".into()),
                operation: Some("broker.*".into()),
                since_ms: Some(1_000),
                until_ms: Some(1_001),
                ..Filter::default()
            },
            Filter {
                identity: Some("spiffe://a/b".into()),
                decision: Some(Decision::Allow),
                operation: Some("broker.lease".into()),
                ..Filter::default()
            },
        ];
        let no = [
            Filter {
                tenant: Some("globex".into()),
                ..Filter::default()
            },
            Filter {
                operation: Some("broker.leas".into()),
                ..Filter::default()
            },
            Filter {
                decision: Some(Decision::Deny),
                ..Filter::default()
            },
            Filter {
                until_ms: Some(1_000),
                ..Filter::default()
            },
        ];
        assert!(yes.iter().all(|f| f.matches(&entry)));
        assert!(no.iter().all(|f| !f.matches(&entry)));
    }
}
