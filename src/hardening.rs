//! Process hardening applied at daemon start.

/// Why hardening failed. The daemon refuses to start without it.
#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE)")]
    Dumpable(#[source] std::io::Error),
    /// `setrlimit(RLIMIT_CORE, 0)` failed.
    #[error("cannot disable core dumps (setrlimit RLIMIT_CORE)")]
    CoreLimit(#[source] std::io::Error),
}

/// Disables core dumps and ptrace attachment by unprivileged processes:
/// `PR_SET_DUMPABLE=0` and `RLIMIT_CORE=0`.
pub fn harden_process() -> Result<(), HardeningError> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit};
    rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| HardeningError::Dumpable(e.into()))?;
    rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(|e| HardeningError::CoreLimit(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_takes_effect() {
        // Runs in a child so the test process itself stays dumpable for debuggers.
        if std::env::var_os("VAULTD_HARDENING_CHILD").is_some() {
            harden_process().unwrap();
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            let core = limits
                .lines()
                .find(|l| l.starts_with("Max core file size"))
                .unwrap();
            assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
            assert!(core.split_whitespace().nth(5) == Some("0"), "{core}");
            assert_eq!(
                rustix::process::dumpable_behavior().unwrap(),
                rustix::process::DumpableBehavior::NotDumpable
            );
            drop(status);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "hardening::tests::hardening_takes_effect",
                "--exact",
                "--nocapture",
            ])
            .env("VAULTD_HARDENING_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }
}
