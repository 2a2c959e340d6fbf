//! A linearizability checker for histories of puts and gets on a key-value store, in the style
//! of Wing & Gong with Lowe's memoization (as Porcupine does it): the history is split per key
//! (each key is an independent register, so a history is linearizable exactly when every key's
//! sub-history is), and each sub-history is searched depth-first for a total order that
//! respects real time (an operation that returned before another was invoked comes first) and
//! the register's sequential specification. Visited (linearized-set, register value) pairs are
//! remembered so no state is explored twice.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use tokio::time::Instant;

/// What one operation did on its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// A write of `value`.
    Put(String),
    /// A read that saw `value` (`None`: the key did not exist).
    Get(Option<String>),
}

/// One operation of a history, with the interval in which it took effect.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Which client issued it (for messages only).
    pub client: usize,
    pub key: String,
    pub action: Action,
    /// When the request was sent.
    pub invoked: Instant,
    /// When the response came back; `None` when its outcome is unknown (a write that timed out
    /// or failed in transit may or may not have taken effect, at any time after `invoked`).
    /// Reads without a response carry no information and should be left out.
    pub returned: Option<Instant>,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    /// The longest prefix of the key's operations that could be ordered legally.
    pub longest_prefix: Vec<Operation>,
    /// Operations that were candidates to come next after that prefix, none of which fit.
    pub stuck_on: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self
            .longest_prefix
            .iter()
            .chain(&self.stuck_on)
            .map(|o| o.invoked)
            .min();
        let at = |t: Instant| base.map_or(0, |b| t.saturating_duration_since(b).as_micros());
        let show = |o: &Operation| {
            let ret = o.returned.map_or("?".to_string(), |r| at(r).to_string());
            format!(
                "client {} {:?} [{}us, {}us]",
                o.client,
                o.action,
                at(o.invoked),
                ret
            )
        };
        writeln!(f, "history of key {:?} is not linearizable", self.key)?;
        let tail = self.longest_prefix.len().saturating_sub(5);
        writeln!(
            f,
            "  longest legal order ({} ops), last ones:",
            self.longest_prefix.len()
        )?;
        for o in &self.longest_prefix[tail..] {
            writeln!(f, "    {}", show(o))?;
        }
        writeln!(f, "  then none of these can come next:")?;
        for o in &self.stuck_on {
            writeln!(f, "    {}", show(o))?;
        }
        Ok(())
    }
}

/// Checks a whole history; `Err` names the first key (in key order) whose sub-history is not
/// linearizable.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut per_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        per_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, ops) in per_key {
        check_register(key, ops)?;
    }
    Ok(())
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The register's sequential specification: the value after `action`, or `None` when the
/// action is impossible in `state`.
fn step(state: &Option<String>, action: &Action) -> Option<Option<String>> {
    match action {
        Action::Put(v) => Some(Some(v.clone())),
        Action::Get(seen) => (seen == state).then(|| state.clone()),
    }
}

/// One level of the depth-first search: the candidates to linearize next, and which one is
/// being tried.
struct Frame {
    candidates: Vec<usize>,
    next: usize,
    /// The state before this level's choice, restored on backtracking.
    state: Option<String>,
    /// The operation chosen at this level, while it is.
    chosen: Option<usize>,
}

fn check_register(key: &str, mut ops: Vec<Operation>) -> Result<(), Violation> {
    ops.sort_by_key(|o| o.invoked);
    let n = ops.len();
    let mut done = Bits::new(n);
    let mut state: Option<String> = None;
    let mut visited: HashSet<(Bits, Option<String>)> = HashSet::new();
    let mut order: Vec<usize> = Vec::new();
    let mut best: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut stack = vec![Frame {
        candidates: candidates(&ops, &done),
        next: 0,
        state: None,
        chosen: None,
    }];
    while let Some(frame) = stack.last_mut() {
        if let Some(prev) = frame.chosen.take() {
            // Coming back to this level: undo its previous choice.
            done.clear(prev);
            order.pop();
            state = frame.state.clone();
        }
        if order.len() == n {
            return Ok(());
        }
        let Some(&i) = frame.candidates.get(frame.next) else {
            if order.len() >= best.0.len() {
                best = (order.clone(), frame.candidates.clone());
            }
            stack.pop();
            continue;
        };
        frame.next += 1;
        let Some(after) = step(&state, &ops[i].action) else {
            continue;
        };
        done.set(i);
        if !visited.insert((done.clone(), after.clone())) {
            done.clear(i);
            continue;
        }
        frame.chosen = Some(i);
        frame.state = state.clone();
        order.push(i);
        state = after;
        if order.len() == n {
            return Ok(());
        }
        let next = candidates(&ops, &done);
        stack.push(Frame {
            candidates: next,
            next: 0,
            state: None,
            chosen: None,
        });
    }
    Err(Violation {
        key: key.to_string(),
        longest_prefix: best.0.iter().map(|&i| ops[i].clone()).collect(),
        stuck_on: best.1.iter().map(|&i| ops[i].clone()).collect(),
    })
}

