//! Reading the last record of an existing log, so the chain can continue from it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::AuditError;
use crate::record::{MAX_LINE, Record};

/// The log's last record, `None` if the log is empty. Reads at most one line's worth
/// from the end, so opening a large log stays cheap; a partial, corrupt or
/// inconsistent last line is [`AuditError::CorruptTail`].
pub(crate) fn last_record(file: &mut File, path: &Path) -> Result<Option<Record>, AuditError> {
    let io_error = AuditError::open(path);
    let len = file.seek(SeekFrom::End(0)).map_err(&io_error)?;
    if len == 0 {
        return Ok(None);
    }
    let window = len.min(MAX_LINE as u64 + 1); // the line and the newline before it
    file.seek(SeekFrom::Start(len - window))
        .map_err(&io_error)?;
    let mut buf = Vec::new();
    file.by_ref()
        .take(window)
        .read_to_end(&mut buf)
        .map_err(&io_error)?;

    let record = match buf.split_last() {
        Some((b'\n', text)) => match text.iter().rposition(|&b| b == b'\n') {
            Some(newline) => text.get(newline + 1..),
            None if window == len => Some(text),
            None => None, // longer than any line we write
        }
        .and_then(|line| Record::parse(line).ok())
        .filter(Record::chain_is_consistent),
        _ => None,
    };
    match record {
        Some(record) => Ok(Some(record)),
        None => {
            let newlines = count_newlines(file).map_err(&io_error)?;
            let partial = buf.last() != Some(&b'\n');
            Err(AuditError::CorruptTail {
                path: path.to_owned(),
                line: newlines + u64::from(partial),
            })
        }
    }
}

/// Counts the file's lines; only on the error path, to name the bad line.
fn count_newlines(file: &mut File) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut count = 0u64;
    loop {
        let read = match file.read(&mut buf) {
            Ok(0) => return Ok(count),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..read).unwrap_or_default();
        count += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
}
