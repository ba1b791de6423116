package ring

import "sync"

// minCapacity is the ring's first allocation.
const minCapacity = 16

// Queue is a bounded FIFO safe for concurrent producers and consumers. The
// zero value is unusable; call Init first.
//
// Waking: Ready holds a token while the queue may be non-empty. Push adds
// one when the queue becomes non-empty, and Pop passes one on when it
// leaves items behind, so several consumers that each wait on Ready
// whenever Pop finds the queue empty all get woken and none misses an item.
type Queue[T any] struct {
	mu    sync.Mutex
	buf   []T // ring; len(buf) is its capacity
	head  int // index of the oldest item
	n     int // items queued
	limit int
	ready chan struct{}
}

// Init sets the bound (at least 1) and makes the wake channel.
func (q *Queue[T]) Init(limit int) {
	q.limit = max(limit, 1)
	q.ready = make(chan struct{}, 1)
}

// Ready is the wake channel; see Queue.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

// Len is the number of queued items.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

func (q *Queue[T]) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Push queues it, or reports false when the bound is reached.
func (q *Queue[T]) Push(it T) bool {
	q.mu.Lock()
	if q.n >= q.limit {
		q.mu.Unlock()
		return false
	}
	if q.n == len(q.buf) {
		nb := make([]T, min(max(2*len(q.buf), minCapacity), q.limit))
		for i := 0; i < q.n; i++ {
			nb[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = nb, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = it
	q.n++
	wake := q.n == 1
	q.mu.Unlock()
	if wake {
		q.signal()
	}
	return true
}

// Pop takes the oldest item; false when the queue is empty.
func (q *Queue[T]) Pop() (T, bool) {
	var zero T
	q.mu.Lock()
	if q.n == 0 {
		q.mu.Unlock()
		return zero, false
	}
	it := q.buf[q.head]
	q.buf[q.head] = zero // drop references for the GC
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	more := q.n > 0
	q.mu.Unlock()
	if more {
		q.signal()
	}
	return it, true
}
