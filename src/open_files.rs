//! The limit on open files. Many systems start processes with a soft limit of 1024 (Docker 25
//! and later among them), which lrp's own defaults can pass: 1024 client connections
//! (`max_connections`) and a connection to an endpoint per invocation in flight. At 1024,
//! `accept` and every new endpoint connection fail (`EMFILE`). lrp raises its soft limit to
//! the hard limit when it starts to serve, as Go's runtime does for every Go program (the
//! original lrp among them: see the `os` package's `rlimit.go`), and gives the function
//! processes it starts the limit it started with: a function sees what it would see without
//! lrp (Lambda itself gives functions 1024: "Lambda quotas" in the Lambda guide).

use std::io;
use std::sync::OnceLock;

/// The soft limit lrp started with, once [`raise_to_hard_limit`] has read it.
static STARTED_WITH: OnceLock<libc::rlimit> = OnceLock::new();

/// The soft limit before and after: raised to the hard limit when it was lower.
pub fn raise_to_hard_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only to the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let started_with = *STARTED_WITH.get_or_init(|| limit);
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((started_with.rlim_cur, limit.rlim_cur))
}

/// Gives the process `command` starts the limit lrp started with (nothing to do if lrp never
/// raised its own).
pub fn restore_in_child(command: &mut tokio::process::Command) {
    let Some(&limit) = STARTED_WITH.get() else {
        return;
    };
    // SAFETY: setrlimit is async-signal-safe, as a pre_exec hook must be, and reads only
    // `limit`, a copy made before the fork. The child may only lower its hard limit, so its
    // own is kept.
    unsafe {
        command.pre_exec(move || {
            let mut own = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) == 0 {
                own.rlim_cur = limit.rlim_cur.min(own.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &own);
            }
            Ok(())
        });
    }
}
