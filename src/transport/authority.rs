//! Standard gRPC clients on the local socket. grpc-core (Python, C++, Ruby, PHP…)
//! sends the socket's path, percent-encoded, as `:authority` (`%2Frun%2Fvaultd.sock`),
//! which is no authority HTTP/2 allows, and the HTTP/2 server behind (`h2`) resets
//! every such stream. So between the socket and the server, each header block a client
//! sends is decoded and written again as HPACK literals, an `:authority` that is not a
//! valid authority replaced by `localhost` (vaultd routes by path alone). Every other
//! frame, and everything the server sends, passes unchanged.
//!
//! The client's bytes are untrusted: frames and header blocks are bounded, and
//! anything malformed ends the connection (the server would have ended it too).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::hpack::{Decoder, HpackError, encode_literals};

/// What every HTTP/2 client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the server accepts from a client (the HTTP/2 default
/// `SETTINGS_MAX_FRAME_SIZE`, which vaultd keeps), and the largest written here.
const MAX_FRAME: usize = 16_384;
/// The HPACK table size the server allows its clients (the default, which vaultd
/// keeps).
const TABLE_SIZE: usize = 4096;
/// The most bytes of one header block, across its CONTINUATION frames.
const MAX_BLOCK: usize = 64 * 1024;

/// Why a client's connection was ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    #[error("reading or writing: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection does not start with the HTTP/2 preface")]
    NotHttp2,
    #[error("a frame of {0} bytes, over the {MAX_FRAME}-byte maximum")]
    FrameTooLarge(usize),
    #[error("a header block over {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("a HEADERS frame's padding or priority does not fit in it")]
    BadHeadersFrame,
    #[error("a frame came between a header block's HEADERS and its CONTINUATION frames")]
    Interleaved,
    #[error("header block: {0}")]
    Hpack(#[from] HpackError),
}

/// A header block still waiting for its CONTINUATION frames.
struct Pending {
    stream: [u8; 4],
    flags: u8,
    priority: Vec<u8>,
    block: Vec<u8>,
}

/// Copies a client's HTTP/2 bytes from `from` to `to`, its header blocks rewritten,
/// until the client closes (`Ok`) or sends something malformed.
pub(crate) async fn rewrite<R, W>(mut from: R, mut to: W) -> Result<(), RewriteError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(RewriteError::NotHttp2);
    }
    to.write_all(&preface).await?;
    let mut decoder = Decoder::new(TABLE_SIZE);
    let mut pending: Option<Pending> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = head;
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        if len > MAX_FRAME {
            return Err(RewriteError::FrameTooLarge(len));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        let stream = [s0 & 0x7f, s1, s2, s3];
        match (kind, pending.as_mut()) {
            (HEADERS, None) => {
                let (priority, fragment) = fragment(flags, &payload)?;
                let block = Pending {
                    stream,
                    flags,
                    priority: priority.to_vec(),
                    block: fragment.to_vec(),
                };
                match flags & END_HEADERS {
                    0 => pending = Some(block),
                    _ => write_block(&mut to, &mut decoder, block).await?,
                }
            }
            (CONTINUATION, Some(block)) if block.stream == stream => {
                if block.block.len() + payload.len() > MAX_BLOCK {
                    return Err(RewriteError::BlockTooLarge);
                }
                block.block.extend_from_slice(&payload);
                if flags & END_HEADERS != 0
                    && let Some(block) = pending.take()
                {
                    write_block(&mut to, &mut decoder, block).await?;
                }
            }
            (CONTINUATION, _) | (_, Some(_)) => return Err(RewriteError::Interleaved),
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
            }
        }
    }
}

/// A HEADERS frame's priority fields and header block fragment, its padding dropped.
fn fragment(flags: u8, payload: &[u8]) -> Result<(&[u8], &[u8]), RewriteError> {
    let mut rest = payload;
    let mut padding = 0;
    if flags & PADDED != 0 {
        let (&pad, after) = rest.split_first().ok_or(RewriteError::BadHeadersFrame)?;
        (padding, rest) = (usize::from(pad), after);
    }
    let mut priority: &[u8] = &[];
    if flags & PRIORITY != 0 {
        let (fields, after) = rest
            .split_first_chunk::<5>()
            .ok_or(RewriteError::BadHeadersFrame)?;
        (priority, rest) = (fields, after);
    }
    let end = rest
        .len()
        .checked_sub(padding)
        .ok_or(RewriteError::BadHeadersFrame)?;
    let fragment = rest.get(..end).ok_or(RewriteError::BadHeadersFrame)?;
    Ok((priority, fragment))
}

/// Decodes `block`, replaces an invalid `:authority`, and writes it as a HEADERS frame
/// and as many CONTINUATION frames as it needs.
async fn write_block<W: AsyncWrite + Unpin>(
    to: &mut W,
    decoder: &mut Decoder,
    block: Pending,
) -> Result<(), RewriteError> {
    let mut fields = decoder.decode(&block.block)?;
    for (name, value) in &mut fields {
        if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
            *value = b"localhost".to_vec();
        }
    }
    let mut out = block.priority;
    out.extend(encode_literals(&fields));
    let mut chunks = out.chunks(MAX_FRAME);
    let mut kind = HEADERS;
    let mut flags = block.flags & (END_STREAM | PRIORITY);
    // An empty block still takes one frame.
    let mut chunk = Some(chunks.next().unwrap_or_default());
    while let Some(bytes) = chunk {
        let next = chunks.next();
        if next.is_none() {
            flags |= END_HEADERS;
        }
        let [_, l0, l1, l2] = u32::try_from(bytes.len()).unwrap_or(0).to_be_bytes();
        let [s0, s1, s2, s3] = block.stream;
        to.write_all(&[l0, l1, l2, kind, flags, s0, s1, s2, s3])
            .await?;
        to.write_all(bytes).await?;
        (kind, flags, chunk) = (CONTINUATION, 0, next);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