/// The operations that may come next: not yet linearized, and invoked before the earliest
/// response among those not yet linearized (anything later must follow that one).
/// `ops` is sorted by invocation time.
fn candidates(ops: &[Operation], done: &Bits) -> Vec<usize> {
    let horizon = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !done.has(*i))
        .filter_map(|(_, o)| o.returned)
        .min();
    ops.iter()
        .enumerate()
        .filter(|(i, _)| !done.has(*i))
        .take_while(|(_, o)| horizon.is_none_or(|h| o.invoked <= h))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct H {
        t0: Instant,
        ops: Vec<Operation>,
    }

    impl H {
        fn new() -> Self {
            H {
                t0: Instant::now(),
                ops: Vec::new(),
            }
        }
        fn op(&mut self, client: usize, key: &str, action: Action, from: u64, to: Option<u64>) {
            let at = |ms| self.t0 + Duration::from_millis(ms);
            self.ops.push(Operation {
                client,
                key: key.into(),
                action,
                invoked: at(from),
                returned: to.map(at),
            });
        }
        fn put(&mut self, c: usize, k: &str, v: &str, from: u64, to: u64) {
            self.op(c, k, Action::Put(v.into()), from, Some(to));
        }
        fn get(&mut self, c: usize, k: &str, v: Option<&str>, from: u64, to: u64) {
            self.op(c, k, Action::Get(v.map(Into::into)), from, Some(to));
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let mut h = H::new();
        h.get(0, "k", None, 0, 1);
        h.put(0, "k", "1", 2, 3);
        h.get(1, "k", Some("1"), 4, 5);
        h.put(1, "k", "2", 6, 7);
        h.get(0, "k", Some("2"), 8, 9);
        assert!(check(&h.ops).is_ok());
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        let mut h = H::new();
        h.put(0, "k", "1", 0, 1);
        h.put(0, "k", "2", 2, 10);
        // Both overlap the second put and each other, so they may be ordered old-then-new.
        h.get(1, "k", Some("2"), 3, 4);
        h.get(2, "k", Some("1"), 3, 5);
        if let Err(v) = check(&h.ops) {
            panic!("{v}");
        }
    }

    #[test]
    fn stale_read_after_a_newer_read_is_rejected() {
        let mut h = H::new();
        h.put(0, "k", "1", 0, 1);
        h.put(0, "k", "2", 2, 10);
        // Client 1 sees the new value, then (strictly later) client 2 sees the old one.
        h.get(1, "k", Some("2"), 3, 4);
        h.get(2, "k", Some("1"), 5, 6);
        let v = check(&h.ops).expect_err("must be rejected");
        assert_eq!(v.key, "k");
        assert!(v.to_string().contains("not linearizable"));
    }

    #[test]
    fn read_of_a_value_overwritten_before_it_began_is_rejected() {
        let mut h = H::new();
        h.put(0, "k", "1", 0, 1);
        h.put(0, "k", "2", 2, 3);
        h.get(1, "k", Some("1"), 4, 5);
        assert!(check(&h.ops).is_err());
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        let mut h = H::new();
        h.put(0, "k", "1", 0, 1);
        h.get(1, "k", Some("7"), 2, 3);
        assert!(check(&h.ops).is_err());
    }

    #[test]
    fn a_write_of_unknown_outcome_may_take_effect_late_or_never() {
        let mut h = H::new();
        h.put(0, "k", "1", 0, 1);
        h.op(0, "k", Action::Put("2".into()), 2, None);
        h.get(1, "k", Some("1"), 3, 4);
        h.get(1, "k", Some("2"), 50, 51);
        assert!(check(&h.ops).is_ok());
        let mut never = H::new();
        never.put(0, "k", "1", 0, 1);
        never.op(0, "k", Action::Put("2".into()), 2, None);
        never.get(1, "k", Some("1"), 100, 101);
        assert!(check(&never.ops).is_ok());
        // ...but once seen, it cannot be un-seen.
        never.get(1, "k", Some("1"), 200, 201);
        never.get(2, "k", Some("2"), 150, 160);
        assert!(check(&never.ops).is_err());
    }

    #[test]
    fn keys_are_independent_registers() {
        let mut h = H::new();
        h.put(0, "a", "1", 0, 1);
        h.put(0, "b", "1", 2, 3);
        h.get(1, "a", Some("1"), 4, 5);
        h.get(1, "b", None, 6, 7);
        let v = check(&h.ops).expect_err("b's read is stale");
        assert_eq!(v.key, "b");
    }

    #[test]
    fn many_concurrent_clients_are_checked_quickly() {
        // 8 clients in lockstep rounds: each round every client writes or reads, all
        // overlapping; reads see the value of the round before or any write of this round.
        let mut h = H::new();
        let mut last = None::<String>;
        for round in 0..300u64 {
            let base = round * 10;
            let writer = (round % 8) as usize;
            let value = format!("v{round}");
            for c in 0..8usize {
                if c == writer {
                    h.put(c, "k", &value, base, base + 5);
                } else {
                    let seen = if c % 2 == 0 {
                        Some(value.clone())
                    } else {
                        last.clone()
                    };
                    h.get(c, "k", seen.as_deref(), base, base + 6);
                }
            }
            last = Some(value);
        }
        assert!(check(&h.ops).is_ok());
    }
}
