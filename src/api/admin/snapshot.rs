//! `Snapshot`: the whole store streamed as a snapshot file, for backups.
//!
//! The caller needs `snapshot.save`. Sealed or not: the view needs no key, and a
//! sealed node is exactly where disaster recovery starts; what leaves is what the data
//! file holds, ciphertext and metadata. One snapshot at a time per node (another is
//! `RESOURCE_EXHAUSTED`).
//!
//! Audit: an intent record before the first byte, so a dead audit log stops the export
//! before anything leaves; that record is what is guaranteed. Then, best effort, one
//! completion record with the vault id, the record count, the byte count and the
//! SHA-256, or a record that the stream was incomplete. The trailer is held back until
//! the completion record is written, so `vaultctl snapshot save` keeps no file when it
//! cannot be; but that does not make the record required: the trailer is an unkeyed
//! SHA-256 of bytes the client already has, so a client can finish the file itself.
//! A snapshot taken without its completion record shows in the log as an intent with
//! no outcome: read such an intent as a snapshot that may have left whole.
//!
//! Memory is bounded: a blocking thread writes the snapshot in chunks of at most
//! [`CHUNK`] bytes into a channel of [`CHUNKS_IN_FLIGHT`], and waits while the client
//! reads. So is time, since the stream holds the node's one snapshot slot and a redb
//! read transaction (which keeps redb from reusing the pages it sees): a client that
//! leaves a chunk unread for [`STALL`], or that keeps the stream waiting longer in all
//! than [`Pace`] allows ([`GRACE`] plus a second per [`MIN_RATE`] bytes sent), loses the
//! stream with `RESOURCE_EXHAUSTED`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vault_proto::v1;

use crate::api::{ApiError, Call, Shared};
use crate::authz::SnapshotOp;
use crate::custody::SnapshotJob;
use crate::storage::snapshot::{FORMAT_VERSION, Header, WriteError, Written};

/// The most bytes of one `SnapshotChunk`.
pub(super) const CHUNK: usize = 64 * 1024;

/// Chunks written ahead of the client.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How long the client may leave a chunk unread before the stream is cut: a reader that
/// stops must not hold the node's one snapshot slot (and its read transaction) forever.
const STALL: Duration = Duration::from_secs(60);

/// The time the client may keep the stream waiting in all whatever it reads, on top of
/// a second per [`MIN_RATE`] bytes sent.
const GRACE: Duration = Duration::from_secs(60);

/// The slowest average rate, in bytes a second, at which a client may read once
/// [`GRACE`] is used up: 64 KiB/s (a 1 GiB snapshot may take about 4.5 hours). Without
/// it a reader taking one chunk every 59 s would hold the slot and the read
/// transaction for as long as it liked.
const MIN_RATE: u64 = 64 * 1024;

/// Why the client lost a stream it read too slowly.
const TOO_SLOW: &str = "the snapshot stream was ended because it was read too slowly (a chunk left unread for 60 s, or under 64 KiB/s on average after the first minute); take it again, reading without pauses";

/// The answer: the file's bytes, chunk by chunk; the last chunk ends with the trailer.
pub(super) type SnapshotStream = ReceiverStream<Result<v1::SnapshotChunk, Status>>;

/// Serves one `Snapshot` request.
pub(super) async fn serve(
    shared: &Arc<Shared>,
    request: Request<v1::SnapshotRequest>,
) -> Result<Response<SnapshotStream>, Status> {
    let mut call = shared.call("admin.snapshot", &request)?;
    let slot = match shared.policies.permit(&call.caller, SnapshotOp) {
        Ok(grant) => {
            call.allowed_by(&grant);
            match shared.custody.snapshot_slot(&grant) {
                Some(slot) => Ok((grant, slot)),
                None => Err(ApiError::Exhausted(
                    "a snapshot is already being taken on this node; retry when it is done",
                )),
            }
        }
        Err(denied) => Err(ApiError::Denied(denied)),
    };
    let (grant, slot) = match slot {
        Ok(granted) => granted,
        Err(e) => return shared.finish(call, Err(e)).await,
    };
    shared.intent(&call).await?;
    let job = shared
        .blocking(&mut call, move |shared, _| {
            Ok(shared.custody.snapshot(&grant, slot)?)
        })
        .await;
    let job = match job {
        Ok(job) => job,
        Err(e) => return shared.finish(call, Err(e)).await,
    };
    let header = *job.header();
    let detail = &mut call.event.detail;
    detail.insert("vault_id".into(), header.vault_id.to_string());
    detail.insert("records".into(), header.records.to_string());
    let (answers, stream) = mpsc::channel(2);
    tokio::spawn(stream_out(Arc::clone(shared), call, job, answers));
    Ok(Response::new(ReceiverStream::new(stream)))
}

