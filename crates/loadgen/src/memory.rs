//! Resident memory and open files of the processes under test, read from
//! `/proc`, so memory per connection is measured the same way for any
//! server.

use serde::{Deserialize, Serialize};

/// Processes measured together under one name (`--mem gateway=PID,PID`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub pids: Vec<u32>,
}

impl std::str::FromStr for Group {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pids) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=PID[,PID...]"))?;
        let pids = pids
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if name.is_empty() || pids.is_empty() {
            return Err(format!("{s:?}: expected NAME=PID[,PID...]"));
        }
        Ok(Self {
            name: name.to_owned(),
            pids,
        })
    }
}

/// One reading of a group.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Sum of VmRSS, in KiB.
    pub rss_kib: u64,
    /// Sum of open file descriptors.
    pub fds: u64,
}

impl Group {
    /// Reads every process of the group; a vanished process counts zero.
    pub fn sample(&self) -> Sample {
        let mut sample = Sample::default();
        for pid in &self.pids {
            sample.rss_kib += rss_kib(*pid).unwrap_or(0);
            sample.fds += std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|dir| dir.count() as u64)
                .unwrap_or(0);
        }
        sample
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Memory per connection of one group, from readings before and after
/// opening the subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub pids: Vec<u32>,
    pub before: Sample,
    pub after: Sample,
    /// (after − before) RSS / connections, in bytes.
    pub bytes_per_connection: f64,
    /// (after − before) RSS / open files gained, in bytes, when it gained
    /// any: memory per stream of this group alone when the subscribers are
    /// spread over several servers (each stream is one socket there).
    #[serde(default)]
    pub bytes_per_open_file: Option<f64>,
}

impl GroupReport {
    pub fn new(group: &Group, before: Sample, after: Sample, connections: u64) -> Self {
        Self {
            name: group.name.clone(),
            pids: group.pids.clone(),
            before,
            after,
            bytes_per_connection: bytes_per_unit(before, after, connections),
            bytes_per_open_file: (after.fds > before.fds)
                .then(|| bytes_per_unit(before, after, after.fds - before.fds)),
        }
    }
}

/// What one group's memory grew by over a stage that created `units` of
/// something: topics for a topic sweep, replaying clients for a replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Growth {
    pub name: String,
    pub pids: Vec<u32>,
    pub before: Sample,
    /// After the stage and the settle time, with whatever it opened still
    /// open.
    pub after: Sample,
    /// After what the stage opened was closed and the settle time passed
    /// again: what the server gave back. Only for stages that hold
    /// connections.
    pub closed: Option<Sample>,
    pub units: u64,
    /// (after − before) RSS / units, in bytes.
    pub bytes_per_unit: f64,
}

impl Growth {
    /// `before` and `after` hold one sample per group of `groups`.
    pub fn of_groups(
        groups: &[Group],
        before: &[Sample],
        after: &[Sample],
        units: u64,
    ) -> Vec<Self> {
        groups
            .iter()
            .zip(before.iter().zip(after))
            .map(|(group, (&before, &after))| Self {
                name: group.name.clone(),
                pids: group.pids.clone(),
                before,
                after,
                closed: None,
                units,
                bytes_per_unit: bytes_per_unit(before, after, units),
            })
            .collect()
    }
}

/// CPU time (user + system, every thread) of a set of processes, in
/// seconds; a vanished process counts zero.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|pid| cpu_ticks(*pid)).sum::<u64>() as f64 / CLOCK_TICKS
}

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 a second on
/// every Linux ABI this tool runs on.
const CLOCK_TICKS: f64 = 100.0;

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count the
    // fields after its closing one (utime and stime are the 12th and 13th).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// Reads every group once.
pub fn sample_all(groups: &[Group]) -> Vec<Sample> {
    groups.iter().map(Group::sample).collect()
}

fn bytes_per_unit(before: Sample, after: Sample, units: u64) -> f64 {
    if units == 0 {
        return 0.0;
    }
    (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / units as f64
}

/// Memory of every TCP socket buffer on the machine, in KiB
/// (`/proc/net/sockstat`, counted in pages). Kernel memory, so no process's
/// RSS shows it: where a stream's unsent data waits in socket buffers
/// rather than in the server, this is where it is seen.
pub fn tcp_buffers_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = text
        .lines()
        .find_map(|line| line.strip_prefix("TCP:"))
        .and_then(|fields| {
            let mut words = fields.split_whitespace();
            while let Some(word) = words.next() {
                if word == "mem" {
                    return words.next()?.parse::<u64>().ok();
                }
            }
            None
        })
        .unwrap_or(0);
    // Pages of 4 KiB on every platform this tool runs on.
    pages * 4
}

/// The machine's load average, to note how busy it was during a run.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_sample_this_process() {
        let me = std::process::id();
        let group: Group = format!("self={me}").parse().unwrap();
        let sample = group.sample();
        assert!(sample.rss_kib > 0 && sample.fds > 0, "{sample:?}");
        assert!("nopids=".parse::<Group>().is_err());
        assert!("x=1,y".parse::<Group>().is_err());
        // This test has run some code: its process has used CPU.
        let spin = std::time::Instant::now();
        while cpu_seconds(&[me]) == 0.0 && spin.elapsed().as_secs() < 5 {}
        assert!(cpu_seconds(&[me]) > 0.0);
        assert_eq!(cpu_seconds(&[u32::MAX]), 0.0);
        // Some socket is open on any machine running tests; the line parses.
        let _ = tcp_buffers_kib();
    }
}
