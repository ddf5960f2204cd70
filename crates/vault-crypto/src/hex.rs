//! Hex encoding for share texts, without table lookups indexed by secret data.

use zeroize::Zeroizing;

/// Lower-case hex of `bytes`, in a zeroising string.
pub(crate) fn encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for b in bytes {
        out.push(nibble_char(b >> 4));
        out.push(nibble_char(b & 0x0f));
    }
    out
}

fn nibble_char(n: u8) -> char {
    // 0..=9 → '0'..'9', 10..=15 → 'a'..'f', computed without a branch on n.
    let n = n & 0x0f;
    let letter = (9u8.wrapping_sub(n) >> 7) & 1; // 1 when n > 9
    char::from(b'0' + n + letter * (b'a' - b'0' - 10))
}

/// Decodes hex (either case) into a zeroising buffer; `None` on any other character
/// or an odd length.
pub(crate) fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    for pair in digits.chunks_exact(2) {
        let [hi, lo] = pair else { return None };
        out.push((value(*hi)? << 4) | value(*lo)?);
    }
    Some(out)
}

fn value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let text = encode(&all);
        assert_eq!(&text[..6], "000102");
        assert_eq!(&text[text.len() - 4..], "feff");
        assert_eq!(&decode(&text).unwrap()[..], &all[..]);
        assert_eq!(&decode(&text.to_uppercase()).unwrap()[..], &all[..]);
        assert!(decode("abc").is_none());
        assert!(decode("zz").is_none());
    }
}
