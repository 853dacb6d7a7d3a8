//! The simulator's event queue: events in (time, sequence) order.
//!
//! A calendar of buckets, one per ~1 ms of simulated time over the next ~4 s, with a
//! heap for what lies further (timers seconds away). Only the bucket being consumed is
//! kept ordered (a small heap); the others are unordered lists until their turn. A
//! fleet of 10,000 members keeps a few hundred thousand events pending, and one heap of
//! them all costs a walk of ~18 levels through memory at every pop; a bucket's heap
//! holds the few hundred events of one millisecond. The order is exactly the heap's:
//! time, then sequence.
//!
//! Events wait in slots; the buckets and heaps order 24-byte keys, not events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Width of a bucket: 2^10 µs.
const SHIFT: u32 = 10;
/// Buckets in the calendar (~4.2 s of simulated time).
const BUCKETS: usize = 4096;

/// (time, sequence, slot)
type Key = (u64, u64, u32);

#[derive(Debug)]
pub struct Queue<E> {
    /// The bucket being consumed (`cursor`), ordered.
    current: BinaryHeap<Reverse<Key>>,
    /// Buckets `cursor + 1 ..= cursor + BUCKETS - 1`, by `(time >> SHIFT) % BUCKETS`.
    buckets: Vec<Vec<Key>>,
    /// Keys in `buckets`.
    in_buckets: usize,
    /// Keys beyond the calendar.
    later: BinaryHeap<Reverse<Key>>,
    /// The bucket number (`time >> SHIFT`) being consumed.
    cursor: u64,
    slots: Vec<Option<E>>,
    free: Vec<u32>,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            current: BinaryHeap::new(),
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_buckets: 0,
            later: BinaryHeap::new(),
            cursor: 0,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<E> Queue<E> {
    /// Queues `ev` at `at` (never before the last event popped), `seq` breaking ties.
    pub fn push(&mut self, at: u64, seq: u64, ev: E) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(ev);
                s
            }
            None => {
                self.slots.push(Some(ev));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 pending events")
            }
        };
        let key = (at, seq, slot);
        let bucket = at >> SHIFT;
        if bucket <= self.cursor {
            self.current.push(Reverse(key));
        } else if bucket - self.cursor < BUCKETS as u64 {
            self.buckets[bucket as usize % BUCKETS].push(key);
            self.in_buckets += 1;
        } else {
            self.later.push(Reverse(key));
        }
    }

    /// The earliest event, with its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        loop {
            if let Some(Reverse((at, _, slot))) = self.current.pop() {
                let ev = self.slots[slot as usize].take()?;
                self.free.push(slot);
                return Some((at, ev));
            }
            self.advance()?;
        }
    }

    /// Opens the next bucket that holds anything. `None`: nothing is pending.
    fn advance(&mut self) -> Option<()> {
        self.cursor = if self.in_buckets > 0 {
            self.cursor + 1
        } else {
            // Nothing within the calendar: jump to the next event beyond it.
            let Reverse((at, _, _)) = self.later.peek()?;
            (at >> SHIFT).max(self.cursor + 1)
        };
        let keys = std::mem::take(&mut self.buckets[self.cursor as usize % BUCKETS]);
        self.in_buckets -= keys.len();
        let mut current = std::mem::take(&mut self.current).into_vec();
        current.extend(keys.into_iter().map(Reverse));
        self.current = BinaryHeap::from(current);
        // What lay beyond the calendar and falls in this bucket or the calendar's new
        // last one.
        while let Some(Reverse(key)) = self.later.peek().copied() {
            let bucket = key.0 >> SHIFT;
            if bucket.saturating_sub(self.cursor) >= BUCKETS as u64 {
                break;
            }
            self.later.pop();
            if bucket <= self.cursor {
                self.current.push(Reverse(key));
            } else {
                self.buckets[bucket as usize % BUCKETS].push(key);
                self.in_buckets += 1;
            }
        }
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
