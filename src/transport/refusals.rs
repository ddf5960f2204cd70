//! Refused TLS handshakes: why each was refused, counted by cause
//! (`vaultd_tls_handshakes_refused_total{reason}`), and logged in aggregate.
//!
//! Anyone who can reach the port can make handshakes fail, so a refusal never writes
//! a line of its own: the first of a cause is logged at once, the rest within the next
//! [`LOG_INTERVAL`] are summed into one line at its end (with the address of the last),
//! and a quiet cause logs nothing. Lines name the cause and what an operator can do;
//! they never hold certificate contents (rustls does not hand a refused certificate
//! back) or key material.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::{AlertDescription, CertificateError};

use crate::anomalies::{Anomalies, Failing};
use crate::metrics::RefusedHandshakes;

/// At most one log line per cause in this long.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a handshake on the mutual-TLS listener did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// The client sent no certificate.
    NoCertificate,
    /// Its certificate does not chain to `tls.client_ca`.
    UnknownCa,
    /// A CRL in `tls.crls` lists it.
    Revoked,
    /// It has expired, or is not valid yet.
    Expired,
    /// The CRL covering it has passed its `nextUpdate` (`tls.crl_expiry = "enforce"`).
    CrlExpired,
    /// CRLs are configured, and none covers its issuer.
    RevocationUnknown,
    /// Not a client certificate: its extended key usage lacks clientAuth.
    WrongUsage,
    /// Malformed, a signature that does not verify, or otherwise unusable.
    BadCertificate,
    /// The client refused vaultd's own certificate.
    ServerCertificateRefused,
    /// Not TLS 1.3, no `h2`, or a broken handshake.
    Protocol,
    /// Silent past `limits.first_byte_timeout`, or a handshake past its deadline.
    Timeout,
    /// A newer handshake took its slot (`limits.handshakes`).
    Evicted,
    /// The connection failed otherwise (reset, closed mid-handshake).
    Other,
}

impl Refusal {
    /// Every cause, for the metric's labels.
    pub(crate) const ALL: [Refusal; 13] = [
        Refusal::NoCertificate,
        Refusal::UnknownCa,
        Refusal::Revoked,
        Refusal::Expired,
        Refusal::CrlExpired,
        Refusal::RevocationUnknown,
        Refusal::WrongUsage,
        Refusal::BadCertificate,
        Refusal::ServerCertificateRefused,
        Refusal::Protocol,
        Refusal::Timeout,
        Refusal::Evicted,
        Refusal::Other,
    ];

    /// Why `accept` failed, from the error tokio-rustls gave.
    pub(crate) fn of(error: &std::io::Error) -> Self {
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return match error.kind() {
                std::io::ErrorKind::TimedOut => Refusal::Timeout,
                _ => Refusal::Other,
            };
        };
        match tls {
            rustls::Error::NoCertificatesPresented => Refusal::NoCertificate,
            rustls::Error::InvalidCertificate(cause) => Self::of_certificate(cause),
            rustls::Error::AlertReceived(alert) => match alert {
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::DecryptError
                | AlertDescription::AccessDenied => Refusal::ServerCertificateRefused,
                AlertDescription::ProtocolVersion
                | AlertDescription::HandshakeFailure
                | AlertDescription::NoApplicationProtocol
                | AlertDescription::IllegalParameter => Refusal::Protocol,
                _ => Refusal::Other,
            },
            rustls::Error::PeerIncompatible(_)
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::InvalidMessage(_)
            | rustls::Error::NoApplicationProtocol => Refusal::Protocol,
            _ => Refusal::Other,
        }
    }

    fn of_certificate(cause: &CertificateError) -> Self {
        use CertificateError as C;
        match cause {
            C::UnknownIssuer => Refusal::UnknownCa,
            C::Revoked => Refusal::Revoked,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => Refusal::Expired,
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                Refusal::CrlExpired
            }
            C::UnknownRevocationStatus => Refusal::RevocationUnknown,
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => Refusal::WrongUsage,
            _ => Refusal::BadCertificate,
        }
    }

    /// The metric's `reason` label.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::CrlExpired => "crl_expired",
            Refusal::RevocationUnknown => "revocation_unknown",
            Refusal::WrongUsage => "wrong_usage",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::ServerCertificateRefused => "server_certificate_refused",
            Refusal::Protocol => "protocol",
            Refusal::Timeout => "timeout",
            Refusal::Evicted => "evicted",
            Refusal::Other => "other",
        }
    }

    /// What it means, and what to do, for the log.
    const fn explain(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "clients sent no certificate; every client needs one",
            Refusal::UnknownCa => {
                "client certificates not issued by tls.client_ca; issue them from that CA (vaultctl pki issue-client)"
            }
            Refusal::Revoked => {
                "client certificates revoked by a CRL in tls.crls; their holders need new ones"
            }
            Refusal::Expired => {
                "client certificates expired or not yet valid; renew them (vaultctl pki renew), or check the clocks"
            }
            Refusal::CrlExpired => {
                "a CRL in tls.crls is past its next update, so every certificate it covers is refused; publish a fresh one (vaultctl pki crl) and reload (SIGHUP)"
            }
            Refusal::RevocationUnknown => {
                "no CRL in tls.crls covers these certificates' CA; add that CA's CRL and reload (SIGHUP)"
            }
            Refusal::WrongUsage => {
                "certificates without the clientAuth extended key usage (a server certificate used as a client's?)"
            }
            Refusal::BadCertificate => {
                "client certificates that are malformed or whose signature does not verify"
            }
            Refusal::ServerCertificateRefused => {
                "clients refused vaultd's own certificate; they must trust the CA of tls.cert and connect with a name in it"
            }
            Refusal::Protocol => "clients that do not speak TLS 1.3 with ALPN h2",
            Refusal::Timeout => {
                "connections silent past limits.first_byte_timeout, or handshakes past their deadline"
            }
            Refusal::Evicted => {
                "handshakes that gave their slot to newer ones (limits.handshakes): many connections at once"
            }
            Refusal::Other => "connections that failed during the handshake (closed or reset)",
        }
    }
}

