//! Helpers the etcdctl end-to-end tests share: how long to wait for a line of a long-running
//! etcdctl's output, checking a command's exact stdout, reading a granted lease's id, the
//! lock and election transcript.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use keygate_tests::normalize::normalize_text;
use keygate_tests::{CmdOutput, Etcdctl};

pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn expect_stdout(out: &CmdOutput, want: &str) -> Result<()> {
    ensure!(out.stdout == want, "want stdout {want:?}, got {out:?}");
    Ok(())
}

/// The lease id etcdctl printed (`lease 694d... granted with TTL(60s)`).
pub fn lease_id(out: &CmdOutput) -> Result<String> {
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    match words.as_slice() {
        ["lease", id, "granted", ..] => Ok(id.to_string()),
        _ => bail!("no lease id in {out:?}"),
    }
}

/// Two lockers (the second waits until the first lets go) and an election (a leader, an
/// observer, a waiting candidate that takes over), as the lines etcdctl printed, normalized.
pub async fn lock_and_elect_transcript(ctl: &Etcdctl) -> Result<Vec<String>> {
    let mut t = Vec::new();
    // Two lockers: the second waits until the first lets go (SIGTERM releases the lock).
    let mut first = ctl.spawn(&["lock", "mylock"])?;
    let held = first.next_line(LINE_TIMEOUT).await?;
    t.push(normalize_text(&held));
    let mut second = ctl.spawn(&["lock", "mylock"])?;
    second
        .expect_silence(Duration::from_millis(800))
        .await
        .context("the second locker got the lock while the first held it")?;
    first.signal("TERM")?;
    t.push(format!("first exit {:?}", first.wait(LINE_TIMEOUT).await?));
    let next = second.next_line(LINE_TIMEOUT).await?;
    ensure!(next != held, "both lockers got the same key {held}");
    t.push(normalize_text(&next));
    second.signal("TERM")?;
    t.push(format!(
        "second exit {:?}",
        second.wait(LINE_TIMEOUT).await?
    ));

    // Election: a leader, an observer, a waiting candidate that takes over.
    let mut leader = ctl.spawn(&["elect", "myelection", "p1"])?;
    t.extend(
        leader
            .lines(2, LINE_TIMEOUT)
            .await?
            .iter()
            .map(|l| normalize_text(l)),
    );
    let mut observer = ctl.spawn(&["elect", "-l", "myelection"])?;
    t.extend(
        observer
            .lines(2, LINE_TIMEOUT)
            .await?
            .iter()
            .map(|l| normalize_text(l)),
    );
    let mut candidate = ctl.spawn(&["elect", "myelection", "p2"])?;
    candidate
        .expect_silence(Duration::from_millis(800))
        .await
        .context("a second candidate was elected while the leader lived")?;
    leader.signal("TERM")?;
    leader.wait(LINE_TIMEOUT).await?;
    t.extend(
        candidate
            .lines(2, LINE_TIMEOUT)
            .await?
            .iter()
            .map(|l| normalize_text(l)),
    );
    t.extend(
        observer
            .lines(2, LINE_TIMEOUT)
            .await?
            .iter()
            .map(|l| normalize_text(l)),
    );
    candidate.signal("TERM")?;
    candidate.wait(LINE_TIMEOUT).await?;
    observer.kill().await?;
    Ok(t)
}
