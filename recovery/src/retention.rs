//! Which versions a retention policy keeps: a pure function of the versions' ids, times
//! and tags, as restic's `forget` decides (`--keep-last`, `--keep-hourly`, …).

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Timelike, Utc};

pub use engine::run::config::Keep;

/// The ids `keep` keeps of `versions` (id, time made), any order: the newest `last`;
/// for each of hourly, daily and weekly, the newest version of each of the newest N
/// periods that have one; every tagged one; and always the latest.
pub fn kept(
    versions: &[(u64, DateTime<Utc>)],
    tagged: &BTreeSet<u64>,
    keep: &Keep,
) -> BTreeSet<u64> {
    let mut newest_first: Vec<(u64, DateTime<Utc>)> = versions.to_vec();
    newest_first.sort_by_key(|v| std::cmp::Reverse((v.1, v.0)));
    let mut out: BTreeSet<u64> = newest_first.first().map(|v| v.0).into_iter().collect();
    out.extend(newest_first.iter().take(keep.last as usize).map(|v| v.0));
    out.extend(
        versions
            .iter()
            .map(|v| v.0)
            .filter(|id| tagged.contains(id)),
    );
    type Period = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);
    let periods: [(u32, Period); 3] = [
        (keep.hourly, |t| (t.year(), t.month(), t.day(), t.hour())),
        (keep.daily, |t| (t.year(), t.month(), t.day(), 0)),
        (keep.weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
    ];
    for (n, period) in periods {
        let mut last = None;
        let mut taken = 0;
        for (id, t) in &newest_first {
            if taken >= n {
                break;
            }
            let p = period(t);
            if last != Some(p) {
                last = Some(p);
                out.insert(*id);
                taken += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn none() -> Keep {
        Keep {
            last: 0,
            hourly: 0,
            daily: 0,
            weekly: 0,
        }
    }

    #[test]
    fn the_latest_and_tagged_versions_are_always_kept() {
        let v = [
            (1, at("2026-01-01T00:00:00Z")),
            (2, at("2026-01-02T00:00:00Z")),
        ];
        assert_eq!(kept(&v, &BTreeSet::new(), &none()), BTreeSet::from([2]));
        assert_eq!(
            kept(&v, &BTreeSet::from([1]), &none()),
            BTreeSet::from([1, 2])
        );
    }

    #[test]
    fn last_keeps_the_newest_n() {
        let v: Vec<_> = (1..=5)
            .map(|i| (i, at(&format!("2026-01-01T00:0{i}:00Z"))))
            .collect();
        let keep = Keep { last: 3, ..none() };
        assert_eq!(kept(&v, &BTreeSet::new(), &keep), BTreeSet::from([3, 4, 5]));
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_of_the_newest_hours() {
        // Three in hour 10, two in hour 11, one in hour 13 (none in 12).
        let v = [
            (1, at("2026-01-01T10:05:00Z")),
            (2, at("2026-01-01T10:35:00Z")),
            (3, at("2026-01-01T10:55:00Z")),
            (4, at("2026-01-01T11:10:00Z")),
            (5, at("2026-01-01T11:50:00Z")),
            (6, at("2026-01-01T13:00:00Z")),
        ];
        let keep = Keep {
            hourly: 2,
            ..none()
        };
        assert_eq!(kept(&v, &BTreeSet::new(), &keep), BTreeSet::from([5, 6]));
        let keep = Keep {
            hourly: 3,
            ..none()
        };
        assert_eq!(kept(&v, &BTreeSet::new(), &keep), BTreeSet::from([3, 5, 6]));
    }

    #[test]
    fn daily_and_weekly_buckets_count_periods_that_have_versions() {
        let v = [
            (1, at("2026-01-05T10:00:00Z")), // Monday, ISO week 2
            (2, at("2026-01-07T10:00:00Z")), // week 2
            (3, at("2026-01-07T18:00:00Z")), // week 2, same day as 2
            (4, at("2026-01-13T09:00:00Z")), // week 3
            (5, at("2026-02-20T09:00:00Z")), // week 8
        ];
        let daily = Keep { daily: 3, ..none() };
        assert_eq!(
            kept(&v, &BTreeSet::new(), &daily),
            BTreeSet::from([3, 4, 5])
        );
        let weekly = Keep {
            weekly: 3,
            ..none()
        };
        assert_eq!(
            kept(&v, &BTreeSet::new(), &weekly),
            BTreeSet::from([3, 4, 5])
        );
        let weekly = Keep {
            weekly: 2,
            ..none()
        };
        assert_eq!(kept(&v, &BTreeSet::new(), &weekly), BTreeSet::from([4, 5]));
    }

    #[test]
    fn the_default_policy_keeps_a_day_of_minutely_passes_per_hour() {
        // A pass every 10 minutes for two days: 288 versions.
        let start = at("2026-03-01T00:00:00Z");
        let v: Vec<_> = (0..288)
            .map(|i| (i + 1, start + chrono::Duration::minutes(10 * i as i64)))
            .collect();
        let k = kept(&v, &BTreeSet::new(), &Keep::default());
        // The last 10, plus the newest of each of the 48 hours (overlapping 2 of them).
        assert_eq!(k.len(), 10 + 48 - 2);
        assert!(k.contains(&288));
        assert!(k.contains(&6), "the first hour's newest version is kept");
        assert!(!k.contains(&5));
    }
}
