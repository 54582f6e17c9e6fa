//! The ordering scripts against a real Redis, including the interleavings that broke the old
//! coordinator: a child checking while its parent completes, a release racing a new child, and a
//! key that expires mid-flight.

mod common;

use std::{collections::HashSet, time::Duration};

use futures::future::join_all;
use mutr_api::analysis::coordinator::{Coordinator, Hold};

async fn coordinator(ttl: Duration) -> (Coordinator, redis::aio::ConnectionManager, String) {
    let client = redis::Client::open(common::redis_url()).expect("REDIS_URL");
    let redis = redis::aio::ConnectionManager::new(client)
        .await
        .expect("Redis answers");
    let prefix = common::unique("coordinator");
    (
        Coordinator::new(redis.clone(), prefix.clone(), ttl),
        redis,
        prefix,
    )
}

async fn yield_times(n: u32) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_child_of_an_active_parent_is_parked_and_released_with_it() {
    let (c, _, _) = coordinator(Duration::from_secs(60)).await;
    c.mark(1).await.unwrap();
    assert_eq!(c.hold(1, 2).await.unwrap(), Hold::Parked);
    assert_eq!(c.hold(1, 3).await.unwrap(), Hold::Parked);
    // The children are active themselves: their own children wait for them.
    assert_eq!(c.hold(2, 4).await.unwrap(), Hold::Parked);
    let mut released = c.release(1).await.unwrap();
    released.sort_unstable();
    assert_eq!(released, vec![2, 3]);
    assert_eq!(
        c.release(1).await.unwrap(),
        Vec::<i64>::new(),
        "released once"
    );
    // The parent is no longer active: a late child is not parked behind it.
    assert_eq!(c.hold(1, 5).await.unwrap(), Hold::Unknown);
    assert_eq!(c.release(2).await.unwrap(), vec![4]);
}

/// Nodes marked together (a burst of new roots) each hold their own children back.
#[tokio::test]
async fn nodes_marked_in_one_round_trip_each_hold_their_children() {
    let (c, _, _) = coordinator(Duration::from_secs(60)).await;
    c.mark_many(&[]).await.unwrap();
    c.mark_many(&[21, 22, 23]).await.unwrap();
    for parent in [21, 22, 23] {
        assert_eq!(c.hold(parent, parent * 10).await.unwrap(), Hold::Parked);
    }
    assert_eq!(c.hold(24, 240).await.unwrap(), Hold::Unknown);
    assert_eq!(c.release(22).await.unwrap(), vec![220]);
    assert_eq!(c.hold(22, 221).await.unwrap(), Hold::Unknown);
}

/// A burst of children checked and held in one script call: each answer is the one a call of its
/// own would give, in order, so a child held earlier in the burst holds back its own child later
/// in it.
#[tokio::test]
async fn children_held_in_one_call_answer_each_on_its_own() {
    let (c, _, _) = coordinator(Duration::from_secs(60)).await;
    assert!(c.hold_many(&[]).await.unwrap().is_empty());
    c.mark(30).await.unwrap();
    let held = c
        .hold_many(&[(30, 31), (31, 32), (99, 33), (30, 34), (33, 35)])
        .await
        .unwrap();
    assert_eq!(
        held,
        [
            Hold::Parked,
            Hold::Parked,
            Hold::Unknown,
            Hold::Parked,
            Hold::Parked
        ]
    );
    let mut released = c.release(30).await.unwrap();
    released.sort_unstable();
    assert_eq!(released, vec![31, 34]);
    assert_eq!(c.release(31).await.unwrap(), vec![32]);
    // 33's parent was unknown, yet 33 itself was marked active: its child waits for it.
    assert_eq!(c.release(33).await.unwrap(), vec![35]);
    assert_eq!(c.release(99).await.unwrap(), Vec::<i64>::new());
}

#[tokio::test]
async fn a_parent_unknown_to_redis_is_left_to_the_database() {
    let (c, _, _) = coordinator(Duration::from_secs(60)).await;
    assert_eq!(c.hold(10, 11).await.unwrap(), Hold::Unknown);
    // The caller found the parent unfinished in PostgreSQL and parks the child explicitly.
    c.park(10, 11).await.unwrap();
    assert_eq!(c.hold(10, 12).await.unwrap(), Hold::Parked);
    let mut released = c.release(10).await.unwrap();
    released.sort_unstable();
    assert_eq!(released, vec![11, 12]);
}

