//! Latency summaries and a tiny deterministic random number generator.

use std::time::Duration;

/// Latencies in microseconds, summarised as percentiles.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<u64>,
}

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies {
            micros: Vec::with_capacity(n),
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.micros
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// Nearest-rank percentiles over everything recorded.
    pub fn summary(&self) -> Summary {
        let mut v = self.micros.clone();
        v.sort_unstable();
        let rank = |p: f64| -> u64 {
            if v.is_empty() {
                return 0;
            }
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        let sum: u128 = v.iter().map(|&x| u128::from(x)).sum();
        Summary {
            count: v.len(),
            mean_us: if v.is_empty() {
                0.0
            } else {
                sum as f64 / v.len() as f64
            },
            p50_us: rank(50.0),
            p90_us: rank(90.0),
            p99_us: rank(99.0),
            max_us: v.last().copied().unwrap_or(0),
        }
    }
}

impl Summary {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean_us": (self.mean_us * 10.0).round() / 10.0,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
        })
    }
}

/// User + system CPU ticks (1/100 s on Linux) of a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time used so far by this process, and by its threads named `thread` (e.g.
/// `suanli-writer`): time on a CPU and time runnable but waiting for one (`/proc/.../schedstat`).
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: std::time::Instant,
    process_ticks: Option<u64>,
    thread_ns: Option<(u64, u64)>,
}

/// What a thread did between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// CPU cores the whole process used on average.
    pub process_cores: Option<f64>,
    /// Share of the wall time the thread ran on a CPU.
    pub thread_busy: Option<f64>,
    /// Share of the wall time the thread was runnable but waited for a CPU (taken by others).
    pub thread_runqueue_wait: Option<f64>,
}

impl CpuSample {
    pub fn now(thread: &str) -> Self {
        let process_ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_ticks(&s));
        let mut thread_ns: Option<(u64, u64)> = None;
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for task in dir.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim() != thread {
                    continue;
                }
                let stat =
                    std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                let mut f = stat.split_whitespace().map(|x| x.parse::<u64>().ok());
                if let (Some(Some(run)), Some(Some(wait))) = (f.next(), f.next()) {
                    let (r, w) = thread_ns.unwrap_or((0, 0));
                    thread_ns = Some((r + run, w + wait));
                }
            }
        }
        CpuSample {
            at: std::time::Instant::now(),
            process_ticks,
            thread_ns,
        }
    }

    pub fn since(&self, earlier: &CpuSample) -> CpuUse {
        let wall = (self.at - earlier.at).as_secs_f64().max(1e-9);
        let round = |x: f64| (x * 100.0).round() / 100.0;
        let ns = |pick: fn((u64, u64)) -> u64| {
            let (a, b) = (earlier.thread_ns?, self.thread_ns?);
            Some(round((pick(b) as f64 - pick(a) as f64) / 1e9 / wall))
        };
        CpuUse {
            process_cores: earlier
                .process_ticks
                .zip(self.process_ticks)
                .map(|(a, b)| round((b as f64 - a as f64) / 100.0 / wall)),
            thread_busy: ns(|t| t.0),
            thread_runqueue_wait: ns(|t| t.1),
        }
    }
}

impl CpuUse {
    pub fn describe(&self) -> String {
        let pct = |x: Option<f64>| {
            x.map(|v| format!("{:.0} %", v * 100.0))
                .unwrap_or_else(|| "?".into())
        };
        format!(
            "process {} cores, writer thread on CPU {} and waiting for a CPU {}",
            self.process_cores
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "?".into()),
            pct(self.thread_busy),
            pct(self.thread_runqueue_wait),
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "process_cores": self.process_cores,
            "writer_on_cpu": self.thread_busy,
            "writer_runqueue_wait": self.thread_runqueue_wait,
        })
    }
}

/// Milliseconds with two decimals, for the human lines.
pub fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// xorshift64*: deterministic, good enough to spread a synthetic market, no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What the writer did over a benchmark's measured window: its CPU (see [`CpuSample`]) and the
/// WAL frames SQLite wrote through the store's VFS shim (none on PostgreSQL).
pub struct WriterSample {
    pub cpu: CpuUse,
    pub wal_frames: u64,
}

impl WriterSample {
    /// Waits for `from`, samples, waits for `to` and samples again.
    pub async fn between(from: std::time::Instant, to: std::time::Instant) -> WriterSample {
        tokio::time::sleep_until(from.into()).await;
        let (cpu, wal) = (CpuSample::now("suanli-writer"), suanli_walbuf::stats());
        tokio::time::sleep_until(to.into()).await;
        let wal_after = suanli_walbuf::stats();
        WriterSample {
            cpu: CpuSample::now("suanli-writer").since(&cpu),
            // SQLite writes a frame (its header, then its page) in two writes.
            wal_frames: wal_after.wal_writes.saturating_sub(wal.wal_writes) / 2,
        }
    }

    /// WAL pages per operation, when SQLite wrote any.
    pub fn wal_pages_per(&self, ops: u64) -> Option<f64> {
        (self.wal_frames > 0).then(|| self.wal_frames as f64 / ops.max(1) as f64)
    }

    /// The human line's CPU note: "; CPU: …; N WAL pages per `unit`".
    pub fn note(&self, pages_per_op: Option<f64>, unit: &str) -> String {
        format!(
            "; CPU: {}{}",
            self.cpu.describe(),
            pages_per_op
                .map(|f| format!("; {f:.1} WAL pages per {unit}"))
                .unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for us in 1..=100 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(
            (s.count, s.p50_us, s.p90_us, s.p99_us, s.max_us),
            (100, 50, 90, 99, 100)
        );
        assert_eq!(Latencies::default().summary().p99_us, 0);
    }

    #[test]
    fn xorshift_is_deterministic() {
        let (mut a, mut b) = (XorShift::new(7), XorShift::new(7));
        for _ in 0..100 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
    }
}
