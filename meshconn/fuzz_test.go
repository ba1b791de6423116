package meshconn

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
)

// Seed corpora live in testdata/fuzz/<Target>/ and run as plain tests.
// MESHCONN_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus regenerates them.

func packetSeeds() [][]byte {
	return [][]byte{
		encodePacket(nil),
		encodePacket([]byte("raft MsgApp")),
		encodePacket(bytes.Repeat([]byte{0xff}, 300)),
		{packetVersion, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
		{},
	}
}

func bulkSeeds() [][]byte {
	return [][]byte{
		encodeBulk(&bulkMsg{typ: bulkTypeOpen, id: 1, metaLen: 12}),
		encodeBulk(&bulkMsg{typ: bulkTypeData, id: 1, offset: 0, chunk: []byte("snapshot-meta-and-body")}),
		encodeBulk(&bulkMsg{typ: bulkTypeData, id: 1, offset: 1 << 40, flags: flagFinal, streamCRC: 0xdeadbeef}),
		encodeBulk(&bulkMsg{typ: bulkTypeAck, id: 2, next: 4096, limit: 1 << 20, flags: flagGap}),
		encodeBulk(&bulkMsg{typ: bulkTypePing, id: 3}),
		encodeBulk(&bulkMsg{typ: bulkTypeDone, id: 4, total: 1 << 30}),
		encodeBulk(&bulkMsg{typ: bulkTypeReject, id: 5, code: rejectBusy, reason: "busy"}),
		encodeBulk(&bulkMsg{typ: bulkTypeCancel, id: 6, code: cancelBySender, reason: ""}),
		{bulkVersion, 99, 0, 0, 0, 0},
	}
}

// sessionSeeds are whole receiver sessions in bulkSession's format.
func sessionSeeds() [][]byte {
	join := func(ds ...[]byte) []byte {
		var out []byte
		for _, d := range ds {
			out = append(out, 0, byte(len(d)))
			out = append(out, d...)
		}
		return out
	}
	body := []byte("metabody")
	crc := crc32c(body)
	return [][]byte{
		join(
			encodeBulk(&bulkMsg{typ: bulkTypeOpen, id: 7, metaLen: 4}),
			encodeBulk(&bulkMsg{typ: bulkTypeData, id: 7, offset: 0, chunk: body[:5]}),
			encodeBulk(&bulkMsg{typ: bulkTypeData, id: 7, offset: 5, chunk: body[5:], flags: flagFinal, streamCRC: crc}),
			encodeBulk(&bulkMsg{typ: bulkTypePing, id: 7}),
		),
		join(
			encodeBulk(&bulkMsg{typ: bulkTypeOpen, id: 8, metaLen: 0}),
			encodeBulk(&bulkMsg{typ: bulkTypeData, id: 8, offset: 3, chunk: body}),
			encodeBulk(&bulkMsg{typ: bulkTypeData, id: 8, offset: 0, chunk: body, flags: flagFinal, streamCRC: crc + 1}),
			encodeBulk(&bulkMsg{typ: bulkTypeCancel, id: 8, code: cancelBySender}),
		),
		join(encodeBulk(&bulkMsg{typ: bulkTypeOpen, id: 9, metaLen: 1 << 31})),
		// open id 1 with 2 bytes of meta, data "ab", final "cd" checksummed
		{5, 1, 0, 2, 0, 1, 1, 0, 0, 2, 'a', 'b', 7, 1, 0, 2, 2, 'c', 'd'},
		// the same with a hole, a duplicate and a ping
		{5, 1, 0, 2, 0, 1, 1, 0, 3, 1, 'x', 1, 1, 0, 0, 2, 'a', 'b', 1, 1, 0, 0, 2, 'a', 'b', 3, 1, 0, 0, 0, 7, 1, 0, 2, 2, 'c', 'd'},
	}
}

func FuzzDecodePacket(f *testing.F) {
	for _, s := range packetSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePacket(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodePacket(p), b) {
			t.Fatalf("decoded %x from %x, which encodes differently", p, b)
		}
	})
}

func FuzzDecodeBulk(f *testing.F) {
	for _, s := range bulkSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeBulk(b)
		if err != nil {
			return
		}
		if re := encodeBulk(&m); !bytes.Equal(re, b) {
			t.Fatalf("decoded %+v from %x, which encodes as %x", m, b, re)
		}
	})
}

