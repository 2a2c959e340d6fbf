//! The answers a connection works out on its own task. An answer is polled again only once its
//! own waker has fired. (`FuturesUnordered` also wakes its task whenever it has polled every
//! future it holds and all were pending — on a connection with one request in flight, every
//! request: a wasted turn of the connection's task, and on tokio's multi-threaded runtime a
//! `futex` wake of another worker thread, which the one request then waits for.)

use super::shared::lock;
use super::Reply;
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The answers being worked out, each with its stream.
#[derive(Default)]
pub(super) struct Inline {
    slots: Vec<Option<Slot>>,
    /// Slots whose answer is done, to be reused.
    free: Vec<usize>,
    /// Answers woken and not yet polled: this round's, taken from `woken` at its start.
    round: VecDeque<Arc<SlotWaker>>,
    woken: Arc<Woken>,
}

struct Slot {
    stream: u32,
    reply: BoxFuture<'static, Reply>,
    waker: Arc<SlotWaker>,
}

/// Where wakers put the answers they wake, and the connection task to tell.
#[derive(Default)]
struct Woken {
    queue: Mutex<Vec<Arc<SlotWaker>>>,
    task: AtomicWaker,
}

/// One answer's waker. A slot is reused after its answer is done; a late wake of the old
/// answer is recognised (it is not the slot's waker any more) and ignored.
struct SlotWaker {
    slot: usize,
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.woken.queue).push(self.clone());
            self.woken.task.wake();
        }
    }
}

impl Inline {
    pub(super) fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// Adds the answer of `stream`; it is first polled by the next `poll_next`.
    pub(super) fn push(&mut self, stream: u32, reply: BoxFuture<'static, Reply>) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let waker = Arc::new(SlotWaker {
            slot,
            queued: AtomicBool::new(true),
            woken: self.woken.clone(),
        });
        self.round.push_back(waker.clone());
        self.slots[slot] = Some(Slot {
            stream,
            reply,
            waker,
        });
    }

    /// The next answer that is done, with its stream. Polls the answers woken before this
    /// round began, each once; answers woken meanwhile wake the task for the next round.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(u32, Reply)> {
        self.woken.task.register(cx.waker());
        if self.round.is_empty() {
            self.round.extend(lock(&self.woken.queue).drain(..));
        }
        while let Some(waker) = self.round.pop_front() {
            waker.queued.store(false, Ordering::Release);
            let Some(slot) = self.slots.get_mut(waker.slot).and_then(Option::as_mut) else {
                continue;
            };
            if !Arc::ptr_eq(&slot.waker, &waker) {
                continue;
            }
            let child = Waker::from(waker.clone());
            if let Poll::Ready(reply) = slot.reply.as_mut().poll(&mut Context::from_waker(&child)) {
                let stream = slot.stream;
                self.slots[waker.slot] = None;
                self.free.push(waker.slot);
                return Poll::Ready((stream, reply));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An answer that counts its polls and is done once `open` is set; it keeps its last
    /// waker in `waker`.
    fn answer(
        polls: &Arc<AtomicUsize>,
        open: &Arc<AtomicBool>,
        waker: &Arc<Mutex<Option<Waker>>>,
    ) -> BoxFuture<'static, Reply> {
        let (polls, open, waker) = (polls.clone(), open.clone(), waker.clone());
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            *lock(&waker) = Some(cx.waker().clone());
            if open.load(Ordering::Relaxed) {
                Poll::Ready(Reply::Status(tonic::Status::ok("")))
            } else {
                Poll::Pending
            }
        }))
    }

    #[test]
    fn a_pending_answer_is_polled_again_only_when_woken_and_never_wakes_the_task_itself() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let (polls, open, waker) = Default::default();
        let mut inline = Inline::default();
        inline.push(7, answer(&polls, &open, &waker));
        assert!(inline.poll_next(&mut cx).is_pending());
        assert!(inline.poll_next(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled without a wake");
        assert_eq!(task.0.load(Ordering::Relaxed), 0, "the task woke itself");

        open.store(true, Ordering::Relaxed);
        let woken = lock(&waker).take().expect("the answer's waker");
        woken.wake_by_ref();
        woken.wake();
        assert_eq!(task.0.load(Ordering::Relaxed), 1, "one wake of the task");
        match inline.poll_next(&mut cx) {
            Poll::Ready((7, Reply::Status(_))) => {}
            _ => panic!("stream 7's answer"),
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            2,
            "polled once per wake round"
        );
        assert!(inline.is_empty());
    }

    #[test]
    fn a_late_wake_of_a_finished_answer_does_not_poll_the_answer_in_its_slot() {
        let task = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&task);
        let mut inline = Inline::default();
        let (first_polls, first_open, first_waker) = Default::default();
        inline.push(1, answer(&first_polls, &first_open, &first_waker));
        assert!(inline.poll_next(&mut cx).is_pending());
        first_open.store(true, Ordering::Relaxed);
        let first = lock(&first_waker).take().expect("the first answer's waker");
        first.wake_by_ref();
        assert!(inline.poll_next(&mut cx).is_ready());

        let (second_polls, second_open, second_waker) = Default::default();
        inline.push(3, answer(&second_polls, &second_open, &second_waker));
        assert!(inline.poll_next(&mut cx).is_pending());
        first.wake();
        assert!(inline.poll_next(&mut cx).is_pending());
        assert_eq!(
            second_polls.load(Ordering::Relaxed),
            1,
            "a stale wake polled it"
        );
        assert!(!inline.is_empty());
    }

    #[test]
    fn an_answer_that_wakes_itself_is_polled_in_the_next_round_not_this_one() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let mut inline = Inline::default();
        inline.push(
            5,
            Box::pin(std::future::poll_fn(move |cx| {
                counted.fetch_add(1, Ordering::Relaxed);
                cx.waker().wake_by_ref();
                Poll::Pending
            })),
        );
        assert!(inline.poll_next(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        assert_eq!(
            task.0.load(Ordering::Relaxed),
            1,
            "its wake reaches the task"
        );
        assert!(inline.poll_next(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