/// One line to log: `count` refusals of `reason`, the last from `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) reason: Refusal,
    pub(crate) count: u64,
    pub(crate) peer: SocketAddr,
}

#[derive(Debug)]
struct Window {
    /// No line for this cause before then.
    quiet_until: Instant,
    /// Refusals not logged yet.
    pending: u64,
    last_peer: Option<SocketAddr>,
    flush_scheduled: bool,
}

/// What to do after counting a refusal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Log this line now.
    Log(Line),
    /// Call [`Aggregate::flush`] for this cause at this time.
    FlushAt(Instant),
    /// Nothing: a flush is already due.
    Wait,
}

/// The per-cause windows, without any clock or timer of their own.
#[derive(Debug)]
pub(crate) struct Aggregate {
    interval: Duration,
    windows: HashMap<Refusal, Window>,
}

impl Aggregate {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: HashMap::new(),
        }
    }

    /// Counts a refusal at `now`.
    pub(crate) fn record(&mut self, reason: Refusal, peer: SocketAddr, now: Instant) -> Next {
        let window = self.windows.entry(reason).or_insert(Window {
            quiet_until: now,
            pending: 0,
            last_peer: None,
            flush_scheduled: false,
        });
        if now >= window.quiet_until && window.pending == 0 {
            window.quiet_until = now + self.interval;
            return Next::Log(Line {
                reason,
                count: 1,
                peer,
            });
        }
        window.pending += 1;
        window.last_peer = Some(peer);
        if window.flush_scheduled {
            return Next::Wait;
        }
        window.flush_scheduled = true;
        Next::FlushAt(window.quiet_until)
    }

    /// The line summing `reason`'s refusals since its last line, if there were any.
    pub(crate) fn flush(&mut self, reason: Refusal, now: Instant) -> Option<Line> {
        let window = self.windows.get_mut(&reason)?;
        window.flush_scheduled = false;
        let peer = window.last_peer.take()?;
        let count = std::mem::take(&mut window.pending);
        window.quiet_until = now + self.interval;
        (count > 0).then_some(Line {
            reason,
            count,
            peer,
        })
    }
}

/// Counts refused handshakes and logs them in aggregate.
pub(crate) struct RefusalLog {
    aggregate: Mutex<Aggregate>,
    counted: RefusedHandshakes,
    anomalies: Arc<Anomalies>,
}

