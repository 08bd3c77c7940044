//! The Page-Hinkley test (Page, 1954), as River's `river.drift.PageHinkley`.
//!
//! For each value `x_t` the detector updates the running mean `m_t` (including `x_t`) and two forgetful
//! cumulative sums of the deviation `d_t = x_t - m_t`:
//!
//! ```text
//! U_t = alpha * U_{t-1} + d_t - delta      (increase)      test_up   = U_t - min_{s<=t} U_s
//! L_t = alpha * L_{t-1} + d_t + delta      (decrease)      test_down = max_{s<=t} L_s - L_t
//! ```
//!
//! Once at least `min_instances` values were seen since the last reset, a drift is detected when the test of the
//! watched direction(s) exceeds `threshold` (strictly). `delta` is the magnitude of change tolerated (in the
//! unit of `x`), `threshold` (lambda) is in units of `x` times values, `alpha` forgets old deviations.
//!
//! # Reset
//! As in River, the detection is reported by the `update` that found it; the *next* `update` first resets every
//! statistic (mean, sums, extremes, count), so the detector learns the new regime from scratch.
//!
//! # False alarms
//! On a stationary stream of standard deviation `sigma` the one-sided statistic behaves like a random walk
//! reflected at its minimum, with drift `-delta` per value; its mean time to exceed `threshold` (the average run
//! length) is about `(exp(2 a) - 1 - 2 a) / (2 (delta / sigma)^2)` with `a = delta * threshold / sigma^2`
//! (Siegmund's approximation): with River's defaults on unit-variance data about 3,000 values per direction,
//! so `Both` raises a false alarm every ~1,500 values. Scale the input (or raise `delta`/`threshold`) when the
//! stream's variance is not small compared with `threshold`.
//!
//! # Differences from River
//! River starts the running maximum of `L` at `-1`; here it starts at `-inf` (the first value sets it), which
//! only matters while `L` stays below -1 from the very first value.

use serde::{Deserialize, Serialize};

/// Which direction of change is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhMode {
    /// Increases of the mean only.
    Up,
    /// Decreases of the mean only.
    Down,
    /// Either (River's default).
    Both,
}

/// The direction of a detected change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhDirection {
    Up,
    Down,
}

/// Parameters of [`PageHinkley`]; the defaults are River's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageHinkleyConfig {
    /// Values needed since the last reset before a drift may be detected (30).
    pub min_instances: u64,
    /// Magnitude of change tolerated, in the unit of the values (0.005).
    pub delta: f64,
    /// Detection threshold lambda (50).
    pub threshold: f64,
    /// Forgetting factor of the cumulative sums (1 - 0.0001).
    pub alpha: f64,
    /// Directions watched (both).
    pub mode: PhMode,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        PageHinkleyConfig {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: PhMode::Both,
        }
    }
}

/// The Page-Hinkley detector (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PageHinkley {
    cfg: PageHinkleyConfig,
    n: u64,
    mean: f64,
    sum_up: f64,
    sum_down: f64,
    min_up: f64,
    max_down: f64,
    drift: Option<PhDirection>,
    statistic: f64,
}

impl Default for PageHinkley {
    fn default() -> Self {
        PageHinkley::new(PageHinkleyConfig::default())
    }
}

impl PageHinkley {
    pub fn new(cfg: PageHinkleyConfig) -> Self {
        assert!(
            cfg.alpha > 0.0 && cfg.alpha <= 1.0,
            "alpha must lie in (0, 1]"
        );
        assert!(cfg.threshold > 0.0, "the threshold must be positive");
        let mut ph = PageHinkley {
            cfg,
            n: 0,
            mean: 0.0,
            sum_up: 0.0,
            sum_down: 0.0,
            min_up: f64::INFINITY,
            max_down: f64::NEG_INFINITY,
            drift: None,
            statistic: 0.0,
        };
        ph.reset();
        ph
    }

    /// Forgets everything (what the `update` after a detection does first).
    pub fn reset(&mut self) {
        self.n = 0;
        self.mean = 0.0;
        self.sum_up = 0.0;
        self.sum_down = 0.0;
        self.min_up = f64::INFINITY;
        self.max_down = f64::NEG_INFINITY;
        self.drift = None;
        self.statistic = 0.0;
    }

    /// Adds one value; true when a drift is detected at this value.
    pub fn update(&mut self, x: f64) -> bool {
        if self.drift.is_some() {
            self.reset();
        }
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        let dev = x - self.mean;
        self.sum_up = self.cfg.alpha * self.sum_up + dev - self.cfg.delta;
        self.sum_down = self.cfg.alpha * self.sum_down + dev + self.cfg.delta;
        self.min_up = self.min_up.min(self.sum_up);
        self.max_down = self.max_down.max(self.sum_down);
        let up = self.sum_up - self.min_up;
        let down = self.max_down - self.sum_down;
        self.statistic = match self.cfg.mode {
            PhMode::Up => up,
            PhMode::Down => down,
            PhMode::Both => up.max(down),
        };
        if self.n >= self.cfg.min_instances && self.statistic > self.cfg.threshold {
            let watch_up = self.cfg.mode != PhMode::Down;
            self.drift = Some(if watch_up && up > self.cfg.threshold {
                PhDirection::Up
            } else {
                PhDirection::Down
            });
        }
        self.drift.is_some()
    }

    /// Whether the last `update` detected a drift.
    pub fn drift_detected(&self) -> bool {
        self.drift.is_some()
    }

    /// Direction of the drift the last `update` detected.
    pub fn direction(&self) -> Option<PhDirection> {
        self.drift
    }

    /// The test statistic after the last `update` (the larger watched one), compared with the threshold.
    pub fn statistic(&self) -> f64 {
        self.statistic
    }

    /// Values seen since the last reset.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Running mean since the last reset.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn config(&self) -> &PageHinkleyConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step from 0 to 1 in a noiseless stream: with delta 0 and threshold 5, U grows by about 1 per value
    /// after the step (the running mean moves by 1/n only), so it fires a handful of values later, upwards.
    #[test]
    fn noiseless_step_fires_up_then_resets() {
        let mut ph = PageHinkley::new(PageHinkleyConfig {
            min_instances: 1,
            delta: 0.0,
            threshold: 5.0,
            alpha: 1.0,
            mode: PhMode::Both,
        });
        let mut fired = None;
        for i in 0..200 {
            let x = if i < 100 { 0.0 } else { 1.0 };
            if ph.update(x) {
                fired = Some(i);
                break;
            }
        }
        let at = fired.expect("a step of 1 is detected");
        assert!((105..=110).contains(&at), "fired at {at}");
        assert_eq!(ph.direction(), Some(PhDirection::Up));
        ph.update(1.0);
        assert_eq!(ph.n(), 1, "the update after a detection starts afresh");
        assert!(!ph.drift_detected());
    }

    /// Mode `Up` ignores a decrease that `Down` detects.
    #[test]
    fn modes_watch_their_direction() {
        let cfg = PageHinkleyConfig {
            min_instances: 1,
            delta: 0.0,
            threshold: 5.0,
            alpha: 1.0,
            mode: PhMode::Up,
        };
        let mut up = PageHinkley::new(cfg);
        let mut down = PageHinkley::new(PageHinkleyConfig {
            mode: PhMode::Down,
            ..cfg
        });
        let mut fired = (false, false);
        for i in 0..200 {
            let x = if i < 100 { 1.0 } else { 0.0 };
            fired.0 |= up.update(x);
            fired.1 |= down.update(x);
        }
        assert_eq!(fired, (false, true));
    }
}
