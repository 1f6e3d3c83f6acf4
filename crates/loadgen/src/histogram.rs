//! Latency histogram: log-linear buckets, mergeable across threads and
//! processes.
//!
//! Values are microseconds. Below 128 µs every value has its own bucket;
//! above, each power of two is split into 64 buckets, so any percentile is
//! within 1.6 % of the true value. That is HdrHistogram's layout with two
//! significant digits, written out in a page so worker processes can ship
//! their histograms to the coordinator as plain JSON.

use serde::{Deserialize, Serialize};

/// Values below this are exact.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two covered above [`LINEAR`]: up to 2^40 µs, about 12 days.
const OCTAVES: usize = 34;
const BUCKETS: usize = LINEAR as usize + OCTAVES * SUB;

/// Counts of values per bucket, plus the exact extremes.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

fn bucket(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let octave = (msb - 7) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((value >> (msb - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR as usize + octave * SUB + sub
}

/// The middle of a bucket's value range: what a percentile in it reports.
fn representative(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let octave = (index - LINEAR as usize) / SUB;
    let sub = ((index - LINEAR as usize) % SUB) as u64;
    let shift = octave as u32 + 7 - SUB_BITS;
    let low = (SUB as u64 + sub) << shift;
    low + (1u64 << shift) / 2
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
        self.count += 1;
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
        self.sum += u128::from(micros);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// The value at quantile `q` (0..=1), in microseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // Never report beyond what was actually seen.
                return representative(index).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.count,
            p50_ms: ms(self.quantile(0.50)),
            p90_ms: ms(self.quantile(0.90)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max),
            mean_ms: if self.count == 0 {
                0.0
            } else {
                (self.sum / u128::from(self.count)) as f64 / 1000.0
            },
        }
    }

    /// The non-empty buckets, for shipping between processes.
    pub fn to_wire(&self) -> WireHistogram {
        WireHistogram {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i as u32, *n))
                .collect(),
            min: self.min,
            max: self.max,
            sum: self.sum as f64,
        }
    }

    pub fn from_wire(wire: &WireHistogram) -> Self {
        let mut histogram = Self::default();
        for &(index, n) in &wire.buckets {
            if let Some(slot) = histogram.counts.get_mut(index as usize) {
                *slot += n;
                histogram.count += n;
            }
        }
        histogram.min = wire.min;
        histogram.max = wire.max;
        histogram.sum = wire.sum as u128;
        histogram
    }
}

/// A histogram as sent over a worker's stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireHistogram {
    pub buckets: Vec<(u32, u64)>,
    pub min: u64,
    pub max: u64,
    pub sum: f64,
}

/// What the report shows of a latency distribution.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact_and_large_ones_within_two_percent() {
        for value in [0, 1, 127, 128, 129, 1000, 65_432, 1_234_567, 98_765_432_100] {
            let mut h = Histogram::default();
            h.record(value);
            h.record(value);
            let got = representative(bucket(value));
            let error = (got as f64 - value as f64).abs() / (value.max(1) as f64);
            assert!(error <= 0.016, "{value} came back as {got}");
            assert_eq!(h.quantile(0.5), value, "clamped to the seen range");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=100_000 {
            h.record(v);
        }
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.02, "p99 {p99}");
        assert_eq!(h.quantile(1.0), 100_000);
    }

    #[test]
    fn wire_round_trip_and_merge() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in 0..1000 {
            a.record(v);
            b.record(v * 1000);
        }
        let mut merged = Histogram::from_wire(&a.to_wire());
        merged.merge(&Histogram::from_wire(&b.to_wire()));
        assert_eq!(merged.count(), 2000);
        assert_eq!(merged.quantile(1.0), 999_000);
        assert_eq!(merged.quantile(0.0), 0);
    }
}
