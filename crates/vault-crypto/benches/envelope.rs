//! Cost of the envelope layer over raw AES-256-GCM, for a typical stored secret: a
//! 64-byte provider key with realistic associated data.
//!
//! `cargo bench -p vault-crypto --bench envelope`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad as RingAad, LessSafeKey, Nonce, UnboundKey};
use vault_crypto::TenantKey;
use vault_crypto::envelope::{Aad, Purpose};

const SECRET_LEN: usize = 64;
/// Length of the canonical encoding of `aad()` below: domain 10, header 5, purpose 1,
/// three length-prefixed fields 4+9, 4+4, 4+11, version 8, empty binding 4.
const ENCODED_AAD_LEN: usize = 64;

fn aad() -> Aad<'static> {
    Aad {
        purpose: Purpose::Secret,
        tenant: "acme-corp",
        environment: "live",
        name: "byok/openai",
        version: 3,
        binding: &[],
    }
}

fn envelope(c: &mut Criterion) {
    let secret = [0x5au8; SECRET_LEN];
    let tenant_key = TenantKey::generate(3).expect("key generation");
    let sealed = tenant_key.seal(&aad(), &secret).expect("sealing");

    // The same AEAD work without the envelope layer: same key size, plaintext and
    // associated-data lengths, a 16-byte tag, a buffer copied fresh per open.
    let raw_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("32-byte key"));
    let raw_aad = [0x11u8; ENCODED_AAD_LEN];
    let nonce = [9u8; 12];
    let mut raw_sealed = secret.to_vec();
    raw_key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            RingAad::from(&raw_aad),
            &mut raw_sealed,
        )
        .expect("raw sealing");
    let raw_sealed: [u8; SECRET_LEN + 16] = raw_sealed.try_into().expect("plaintext + tag");

    let mut group = c.benchmark_group("envelope-64B");
    group.throughput(Throughput::Bytes(SECRET_LEN as u64));
    group.bench_function("TenantKey::open", |b| {
        b.iter(|| {
            let opened = tenant_key
                .open(black_box(&sealed), black_box(&aad()))
                .expect("opens");
            black_box(opened.len())
        });
    });
    group.bench_function("ring open_in_place", |b| {
        b.iter(|| {
            let mut buf = black_box(raw_sealed);
            let plain = raw_key
                .open_in_place(
                    Nonce::assume_unique_for_key(black_box(nonce)),
                    RingAad::from(black_box(&raw_aad)),
                    &mut buf,
                )
                .expect("opens");
            black_box(plain.len())
        });
    });
    group.bench_function("TenantKey::seal", |b| {
        b.iter(|| {
            tenant_key
                .seal(black_box(&aad()), black_box(&secret))
                .expect("seals")
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = envelope
}
criterion_main!(benches);
