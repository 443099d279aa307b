//! CPU time and memory of other processes (the proxy under test), read from `/proc`.

use std::fs;

/// Total `utime + stime` of `pids` (all their threads), in µs. A pid that has gone counts as 0.
pub fn cpu_us(pids: &[u32]) -> u64 {
    let tick = clock_ticks_per_sec();
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|s| parse_stat_cpu_ticks(&s))
        .map(|ticks| ticks * 1_000_000 / tick)
        .sum()
}

/// `utime + stime` in clock ticks from a `/proc/PID/stat` line (fields 14 and 15; the command
/// name in field 2 may hold spaces and parentheses, so fields are counted after the last `)`).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11, stime index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Summed resident set size of `pids`, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| status_field_kib(&s, "VmRSS:"))
        .sum()
}

/// A `kB` field of `/proc/PID/status`.
pub fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Parses `1,2,3` into pids.
pub fn parse_pids(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{p}' is not a pid"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat() {
        let line = "1234 (nginx: worker (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    1 0 100 1000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kib(&[me]) > 0);
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_field_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_pids("1, 2,3").unwrap(), [1, 2, 3]);
        assert!(parse_pids("x").is_err());
    }
}
