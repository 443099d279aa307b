//! Process limits io_uring and many connections need, raised at start where allowed.

use crate::engine::StartError;

/// Makes sure io_uring can lock the memory it needs, raising the soft (and, as root, the hard)
/// RLIMIT_MEMLOCK if needed.
pub fn raise_memlock(need: u64) -> Result<(), StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
            return Ok(());
        }
        if lim.rlim_cur >= need {
            return Ok(());
        }
        let want = libc::rlimit {
            rlim_cur: need,
            rlim_max: lim.rlim_max.max(need),
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) == 0 {
            return Ok(());
        }
        if lim.rlim_max >= need {
            let soft = libc::rlimit {
                rlim_cur: need,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft) == 0 {
                return Ok(());
            }
        }
    }
    Err(StartError::Memlock {
        have: lim.rlim_cur,
        need,
    })
}

/// Raises the soft open-files limit toward what maxconn needs (a client and a backend socket per
/// connection), as HAProxy does; the hard limit is the operator's call.
pub fn raise_nofile(need: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let need = need as libc::rlim_t;
        if lim.rlim_cur >= need {
            return;
        }
        let cur = need.min(lim.rlim_max);
        let new = libc::rlimit {
            rlim_cur: cur,
            rlim_max: lim.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        if cur < need {
            eprintln!(
                "wtgate: warning: open-files limit {cur} is below the {need} that --maxconn needs; \
                 raise it (ulimit -n, systemd LimitNOFILE=)"
            );
        }
    }
}
