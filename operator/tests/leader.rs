//! Leader election on a Lease, against the fake API server (which refuses a non-forced apply that
//! would take a field another manager owns): two replicas never lead at once, and a successor takes
//! over when the leader goes.

mod common;

use std::time::Duration;

use common::{FakeApi, NS};
use mutr_operator::leader::{self, LeaseConfig};
use tokio::time::{Instant, timeout};

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "mutr-operator-leader".into(),
        namespace: NS.into(),
        identity: identity.into(),
        duration: Duration::from_secs(4),
        grace: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn only_one_replica_leads_and_a_successor_takes_over() {
    let fake = FakeApi::new();
    let mut a = leader::start(fake.client(), &config("operator-a"))
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_secs(10), leader::acquired(&mut a.receiver))
            .await
            .expect("a leads in time")
    );

    let mut b = leader::start(fake.client(), &config("operator-b"))
        .await
        .unwrap();
    // Through more than a full lease period, with `a` renewing, `b` must never lead.
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        assert!(*a.receiver.borrow(), "a lost the lease while renewing it");
        assert!(!*b.receiver.borrow(), "two leaders at once");
        let _ = timeout(Duration::from_millis(200), b.receiver.changed()).await;
    }
    let lease = fake
        .get("leases", "mutr-operator-leader")
        .expect("the Lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], "operator-a");

    // `a` goes away (its channel closes, so its manager stops and releases the Lease).
    drop(a.receiver);
    let _ = timeout(Duration::from_secs(10), a.task).await;
    assert!(
        timeout(Duration::from_secs(10), leader::acquired(&mut b.receiver))
            .await
            .expect("b takes over in time")
    );
    assert_eq!(
        fake.get("leases", "mutr-operator-leader").unwrap()["spec"]["holderIdentity"],
        "operator-b"
    );
}
