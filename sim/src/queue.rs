//! The simulator's event queue: events in (time, sequence) order.
//!
//! A calendar of buckets, one per ~1 ms of simulated time over the next ~4 s, with a
//! heap for what lies further (timers seconds away). Only the bucket being consumed is
//! ordered: sorted when its turn comes, with a small heap for what is queued into it
//! after. The others are unordered lists until their turn. A fleet of 10,000 members
//! keeps a few hundred thousand events pending, and one heap of them all costs a walk of
//! ~18 levels through memory at every pop. The order is exactly one heap's: time, then
//! sequence.
//!
//! Events wait in their bucket with their key (a bucket is consumed while it is warm in
//! the cache; a separate table of events would cost a miss at every pop).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Width of a bucket: 2^10 µs.
const SHIFT: u32 = 10;
/// Buckets in the calendar (~4.2 s of simulated time).
const BUCKETS: usize = 4096;

/// An event with its time and sequence; ordered by (time, sequence) only.
#[derive(Debug)]
struct Entry<E> {
    at: u64,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
pub struct Queue<E> {
    /// The bucket being consumed (`cursor`), sorted latest first (popped from the end).
    current: Vec<Entry<E>>,
    /// Events queued into the bucket being consumed after it was sorted.
    late: BinaryHeap<Reverse<Entry<E>>>,
    /// Buckets `cursor + 1 ..= cursor + BUCKETS - 1`, by `(time >> SHIFT) % BUCKETS`.
    buckets: Vec<Vec<Entry<E>>>,
    /// Entries in `buckets`.
    in_buckets: usize,
    /// Entries beyond the calendar.
    later: BinaryHeap<Reverse<Entry<E>>>,
    /// The bucket number (`time >> SHIFT`) being consumed.
    cursor: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            current: Vec::new(),
            late: BinaryHeap::new(),
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_buckets: 0,
            later: BinaryHeap::new(),
            cursor: 0,
        }
    }
}

impl<E> Queue<E> {
    /// Queues `ev` at `at` (never before the last event popped), `seq` breaking ties.
    pub fn push(&mut self, at: u64, seq: u64, ev: E) {
        self.place(Entry { at, seq, ev });
    }

    fn place(&mut self, entry: Entry<E>) {
        let bucket = entry.at >> SHIFT;
        if bucket <= self.cursor {
            self.late.push(Reverse(entry));
        } else if bucket - self.cursor < BUCKETS as u64 {
            self.buckets[bucket as usize % BUCKETS].push(entry);
            self.in_buckets += 1;
        } else {
            self.later.push(Reverse(entry));
        }
    }

    /// The earliest event, with its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        loop {
            let late_first = match (self.current.last(), self.late.peek()) {
                (Some(c), Some(Reverse(l))) => l < c,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (None, None) => {
                    self.advance()?;
                    continue;
                }
            };
            let e = if late_first {
                self.late.pop().map(|Reverse(e)| e)
            } else {
                self.current.pop()
            }?;
            return Some((e.at, e.ev));
        }
    }

    /// Opens the next bucket that holds anything. `None`: nothing is pending.
    fn advance(&mut self) -> Option<()> {
        self.cursor = if self.in_buckets > 0 {
            self.cursor + 1
        } else {
            // Nothing within the calendar: jump to the next event beyond it.
            let Reverse(e) = self.later.peek()?;
            (e.at >> SHIFT).max(self.cursor + 1)
        };
        let mut current = std::mem::take(&mut self.buckets[self.cursor as usize % BUCKETS]);
        self.in_buckets -= current.len();
        // What lay beyond the calendar and falls in this bucket or the calendar's new
        // last one.
        while let Some(Reverse(e)) = self.later.peek() {
            let bucket = e.at >> SHIFT;
            if bucket.saturating_sub(self.cursor) >= BUCKETS as u64 {
                break;
            }
            if let Some(Reverse(e)) = self.later.pop() {
                if bucket <= self.cursor {
                    current.push(e);
                } else {
                    self.place(e);
                }
            }
        }
        // One sort of the bucket costs less than as many pops from a heap of it (a wave
        // of heartbeats puts most of a fleet's deliveries in one millisecond).
        current.sort_unstable_by(|a, b| b.cmp(a));
        self.current = current;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is pushed, at any distance and while popping, comes out in the order
        /// of one heap of (time, sequence).
        #[test]
        fn pops_in_the_order_of_one_heap(
            steps in proptest::collection::vec(
                (0u64..3, prop_oneof![0u64..2_000, 0u64..50_000, 0u64..20_000_000]),
                1..400,
            ),
        ) {
            let mut q = Queue::default();
            let mut reference = BinaryHeap::new();
            let (mut now, mut seq) = (0u64, 0u64);
            for (pops, delay) in steps {
                seq += 1;
                q.push(now + delay, seq, seq);
                reference.push(Reverse((now + delay, seq)));
                for _ in 0..pops {
                    let want = reference.pop().map(|Reverse((at, s))| (at, s));
                    prop_assert_eq!(q.pop(), want);
                    if let Some((at, _)) = want {
                        now = at;
                    }
                }
            }
            while let Some(Reverse((at, s))) = reference.pop() {
                prop_assert_eq!(q.pop(), Some((at, s)));
            }
            prop_assert_eq!(q.pop(), None);
        }
    }
}
