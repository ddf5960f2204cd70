//! Hex encoding without table lookups or branches indexed by the data, so it serves
//! share texts as well as public values (fingerprints, nonces).

use zeroize::Zeroizing;

/// Lower-case hex of `bytes`, in a zeroising string.
pub fn encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    encode_into(&mut out, bytes);
    out
}

/// Appends the lower-case hex of `bytes` to `out`, for public values written into a
/// larger text (a secret must go through [`encode`], whose string is wiped).
pub fn encode_into(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(nibble_char(b >> 4));
        out.push(nibble_char(b & 0x0f));
    }
}

fn nibble_char(n: u8) -> char {
    // 0..=9 → '0'..'9', 10..=15 → 'a'..'f', computed without a branch on n.
    let n = n & 0x0f;
    let letter = (9u8.wrapping_sub(n) >> 7) & 1; // 1 when n > 9
    char::from(b'0' + n + letter * (b'a' - b'0' - 10))
}

/// Decodes hex (either case) into a zeroising buffer; `None` on any other character
/// or an odd length. Digit values are computed with masks, and validity is checked
/// once at the end, so timing does not depend on which digits a share contains.
pub fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    let mut invalid = 0u8;
    for pair in digits.chunks_exact(2) {
        let [hi, lo] = pair else { return None };
        let (hi, hi_bad) = value(*hi);
        let (lo, lo_bad) = value(*lo);
        invalid |= hi_bad | lo_bad;
        out.push((hi << 4) | lo);
    }
    (invalid == 0).then_some(out)
}

/// 0xff when `x < bound` (both below 128), else 0, without branching.
fn below(x: u8, bound: u8) -> u8 {
    u16::from(x).wrapping_sub(u16::from(bound)).to_be_bytes()[0]
}

/// A hex digit's value and a non-zero flag if `c` is not a hex digit.
fn value(c: u8) -> (u8, u8) {
    let digit = c.wrapping_sub(b'0');
    let letter = (c | 0x20).wrapping_sub(b'a');
    let is_digit = below(digit, 10);
    let is_letter = below(letter, 6);
    let value = (digit & is_digit) | (letter.wrapping_add(10) & is_letter);
    (value & 0x0f, !(is_digit | is_letter))
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
        // Neighbours of the digit and letter ranges are not digits.
        for bad in ["/0", ":0", "@0", "G0", "`0", "g0", "0\u{0}"] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
        // Every byte value that is not a hex digit is rejected.
        for c in 0u8..=127 {
            let ok = c.is_ascii_hexdigit();
            let text = format!("0{}", c as char);
            assert_eq!(decode(&text).is_some(), ok, "{c:#x}");
        }
    }
}
