package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// linkFrames writes envelopes of the given payload sizes through a
// linkWriter and returns the wire bytes.
func linkFrames(t *testing.T, send *cipherState, batch bool, sizes []int) ([]byte, [][]byte) {
	t.Helper()
	var pool bufPool
	var wire bytes.Buffer
	w := newLinkWriter(&wire, linkWriteBufSize, batch)
	var envs [][]byte
	total := 0
	for i, size := range sizes {
		payload := bytes.Repeat([]byte{byte(i)}, size)
		env := appendEnvelope(nil, msgUnicast, 16, 20, uint64(i), "src", "dst", payload)
		envs = append(envs, env)
		f := pool.get(len(env))
		copy(f.b[frameHeaderLen:], env)
		n, err := w.writeFrame(send, f)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		pool.put(f)
		if i%7 == 6 { // the write loop flushes between bursts
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if total != wire.Len() {
		t.Fatalf("writeFrame accounted %d wire bytes, wrote %d", total, wire.Len())
	}
	return wire.Bytes(), envs
}

func TestLinkBatchedRecordsRoundTrip(t *testing.T) {
	// Small frames get packed, large ones travel alone, and order holds
	// across the switches (each switch seals the open record first).
	sizes := []int{10, 100, 900, 1000, 4096, 20, 30, 70000, 5, 1, 2000, 300}
	for i := range 200 {
		sizes = append(sizes, (i*37)%1100)
	}
	for _, tc := range []struct {
		name      string
		encrypted bool
		batch     bool
	}{
		{"plaintext", false, false},
		{"plaintext/batch-negotiated", false, true},
		{"encrypted/v2", true, false},
		{"encrypted/v3", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var send, recv *cipherState
			if tc.encrypted {
				send, recv = benchCiphers(t)
			}
			wire, envs := linkFrames(t, send, tc.batch, sizes)
			var pool bufPool
			lr := newLinkReader(bytes.NewReader(wire), recv, &pool, 1<<20, tc.batch)
			read := 0
			for i, want := range envs {
				f, n, err := lr.next()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				read += n
				if !bytes.Equal(f.envelope(), want) {
					t.Fatalf("frame %d differs: %d bytes, want %d", i, f.n, len(want))
				}
				pool.put(f)
			}
			if read != len(wire) {
				t.Fatalf("reader accounted %d wire bytes of %d", read, len(wire))
			}
			if _, _, err := lr.next(); err == nil {
				t.Fatal("read past the end")
			}
			batched := countBatchedRecords(t, wire, tc.encrypted)
			if want := tc.encrypted && tc.batch; (batched > 0) != want {
				t.Fatalf("%d batched records, want batching %v", batched, want)
			}
		})
	}
}

// countBatchedRecords walks the length prefixes of a wire stream.
func countBatchedRecords(t *testing.T, wire []byte, encrypted bool) int {
	t.Helper()
	n := 0
	for len(wire) >= frameHeaderLen {
		v := binary.BigEndian.Uint32(wire)
		if v&batchRecordFlag != 0 {
			n++
		}
		wire = wire[frameHeaderLen+int(v&^batchRecordFlag):]
	}
	return n
}

func TestLinkReaderRejectsBatchedRecordWithoutVersion3(t *testing.T) {
	send, recv := benchCiphers(t)
	wire, _ := linkFrames(t, send, true, []int{10, 20})
	var pool bufPool
	lr := newLinkReader(bytes.NewReader(wire), recv, &pool, 1<<20, false)
	if _, _, err := lr.next(); err == nil {
		t.Fatal("a version 2 link accepted a batched record")
	}
}

func TestLinkReaderRejectsTamperedRecord(t *testing.T) {
	send, recv := benchCiphers(t)
	wire, _ := linkFrames(t, send, true, []int{10, 20, 30})
	wire[frameHeaderLen+3] ^= 1
	var pool bufPool
	lr := newLinkReader(bytes.NewReader(wire), recv, &pool, 1<<20, true)
	if _, _, err := lr.next(); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered record: got %v, want ErrAuth", err)
	}
}

