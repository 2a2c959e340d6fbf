//! Watch streams opened before the mirror serves: right after keygate starts, while it lists a
//! 20 MB keyspace. A stream that waits for the first list is served by the hub; one that does
//! not wait (`mirror.first_list_wait_ms = 0`) is served by the hub too, its watchers on upstream
//! watches of their own — created at etcd's revision, not the unloaded mirror's, and answering
//! progress requests at etcd's revision — until the mirror serves and the hub takes them over,
//! with no event lost or repeated — a quiet watcher from an explicit start revision as well.

use crate::watch_faults_common;

use anyhow::{ensure, Context, Result};
use keygate_tests::watch::{prefix_watch, WatchStream};
use keygate_tests::watch_record::metric;
use keygate_tests::{Clients, EtcdCluster, Keygate};
use watch_faults_common::{b, put, revs, wait_serving, T};

/// A watch stream opened the moment keygate starts, while the mirror is still loading its first
/// list (20 MB here), waits for it and is served by the hub, rather than going to etcd for its
/// whole life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_opened_while_the_mirror_loads_is_served_by_the_hub() -> Result<()> {
    let cluster = EtcdCluster::start(1).await?;
    let mut direct = cluster.clients(0).await?;
    direct.fill_20mb("load/").await?;
    let keygate = Keygate::start(&cluster.client_urls(), &[]).await?;
    let via = keygate.clients().await?;
    let mut stream = WatchStream::open(&via, prefix_watch("w/", 0)).await?;
    let created = stream.next(T).await?;
    ensure!(created.created, "first response {created:?}");
    let streams = metric(keygate.addr(), "keygate_watch_streams").await?;
    ensure!(
        streams == 1.0,
        "{streams} streams on the hub: the stream went to etcd"
    );
    let rev = put(&mut direct, "w/x".into(), b("1")).await?;
    let events = stream.events_until(b"w/x", T).await?;
    ensure!(revs(&events) == [rev], "events {:?}", revs(&events));
    Ok(())
}

/// A keygate whose mirror is still loading its first list, in front of a 20 MB keyspace.
struct Loading {
    _cluster: EtcdCluster,
    direct: Clients,
    keygate: Keygate,
    /// The revision of the last write before keygate started.
    listed: i64,
}

/// Fills etcd, writes `key`, and starts keygate with a first list that takes seconds (five keys
/// a page) and watch streams that do not wait for it.
async fn loading(key: &str) -> Result<Loading> {
    let cluster = EtcdCluster::start(1).await?;
    let mut direct = cluster.clients(0).await?;
    direct.fill_20mb("load/").await?;
    let listed = put(&mut direct, key.into(), b("0")).await?;
    let keygate = Keygate::start_with_config(
        &cluster.client_urls(),
        "[mirror]\npage_size = 5\nfirst_list_wait_ms = 0\n",
        &[],
    )
    .await?;
    let serving = metric(keygate.addr(), "keygate_mirror_serving").await?;
    ensure!(serving == 0.0, "the mirror served before the test began");
    Ok(Loading {
        _cluster: cluster,
        direct,
        keygate,
        listed,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_created_before_the_mirror_serves_starts_at_etcds_revision_and_moves_to_the_hub(
) -> Result<()> {
    let Loading {
        mut direct,
        keygate,
        listed: before,
        _cluster,
    } = loading("w/0").await?;
    let via = keygate.clients().await?;
    let gauge = |name: &'static str| metric(keygate.addr(), name);
    let loading =
        || async { Ok::<_, anyhow::Error>(gauge("keygate_mirror_serving").await? == 0.0) };

    let mut stream = WatchStream::open(&via, prefix_watch("w/", 0)).await?;
    let created = stream.next(T).await?;
    let at = created.header.as_ref().map_or(0, |h| h.revision);
    ensure!(
        created.created && !created.canceled && at == before,
        "created {created:?}: expected etcd's revision {before}"
    );
    let (streams, upstream) = (
        gauge("keygate_watch_streams").await?,
        gauge("keygate_watch_upstream_streams").await?,
    );
    ensure!(
        streams == 1.0 && upstream == 1.0,
        "{streams} hub streams, {upstream} upstream watches: expected the hub, the watcher upstream"
    );

    // While the mirror loads: an event, relayed from the watcher's upstream watch, and a
    // progress reply at etcd's revision.
    let first = put(&mut direct, "w/1".into(), b("1")).await?;
    let events = stream.events_until(b"w/1", T).await?;
    ensure!(revs(&events) == [first], "events {:?}", revs(&events));
    stream.progress().await?;
    let reply = loop {
        let resp = stream.next(T).await.context("no progress reply")?;
        if resp.watch_id == -1 {
            break resp;
        }
    };
    ensure!(
        reply.header.as_ref().map(|h| h.revision) == Some(first) && reply.events.is_empty(),
        "progress reply {reply:?}, expected one at revision {first}"
    );
    ensure!(
        loading().await?,
        "the mirror served before the progress reply: the list was too quick for this test"
    );

    // Once the mirror serves, the next event moves the watcher to the hub.
    wait_serving(&keygate).await?;
    let second = put(&mut direct, "w/2".into(), b("2")).await?;
    let events = stream.events_until(b"w/2", T).await?;
    ensure!(revs(&events) == [second], "events {:?}", revs(&events));
    keygate_tests::process::poll_until(T, "the watcher on the hub", || async {
        Ok(gauge("keygate_watch_upstream_streams").await? == 0.0)
    })
    .await?;
    let handovers = gauge("keygate_watch_handovers_total").await?;
    let third = put(&mut direct, "w/3".into(), b("3")).await?;
    let events = stream.events_until(b"w/3", T).await?;
    ensure!(
        revs(&events) == [third] && handovers == 1.0,
        "after the hand-over: events {:?}, {handovers} hand-overs",
        revs(&events)
    );
    Ok(())
}

/// kube-apiserver resumes its watches at the revision after its list. Such a watcher, created
/// while the mirror loads on a quiet prefix, has nothing from etcd to go by (no event, and
/// etcd's own progress notification comes every 10 minutes): once the mirror serves, the hub
/// takes it on from its start revision, and it gets every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_from_an_explicit_revision_moves_to_the_hub_once_the_mirror_serves(
) -> Result<()> {
    let Loading {
        mut direct,
        keygate,
        listed,
        _cluster,
    } = loading("q/0").await?;
    let via = keygate.clients().await?;
    let gauge = |name: &'static str| metric(keygate.addr(), name);

    let mut stream = WatchStream::open(&via, prefix_watch("q/", listed + 1)).await?;
    let created = stream.next(T).await?;
    ensure!(created.created && !created.canceled, "created {created:?}");
    ensure!(
        gauge("keygate_watch_upstream_streams").await? == 1.0,
        "the watcher is not on an upstream watch of its own"
    );
    wait_serving(&keygate).await?;
    // Any write moves the mirror on, and the hub looks at its dedicated watchers.
    put(&mut direct, "elsewhere".into(), b("x")).await?;
    keygate_tests::process::poll_until(T, "the watcher on the hub", || async {
        Ok(gauge("keygate_watch_upstream_streams").await? == 0.0)
    })
    .await?;
    let handovers = gauge("keygate_watch_handovers_total").await?;
    let first = put(&mut direct, "q/1".into(), b("1")).await?;
    let second = put(&mut direct, "q/2".into(), b("2")).await?;
    let events = stream.events_until(b"q/2", T).await?;
    ensure!(
        revs(&events) == [first, second] && handovers == 1.0,
        "events {:?}, {handovers} hand-overs",
        revs(&events)
    );
    Ok(())
}
