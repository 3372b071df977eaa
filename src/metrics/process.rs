//! The process's own figures under Prometheus's standard names
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...), read from `/proc` at each scrape as the
//! official client libraries do, so dashboards built for them work here.

/// One reading of `/proc/self/stat` and friends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// The parts of `/proc/self/stat` used, in clock ticks and pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    cpu_ticks: u64,
    threads: u64,
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Parses `/proc/PID/stat`. The command name may hold spaces and
/// parentheses, so fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `fields[0]` is field 3 of proc(5), the state.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The boot time, Unix seconds, from `/proc/stat`'s `btime` line.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// Reads the process's figures now; `None` where `/proc` is missing.
pub fn read() -> Option<Reading> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    // SAFETY: sysconf and getrlimit only read; the struct is written by
    // getrlimit before it is read.
    let (ticks, page, max_fds) = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        let max_fds = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) {
            0 => limit.rlim_cur,
            _ => 0,
        };
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            max_fds,
        )
    };
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    Some(Reading {
        cpu_seconds: stat.cpu_ticks as f64 / ticks,
        resident_bytes: stat.resident_pages * page,
        virtual_bytes: stat.virtual_bytes,
        threads: stat.threads,
        start_time_seconds: boot as f64 + stat.start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_last_parenthesis() {
        let line = "4242 (tokio (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    150 50 0 0 20 0 7 0 123456 987654321 2500 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                cpu_ticks: 200,
                threads: 7,
                start_ticks: 123456,
                virtual_bytes: 987654321,
                resident_pages: 2500,
            })
        );
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn boot_time_comes_from_its_line() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1764900000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_764_900_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reads_as_itself() {
        let reading = read().expect("/proc");
        assert!(reading.resident_bytes > 1 << 20, "{reading:?}");
        assert!(reading.open_fds >= 3 && reading.open_fds <= reading.max_fds);
        assert!(reading.threads >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(reading.start_time_seconds <= now + 1.0);
        assert!(reading.start_time_seconds > now - 86400.0);
    }
}
