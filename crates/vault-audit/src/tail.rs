//! Reading the end of an existing log, so the chain can continue from it, and moving
//! a torn tail aside.
//!
//! A write cut short by a crash or a full disk leaves a *torn tail*: a partial last
//! line, or lines of garbage (a filesystem may leave zeroed blocks after a crash).
//! Those bytes are moved to a file next to the log, the log is cut back to its last
//! intact record, and the writer records the recovery in the chain. A last record
//! that parses but does not hash to its chain value is an edit, not a tear: that
//! still stops the start, for the operator to look at.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::AuditError;
use crate::record::{MAX_LINE, Record};

/// The most torn bytes moved aside on their own; more is not a cut-short write, and
/// the operator must look.
pub(crate) const MAX_TORN: u64 = 4 << 20;

/// What the end of a log holds.
pub(crate) enum Tail {
    /// Nothing: a new log.
    Empty,
    /// The last record, intact.
    Intact(Record),
    /// The last intact record, and after it bytes that are not records.
    Torn(Torn),
}

/// A torn tail, found but not yet moved.
pub(crate) struct Torn {
    pub(crate) last: Record,
    /// Where the last intact record ends (the log is cut back to here).
    intact_len: u64,
    bytes: Vec<u8>,
    /// The 1-based line at which the torn bytes begin.
    pub(crate) line: u64,
}

/// Reads the end of the log: at most one line's worth plus [`MAX_TORN`], so opening a
/// large log stays cheap.
pub(crate) fn read(file: &mut File, path: &Path) -> Result<Tail, AuditError> {
    let io_error = AuditError::open(path);
    let len = file.seek(SeekFrom::End(0)).map_err(&io_error)?;
    if len == 0 {
        return Ok(Tail::Empty);
    }
    // The line and the newline before it, past any torn bytes.
    let window = len.min(MAX_TORN + MAX_LINE as u64 + 1);
    let start = len - window;
    file.seek(SeekFrom::Start(start)).map_err(&io_error)?;
    let mut buf = Vec::new();
    Read::by_ref(file)
        .take(window)
        .read_to_end(&mut buf)
        .map_err(&io_error)?;

    let corrupt = |file: &mut File| -> Result<Tail, AuditError> {
        let partial = buf.last() != Some(&b'\n');
        let newlines = count_newlines(file, len).map_err(&io_error)?;
        Err(AuditError::CorruptTail {
            path: path.to_owned(),
            line: newlines + u64::from(partial),
        })
    };
    // Walk back over complete lines; whatever follows the last newline is partial.
    let mut end = buf.iter().rposition(|&b| b == b'\n');
    while let Some(newline) = end {
        let before = buf.get(..newline).unwrap_or_default();
        let line_start = match before.iter().rposition(|&b| b == b'\n') {
            Some(previous) => previous + 1,
            None if start == 0 => 0,
            None => break, // longer than any line we write
        };
        let torn = (window - newline as u64 - 1) as usize;
        if torn as u64 > MAX_TORN {
            break;
        }
        let line = before.get(line_start..).unwrap_or_default();
        match Record::parse(line) {
            Ok(record) if record.chain_is_consistent() => {
                if torn == 0 {
                    return Ok(Tail::Intact(record));
                }
                let intact_len = start + newline as u64 + 1;
                let newlines = count_newlines(file, intact_len).map_err(&io_error)?;
                return Ok(Tail::Torn(Torn {
                    last: record,
                    intact_len,
                    bytes: buf.get(newline + 1..).unwrap_or_default().to_vec(),
                    line: newlines + 1,
                }));
            }
            // Parses but does not hash to its chain value: edited, not torn.
            Ok(_) => return corrupt(file),
            Err(_) => end = line_start.checked_sub(1),
        }
    }
    corrupt(file)
}

impl Torn {
    /// Moves the torn bytes to a new file next to the log (0600, synced), then cuts
    /// the log back to its last intact record. Returns the new file's name. A crash in
    /// between leaves both: the next open moves the same bytes aside again.
    pub(crate) fn move_aside(&self, file: &File, path: &Path) -> Result<String, AuditError> {
        let io_error = AuditError::open(path);
        let aside = aside_path(path);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .map_err(&io_error)?;
        out.write_all(&self.bytes).map_err(&io_error)?;
        out.sync_all().map_err(&io_error)?;
        sync_parent(path).map_err(&io_error)?;
        file.set_len(self.intact_len).map_err(&io_error)?;
        file.sync_all().map_err(&io_error)?;
        Ok(aside
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default())
    }

    /// How many bytes were torn.
    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// `<log>.torn-<unix ms>`, or with a counter if that exists already.
fn aside_path(path: &Path) -> PathBuf {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".to_owned());
    let mut candidate = path.with_file_name(format!("{name}.torn-{millis}"));
    let mut n = 1u32;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{name}.torn-{millis}-{n}"));
        n += 1;
    }
    candidate
}

/// Counts the newlines in the first `len` bytes; only on the error and recovery
/// paths, to name lines.
fn count_newlines(file: &mut File, len: u64) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut count = 0u64;
    loop {
        let read = match reader.read(&mut buf) {
            Ok(0) => return Ok(count),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..read).unwrap_or_default();
        count += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Syncs the directory holding a new log, so the log's name survives a power loss.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}