impl RefusalLog {
    pub(crate) fn new(
        interval: Duration,
        counted: RefusedHandshakes,
        anomalies: Arc<Anomalies>,
    ) -> Arc<Self> {
        for refusal in Refusal::ALL {
            counted.declare(refusal.label());
        }
        Arc::new(Self {
            aggregate: Mutex::new(Aggregate::new(interval)),
            counted,
            anomalies,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Aggregate> {
        // Each update leaves the windows consistent before anything can panic.
        self.aggregate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a handshake from `peer` refused for `reason`; logs now or schedules
    /// the window's summary.
    pub(crate) fn record(self: &Arc<Self>, reason: Refusal, peer: SocketAddr) {
        self.counted.count(reason.label());
        // A handshake that lost its slot to load says nothing of its source.
        if reason != Refusal::Evicted {
            self.anomalies.failure(Failing::Source(peer.ip()));
        }
        let next = self.lock().record(reason, peer, Instant::now());
        match next {
            Next::Log(line) => emit(&line, None),
            Next::FlushAt(at) => {
                let log = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    let line = log.lock().flush(reason, Instant::now());
                    if let Some(line) = line {
                        emit(&line, Some(LOG_INTERVAL));
                    }
                });
            }
            Next::Wait => {}
        }
    }
}

fn emit(line: &Line, window: Option<Duration>) {
    let Line {
        reason,
        count,
        peer,
    } = line;
    let handshakes = if *count == 1 {
        "handshake"
    } else {
        "handshakes"
    };
    let when = window.map_or(String::new(), |w| format!(" in the last {}s", w.as_secs()));
    tracing::warn!(
        "refused {count} TLS {handshakes} ({}){when}, the last from {peer}: {}",
        reason.label(),
        reason.explain()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 4000))
    }

    #[test]
    fn one_line_per_cause_per_interval_with_the_count_and_the_last_peer() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut aggregate = Aggregate::new(Duration::from_secs(10));
        let unknown = Refusal::UnknownCa;
        // The first is logged at once.
        assert_eq!(
            aggregate.record(unknown, peer(1), at(0)),
            Next::Log(Line {
                reason: unknown,
                count: 1,
                peer: peer(1)
            })
        );
        // The next ones wait for the end of the window; one flush is scheduled.
        assert_eq!(
            aggregate.record(unknown, peer(2), at(10)),
            Next::FlushAt(at(10_000))
        );
        for n in 3..=100 {
            assert_eq!(aggregate.record(unknown, peer(n), at(20)), Next::Wait);
        }
        // Another cause has a window of its own.
        assert!(matches!(
            aggregate.record(Refusal::Revoked, peer(7), at(30)),
            Next::Log(_)
        ));
        assert_eq!(
            aggregate.flush(unknown, at(10_000)),
            Some(Line {
                reason: unknown,
                count: 99,
                peer: peer(100)
            })
        );
        // After a summary, the next refusal waits for the next window too...
        assert_eq!(
            aggregate.record(unknown, peer(1), at(11_000)),
            Next::FlushAt(at(20_000))
        );
        assert_eq!(
            aggregate.flush(unknown, at(20_000)).map(|l| l.count),
            Some(1)
        );
        // ...and a quiet window logs nothing, after which the next is logged at once.
        assert_eq!(aggregate.flush(unknown, at(30_000)), None);
        assert!(matches!(
            aggregate.record(unknown, peer(1), at(30_001)),
            Next::Log(Line { count: 1, .. })
        ));
    }

    #[test]
    fn tls_errors_name_their_cause() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let certificate = |c| io(rustls::Error::InvalidCertificate(c));
        for (error, expected) in [
            (
                io(rustls::Error::NoCertificatesPresented),
                Refusal::NoCertificate,
            ),
            (
                certificate(CertificateError::UnknownIssuer),
                Refusal::UnknownCa,
            ),
            (certificate(CertificateError::Revoked), Refusal::Revoked),
            (certificate(CertificateError::Expired), Refusal::Expired),
            (certificate(CertificateError::NotValidYet), Refusal::Expired),
            (
                certificate(CertificateError::ExpiredRevocationList),
                Refusal::CrlExpired,
            ),
            (
                certificate(CertificateError::UnknownRevocationStatus),
                Refusal::RevocationUnknown,
            ),
            (
                certificate(CertificateError::InvalidPurpose),
                Refusal::WrongUsage,
            ),
            (
                certificate(CertificateError::BadEncoding),
                Refusal::BadCertificate,
            ),
            (
                io(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                Refusal::ServerCertificateRefused,
            ),
            (
                io(rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::Tls13RequiredForQuic,
                )),
                Refusal::Protocol,
            ),
            (
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                Refusal::Other,
            ),
        ] {
            assert_eq!(Refusal::of(&error), expected, "{error}");
        }
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len(), "labels are distinct");
    }
}
