//! etcd's JSON gateway through keygate, differentially: the same JSON requests go to one etcd
//! cluster directly and to a twin cluster through keygate, and the answers (status and body,
//! with the member and cluster ids masked) must be byte for byte the same — successes, etcd's
//! errors, and keygate's own decoding errors (malformed JSON, wrong types, bad base64,
//! oversized bodies), streaming watch and lease keepalive included.

use std::time::Duration;

use anyhow::{ensure, Result};
use keygate_tests::json_http::{mask, post, JsonStream};
use keygate_tests::{EtcdCluster, Keygate};

/// Two fresh one-member clusters; the second is behind keygate. Returns the two addresses.
async fn twins() -> Result<(EtcdCluster, EtcdCluster, Keygate)> {
    let direct = EtcdCluster::start(1).await?;
    let behind = EtcdCluster::start(1).await?;
    let kg = Keygate::start(&behind.client_urls(), &[]).await?;
    Ok((direct, behind, kg))
}

/// Unary requests in order; each must be answered identically by both.
const CASES: &[(&str, &str)] = &[
    ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
    (
        "/v3/kv/put",
        r#"{"key":"Zm9vMg==","value":"YmF6","prev_kv":true}"#,
    ),
    ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","serializable":true}"#,
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","rangeEnd":"Zm9w","sortOrder":"DESCEND","keysOnly":true}"#,
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#,
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","limit":"1","range_end":"AA=="}"#,
    ),
    ("/v3/kv/range", r#"{"key":"bm9uZQ=="}"#),
    ("/v3beta/kv/range", r#"{"key":"Zm9v"}"#),
    ("/v3/kv/range", r#"{"key":"Zm9v"} trailing"#),
    ("/v3/kv/range", "null"),
    ("/v3/kv/range", ""),
    ("/v3/kv/range", r#"{"key":"Zm9v","unknown_field":1}"#),
    // Bad input: etcd's errors, nothing changes.
    ("/v3/kv/range", r#"{"key":"Zm9v","#),
    ("/v3/kv/range", "[1]"),
    ("/v3/kv/range", r#"{"key":"!!"}"#),
    ("/v3/kv/range", r#"{"key":"Zm9v_"}"#),
    ("/v3/kv/range", r#"{"key":"Zm9"}"#),
    ("/v3/kv/range", r#"{"key":5}"#),
    ("/v3/kv/range", r#"{"key":"Zm9v","keys_only":"true"}"#),
    ("/v3/kv/put", r#"{"value":"YmFy"}"#),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VERSION","version":"1"}],"success":[{"request_put":{"key":"Zm9v","value":"MQ=="}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
    ),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","target":"VALUE","value":"eA=="}],"failure":[{"request_delete_range":{"key":"Zm9vMg==","prev_kv":true}}]}"#,
    ),
    ("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#),
    ("/v3/kv/compaction", r#"{"revision":"100"}"#),
    ("/v3/kv/compaction", r#"{"revision":"2"}"#),
    ("/v3/kv/range", r#"{"key":"Zm9v","revision":"1"}"#),
    ("/v3/lease/grant", r#"{"TTL":"60","ID":"4242"}"#),
    ("/v3/lease/grant", r#"{"TTL":60,"ID":4242}"#),
    (
        "/v3/kv/put",
        r#"{"key":"bA==","value":"eA==","lease":"4242"}"#,
    ),
    ("/v3/lease/leases", "{}"),
    ("/v3/kv/lease/leases", "{}"),
    ("/v3/lease/revoke", r#"{"ID":"4242"}"#),
    ("/v3/kv/lease/revoke", r#"{"ID":"4242"}"#),
    ("/v3/kv/lease/timetolive", r#"{"ID":"1"}"#),
    ("/v3/maintenance/alarm", r#"{"action":"GET"}"#),
    ("/v3/auth/status", "{}"),
    ("/v3/auth/authenticate", r#"{"name":"root","password":"x"}"#),
    ("/v3/lock/unlock", "{}"),
    ("/v3/election/proclaim", "{}"),
    ("/v3/cluster/member/promote", r#"{"ID":"1"}"#),
    ("/v3/nothing", "{}"),
    ("/v3alpha/kv/range", "{}"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_answers_match_etcd_byte_for_byte() -> Result<()> {
    let (direct, _behind, kg) = twins().await?;
    let mut failures = Vec::new();
    for (path, body) in CASES {
        let want = post(&direct.addr(0), path, body).await?;
        let got = post(kg.addr(), path, body).await?;
        let (want_body, got_body) = (mask(&want.body), mask(&got.body));
        if want.status != got.status || want_body != got_body {
            failures.push(format!(
                "POST {path} {body}\n  etcd:    {} {want_body}\n  keygate: {} {got_body}",
                want.status, got.status
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_gets_etcds_error_and_changes_nothing() -> Result<()> {
    let (direct, _behind, kg) = twins().await?;
    let value = "A".repeat(3_000_000);
    let body = format!(r#"{{"key":"Ymln","value":"{value}"}}"#);
    let want = post(&direct.addr(0), "/v3/kv/put", &body).await?;
    let got = post(kg.addr(), "/v3/kv/put", &body).await?;
    ensure!(
        want.status == got.status,
        "{} vs {}",
        want.status,
        got.status
    );
    ensure!(
        want.body == got.body,
        "etcd {}\nkeygate {}",
        want.body,
        got.body
    );
    let after = post(kg.addr(), "/v3/kv/range", r#"{"key":"Ymln"}"#).await?;
    ensure!(!after.body.contains("kvs"), "{}", after.body);
    Ok(())
}

/// Reads `n` lines from each stream and compares them masked.
async fn same_lines(a: &mut JsonStream, b: &mut JsonStream, n: usize) -> Result<()> {
    for i in 0..n {
        let wait = Duration::from_secs(10);
        let want = a.next_line(wait).await?.map(|l| mask(&l));
        let got = b.next_line(wait).await?.map(|l| mask(&l));
        ensure!(
            want == got,
            "line {i}:\n  etcd:    {want:?}\n  keygate: {got:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_watch_and_keepalive_match_etcd() -> Result<()> {
    let (direct, _behind, kg) = twins().await?;
    let (e, k) = (direct.addr(0), kg.addr().to_string());
    let create = r#"{"create_request":{"key":"dw==","range_end":"eA==","prev_kv":true}}"#;
    let mut we = JsonStream::open(&e, "/v3/watch", create).await?;
    let mut wk = JsonStream::open(&k, "/v3/watch", create).await?;
    ensure!(we.status == wk.status, "{} vs {}", we.status, wk.status);
    same_lines(&mut we, &mut wk, 1).await?;
    for addr in [&e, &k] {
        post(addr, "/v3/kv/put", r#"{"key":"dzE=","value":"MQ=="}"#).await?;
        post(addr, "/v3/kv/put", r#"{"key":"dzE=","value":"Mg=="}"#).await?;
        post(addr, "/v3/kv/deleterange", r#"{"key":"dzE="}"#).await?;
    }
    same_lines(&mut we, &mut wk, 3).await?;

    // A bad first message is answered as a unary error; a watch with a bad start revision.
    for body in [r#"{"create_request":{"key":5}}"#, "{", "[]"] {
        let a = post(&e, "/v3/watch", body).await?;
        let b = post(&k, "/v3/watch", body).await?;
        ensure!(a == b, "watch {body}: etcd {a:?} keygate {b:?}");
    }

    for addr in [&e, &k] {
        post(addr, "/v3/lease/grant", r#"{"TTL":"60","ID":"77"}"#).await?;
    }
    let body = r#"{"ID":"77"} {"ID":77}{"ID":"78"}"#;
    let mut ke = JsonStream::open(&e, "/v3/lease/keepalive", body).await?;
    let mut kk = JsonStream::open(&k, "/v3/lease/keepalive", body).await?;
    ensure!(ke.status == kk.status, "{} vs {}", ke.status, kk.status);
    // keygate's lease hub may answer a keep-alive within its coalescing window with the TTL
    // counted down (an answer etcd could give a second later), so TTLs are compared as set.
    let ttl = regex::Regex::new(r#""TTL":"\d+""#)?;
    for i in 0..3 {
        let wait = Duration::from_secs(10);
        let want = ke
            .next_line(wait)
            .await?
            .map(|l| ttl.replace_all(&mask(&l), "T").into_owned());
        let got = kk
            .next_line(wait)
            .await?
            .map(|l| ttl.replace_all(&mask(&l), "T").into_owned());
        ensure!(
            want == got,
            "keepalive {i}:\n  etcd:    {want:?}\n  keygate: {got:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_header_reaches_etcd_as_its_token() -> Result<()> {
    let (direct, _behind, kg) = twins().await?;
    let h = [("Authorization", "not-a-token")];
    let body = r#"{"key":"Zm9v"}"#;
    let want =
        keygate_tests::json_http::post_with(&direct.addr(0), "/v3/kv/range", body, &h).await?;
    let got = keygate_tests::json_http::post_with(kg.addr(), "/v3/kv/range", body, &h).await?;
    ensure!(
        want.status == got.status,
        "{} vs {}",
        want.status,
        got.status
    );
    ensure!(
        want.body == got.body,
        "etcd {}\nkeygate {}",
        want.body,
        got.body
    );
    Ok(())
}
