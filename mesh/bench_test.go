package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
)

func BenchmarkEnvelopeEncode(b *testing.B) {
	payload := make([]byte, 1024)
	buf := make([]byte, envelopeLen("peer-src", "peer-dst", len(payload)))
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		h := putEnvelopeHeader(buf, msgUnicast, 16, 20, 0, "peer-src", "peer-dst")
		copy(buf[h:], payload)
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	env := appendEnvelope(nil, msgUnicast, 16, 20, 0, "peer-src", "peer-dst", make([]byte, 1024))
	b.ReportAllocs()
	b.SetBytes(int64(len(env)))
	for b.Loop() {
		if _, err := parseEnvelope(env); err != nil {
			b.Fatal(err)
		}
	}
}

func benchCiphers(b testing.TB) (*cipherState, *cipherState) {
	ka, _ := newEphemeralKey(randReader{})
	kb, _ := newEphemeralKey(randReader{seed: 1})
	send, _, err := sessionKeys(ka, kb.pub, testPSK, "x")
	if err != nil {
		b.Fatal(err)
	}
	_, recv, err := sessionKeys(kb, ka.pub, testPSK, "x")
	if err != nil {
		b.Fatal(err)
	}
	return newCipherState(send), newCipherState(recv)
}

func BenchmarkSealOpen(b *testing.B) {
	for _, size := range []int{128, 1024, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			tx, rx := benchCiphers(b)
			buf := make([]byte, size+aeadTagLen)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				n, err := tx.seal(buf, size)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := rx.open(buf, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRouteLookup(b *testing.B) {
	records := map[PeerName]*peerRecord{}
	const n = 50
	name := func(i int) PeerName { return PeerName(fmt.Sprintf("peer-%02d", i)) }
	for i := 0; i < n; i++ {
		r := &peerRecord{Name: name(i), UID: uint64(i + 1)}
		for _, j := range []int{(i + 1) % n, (i + n - 1) % n, (i + 7) % n, (i + n - 7) % n} {
			r.Conns = append(r.Conns, connRecord{Peer: name(j), Established: true})
		}
		r.Conns = sortedConns(r.Conns)
		records[r.Name] = r
	}
	direct := map[PeerName]uint64{}
	for _, c := range records[name(0)].Conns {
		direct[c.Peer] = 1
	}
	rt := computeRoutes(name(0), records, direct)
	dst := []byte(name(25))
	b.Run("lookup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := rt.next[PeerName(dst)]; !ok {
				b.Fatal("no route")
			}
		}
	})
	b.Run("recompute-50-peers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			computeRoutes(name(0), records, direct)
		}
	})
}

func sortedConns(cs []connRecord) []connRecord {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].Peer < cs[j-1].Peer; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
	out := cs[:0]
	for i, c := range cs {
		if i == 0 || c.Peer != out[len(out)-1].Peer {
			out = append(out, c)
		}
	}
	return out
}

// BenchmarkRelayForward measures a relay's whole per-frame path without
// sockets: open the received frame in place, parse, TTL, route lookup,
// enqueue on the next hop, then the writer's in-place seal and write. Each
// iteration also seals the input (the upstream peer's work). allocs/op
// should be 0: the pooled frame buffer travels from reader to writer.
func BenchmarkRelayForward(b *testing.B) {
	for _, size := range []int{128, 1024, 16 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			cfg := testConfig("relay")
			r, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = r.Stop() }()
			upSend, inRecv := benchCiphers(b)
			outSend, _ := benchCiphers(b)
			in := &conn{r: r, remote: "src", recv: inRecv}
			out := relayThrough(r, &conn{remote: "next", send: outSend}, 16)

			plain := appendEnvelope(nil, msgUnicast, 16, 20, 0, "src", "dst", make([]byte, size))
			plain[1] = classInteractive
			wire := make([]byte, frameHeaderLen+len(plain)+aeadTagLen)
			rd := bytes.NewReader(nil)
			br := bufio.NewReaderSize(rd, linkReadBufSize)
			var hdr [frameHeaderLen]byte
			w := newLinkWriter(io.Discard, linkWriteBufSize, false)
			scratch := make([]*frameBuf, 0, 8)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				copy(wire[frameHeaderLen:], plain)
				n, err := upSend.seal(wire[frameHeaderLen:], len(plain))
				if err != nil {
					b.Fatal(err)
				}
				binary.BigEndian.PutUint32(wire, uint32(n))
				// Reader side.
				rd.Reset(wire)
				br.Reset(rd)
				if n, err = readFrameLength(br, &hdr, len(wire)); err != nil {
					b.Fatal(err)
				}
				f, err := readFrameBody(br, in.recv, &r.pool, n)
				if err != nil {
					b.Fatal(err)
				}
				if err := in.dispatch(f); err != nil {
					b.Fatal(err)
				}
				// Writer side.
				fs, _ := out.nextFrames(scratch[:0], true)
				if len(fs) != 1 {
					b.Fatal("frame not forwarded")
				}
				if err := out.writeFrame(w, fs[0]); err != nil {
					b.Fatal(err)
				}
				r.pool.put(fs[0])
			}
		})
	}
}
