//! The verifier never panics, whatever it is given, and a flipped byte anywhere but
//! in a MAC (which only the daemon can check) is always caught.

use tempfile::TempDir;
use vault_audit::verify;

use crate::{TestKeys, lines, write_log};

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

#[test]
fn fixed_garbage_is_reported_not_panicked_on() {
    let key = [7u8; 32];
    let inputs: &[&[u8]] = &[
        b"",
        b"\n",
        b"\n\n\n",
        b"{}\n",
        b"[]\n",
        b"null\n",
        b"\xff\xfe\n",
        b"{\"seq\":18446744073709551615,\"time_ms\":0,\"node\":\"\",\"kind\":\"checkpoint\",\"prev\":\"00\",\"chain\":\"\",\"mac\":null,\"sig\":null}\n",
        b"{\"seq\":-1}\n",
        b"{\"seq\":1e99}\n",
        b"{\"kind\":\"event\"}\n",
        b"{\"kind\":\"nonsense\",\"seq\":0}\n",
        &[b'['; 100_000],
        &[b'{'; 5000],
        b"{\"seq\":0,\"time_ms\":0,\"node\":\"n\",\"kind\":\"start\",\"detail\":{},\"prev\":\"zz\",\"chain\":\"00\",\"mac\":null,\"sig\":null}\n",
    ];
    for input in inputs {
        for public_key in [None, Some(&key)] {
            let report = verify(*input, public_key);
            assert!(
                !report.is_ok(),
                "{:?}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            );
            assert_eq!(report.records, 0);
            let _ = report.first_error.unwrap().to_string();
        }
    }
}

#[test]
fn random_bytes_are_reported_not_panicked_on() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"{}[]\":,0123456789abcdefseqkindchainprev\n \\u";
    for round in 0..2000 {
        let len = noise.below(400);
        let input: Vec<u8> = (0..len)
            .map(|_| {
                let pick = noise.next();
                if round % 2 == 0 {
                    pick as u8
                } else {
                    alphabet[(pick % alphabet.len() as u64) as usize]
                }
            })
            .collect();
        let report = verify(&input[..], Some(&[1u8; 32]));
        assert!(!report.is_ok(), "{:?}", String::from_utf8_lossy(&input));
    }
}

#[tokio::test]
async fn every_flipped_byte_outside_a_mac_is_caught() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.log");
    let keys = TestKeys::new();
    write_log(&path, 6, keys.clone()).await;
    let text = lines(&path).join("\n") + "\n";
    let key = keys.public();
    assert!(verify(text.as_bytes(), Some(&key)).is_ok());

    // Byte ranges of MAC values: only the daemon, holding the MAC key, can check those.
    let mut macs = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(r#""mac":""#) {
        let start = from + at + 7;
        macs.push(start..start + 64);
        from = start;
    }

    let mut noise = Noise(42);
    for _ in 0..3000 {
        let mut bytes = text.clone().into_bytes();
        let at = noise.below(bytes.len());
        let flip = 1u8 << noise.below(8);
        bytes[at] ^= flip;
        let report = verify(&bytes[..], Some(&key));
        let in_mac = macs.iter().any(|range| range.contains(&at));
        assert!(
            !report.is_ok() || in_mac,
            "flip {flip:#x} at byte {at} went unnoticed"
        );
    }
}
