use super::*;

fn unhex(text: &str) -> Vec<u8> {
    vault_crypto::hex::decode(text).unwrap().to_vec()
}

fn text(fields: &[Field]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| {
            (
                String::from_utf8(n.clone()).unwrap(),
                String::from_utf8(v.clone()).unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// RFC 7541, appendix C.3 (literals) and C.4 (Huffman): three requests on one
/// connection, the later ones indexing the dynamic table the earlier ones filled.
#[test]
fn the_rfc_request_examples_decode() {
    let first = pairs(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ]);
    let mut second = first.clone();
    second.push(("cache-control".into(), "no-cache".into()));
    let third = pairs(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ]);
    for blocks in [
        [
            "828684410f7777772e6578616d706c652e636f6d",
            "828684be58086e6f2d6361636865",
            "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
        ],
        [
            "828684418cf1e3c2e5f23a6ba0ab90f4ff",
            "828684be5886a8eb10649cbf",
            "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
        ],
    ] {
        let mut decoder = Decoder::new(4096);
        for (block, want) in blocks.iter().zip([&first, &second, &third]) {
            assert_eq!(&text(&decoder.decode(&unhex(block)).unwrap()), want);
        }
        assert_eq!(decoder.size, 164);
    }
}

/// What a grpc-core client sends over a Unix socket (made by the Python `hpack`
/// package): a percent-encoded path as `:authority`, Huffman-coded; then the same
/// request from the dynamic table; then after shrinking the table to 256 bytes.
#[test]
fn a_grpc_clients_blocks_decode_and_encode_again_as_literals() {
    let want = pairs(&[
        (":scheme", "http"),
        (":method", "POST"),
        (":authority", "%2Ftmp%2Fvaultd.sock"),
        (":path", "/vault.v1.Admin/Status"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-python/1.85.3"),
    ]);
    let full = "8683418f5458534d6a8b0f71db42645d07275f449063b8eda12bf70af0c949aa6372469b514082497f\
                864d833505b11f5f8b1d75d0620d263d4c4d65647a8e9acac8b57e9339ea602bbcdaecff";
    let mut decoder = Decoder::new(4096);
    for block in [full, "8683c2c1c0bfbe", &format!("3fe101{full}")] {
        let fields = decoder.decode(&unhex(block)).unwrap();
        assert_eq!(text(&fields), want);
        // Re-encoded as literals, a fresh decoder (any table) reads the same fields.
        let again = Decoder::new(0).decode(&encode_literals(&fields)).unwrap();
        assert_eq!(again, fields);
    }
    assert_eq!(decoder.max, 256);
}

#[test]
fn malformed_blocks_are_errors_not_panics() {
    let cases: [(&[u8], HpackError); 8] = [
        (&[0x80], HpackError::BadIndex),              // index 0
        (&[0xbe], HpackError::BadIndex),              // 62: the dynamic table is empty
        (&[0x41], HpackError::Truncated),             // a name index, then nothing
        (&[0x40, 0x05, b'a'], HpackError::Truncated), // a 5-byte name of 1 byte
        (&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], HpackError::Overflow),
        (&[0x3f, 0xe2, 0x1f], HpackError::TableSize), // past the 4096 limit
        (&[0x82, 0x20], HpackError::TableSize),       // a size update after a field
        // A Huffman string padded with zeros, not ones.
        (&[0x40, 0x81, 0x00, 0x00], HpackError::Huffman),
    ];
    for (block, want) in cases {
        assert_eq!(Decoder::new(4096).decode(block), Err(want), "{block:02x?}");
    }
    // Fields beyond the decoded bound: one large field indexed again and again.
    let mut block = vec![0x40, 0x01, b'a', 0x7f];
    block.extend([0x81, 0x7f]); // a value of 127 + 1 + (127 << 7) = 16 384 bytes
    block.extend(std::iter::repeat_n(b'v', 16_384));
    block.extend(std::iter::repeat_n(0xbe, 8)); // index 62 again, 8 times
    assert_eq!(
        Decoder::new(1 << 20).decode(&block),
        Err(HpackError::TooLarge)
    );
    // Random bytes never panic.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let len = usize::try_from(state % 64).unwrap();
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        let _ = Decoder::new(4096).decode(&bytes);
    }
}

#[test]
fn integers_round_trip_at_their_prefix_boundaries() {
    for value in [0, 1, 30, 31, 126, 127, 128, 255, 16_383, 1 << 20] {
        let mut out = Vec::new();
        put_integer(&mut out, 0, 7, value);
        assert_eq!(Reader { bytes: &out }.integer(7), Ok(value), "{value}");
    }
}