// FuzzBulkReceiver feeds arbitrary datagram sequences to a receiving Bulk:
// no panic, no hang, and a body the handler read to io.EOF must be one the
// sender vouched for: its stream checksum is that of a final data chunk.
func FuzzBulkReceiver(f *testing.F) {
	for _, s := range sessionSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		type result struct {
			id         uint64
			meta, body []byte
			err        error
		}
		results := make(chan result, 16)
		cfg := BulkConfig{
			ChunkSize:   64,
			IdleTimeout: time.Minute,
			MaxMetaSize: 1 << 10,
			MaxIncoming: 8,
			Handler: func(ctx context.Context, in *Incoming) error {
				body, err := io.ReadAll(in.Body)
				results <- result{in.ID, bytes.Clone(in.Meta), body, err}
				return err
			},
		}
		b, err := newBulk("r", func(mesh.DatagramHandler) (channel, error) { return stubChannel{nil}, nil }, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		vouched := make(map[uint64]map[uint32]bool)
		for _, d := range bulkSession(in) {
			if m, err := decodeBulk(d); err == nil && m.typ == bulkTypeData && m.flags&flagFinal != 0 {
				if vouched[m.id] == nil {
					vouched[m.id] = make(map[uint32]bool)
				}
				vouched[m.id][m.streamCRC] = true
			}
			b.deliver("s", d)
		}
		b.Close() // aborts whatever is still open; must not hang
		close(results)
		for r := range results {
			if r.err == nil && !vouched[r.id][crc32c(append(r.meta, r.body...))] {
				t.Fatalf("transfer %d delivered %d+%d bytes no final chunk vouched for", r.id, len(r.meta), len(r.body))
			}
		}
	})
}

func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MESHCONN_WRITE_CORPUS") == "" {
		t.Skip("set MESHCONN_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	for target, seeds := range map[string][][]byte{
		"FuzzDecodePacket": packetSeeds(),
		"FuzzDecodeBulk":   bulkSeeds(),
		"FuzzBulkReceiver": sessionSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s)))
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// bulkSession turns fuzz input into datagrams. A record starting with 0 is
// raw: a 1-byte length and that many bytes, delivered as they are. Any
// other first byte builds a well-formed message, so the fuzzer gets past
// the checksums into the receiver's state machine:
//
//	[kind] [id 0..3] [offset u16] [len u8] [data...]
//
// kind%5 picks open (offset is metaLen), data, final data (checksummed
// over what this session sent so far for the id, or garbage if kind is
// even), ping or cancel.
func bulkSession(in []byte) [][]byte {
	sent := map[uint64][]byte{}
	var out [][]byte
	for len(in) > 0 {
		kind := in[0]
		if kind == 0 {
			if len(in) < 2 {
				break
			}
			n := min(int(in[1]), len(in)-2)
			out = append(out, in[2:2+n])
			in = in[2+n:]
			continue
		}
		if len(in) < 5 {
			break
		}
		id := uint64(in[1] % 4)
		off := uint64(binary.BigEndian.Uint16(in[2:4]))
		n := min(int(in[4]), len(in)-5)
		data := in[5 : 5+n]
		in = in[5+n:]
		m := bulkMsg{id: id}
		switch kind % 5 {
		case 0:
			m.typ, m.metaLen = bulkTypeOpen, uint32(off)
		case 1, 2:
			m.typ, m.offset, m.chunk = bulkTypeData, off, data
			s := sent[id]
			if end := int(off) + n; end > len(s) {
				s = append(s, make([]byte, end-len(s))...)
			}
			copy(s[off:], data)
			sent[id] = s
			if kind%5 == 2 {
				m.flags = flagFinal
				m.streamCRC = crc32c(s[:int(off)+n])
				if kind%2 == 0 {
					m.streamCRC ^= 1
				}
			}
		case 3:
			m.typ = bulkTypePing
		case 4:
			m.typ, m.code, m.reason = bulkTypeCancel, cancelBySender, string(data)
		}
		out = append(out, encodeBulk(&m))
	}
	return out
}

// TestBulkSessionAccepted checks that bulkSession builds real transfers,
// so the fuzzer does reach the acceptance path.
func TestBulkSessionAccepted(t *testing.T) {
	got := make(chan received, 4)
	b, err := newBulk("r", func(mesh.DatagramHandler) (channel, error) { return stubChannel{nil}, nil }, nil,
		BulkConfig{Handler: hashingHandler(got)})
	if err != nil {
		t.Fatal(err)
	}
	seeds := sessionSeeds()
	for _, d := range bulkSession(seeds[len(seeds)-1]) {
		b.deliver("s", d)
	}
	select {
	case r := <-got:
		if r.err != nil || string(r.meta) != "ab" || r.n != 2 {
			t.Fatalf("got meta %q, %d body bytes, %v", r.meta, r.n, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the seed session was not accepted")
	}
	b.Close()
}
