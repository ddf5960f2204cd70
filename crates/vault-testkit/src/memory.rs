//! Scanning another process's memory for secrets, through `/proc/<pid>/mem`.
//!
//! Memory tests re-run their test binary as a child that handles a canary secret,
//! then scan it: first while it holds the secret (every needle must be found, so the
//! scan is known to work), then after it should have wiped it (none may be).

use std::io::{Read, Seek, SeekFrom};

/// Lower-case hex, for passing needles between processes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`hex`].
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// 32 bytes unique to this run, made in place without a random-number library whose
/// internal buffers would be scanned too: four SipHash outputs under std's per-process
/// random keys.
pub fn unique_canary() -> Vec<u8> {
    use std::hash::BuildHasher;
    let keys = std::collections::hash_map::RandomState::new();
    let mut canary = Vec::with_capacity(32);
    for i in 0..4u64 {
        canary.extend_from_slice(&keys.hash_one(i).to_le_bytes());
    }
    canary
}

/// Counts occurrences of each needle in the readable mappings of process `pid`, and
/// prints where each hit is, with the bytes around it.
pub fn scan(pid: u32, needles: &[Vec<u8>]) -> Vec<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    let mut hits = vec![0; needles.len()];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (lo, hi) = range.split_once('-').expect("range");
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).expect("address"),
            u64::from_str_radix(hi, 16).expect("address"),
        );
        let mut buf = vec![0u8; (hi - lo) as usize];
        if mem.seek(SeekFrom::Start(lo)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        for (needle, count) in needles.iter().zip(hits.iter_mut()) {
            let found = buf.windows(needle.len()).filter(|w| w == needle).count();
            if found > 0 {
                eprintln!("{found} hit(s) in {line}");
                for (i, _) in buf
                    .windows(needle.len())
                    .enumerate()
                    .filter(|(_, w)| w == needle)
                {
                    let lo = i.saturating_sub(48);
                    eprintln!("  at +{i:#x}: {}", hex(&buf[lo..(i + 80).min(buf.len())]));
                }
            }
            *count += found;
        }
    }
    hits
}

/// Whether some mapping of process `pid` is locked, excluded from dumps and from forks.
pub fn has_locked_arena(pid: u32) -> bool {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("read smaps");
    let mut locked = false;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Locked:") {
            locked = v.trim() != "0 kB";
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            if locked && ["lo", "dd", "dc"].iter().all(|f| flags.contains(f)) {
                return true;
            }
        }
    }
    false
}
