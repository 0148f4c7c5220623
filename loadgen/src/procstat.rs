//! CPU time and memory of processes and threads, read from /proc.

use std::fs;

/// Linux reports CPU times in USER_HZ ticks, which is 100 on every architecture it exports
/// to user space (the kernel's HZ may differ, /proc converts).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds spent by a process or thread so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CpuTimes {
    pub user_s: f64,
    pub system_s: f64,
}

impl CpuTimes {
    pub fn total(&self) -> f64 {
        self.user_s + self.system_s
    }

    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user_s: self.user_s - earlier.user_s,
            system_s: self.system_s - earlier.system_s,
        }
    }
}

/// Reads utime and stime from a `stat` file (`/proc/PID/stat`, `/proc/thread-self/stat`).
pub fn cpu_times(stat_path: &str) -> Option<CpuTimes> {
    let text = fs::read_to_string(stat_path).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14 and stime field 15.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some(CpuTimes {
        user_s: user / TICKS_PER_SECOND,
        system_s: system / TICKS_PER_SECOND,
    })
}

/// CPU seconds the whole machine has spent busy (all cores, from the first line of /proc/stat).
pub fn machine_busy_s() -> f64 {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = text.lines().next() else { return 0.0 };
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...: busy is everything but idle and iowait.
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / TICKS_PER_SECOND
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn status_field(path: &str, name: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The process name (`/proc/PID/comm`).
pub fn command_name(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim().to_owned())
}

/// How many CPUs this process may run on (its affinity mask, e.g. one under `taskset -c 1`).
pub fn allowed_cpus() -> usize {
    let Ok(text) = fs::read_to_string("/proc/self/status") else {
        return 1;
    };
    let Some(list) = text.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:")) else {
        return 1;
    };
    list.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((low, high)) => match (low.parse::<usize>(), high.parse::<usize>()) {
                (Ok(low), Ok(high)) if high >= low => high - low + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

/// One sample of the server processes and of the load generator itself.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Sample {
    /// Per server pid: CPU times and RSS (None once the process is gone).
    pub servers: Vec<(u32, Option<CpuTimes>, Option<u64>)>,
    pub own_process: CpuTimes,
    /// The thread that runs the connections.
    pub own_subscriber_thread: CpuTimes,
    /// Busy CPU seconds of the whole machine.
    pub machine_busy_s: f64,
}

impl Sample {
    /// Call on the subscriber thread, so that `thread-self` is that thread.
    pub fn take(pids: &[u32]) -> Sample {
        Sample {
            servers: pids
                .iter()
                .map(|&pid| (pid, cpu_times(&format!("/proc/{pid}/stat")), rss_kib(pid)))
                .collect(),
            own_process: cpu_times("/proc/self/stat").unwrap_or_default(),
            own_subscriber_thread: cpu_times("/proc/thread-self/stat").unwrap_or_default(),
            machine_busy_s: machine_busy_s(),
        }
    }

    pub fn server_cpu(&self) -> CpuTimes {
        self.servers
            .iter()
            .filter_map(|(_, cpu, _)| *cpu)
            .fold(CpuTimes::default(), |sum, cpu| CpuTimes {
                user_s: sum.user_s + cpu.user_s,
                system_s: sum.system_s + cpu.system_s,
            })
    }

    pub fn server_rss_kib(&self) -> u64 {
        self.servers.iter().filter_map(|(_, _, rss)| *rss).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_is_readable() {
        assert!(cpu_times("/proc/self/stat").is_some());
        assert!(rss_kib(std::process::id()).unwrap_or(0) > 0);
        assert!(allowed_cpus() >= 1);
    }
}