/// Children check while their parent completes, many times over, with the steps interleaved by
/// two tasks on separate connections: a child is parked exactly when the release returns it, so
/// no child is left on a list its parent already released.
#[tokio::test]
async fn children_checking_while_the_parent_completes_are_never_stranded() {
    let (c, _, _) = coordinator(Duration::from_secs(60)).await;
    let mut parked_and_released = 0;
    let mut missed_and_unparked = 0;
    for round in 0..300i64 {
        let parent = round * 100;
        c.mark(parent).await.unwrap();
        let children: Vec<i64> = (1..=8).map(|k| parent + k).collect();
        // Each step waits a random number of scheduler turns first, so the release lands
        // before, between and after the children's checks.
        let holds = join_all(children.iter().map(|&child| {
            let c = c.clone();
            let turns = rand::random_range(0..6);
            tokio::spawn(async move {
                yield_times(turns).await;
                (child, c.hold(parent, child).await.unwrap())
            })
        }));
        let release = {
            let c = c.clone();
            let turns = rand::random_range(0..6);
            tokio::spawn(async move {
                yield_times(turns).await;
                c.release(parent).await.unwrap()
            })
        };
        let (holds, released) = tokio::join!(holds, release);
        let mut released: HashSet<i64> = released.unwrap().into_iter().collect();
        // A second release (the sweeper, a late event) finds what was parked after the first.
        released.extend(c.release(parent).await.unwrap());
        for hold in holds {
            let (child, hold) = hold.unwrap();
            match hold {
                Hold::Parked => {
                    assert!(
                        released.contains(&child),
                        "round {round}: child {child} parked but never released"
                    );
                    parked_and_released += 1;
                }
                Hold::Unknown => {
                    assert!(
                        !released.contains(&child),
                        "round {round}: child {child} released without being parked"
                    );
                    missed_and_unparked += 1;
                }
            }
        }
    }
    // Both orders happened, so the race was exercised.
    assert!(parked_and_released > 0, "no child was ever parked first");
    assert!(missed_and_unparked > 0, "no release ever ran first");
}

/// A release that runs while a new child is being parked explicitly (after PostgreSQL said the
/// parent was unfinished) can run first: the dispatcher then looks at the parent again and
/// releases it once more, which returns the late child. Each park is followed by such a release
/// here, and no child is lost.
#[tokio::test]
async fn a_release_racing_a_new_child_loses_no_child() {
    let (c, _, _) = coordinator(Duration::from_secs(60)).await;
    for round in 0..300i64 {
        let parent = 1_000_000 + round * 10;
        let child = parent + 1;
        c.mark(parent).await.unwrap();
        let park = {
            let c = c.clone();
            tokio::spawn(async move { c.park(parent, child).await.unwrap() })
        };
        let release = {
            let c = c.clone();
            tokio::spawn(async move { c.release(parent).await.unwrap() })
        };
        let (park, first) = tokio::join!(park, release);
        park.unwrap();
        let mut seen: Vec<i64> = first.unwrap();
        // The dispatcher's second look: the parent ended, release again.
        seen.extend(c.release(parent).await.unwrap());
        assert_eq!(seen, vec![child], "round {round}");
    }
}

/// A parent's key that expires while it is being analysed: a new child is not parked behind it
/// (the dispatcher asks PostgreSQL instead), and children parked before the expiry are still
/// returned by the release as long as their list lives.
#[tokio::test]
async fn a_key_expired_mid_flight_sends_new_children_to_the_database() {
    let (c, mut redis, prefix) = coordinator(Duration::from_secs(1)).await;
    c.mark(7).await.unwrap();
    assert_eq!(c.hold(7, 8).await.unwrap(), Hold::Parked);
    let active = format!("{prefix}active:7");
    common::wait_until("the parent's key to expire", Duration::from_secs(5), || {
        let mut redis = redis.clone();
        let key = active.clone();
        async move {
            !redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<bool>(&mut redis)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(c.hold(7, 9).await.unwrap(), Hold::Unknown);
    // The waiting list expires too; then the release returns nothing and the sweeper finds the
    // child in PostgreSQL (tests/pipeline.rs checks that end to end).
    let waiting = format!("{prefix}waiting:7");
    let left: i64 = redis::cmd("EXISTS")
        .arg(&waiting)
        .query_async(&mut redis)
        .await
        .unwrap();
    let released = c.release(7).await.unwrap();
    assert_eq!(released.len() as i64, left, "{released:?}");
}

/// Keys expire: nothing the pipeline writes to Redis lives for ever.
#[tokio::test]
async fn every_key_has_a_lifetime() {
    let (c, mut redis, prefix) = coordinator(Duration::from_secs(60)).await;
    c.mark(1).await.unwrap();
    c.hold(1, 2).await.unwrap();
    c.park(3, 4).await.unwrap();
    c.park_many(&[(6, 5), (7, 5)]).await.unwrap();
    c.mark_many(&[8, 9]).await.unwrap();
    let keys = common::scan_keys(&mut redis, &format!("{prefix}*")).await;
    assert!(keys.len() >= 8, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!((1..=60).contains(&ttl), "{key} has TTL {ttl}");
    }
    let mut released = c.release(5).await.unwrap();
    released.sort_unstable();
    assert_eq!(released, vec![6, 7]);
}
