//! Time: the seasonal clock that turns a host's session gaps into timestamps.
//!
//! A role's session intensity at UTC time t is `rate * diurnal[local hour] * weekly[local weekday]`, piecewise
//! constant per hour. Gaps are drawn in *operational time* (expected sessions, mean 1 per session) and mapped to
//! wall time by integrating the intensity forward hour by hour (time rescaling): a gap of 1 takes ~20 minutes at a
//! 3/h peak and hours at night. This keeps the heavy-tailed gap shape and the seasonality independent parameters.
//!
//! All times are microseconds since the Unix epoch, UTC (the [`crate::FlowRecord::start_us`] convention).

use super::scenario::RoleSpec;

pub const SECOND_US: i64 = 1_000_000;
pub const HOUR_US: i64 = 3_600 * SECOND_US;

/// Index 0..168 of the local hour of the week (Monday 00:00 = 0) containing `t_us`, and the UTC time at which
/// that hour ends.
pub fn hour_of_week(t_us: i64, utc_offset_hours: i32) -> (usize, i64) {
    let offset = utc_offset_hours as i64 * HOUR_US;
    let hours = (t_us + offset).div_euclid(HOUR_US);
    let day = hours.div_euclid(24);
    // 1970-01-01 was a Thursday (Monday = 0 makes it 3).
    let weekday = (day + 3).rem_euclid(7) as usize;
    let hour = hours.rem_euclid(24) as usize;
    (weekday * 24 + hour, (hours + 1) * HOUR_US - offset)
}

/// A role's session intensity over the week.
#[derive(Clone, Debug)]
pub struct Seasonal {
    /// Sessions per microsecond in each local hour of the week.
    rate_us: [f64; 168],
    utc_offset_hours: i32,
}

impl Seasonal {
    pub fn new(role: &RoleSpec, utc_offset_hours: i32) -> Seasonal {
        let base = role.sessions_per_hour / HOUR_US as f64;
        let mut rate_us = [0.0; 168];
        for (i, r) in rate_us.iter_mut().enumerate() {
            *r = base * role.weekly[i / 24] * role.diurnal[i % 24];
        }
        Seasonal {
            rate_us,
            utc_offset_hours,
        }
    }

    /// Whether this role ever starts a session.
    pub fn is_active(&self) -> bool {
        self.rate_us.iter().any(|r| *r > 0.0)
    }

    /// The wall time reached after `tau` units of operational time (expected sessions) from `t_us`, or `None`
    /// when that is at or past `until_us`. The result is > `t_us` or equal only for a zero gap.
    pub fn advance(&self, mut t_us: i64, mut tau: f64, until_us: i64) -> Option<i64> {
        while t_us < until_us {
            let (idx, hour_end) = hour_of_week(t_us, self.utc_offset_hours);
            let rate = self.rate_us[idx];
            let seg = (hour_end.min(until_us) - t_us) as f64;
            let capacity = rate * seg;
            if rate > 0.0 && tau <= capacity {
                let t = t_us + (tau / rate).round() as i64;
                return (t < until_us).then_some(t);
            }
            tau -= capacity;
            t_us = hour_end;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_and_hour() {
        // 2026-01-05T00:00:00Z is a Monday.
        let monday = 1_767_571_200 * SECOND_US;
        assert_eq!(hour_of_week(monday, 0), (0, monday + HOUR_US));
        assert_eq!(hour_of_week(monday + 30 * HOUR_US + 5, 0).0, 24 + 6);
        // Local time one hour ahead: Monday 00:30 UTC is Monday 01:30 local.
        assert_eq!(hour_of_week(monday + HOUR_US / 2, 1).0, 1);
        // Sunday 23:xx before it.
        assert_eq!(hour_of_week(monday - 1, 0).0, 167);
    }
}
