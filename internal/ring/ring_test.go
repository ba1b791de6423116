package ring

import (
	"sync"
	"testing"
)

// The ring grows and wraps around while keeping FIFO order and the bound.
func TestRingOrderAndBound(t *testing.T) {
	var q Queue[int]
	q.Init(40)
	if len(q.buf) != 0 {
		t.Fatalf("a new queue holds a ring of %d", len(q.buf))
	}
	next, want := 0, 0
	for round := 0; round < 50; round++ {
		for i := 0; i < round%45; i++ {
			queued := q.Len()
			ok := q.Push(next)
			if ok != (queued < 40) {
				t.Fatalf("push %d with %d queued: %v", next, queued, ok)
			}
			if ok {
				next++
			}
		}
		for i := 0; i < 17; i++ {
			got, ok := q.Pop()
			if !ok {
				break
			}
			if got != want {
				t.Fatalf("popped %d; want %d", got, want)
			}
			want++
		}
		if len(q.buf) > 40 {
			t.Fatalf("ring of %d above the bound", len(q.buf))
		}
	}
}

// A consumer that waits on Ready whenever Pop finds the queue empty never
// misses an item pushed concurrently.
func TestNoLostWakeup(t *testing.T) {
	var q Queue[int]
	q.Init(1 << 20)
	const producers, each = 4, 5000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q.Push(p*each + i)
			}
		}()
	}
	got := 0
	for got < producers*each {
		if _, ok := q.Pop(); ok {
			got++
			continue
		}
		<-q.Ready()
	}
	wg.Wait()
}

// Several consumers waiting on Ready all keep being woken while items
// remain: together they take every item.
func TestConcurrentConsumers(t *testing.T) {
	var q Queue[int]
	q.Init(1 << 20)
	const consumers, total = 4, 20000
	var mu sync.Mutex
	taken := 0
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, ok := q.Pop(); ok {
					mu.Lock()
					taken++
					if taken == total {
						close(done)
					}
					mu.Unlock()
					continue
				}
				select {
				case <-q.Ready():
				case <-done:
					return
				}
			}
		}()
	}
	for i := range total {
		q.Push(i)
	}
	<-done
	wg.Wait()
}
