//! The watchers opened on both sides: every combination of range, start, filter and prev_kv,
//! the fragmenting watchers over large values, and a pair of streams carrying them.

use anyhow::Result;
use bytes::Bytes;
use keygate_proto::etcdserverpb::watch_create_request::FilterType;
use keygate_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use keygate_proto::mvccpb::event::EventType;
use keygate_proto::mvccpb::Event;
use keygate_tests::watch::prefix_end;
use keygate_tests::watch_record::Recorded;
use keygate_tests::Clients;

use super::{b, T};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    Now,
    Window,
    BeforeKeygate,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub key: Bytes,
    pub end: Bytes,
    pub start: Start,
    pub start_rev: i64,
    pub filters: Vec<i32>,
    pub prev_kv: bool,
    pub progress: bool,
    pub fragment: bool,
    pub id: i64,
}

impl Spec {
    pub fn request(&self) -> WatchCreateRequest {
        WatchCreateRequest {
            key: self.key.clone(),
            range_end: self.end.clone(),
            start_revision: self.start_rev,
            filters: self.filters.clone(),
            prev_kv: self.prev_kv,
            progress_notify: self.progress,
            fragment: self.fragment,
            watch_id: self.id,
        }
    }

    pub fn matches(&self, key: &[u8]) -> bool {
        match self.end.as_ref() {
            [] => key == self.key.as_ref(),
            [0] => key >= self.key.as_ref(),
            end => key >= self.key.as_ref() && key < end,
        }
    }

    pub fn wants(&self, e: &Event) -> bool {
        let put = e.r#type == EventType::Put as i32;
        let filtered = (put && self.filters.contains(&(FilterType::Noput as i32)))
            || (!put && self.filters.contains(&(FilterType::Nodelete as i32)));
        !filtered && e.kv.as_ref().is_some_and(|kv| self.matches(&kv.key))
    }
}

pub fn ranges() -> Vec<(&'static str, Bytes, Bytes)> {
    vec![
        ("single", b("k/05"), Bytes::new()),
        ("prefix", b("k/"), prefix_end(b"k/")),
        ("fromkey", b("k/10"), Bytes::from_static(&[0])),
        ("range", b("k/03"), b("k/12")),
    ]
}

/// Every combination of range, start, filter and prev_kv.
pub fn matrix(window_rev: i64, before_rev: i64, chosen_ids: bool) -> Vec<Spec> {
    let mut out = Vec::new();
    for (rname, key, end) in ranges() {
        for (start, start_rev) in [
            (Start::Now, 0),
            (Start::Window, window_rev),
            (Start::BeforeKeygate, before_rev),
        ] {
            for (fname, filters) in [
                ("all", vec![]),
                ("noput", vec![FilterType::Noput as i32]),
                ("nodelete", vec![FilterType::Nodelete as i32]),
            ] {
                for prev_kv in [false, true] {
                    let id = if chosen_ids {
                        1000 + 3 * out.len() as i64
                    } else {
                        0
                    };
                    out.push(Spec {
                        name: format!("{rname}/{start:?}/{fname}/prev_kv={prev_kv}"),
                        key: key.clone(),
                        end: end.clone(),
                        start,
                        start_rev,
                        filters: filters.clone(),
                        prev_kv,
                        progress: chosen_ids,
                        fragment: false,
                        id,
                    });
                }
            }
        }
    }
    out
}

pub fn fragment_specs(big_start: i64) -> Vec<Spec> {
    let mut out = Vec::new();
    for (start, start_rev) in [(Start::Window, big_start), (Start::Now, 0)] {
        for fragment in [false, true] {
            for prev_kv in [false, true] {
                out.push(Spec {
                    name: format!("big/{start:?}/fragment={fragment}/prev_kv={prev_kv}"),
                    key: b("big/"),
                    end: prefix_end(b"big/"),
                    start,
                    start_rev,
                    filters: vec![],
                    prev_kv,
                    progress: false,
                    fragment,
                    id: 0,
                });
            }
        }
    }
    out
}

/// The same watchers opened on one stream directly on etcd and one through keygate.
pub struct Pair {
    pub name: &'static str,
    pub specs: Vec<Spec>,
    pub etcd: Recorded,
    pub gw: Recorded,
}

impl Pair {
    pub async fn open(
        name: &'static str,
        specs: Vec<Spec>,
        direct: &Clients,
        via: &Clients,
    ) -> Result<Pair> {
        let pair = Pair {
            name,
            etcd: Recorded::open(direct.channel.clone()),
            gw: Recorded::open(via.channel.clone()),
            specs,
        };
        for spec in &pair.specs {
            pair.etcd.create(spec.request())?;
            pair.gw.create(spec.request())?;
        }
        let n = pair.specs.len();
        let created = |r: &[WatchResponse]| r.iter().filter(|r| r.created).count() >= n;
        pair.etcd
            .wait_for(&format!("{name}: {n} created (etcd)"), T, created)
            .await?;
        pair.gw
            .wait_for(&format!("{name}: {n} created (keygate)"), T, created)
            .await?;
        Ok(pair)
    }
}
