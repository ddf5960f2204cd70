use super::*;
use crate::transport::hpack::Field;

const STATUS_BLOCK: &str = "8683418f5458534d6a8b0f71db42645d07275f449063b8eda12bf70af0c949aa6372469b514082\
                            497f864d833505b11f5f8b1d75d0620d263d4c4d65647a8e9acac8b57e9339ea602bbcdaecff";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let [_, l0, l1, l2] = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![l0, l1, l2, kind, flags];
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The frames in `bytes` after the preface: (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert_eq!(&bytes[..24], PREFACE);
    bytes = &bytes[24..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes(bytes[5..9].try_into().unwrap());
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

async fn run(input: Vec<u8>) -> (Result<(), RewriteError>, Vec<u8>) {
    let mut out = Vec::new();
    let result = rewrite(&input[..], &mut out).await;
    (result, out)
}

fn field<'a>(fields: &'a [Field], name: &str) -> &'a [u8] {
    &fields.iter().find(|(n, _)| n == name.as_bytes()).unwrap().1
}

#[tokio::test]
async fn a_percent_encoded_authority_becomes_localhost_and_everything_else_passes() {
    let block = vault_crypto::hex::decode(STATUS_BLOCK).unwrap().to_vec();
    // Padded, with priority fields, split over a CONTINUATION frame.
    let mut headers = vec![3u8]; // 3 bytes of padding
    headers.extend([0, 0, 0, 0, 15]); // priority: no dependency, weight 16
    headers.extend_from_slice(&block[..20]);
    headers.extend([0, 0, 0]);
    let data = frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]);
    let settings = frame(0x4, 0, 0, &[]);
    let mut input = PREFACE.to_vec();
    input.extend(&settings);
    input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &headers));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[20..]));
    input.extend(&data);
    // The same request again on stream 3, from the client's dynamic table.
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        3,
        &[0x86, 0x83, 0xc2, 0xc1, 0xc0, 0xbf, 0xbe],
    ));
    let (result, out) = run(input).await;
    result.unwrap();
    let frames = frames(&out);
    assert_eq!(frames.len(), 4);
    assert_eq!(
        frame(frames[0].0, frames[0].1, frames[0].2, &frames[0].3),
        settings
    );
    assert_eq!(
        frame(frames[2].0, frames[2].1, frames[2].2, &frames[2].3),
        data
    );
    let mut server = Decoder::new(TABLE_SIZE);
    for (i, stream) in [(1, 1), (3, 3)] {
        let (kind, flags, id, payload) = &frames[i];
        assert_eq!((*kind, *id), (HEADERS, stream));
        assert_eq!(flags & END_HEADERS, END_HEADERS);
        assert_eq!(flags & PADDED, 0);
        let block = if flags & PRIORITY != 0 {
            assert_eq!(payload[..5], [0, 0, 0, 0, 15]);
            &payload[5..]
        } else {
            &payload[..]
        };
        let fields = server.decode(block).unwrap();
        assert_eq!(field(&fields, ":authority"), b"localhost");
        assert_eq!(field(&fields, ":path"), b"/vault.v1.Admin/Status");
        assert_eq!(field(&fields, "content-type"), b"application/grpc");
        assert_eq!(fields.len(), 7);
    }
}

#[tokio::test]
async fn a_valid_authority_is_kept_and_a_large_block_takes_continuations() {
    let value = "x".repeat(20_000);
    let block = encode_literals(&[
        (b":authority".to_vec(), b"localhost:8200".to_vec()),
        (b"x-big".to_vec(), value.as_bytes().to_vec()),
    ]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, 0, 5, &block[..16_000]));
    input.extend(frame(CONTINUATION, END_HEADERS, 5, &block[16_000..]));
    let (result, out) = run(input).await;
    result.unwrap();
    let frames = frames(&out);
    assert_eq!(
        frames.iter().map(|f| (f.0, f.1, f.2)).collect::<Vec<_>>(),
        [(HEADERS, 0, 5), (CONTINUATION, END_HEADERS, 5)]
    );
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.3.clone()).collect();
    let fields = Decoder::new(TABLE_SIZE).decode(&joined).unwrap();
    assert_eq!(field(&fields, ":authority"), b"localhost:8200");
    assert_eq!(field(&fields, "x-big"), value.as_bytes());
}

#[tokio::test]
async fn malformed_input_ends_the_connection() {
    let block = vault_crypto::hex::decode(STATUS_BLOCK).unwrap().to_vec();
    let with = |frames: &[Vec<u8>]| {
        let mut input = PREFACE.to_vec();
        for f in frames {
            input.extend(f);
        }
        input
    };
    let cases = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        with(&[frame(0x0, 0, 1, &vec![0; MAX_FRAME + 1])]),
        with(&[frame(HEADERS, PADDED, 1, &[200, 1, 2])]),
        with(&[frame(HEADERS, 0, 1, &block[..10]), frame(0x0, 0, 1, &[])]),
        with(&[
            frame(HEADERS, 0, 1, &block[..10]),
            frame(CONTINUATION, END_HEADERS, 3, &block[10..]),
        ]),
        with(&[frame(CONTINUATION, END_HEADERS, 1, &block)]),
        with(&[frame(HEADERS, END_HEADERS, 1, &[0xbe])]),
    ];
    for input in cases {
        let (result, _) = run(input.clone()).await;
        assert!(result.is_err(), "{input:02x?}");
    }
    // CONTINUATION frames cannot build a block past the bound.
    let mut frames = vec![frame(HEADERS, 0, 1, &[0x00; 100])];
    for _ in 0..5 {
        frames.push(frame(CONTINUATION, 0, 1, &vec![0x00; MAX_FRAME]));
    }
    assert!(matches!(
        run(with(&frames)).await.0,
        Err(RewriteError::BlockTooLarge)
    ));
}
