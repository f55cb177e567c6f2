//! Connection quality from measured round trips and lost pings (sans-IO).

use std::collections::VecDeque;
use std::time::Duration;

/// Pings awaiting their pong; older ones are counted as lost when a new ping pushes them out.
pub const MAX_PENDING_PINGS: usize = 16;
/// Weight of a new sample in the moving averages (as TCP's SRTT: 1/8).
const ALPHA: f64 = 0.125;

/// How good a link is, from measurements.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ConnectionQuality {
    /// Smoothed round-trip time, once one was measured.
    pub rtt: Option<Duration>,
    /// Smoothed fraction of pings lost, 0.0 to 1.0.
    pub loss: f64,
    /// Pings answered so far.
    pub samples: u32,
}

impl ConnectionQuality {
    /// 0 (unusable) to 100 (excellent): loss dominates, then latency above 20 ms.
    pub fn score(&self) -> u8 {
        let Some(rtt) = self.rtt else { return 50 };
        let ms = rtt.as_secs_f64() * 1000.0;
        let latency = (1.0 - ((ms - 20.0).max(0.0) / 480.0)).clamp(0.0, 1.0);
        let s = 100.0 * latency * (1.0 - self.loss).powi(2);
        // Clamped to 0..=100 above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let score = s.round().clamp(0.0, 100.0) as u8;
        score
    }
}

/// Tracks pings and pongs of one link.
#[derive(Debug, Default)]
pub struct QualityTracker {
    next_seq: u64,
    pending: VecDeque<(u64, Duration)>,
    quality: ConnectionQuality,
    srtt_s: Option<f64>,
}

impl QualityTracker {
    /// A tracker with no measurements.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a ping sent at `now`; returns its sequence number.
    pub fn ping_sent(&mut self, now: Duration) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.pending.len() == MAX_PENDING_PINGS {
            self.pending.pop_front();
            self.sample_loss(true);
        }
        self.pending.push_back((seq, now));
        seq
    }

    /// Records a pong for `seq` at `now`. Unknown or duplicate pongs are ignored.
    pub fn pong_received(&mut self, seq: u64, now: Duration) {
        let Some(i) = self.pending.iter().position(|(s, _)| *s == seq) else {
            return;
        };
        // Older pings still pending when a later one is answered were lost.
        for _ in 0..i {
            self.pending.pop_front();
            self.sample_loss(true);
        }
        let Some((_, sent)) = self.pending.pop_front() else {
            return;
        };
        let rtt = now.saturating_sub(sent).as_secs_f64();
        let srtt = self.srtt_s.map_or(rtt, |s| (1.0 - ALPHA) * s + ALPHA * rtt);
        self.srtt_s = Some(srtt);
        self.quality.rtt = Some(Duration::from_secs_f64(srtt));
        self.quality.samples = self.quality.samples.saturating_add(1);
        self.sample_loss(false);
    }

    /// Counts pings older than `timeout` at `now` as lost.
    pub fn expire(&mut self, now: Duration, timeout: Duration) {
        while let Some((_, sent)) = self.pending.front() {
            if now.saturating_sub(*sent) < timeout {
                break;
            }
            self.pending.pop_front();
            self.sample_loss(true);
        }
    }

    fn sample_loss(&mut self, lost: bool) {
        let x = if lost { 1.0 } else { 0.0 };
        self.quality.loss = (1.0 - ALPHA) * self.quality.loss + ALPHA * x;
    }

    /// Current quality.
    pub fn quality(&self) -> ConnectionQuality {
        self.quality
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rtt_is_measured_and_smoothed() {
        let mut q = QualityTracker::new();
        assert_eq!(q.quality().rtt, None);
        let s = q.ping_sent(Duration::ZERO);
        q.pong_received(s, 40 * MS);
        assert_eq!(q.quality().rtt, Some(40 * MS));
        let s = q.ping_sent(100 * MS);
        q.pong_received(s, 180 * MS);
        let rtt = q.quality().rtt.unwrap().as_secs_f64() * 1000.0;
        assert!((rtt - 45.0).abs() < 1e-6, "{rtt}");
        assert!(q.quality().loss.abs() < f64::EPSILON);
    }

    #[test]
    fn losses_lower_the_score() {
        let mut good = QualityTracker::new();
        let mut lossy = QualityTracker::new();
        for i in 0..40u32 {
            let t = Duration::from_millis(u64::from(i) * 100);
            let s = good.ping_sent(t);
            good.pong_received(s, t + 10 * MS);
            let s = lossy.ping_sent(t);
            if i % 3 == 0 {
                lossy.pong_received(s, t + 10 * MS);
            }
        }
        lossy.expire(Duration::from_secs(60), Duration::from_secs(5));
        assert!(good.quality().score() > 90, "{:?}", good.quality());
        assert!(lossy.quality().loss > 0.4, "{:?}", lossy.quality());
        assert!(lossy.quality().score() < good.quality().score());
        // Duplicate and unknown pongs change nothing.
        let before = good.quality();
        good.pong_received(3, Duration::from_secs(100));
        assert_eq!(good.quality(), before);
    }

    #[test]
    fn pending_pings_are_bounded() {
        let mut q = QualityTracker::new();
        for i in 0..100 {
            q.ping_sent(Duration::from_millis(i));
        }
        assert_eq!(q.pending.len(), MAX_PENDING_PINGS);
        assert!(q.quality().loss > 0.9);
    }
}
