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

/// The descriptors a running wtgate may hold at once, by what holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// A client and a backend socket per connection.
    pub connections: usize,
    /// Idle pooled backend connections: `pool_size` per backend per shard.
    pub pools: usize,
    /// Splice pipes (two descriptors each), a quarter of `maxconn`, with `--splice auto`.
    pub pipes: usize,
    /// Listeners, rings, eventfds, checks, the admin listener, logs.
    pub fixed: usize,
}

impl FdBudget {
    pub fn of(cfg: &crate::config::Config, shards: usize) -> FdBudget {
        FdBudget {
            connections: cfg.maxconn * 2,
            pools: cfg.pool_size * cfg.backends.len() * shards,
            pipes: match cfg.splice {
                crate::config::Splice::Auto => cfg.maxconn / 4 * 2,
                crate::config::Splice::Off => 0,
            },
            fixed: 256,
        }
    }

    pub fn total(&self) -> usize {
        self.connections + self.pools + self.pipes + self.fixed
    }
}

/// Raises the soft open-files limit toward what `budget` needs, as HAProxy does; the hard limit
/// is the operator's call, and falling short of it is a warning that names the numbers: wtgate
/// serves all the same, and a connect that finds no descriptor is its own fault, not the
/// backend's.
pub fn raise_nofile(budget: &FdBudget) {
    let need = budget.total();
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
            let b = budget;
            eprintln!(
                "wtgate: warning: open-files limit {cur} is below the {need} wtgate may hold: \
                 {} for --maxconn (2 per connection), {} for the backend pools (--pool-size per \
                 backend per shard), {} for splice pipes, {} for the rest; raise it (ulimit -n, \
                 systemd LimitNOFILE=) or lower --maxconn / --pool-size",
                b.connections, b.pools, b.pipes, b.fixed
            );
        }
    }
}