// sealRecord seals plain as one batched record, as a hostile but
// key-holding peer could.
func sealRecord(t *testing.T, send *cipherState, plain []byte) []byte {
	t.Helper()
	buf := make([]byte, frameHeaderLen+len(plain)+aeadTagLen)
	copy(buf[frameHeaderLen:], plain)
	n, err := send.seal(buf[frameHeaderLen:], len(plain))
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(buf, uint32(n)|batchRecordFlag)
	return buf
}

func TestLinkReaderRejectsMalformedPackedFrames(t *testing.T) {
	for name, plain := range map[string][]byte{
		"empty record":       {},
		"truncated length":   {0},
		"zero length":        {0, 0},
		"length past record": {0, 10, 1, 2},
		"over batchFrameMax": append(binary.BigEndian.AppendUint16(nil, batchFrameMax+1), make([]byte, batchFrameMax+1)...),
	} {
		t.Run(name, func(t *testing.T) {
			send, recv := benchCiphers(t)
			var pool bufPool
			lr := newLinkReader(bytes.NewReader(sealRecord(t, send, plain)), recv, &pool, 1<<20, true)
			if _, _, err := lr.next(); err == nil {
				t.Fatal("malformed record accepted")
			}
		})
	}
	t.Run("record over the cap", func(t *testing.T) {
		var pool bufPool
		_, recv := benchCiphers(t)
		hdr := binary.BigEndian.AppendUint32(nil, uint32(batchRecordMax+aeadTagLen+1)|batchRecordFlag)
		lr := newLinkReader(bytes.NewReader(hdr), recv, &pool, 1<<20, true)
		if _, _, err := lr.next(); !errors.Is(err, errFrameTooLarge) {
			t.Fatalf("got %v, want errFrameTooLarge", err)
		}
	})
}

func TestNegotiatedVersion(t *testing.T) {
	for _, tc := range []struct {
		theirMin, theirMax uint16
		want               uint16
		err                bool
	}{
		{2, 2, 2, false},
		{2, 3, 3, false},
		{3, 9, 3, false},
		{1, 1, 0, true},
		{4, 9, 0, true},
	} {
		t.Run(fmt.Sprintf("%d..%d", tc.theirMin, tc.theirMax), func(t *testing.T) {
			ours := preamble{minVersion: minProtocolVersion, maxVersion: protocolVersion}
			got, err := negotiateVersion(ours, preamble{minVersion: tc.theirMin, maxVersion: tc.theirMax})
			if tc.err {
				if !errors.Is(err, ErrVersion) {
					t.Fatalf("got %d, %v; want ErrVersion", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// FuzzBatchedRecordDecoder feeds arbitrary record plaintext, as a peer
// holding the keys could seal it, to the reader: errors, never panics,
// and every frame it yields fits the packed-frame bounds.
func FuzzBatchedRecordDecoder(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 3, 1, 2, 3, 0, 1, 9})
	f.Add([]byte{0xff, 0xff, 1})
	f.Add(append(binary.BigEndian.AppendUint16(nil, 15), appendEnvelope(nil, msgPong, 1, 0, 0, "", "", nil)...))
	f.Fuzz(func(t *testing.T, plain []byte) {
		if len(plain) > batchRecordMax {
			return
		}
		send, recv := benchCiphers(t)
		var pool bufPool
		lr := newLinkReader(bytes.NewReader(sealRecord(t, send, plain)), recv, &pool, 1<<20, true)
		for {
			fr, _, err := lr.next()
			if err != nil {
				return
			}
			if fr.n == 0 || fr.n > batchFrameMax {
				t.Fatalf("packed frame of %d bytes accepted", fr.n)
			}
			pool.put(fr)
		}
	})
}
