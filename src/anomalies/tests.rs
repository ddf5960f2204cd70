//! The detector's arithmetic on a clock the tests move: levels crossed at 3×, 5× and
//! 10× of a synthetic baseline and not below, warm-up, bursts raised once.

use super::state::{Baselines, Bursts, alpha};
use super::{AnomalyConfig, Failing, Watched};

const KEY: (&str, &str, Watched) = ("spiffe://x/svc/gw", "acme", Watched::Lease);

/// Feeds `per_minute` requests in each of `minutes` minutes from `from`.
fn steady(b: &mut Baselines, config: &AnomalyConfig, from: u64, minutes: u64, per_minute: u32) {
    for minute in from..from + minutes {
        for _ in 0..per_minute {
            assert!(
                b.count(KEY, minute, 1, config).is_none(),
                "minute {minute}: a steady rate is its own baseline"
            );
        }
    }
}

/// The levels raised, in order, by `n` single requests in `minute`.
fn levels_raised(
    b: &mut Baselines,
    config: &AnomalyConfig,
    minute: u64,
    n: u32,
) -> Vec<(u32, f64)> {
    (1..=n)
        .filter_map(|i| {
            b.count(KEY, minute, 1, config)
                .and_then(|c| c.raised.map(|level| (i, level)))
        })
        .collect()
}

#[test]
fn levels_fire_at_three_five_and_ten_times_the_baseline_and_not_below() {
    let config = AnomalyConfig::default();
    let mut b = Baselines::new(100, alpha(config.half_life));
    steady(&mut b, &config, 1000, 30, 10);
    // 10 a minute is usual: the 30th request of a minute is 3×, the 50th 5×, the
    // 100th 10×; each level once.
    assert_eq!(
        levels_raised(&mut b, &config, 1030, 150),
        [(30, 3.0), (50, 5.0), (100, 10.0)]
    );
    // The next minute starts over, with a baseline the burst raised a little.
    let next = levels_raised(&mut b, &config, 1031, 29);
    assert!(next.is_empty(), "{next:?}");
}

#[test]
fn below_the_first_level_nothing_fires() {
    let config = AnomalyConfig::default();
    let mut b = Baselines::new(100, alpha(config.half_life));
    steady(&mut b, &config, 0, 20, 10);
    for minute in 20..40 {
        assert!(
            levels_raised(&mut b, &config, minute, 29).is_empty(),
            "minute {minute}"
        );
    }
}

#[test]
fn a_new_identity_warms_up_and_small_counts_never_alarm() {
    let config = AnomalyConfig::default();
    let mut b = Baselines::new(100, alpha(config.half_life));
    // No history: nothing alarms however busy the first minutes are.
    for minute in 0..config.warmup_minutes {
        assert!(levels_raised(&mut b, &config, u64::from(minute), 1000).is_empty());
    }
    // An identity idle for the most part: under min_per_minute nothing alarms, even
    // at many times its baseline of nearly nothing.
    let mut quiet = Baselines::new(100, alpha(config.half_life));
    steady(&mut quiet, &config, 0, 30, 1);
    assert!(levels_raised(&mut quiet, &config, 30, 19).is_empty());
    assert_eq!(levels_raised(&mut quiet, &config, 31, 20)[0].0, 20);
}

#[test]
fn the_highest_level_can_throttle() {
    let config = AnomalyConfig::default();
    let mut b = Baselines::new(100, alpha(config.half_life));
    steady(&mut b, &config, 0, 20, 10);
    let mut top = None;
    for i in 1..=120 {
        if b.count(KEY, 20, 1, &config).is_some_and(|c| c.top) {
            top.get_or_insert(i);
        }
    }
    assert_eq!(top, Some(100));
}

#[test]
fn baselines_are_bounded() {
    let config = AnomalyConfig::default();
    let mut b = Baselines::new(2, alpha(config.half_life));
    b.count(("a", "t", Watched::Lease), 0, 1, &config);
    b.count(("b", "t", Watched::Lease), 0, 1, &config);
    // Full, and nobody idle for an hour: a third key is not tracked.
    assert!(
        b.count(("c", "t", Watched::Lease), 1, 1000, &config)
            .is_none()
    );
    // An hour later the idlest makes room.
    assert!(
        b.count(("c", "t", Watched::Lease), 61, 1, &config)
            .is_none()
    );
}

#[test]
fn a_burst_of_failures_raises_once_per_window() {
    let mut bursts = Bursts::new(100);
    let source = Failing::Source("192.0.2.7".parse().unwrap());
    let mut raised = Vec::new();
    for i in 0..1000u64 {
        if let Some(n) = bursts.count(source.clone(), 100 + i / 100, 60, 20) {
            raised.push((i, n));
        }
    }
    assert_eq!(raised, [(19, 20)], "one event for a burst of 1000");
    // The next window: once more.
    let again: Vec<u32> = (0..50)
        .filter_map(|_| bursts.count(source.clone(), 200, 60, 20))
        .collect();
    assert_eq!(again, [20]);
    // Fewer than the threshold in a window: nothing.
    let other = Failing::Denied("spiffe://x/svc/outsider".into());
    assert!((0..19).all(|_| bursts.count(other.clone(), 500, 60, 20).is_none()));
}

#[test]
fn failure_windows_are_bounded() {
    let mut bursts = Bursts::new(3);
    for i in 0..1000u16 {
        let source = Failing::Source(std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]));
        bursts.count(source, u64::from(i), 60, 20);
    }
    assert!(bursts.len() <= 3);
}
