package mesh

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Decoders face bytes from unauthenticated or hostile peers: they must
// return errors, never panic, and never allocate beyond the checked caps.
// Seed corpora live in testdata/fuzz/<FuzzName>/ and run as normal tests;
// `make fuzz` explores further.

func fuzzSeedsFrame() [][]byte {
	env := appendEnvelope(nil, msgUnicast, 16, 20, 7, "alpha", "beta", []byte("payload"))
	framed := binary.BigEndian.AppendUint32(nil, uint32(len(env)))
	return [][]byte{
		append(framed, env...),
		binary.BigEndian.AppendUint32(nil, 0xFFFFFFFF),
		{0, 0, 0, 0},
		{0, 0, 0, 20, msgPing, 0, 1, 0, 0},
		append(binary.BigEndian.AppendUint32(nil, 15), appendEnvelope(nil, msgPong, 1, 0, 0, "", "", nil)...),
	}
}

func FuzzFrameDecoder(f *testing.F) {
	for _, s := range fuzzSeedsFrame() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var hdr [frameHeaderLen]byte
		n, err := readFrameLength(bytes.NewReader(data), &hdr, 1<<20)
		if err != nil {
			return
		}
		if n > 1<<20 {
			t.Fatalf("length %d passed the cap", n)
		}
		body := data[frameHeaderLen:]
		if len(body) > n {
			body = body[:n]
		}
		env, err := parseEnvelope(body)
		if err != nil {
			return
		}
		if len(env.src) > maxNameLen || len(env.dst) > maxNameLen {
			t.Fatalf("name over the limit accepted")
		}
		// Re-encoding what we decoded gives the same bytes.
		again := appendEnvelope(nil, env.typ, env.ttl, env.channel, env.seq, PeerName(env.src), PeerName(env.dst), env.payload)
		again[1] = env.flags
		if !bytes.Equal(again, body) {
			t.Fatalf("envelope round trip differs:\n%x\n%x", body, again)
		}
	})
}

func fuzzSeedsHello() [][]byte {
	h := hello{label: "cluster", name: "peer-1", uid: 42, nickName: "nick", addrs: []string{"10.0.0.1:2380", "[::1]:2380"}, features: 1}
	p := preamble{minVersion: 1, maxVersion: 1, mode: modeEncrypted, label: labelDigest("cluster")}
	pre := p.encode()
	return [][]byte{h.encode(), pre[:], (&hello{name: "x"}).encode(), bytes.Repeat([]byte{0xff}, 64)}
}

func FuzzHelloDecoder(f *testing.F) {
	for _, s := range fuzzSeedsHello() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := decodePreamble(data); err == nil {
			enc := p.encode()
			if !bytes.Equal(enc[8:], data[8:]) {
				t.Fatalf("preamble round trip differs")
			}
		}
		h, err := decodeHello(data)
		if err != nil {
			return
		}
		if len(h.addrs) > maxAdvertiseAddrs || len(h.nickName) > maxNickNameLen || validateName(h.name) != nil {
			t.Fatalf("hello over the limits accepted: %+v", h)
		}
		if !bytes.Equal(h.encode(), data) {
			t.Fatalf("hello round trip differs")
		}
	})
}

func fuzzSeedsRecords() [][]byte {
	recs := []*peerRecord{
		{Name: "a", UID: 1, Version: 1700000000000, NickName: "alpha", Addrs: []string{"h:1"},
			Conns: []connRecord{{Peer: "b", Established: true}, {Peer: "c", Outbound: true}}},
		{Name: "b", UID: 2, Version: 5},
	}
	return [][]byte{encodeRecords(recs), encodeRecords(nil), {0xff, 0xff, 0xff, 0xff, 0x0f}, {1, 1, 1, 'a'}}
}

func FuzzTopologyRecordDecoder(f *testing.F) {
	for _, s := range fuzzSeedsRecords() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if entries, err := decodeDigest(data); err == nil && len(entries) > maxUpdateRecords {
			t.Fatalf("digest over the record bound accepted")
		}
		recs, err := decodeRecords(data)
		if err != nil {
			return
		}
		again, err := decodeRecords(encodeRecords(recs))
		if err != nil {
			t.Fatalf("re-encoded records do not decode: %v", err)
		}
		if len(again) != len(recs) {
			t.Fatalf("record count changed")
		}
		for i := range recs {
			if renderRecord(recs[i]) != renderRecord(again[i]) {
				t.Fatalf("record round trip differs: %s vs %s", renderRecord(recs[i]), renderRecord(again[i]))
			}
		}
		// Merging hostile records must respect the bounds.
		tp := newTopology(&peerRecord{Name: "self", UID: 1, Version: 1}, 8, 8)
		tp.merge(recs, scenarioEpoch)
		if len(tp.records) > 8 {
			t.Fatalf("MaxPeers exceeded: %d", len(tp.records))
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpora:
//
//	MESH_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus ./mesh/
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MESH_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set MESH_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz")
	}
	for name, seeds := range map[string][][]byte{
		"FuzzFrameDecoder":          fuzzSeedsFrame(),
		"FuzzHelloDecoder":          fuzzSeedsHello(),
		"FuzzTopologyRecordDecoder": fuzzSeedsRecords(),
	} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