/// How long the client has kept the stream waiting, against what it may.
#[derive(Debug, Default)]
struct Pace {
    /// Bytes handed to the client.
    sent: u64,
    /// Time spent waiting for the client to take them.
    waited: Duration,
}

impl Pace {
    /// How long the client may take to accept the next `len` bytes: at most [`STALL`],
    /// and no more than is left of [`GRACE`] plus a second per [`MIN_RATE`] bytes sent,
    /// these included. Zero: the stream is over.
    fn allowance(&self, len: usize) -> Duration {
        let sent = self.sent.saturating_add(len as u64);
        let earned =
            GRACE.saturating_add(Duration::from_millis(sent.saturating_mul(1000) / MIN_RATE));
        earned.saturating_sub(self.waited).min(STALL)
    }

    /// Counts `len` bytes the client took after a wait of `waited`.
    fn took(&mut self, len: usize, waited: Duration) {
        self.sent = self.sent.saturating_add(len as u64);
        self.waited = self.waited.saturating_add(waited);
    }
}

/// How the stream ended.
enum Ending {
    /// Every chunk went out: send the trailer once the record is written.
    Whole(Written),
    /// The client went away, or the daemon is stopping.
    Cut(&'static str),
    /// The client read too slowly, and is told so.
    TooSlow(&'static str),
    /// Writing failed.
    Failed(ApiError),
}

/// Writes the snapshot on a blocking thread and forwards its chunks to the client; then
/// records the outcome (best effort, see the module's doc) and, only if that record was
/// written, sends the trailer.
async fn stream_out(
    shared: Arc<Shared>,
    mut call: Call,
    job: SnapshotJob,
    answers: mpsc::Sender<Result<v1::SnapshotChunk, Status>>,
) {
    let mut info = Some(info(job.header()));
    let (chunks, mut written) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let producer = tokio::task::spawn_blocking(move || job.write_to(Chunks::new(chunks)));
    let mut stopping = shared.custody.stopping();
    let mut pace = Pace::default();
    let mut cut = None;
    loop {
        tokio::select! {
            chunk = written.recv() => {
                let Some(data) = chunk else { break };
                let len = data.len();
                let allowance = pace.allowance(len);
                let chunk = v1::SnapshotChunk { data, info: info.take() };
                let started = tokio::time::Instant::now();
                match tokio::time::timeout(allowance, answers.send(Ok(chunk))).await {
                    Ok(Ok(())) => pace.took(len, started.elapsed()),
                    Ok(Err(_)) => {
                        cut = Some(Ending::Cut("the client went away before the end"));
                        break;
                    }
                    Err(_) if allowance == STALL => {
                        cut = Some(Ending::TooSlow("the client stopped reading for 60 s"));
                        break;
                    }
                    Err(_) => {
                        cut = Some(Ending::TooSlow(
                            "the client read under 64 KiB/s on average after the first minute",
                        ));
                        break;
                    }
                }
            }
            () = stopped(&mut stopping) => {
                cut = Some(Ending::Cut("vaultd began to stop before the end"));
                break;
            }
        }
    }
    // A producer still writing now fails at its next chunk, and lets go of its view and
    // the slot.
    drop(written);
    let ending = match (producer.await, cut) {
        (_, Some(ending)) => ending,
        (Ok(Ok(written)), None) => Ending::Whole(written),
        (Ok(Err(WriteError::Store(e))), None) => Ending::Failed(ApiError::Vault(e.into())),
        // The chunk channel closes only when this task drops it, which it did not.
        (Ok(Err(WriteError::Sink(_))), None) => Ending::Cut("the stream was cut short"),
        (Err(_), None) => Ending::Failed(ApiError::Panicked),
    };
    match ending {
        Ending::Whole(written) => {
            let detail = &mut call.event.detail;
            detail.insert("records".into(), written.records.to_string());
            detail.insert("bytes".into(), written.bytes.to_string());
            detail.insert(
                "sha256".into(),
                vault_crypto::hex::encode(&written.digest).to_string(),
            );
            let last = v1::SnapshotChunk {
                data: written.trailer().to_vec(),
                info: info.take(),
            };
            let answer = shared.finish(call, Ok(last)).await;
            let _ = answers.send(answer.map(Response::into_inner)).await;
        }
        Ending::Cut(why) => {
            call.event.reason = format!("incomplete: {why}; no snapshot was delivered");
            call.event.detail.insert("complete".into(), "false".into());
            // Nobody is waiting for this answer, or it would only end the stream.
            let _ = shared.finish(call, Ok(())).await;
        }
        Ending::TooSlow(why) => {
            call.event.reason = format!("incomplete: {why}; no snapshot was delivered");
            call.event.detail.insert("complete".into(), "false".into());
            let _ = shared.finish(call, Ok(())).await;
            // Queued after the chunks the client has yet to read; the slot and the view
            // are already given back, so waiting here holds nothing but this task.
            let status = Status::from(ApiError::Exhausted(TOO_SLOW));
            let _ = tokio::time::timeout(STALL, answers.send(Err(status))).await;
        }
        Ending::Failed(error) => {
            let answer = shared.finish::<v1::SnapshotChunk>(call, Err(error)).await;
            let _ = answers.send(answer.map(Response::into_inner)).await;
        }
    }
}

/// Resolves once the daemon is stopping.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the daemon's custody is gone: stopping too.
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// The header's values, for the first chunk.
fn info(header: &Header) -> v1::SnapshotInfo {
    v1::SnapshotInfo {
        format_version: u32::from(FORMAT_VERSION),
        vault_id: header.vault_id.to_string(),
        created_unix: header.created_unix,
        root_version: header.seal.root_version,
        generation: header.seal.generation,
        threshold: u32::from(header.seal.threshold),
        share_count: u32::from(header.seal.shares),
        tables: u32::from(header.tables),
        records: header.records,
    }
}

/// The snapshot writer's destination: bytes gathered into chunks of [`CHUNK`], each
/// handed to the stream, waiting while [`CHUNKS_IN_FLIGHT`] are queued.
struct Chunks {
    pending: Vec<u8>,
    out: mpsc::Sender<Vec<u8>>,
}

impl Chunks {
    fn new(out: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            pending: Vec::with_capacity(CHUNK),
            out,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        self.out.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the snapshot stream was closed",
            )
        })
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.pending.len();
        let taken = bytes.len().min(room);
        self.pending
            .extend_from_slice(bytes.get(..taken).unwrap_or_default());
        if self.pending.len() == CHUNK {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_full_except_the_last_and_keep_every_byte() {
        let (tx, mut rx) = mpsc::channel(64);
        let data: Vec<u8> = (0..(CHUNK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn({
            let data = data.clone();
            move || {
                let mut chunks = Chunks::new(tx);
                for piece in data.chunks(1000) {
                    chunks.write_all(piece).unwrap();
                }
                chunks.flush().unwrap();
            }
        });
        writer.join().unwrap();
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            sizes.push(chunk.len());
            got.extend(chunk);
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 100]);
        assert_eq!(got, data);
    }

    #[test]
    fn a_slow_reader_runs_out_of_time_in_proportion_to_what_it_read() {
        let mut pace = Pace::default();
        // The first chunk: the grace and a second per 64 KiB, capped by the stall limit.
        assert_eq!(pace.allowance(CHUNK), STALL);
        // A reader taking a chunk every 59 s never meets the stall limit, but spends
        // the grace on its first chunk and then earns a second per chunk: cut at the next.
        pace.took(CHUNK, Duration::from_secs(59));
        assert_eq!(pace.allowance(CHUNK), Duration::from_secs(60 + 2 - 59));
        // A reader at the minimum rate keeps the whole stall limit, however long the
        // snapshot.
        let mut steady = Pace::default();
        for _ in 0..100_000 {
            steady.took(CHUNK, Duration::from_secs(1));
        }
        assert_eq!(steady.allowance(CHUNK), STALL);
        // One 1% under it uses up the grace after about 6,000 chunks (100 minutes).
        let mut slow = Pace::default();
        let mut taken = 0u32;
        while slow.allowance(CHUNK) >= Duration::from_millis(1010) {
            slow.took(CHUNK, Duration::from_millis(1010));
            taken += 1;
        }
        assert!((5_900..=6_100).contains(&taken), "{taken}");
    }

    #[test]
    fn a_closed_stream_fails_the_writer() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut chunks = Chunks::new(tx);
        let error = chunks.write_all(&vec![0; CHUNK]).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
