package mesh

import (
	"sync"
	"testing"
)

// The inbound ring grows and wraps around while keeping FIFO order and
// the InboundQueueLen bound.
func TestInboundQueueRingOrder(t *testing.T) {
	var q inboundQueue
	q.init(40)
	if len(q.buf) != 0 {
		t.Fatalf("a new queue holds a ring of %d", len(q.buf))
	}
	next, want := 0, 0
	for round := 0; round < 50; round++ {
		for i := 0; i < round%45; i++ {
			queued := q.n
			ok := q.push(inboundItem{kind: deliverUnicast, payload: []byte{byte(next)}})
			if ok != (queued < 40) {
				t.Fatalf("push %d with %d queued: %v", next, queued, ok)
			}
			if ok {
				next++
			}
		}
		for i := 0; i < 17; i++ {
			it, ok := q.pop()
			if !ok {
				break
			}
			if int(it.payload[0]) != want%256 {
				t.Fatalf("popped %d; want %d", it.payload[0], want%256)
			}
			want++
		}
		if len(q.buf) > 40 {
			t.Fatalf("ring of %d above the bound", len(q.buf))
		}
	}
}

// A consumer that waits on ready whenever pop finds the queue empty never
// misses an item pushed concurrently.
func TestInboundQueueNoLostWakeup(t *testing.T) {
	var q inboundQueue
	q.init(1 << 20)
	const producers, each = 4, 5000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q.push(inboundItem{kind: deliverUnicast, payload: []byte{byte(p), byte(i)}})
			}
		}()
	}
	got := 0
	for got < producers*each {
		if _, ok := q.pop(); ok {
			got++
			continue
		}
		<-q.ready
	}
	wg.Wait()
}
