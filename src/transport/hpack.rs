//! HPACK (RFC 7541): a decoder, and an encoder of literal fields only. The local
//! socket's authority rewriting (see [`super::authority`]) reads each header block a
//! client sends and writes it again; nothing else in vaultd parses HPACK (hyper's
//! `h2` does, behind it).
//!
//! The decoder takes untrusted bytes: every integer, string, index and table size is
//! bounded, and every failure is an [`HpackError`], never a panic.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HpackError {
    /// The block ended inside a field.
    #[error("the header block ends inside a field")]
    Truncated,
    /// An integer longer than any this decoder accepts.
    #[error("an integer in the header block is too large")]
    Overflow,
    /// An index past the static and dynamic tables.
    #[error("a header field index is out of range")]
    BadIndex,
    /// Huffman-coded bytes that do not decode (bad padding, EOS).
    #[error("a Huffman-coded string is malformed")]
    Huffman,
    /// A table size update above the limit, or after a field.
    #[error("a dynamic table size update is out of place or too large")]
    TableSize,
    /// The decoded fields are larger than [`MAX_DECODED`].
    #[error("the header list is too large")]
    TooLarge,
}

/// The most bytes of names and values one block may decode to.
pub(crate) const MAX_DECODED: usize = 64 * 1024;

/// One header field: name and value bytes.
pub(crate) type Field = (Vec<u8>, Vec<u8>);

/// The static table (RFC 7541, appendix A); index 1 is its first entry.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The Huffman code's bit length of each symbol, 0-255 and EOS (RFC 7541, appendix B).
/// The code is canonical, so the lengths alone define it.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The canonical code as decoding needs it: per length, the first code and where its
/// symbols start in `symbols` (sorted by length, then symbol).
struct Canonical {
    first: [u32; 31],
    count: [u32; 31],
    offset: [usize; 31],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static CODE: OnceLock<Canonical> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut symbols: Vec<u16> = (0..257).collect();
        symbols.sort_by_key(|&s| (CODE_LENGTHS.get(usize::from(s)).copied(), s));
        let mut code = Canonical {
            first: [0; 31],
            count: [0; 31],
            offset: [0; 31],
            symbols,
        };
        let mut next = 0u32;
        let mut at = 0usize;
        for len in 1..=30usize {
            next <<= 1;
            let count = CODE_LENGTHS
                .iter()
                .filter(|&&l| usize::from(l) == len)
                .count();
            if let (Some(first), Some(n), Some(offset)) = (
                code.first.get_mut(len),
                code.count.get_mut(len),
                code.offset.get_mut(len),
            ) {
                *first = next;
                *n = u32::try_from(count).unwrap_or(0);
                *offset = at;
            }
            next += u32::try_from(count).unwrap_or(0);
            at += count;
        }
        code
    })
}

fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, HpackError> {
    let code = canonical();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let (mut bits, mut len) = (0u32, 0usize);
    for byte in bytes {
        for shift in (0..8).rev() {
            bits = (bits << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let (first, count, offset) = match (
                code.first.get(len),
                code.count.get(len),
                code.offset.get(len),
            ) {
                (Some(f), Some(c), Some(o)) => (*f, *c, *o),
                _ => return Err(HpackError::Huffman),
            };
            if bits >= first && bits - first < count {
                let index =
                    offset + usize::try_from(bits - first).map_err(|_| HpackError::Huffman)?;
                match code.symbols.get(index) {
                    Some(&symbol) if symbol < 256 => {
                        out.push(u8::try_from(symbol).map_err(|_| HpackError::Huffman)?);
                    }
                    _ => return Err(HpackError::Huffman), // EOS, or a bug
                }
                (bits, len) = (0, 0);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if len >= 8 || bits != (1u32 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(out)
}

/// Reads bytes of a header block.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, HpackError> {
        self.bytes.first().copied().ok_or(HpackError::Truncated)
    }

    fn byte(&mut self) -> Result<u8, HpackError> {
        let (&first, rest) = self.bytes.split_first().ok_or(HpackError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    /// An integer with an `prefix`-bit prefix (RFC 7541, 5.1), at most 2^24.
    fn integer(&mut self, prefix: u32) -> Result<usize, HpackError> {
        let mask = (1u8 << prefix) - 1;
        let mut value = usize::from(self.byte()? & mask);
        if value < usize::from(mask) {
            return Ok(value);
        }
        for shift in (0..=21).step_by(7) {
            let byte = self.byte()?;
            value += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(HpackError::Overflow)
    }

    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek()? & 0x80 != 0;
        let len = self.integer(7)?;
        if len > self.bytes.len() {
            return Err(HpackError::Truncated);
        }
        let (raw, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        if huffman {
            huffman_decode(raw)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// Decodes a client's header blocks in order, keeping its dynamic table.
pub(crate) struct Decoder {
    table: VecDeque<Field>,
    size: usize,
    max: usize,
    /// The most the client may set the table to: what the server advertised.
    limit: usize,
}

fn entry_size((name, value): &Field) -> usize {
    name.len() + value.len() + 32
}

impl Decoder {
    /// A decoder for a peer told the table may hold `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
        }
    }

    fn get(&self, index: usize) -> Result<Field, HpackError> {
        if let Some((name, value)) = index.checked_sub(1).and_then(|i| STATIC.get(i)) {
            return Ok((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
        index
            .checked_sub(STATIC.len() + 1)
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or(HpackError::BadIndex)
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.table.pop_back() {
                Some(field) => self.size -= entry_size(&field),
                None => break,
            }
        }
    }

    fn insert(&mut self, field: Field) {
        let size = entry_size(&field);
        self.evict_to(self.max.saturating_sub(size));
        if size <= self.max {
            self.size += size;
            self.table.push_front(field);
        }
    }

    /// The fields of one complete header block.
    pub(crate) fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut reader = Reader { bytes: block };
        let mut fields = Vec::new();
        let mut decoded = 0usize;
        while !reader.bytes.is_empty() {
            let first = reader.peek()?;
            let field = if first & 0x80 != 0 {
                self.get(reader.integer(7)?)?
            } else if first & 0xe0 == 0x20 {
                let max = reader.integer(5)?;
                if max > self.limit || !fields.is_empty() {
                    return Err(HpackError::TableSize);
                }
                self.max = max;
                self.evict_to(max);
                continue;
            } else {
                // 01: indexed into the table; 0001 and 0000: not.
                let (prefix, index_it) = if first & 0x40 != 0 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name = match reader.integer(prefix)? {
                    0 => reader.string()?,
                    index => self.get(index)?.0,
                };
                let field = (name, reader.string()?);
                if index_it {
                    self.insert(field.clone());
                }
                field
            };
            decoded += entry_size(&field);
            if decoded > MAX_DECODED {
                return Err(HpackError::TooLarge);
            }
            fields.push(field);
        }
        Ok(fields)
    }
}

fn put_integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(first | u8::try_from(value).unwrap_or(0));
        return;
    }
    out.push(first | u8::try_from(mask).unwrap_or(0));
    value -= mask;
    while value >= 0x80 {
        out.push(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

/// `fields` as a header block of literals without indexing (no Huffman), which any
/// decoder reads the same whatever its dynamic table holds.
pub(crate) fn encode_literals(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        for bytes in [name, value] {
            put_integer(&mut out, 0x00, 7, bytes.len());
            out.extend_from_slice(bytes);
        }
    }
    out
}

#[cfg(test)]
mod tests;
