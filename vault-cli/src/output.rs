//! Printing results: aligned tables and one-liners for people, stable JSON for
//! machines.

use serde_json::Value;
use vault_client::Environment;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// Prints `human` for people, or `json` (pretty, one document) with `--json`.
    pub(crate) fn emit(&self, human: impl FnOnce() -> String, json: impl FnOnce() -> Value) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json()).unwrap_or_default()
            );
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }
}

/// An API message's environment by name (`live`, `test`); `?` for a value this
/// version does not know.
pub(crate) fn env_name(environment: i32) -> &'static str {
    Environment::from_proto(environment).map_or("?", Environment::as_str)
}

/// Aligns `rows` under `headers` in columns two spaces apart.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (times before 1970 show as 1970).
/// The last second humantime (and RFC 3339) can spell: 9999-12-31 23:59:59 UTC.
const LAST_SPELLED: u64 = 253_402_300_799;

/// A Unix time for people, in UTC. Never panics, whatever a daemon sends: times
/// before 1970 print as the epoch, times past year 9999 by their number.
pub(crate) fn time(unix_seconds: i64) -> String {
    let seconds = u64::try_from(unix_seconds).unwrap_or(0);
    if seconds > LAST_SPELLED {
        return format!("after 9999-12-31 (Unix time {seconds})");
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    // RFC 3339 `YYYY-MM-DDTHH:MM:SSZ`, spelled for people.
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string();
    format!(
        "{} UTC",
        rfc3339.replacen('T', " ", 1).trim_end_matches('Z')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_times_are_utc() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_795_442_211), "2026-11-23 13:56:51 UTC");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn any_time_a_daemon_can_send_is_printed() {
        assert_eq!(time(-5), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(253_402_300_799), "9999-12-31 23:59:59 UTC");
        assert_eq!(
            time(253_402_300_800),
            "after 9999-12-31 (Unix time 253402300800)"
        );
        for extreme in [i64::MAX, i64::MAX / 1000, i64::MIN] {
            assert!(!time(extreme).is_empty());
        }
    }
}
