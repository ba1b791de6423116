package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minClass = 9  // 512 bytes: the smallest buffer handed out
	maxClass = 24 // 16 MiB: larger buffers are allocated, never pooled
)

// Pool is a set of per-class pools. The zero value is ready to use.
type Pool struct {
	classes [maxClass + 1]sync.Pool // of *[]byte, cap exactly 1<<class
}

// Get returns a buffer of length n (contents undefined).
func (p *Pool) Get(n int) *[]byte {
	c := classOf(n)
	if c > maxClass {
		b := make([]byte, n)
		return &b
	}
	if bp, ok := p.classes[c].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put recycles a buffer from Get. The caller must not use it afterwards.
func (p *Pool) Put(bp *[]byte) {
	c := bits.Len(uint(cap(*bp))) - 1
	if c < minClass || c > maxClass || cap(*bp) != 1<<c {
		return // not one of ours
	}
	p.classes[c].Put(bp)
}

func classOf(n int) int {
	if n <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(n - 1))
}
