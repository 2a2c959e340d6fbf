//! Plugin time limits, counted in CPU time of the calling thread.
//!
//! The epoch ticker (engine.rs) measures wall time, and on a busy host a call can wait for a
//! CPU for longer than its whole limit without running at all. So the epoch deadline is only
//! the first check: a call still running after its limit of wall time starts being measured on
//! the thread's CPU clock, and is stopped once it has used its limit of CPU time since then.
//! A call that used less than its limit of CPU time is never stopped; one that loops is stopped
//! after between one and two limits of CPU time. A call that ends within its limit of wall
//! time — every healthy call — never reads the clock.

use super::authorizer::HostState;
use super::engine::TICK;
use rustix::time::{clock_gettime, ClockId};
use std::time::Duration;
use wasmtime::{Store, StoreContextMut, Trap, UpdateDeadline};

/// Where the store's current call stands against its limit.
#[derive(Default)]
pub struct Budget {
    /// The limit of the current call, in ticks.
    ticks: u64,
    /// The thread's CPU clock when the call passed its limit of wall time.
    overtime_from: Option<Duration>,
    /// Set when the call is stopped, so that the failure is named for what it is.
    pub hit: bool,
}

/// Makes every deadline of `store` a CPU-time check; once, when the store is made.
pub fn install(store: &mut Store<HostState>) {
    store.epoch_deadline_callback(on_deadline);
}

/// Gives the next call (or instantiation and `init`) of `store` `ticks` of time.
pub fn arm(store: &mut Store<HostState>, ticks: u64) {
    let budget = &mut store.data_mut().budget;
    budget.ticks = ticks.max(1);
    budget.overtime_from = None;
    budget.hit = false;
    store.set_epoch_deadline(ticks.max(1));
}

fn on_deadline(mut store: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    let now = thread_cpu();
    let budget = &mut store.data_mut().budget;
    let limit = TICK * u32::try_from(budget.ticks).unwrap_or(u32::MAX);
    let used = match budget.overtime_from {
        None => {
            budget.overtime_from = Some(now);
            Duration::ZERO
        }
        Some(from) => now.saturating_sub(from),
    };
    if used >= limit {
        budget.hit = true;
        return Err(Trap::Interrupt.into());
    }
    let left = (limit - used).as_millis() / TICK.as_millis().max(1);
    Ok(UpdateDeadline::Continue(
        u64::try_from(left).unwrap_or(1).max(1),
    ))
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}
