package bufpool

import "testing"

func TestGetReturnsClassSizedBuffers(t *testing.T) {
	var p Pool
	for _, tc := range []struct{ n, cap int }{{0, 512}, {1, 512}, {512, 512}, {513, 1024}, {64 << 10, 64 << 10}, {64<<10 + 1, 128 << 10}, {1 << 24, 1 << 24}, {1<<24 + 1, 1<<24 + 1}} {
		bp := p.Get(tc.n)
		if len(*bp) != tc.n || cap(*bp) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*bp), cap(*bp), tc.n, tc.cap)
		}
		p.Put(bp)
	}
}

func TestPutIgnoresForeignBuffers(t *testing.T) {
	var p Pool
	odd := make([]byte, 100, 1000)
	p.Put(&odd) // not a class size: dropped
	if bp := p.Get(600); cap(*bp) != 1024 {
		t.Fatalf("Get(600) after a foreign Put: cap %d, want 1024", cap(*bp))
	}
}

func TestRecycledBufferIsReused(t *testing.T) {
	var p Pool
	bp := p.Get(100 << 10)
	(*bp)[0] = 42
	p.Put(bp)
	// sync.Pool may drop items at any time; only check what comes back.
	got := p.Get(70 << 10)
	if len(*got) != 70<<10 || cap(*got) != 128<<10 {
		t.Fatalf("len %d cap %d", len(*got), cap(*got))
	}
}
