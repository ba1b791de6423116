package mesh

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Protocol constants of the clear preamble.
const (
	preambleMagic   = "MESHETCD"
	protocolVersion = 3 // the highest version this code speaks (see minProtocolVersion)
	modePlaintext   = 0
	modeEncrypted   = 1 // X25519 + pre-shared key: confidential and authenticated
	modeEphemeral   = 2 // X25519 only (--peer-auto-tls): confidential against passive eavesdroppers, not authenticated
	preambleLen     = 8 + 2 + 2 + 1 + 8 + 32
)

// Protocol versions: 2 = AES-256-GCM links, one sealed record per frame;
// 3 = encrypted links may also pack small frames into one batched record
// (linkio.go). Both ends use the highest version both speak, so a version 3
// member still talks to a version 2 one.
const (
	minProtocolVersion    = 2
	versionBatchedRecords = 3
)

// Handshake errors besides the exported ones in api.go.
var (
	errNotMesh      = errors.New("mesh: remote is not a mesh peer (bad preamble magic)")
	errSelfConnect  = errors.New("mesh: connected to ourselves")
	errBadHello     = errors.New("mesh: malformed hello")
	errModeMismatch = ErrEncryptionMismatch
)

// preamble is the fixed clear-text opening both sides write at once.
type preamble struct {
	minVersion, maxVersion uint16
	mode                   uint8
	label                  [8]byte
	pub                    [32]byte // zero in plaintext mode
}

func (p preamble) encode() [preambleLen]byte {
	var b [preambleLen]byte
	copy(b[:8], preambleMagic)
	binary.BigEndian.PutUint16(b[8:], p.minVersion)
	binary.BigEndian.PutUint16(b[10:], p.maxVersion)
	b[12] = p.mode
	copy(b[13:21], p.label[:])
	copy(b[21:], p.pub[:])
	return b
}

func decodePreamble(b []byte) (preamble, error) {
	var p preamble
	if len(b) != preambleLen {
		return p, fmt.Errorf("%w: preamble of %d bytes", errNotMesh, len(b))
	}
	if string(b[:8]) != preambleMagic {
		return p, errNotMesh
	}
	p.minVersion = binary.BigEndian.Uint16(b[8:])
	p.maxVersion = binary.BigEndian.Uint16(b[10:])
	p.mode = b[12]
	copy(p.label[:], b[13:21])
	copy(p.pub[:], b[21:])
	if p.mode != modePlaintext && p.mode != modeEncrypted && p.mode != modeEphemeral {
		return p, fmt.Errorf("%w: unknown mode %d", errNotMesh, p.mode)
	}
	if p.minVersion > p.maxVersion {
		return p, fmt.Errorf("%w: version range %d..%d", ErrVersion, p.minVersion, p.maxVersion)
	}
	return p, nil
}

// hello is the first frame after the preamble, encrypted when the mesh
// is. Its transcript field is key confirmation: it proves the sender holds
// the same session keys and saw the same preambles.
type hello struct {
	transcript [32]byte
	label      string
	name       PeerName
	uid        uint64
	nickName   string
	addrs      []string
	features   uint32
}

func (h *hello) encode() []byte {
	b := make([]byte, 0, 128)
	b = append(b, h.transcript[:]...)
	b = appendShortString(b, h.label)
	b = appendShortString(b, string(h.name))
	b = binary.BigEndian.AppendUint64(b, h.uid)
	b = appendShortString(b, h.nickName)
	b = append(b, uint8(len(h.addrs)))
	for _, a := range h.addrs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(a)))
		b = append(b, a...)
	}
	b = binary.BigEndian.AppendUint32(b, h.features)
	return b
}

func appendShortString(b []byte, s string) []byte {
	b = append(b, uint8(len(s)))
	return append(b, s...)
}

// decodeHello parses a hello payload, enforcing every bound.
func decodeHello(b []byte) (hello, error) {
	var h hello
	d := decoder{b: b}
	copy(h.transcript[:], d.bytes(32))
	h.label = d.shortString(maxLabelLen)
	h.name = PeerName(d.shortString(maxNameLen))
	h.uid = d.uint64()
	h.nickName = d.shortString(maxNickNameLen)
	n := int(d.uint8())
	if n > maxAdvertiseAddrs {
		return h, fmt.Errorf("%w: %d addresses", errBadHello, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		l := int(d.uint16())
		if l == 0 || l > maxAddrLen {
			d.fail("address length")
			break
		}
		h.addrs = append(h.addrs, string(d.bytes(l)))
	}
	h.features = d.uint32()
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return h, fmt.Errorf("%w: %v", errBadHello, d.err)
	}
	if err := validateName(h.name); err != nil {
		return h, fmt.Errorf("%w: %v", errBadHello, err)
	}
	return h, nil
}

// decoder reads big-endian fields and remembers the first error, so a
// truncated or hostile input ends in one error rather than a panic.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("bad or truncated %s", what)
	}
	d.b = nil
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail("field")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint8() uint8 {
	v := d.bytes(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (d *decoder) uint16() uint16 {
	v := d.bytes(2)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint16(v)
}

func (d *decoder) uint32() uint32 {
	v := d.bytes(4)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (d *decoder) uint64() uint64 {
	v := d.bytes(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) shortString(limit int) string {
	n := int(d.uint8())
	if n > limit {
		d.fail("string length")
		return ""
	}
	return string(d.bytes(n))
}

// localIdentity is what we present in every handshake.
type localIdentity struct {
	name     PeerName
	uid      uint64
	nickName string
	label    string
	addrs    []string
	psk      []byte // nil: plaintext, or ephemeral encryption if ephemeral
	// ephemeral: encrypt with ephemeral keys only (no psk): confidential
	// against passive eavesdroppers, not authenticated.
	ephemeral bool
}

// mode is the preamble mode this identity speaks.
func (l localIdentity) mode() uint8 {
	switch {
	case l.psk != nil:
		return modeEncrypted
	case l.ephemeral:
		return modeEphemeral
	}
	return modePlaintext
}

// handshakeResult is an authenticated remote peer and the connection keys.
type handshakeResult struct {
	remote  hello
	send    *cipherState
	recv    *cipherState
	version uint16
	mode    uint8
}

// handshake runs the preamble and hello exchange on nc. It never allocates
// more than the 4 KiB handshake frame cap for anything the remote sends.
func handshake(nc net.Conn, local localIdentity, timeout time.Duration) (*handshakeResult, error) {
	if err := nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("mesh: set handshake deadline: %w", err)
	}
	ours := preamble{minVersion: minProtocolVersion, maxVersion: protocolVersion, label: labelDigest(local.label)}
	var eph ephemeralKey
	ours.mode = local.mode()
	if ours.mode != modePlaintext {
		var err error
		if eph, err = newEphemeralKey(rand.Reader); err != nil {
			return nil, err
		}
		ours.pub = eph.pub
	}
	ourBytes := ours.encode()
	// Both sides write first; 53 bytes always fit a socket buffer, so this
	// cannot deadlock.
	if _, err := nc.Write(ourBytes[:]); err != nil {
		return nil, fmt.Errorf("mesh: write preamble: %w", err)
	}
	var theirBytes [preambleLen]byte
	if _, err := io.ReadFull(nc, theirBytes[:]); err != nil {
		return nil, fmt.Errorf("mesh: read preamble: %w", err)
	}
	theirs, err := decodePreamble(theirBytes[:])
	if err != nil {
		return nil, err
	}
	version, err := negotiateVersion(ours, theirs)
	if err != nil {
		return nil, err
	}
	if theirs.mode != ours.mode {
		return nil, fmt.Errorf("%w: we are %s, the remote is %s", errModeMismatch, modeName(ours.mode), modeName(theirs.mode))
	}
	if theirs.label != ours.label {
		return nil, fmt.Errorf("%w: cluster label fingerprint %x, ours %x", ErrWrongCluster, theirs.label, ours.label)
	}

	res := &handshakeResult{version: version, mode: ours.mode}
	if ours.mode != modePlaintext {
		// Ephemeral mode: the same derivation with an empty PSK.
		send, recv, err := sessionKeys(eph, theirs.pub, local.psk, local.label)
		if err != nil {
			return nil, err
		}
		res.send, res.recv = newCipherState(send), newCipherState(recv)
	}

	// The transcript orders the two preambles canonically so both ends hash
	// the same bytes.
	first, second := ourBytes[:], theirBytes[:]
	if bytes.Compare(first, second) > 0 {
		first, second = second, first
	}
	th := sha256.New()
	th.Write(first)
	th.Write(second)
	var transcript [32]byte
	copy(transcript[:], th.Sum(nil))

	out := hello{transcript: transcript, label: local.label, name: local.name, uid: local.uid, nickName: local.nickName, addrs: local.addrs}
	payload := out.encode()
	frame := appendEnvelope(make([]byte, frameHeaderLen, frameHeaderLen+envelopeLen(local.name, "", len(payload))+aeadTagLen),
		msgHello, 1, 0, 0, local.name, "", payload)
	n, err := res.send.seal(frame[frameHeaderLen:], len(frame)-frameHeaderLen)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(frame, uint32(n))
	if _, err := nc.Write(frame[:frameHeaderLen+n]); err != nil {
		return nil, fmt.Errorf("mesh: write hello: %w", err)
	}

	var hdr [frameHeaderLen]byte
	size, err := readFrameLength(nc, &hdr, handshakeFrameCap)
	if err != nil {
		return nil, fmt.Errorf("mesh: read hello: %w", err)
	}
	in := make([]byte, size)
	if _, err := io.ReadFull(nc, in); err != nil {
		return nil, fmt.Errorf("mesh: read hello: %w", err)
	}
	plain, err := res.recv.open(in, size)
	if err != nil {
		if ours.mode == modeEphemeral {
			// No secret to differ: the keys were tampered with in flight.
			return nil, fmt.Errorf("%w: hello failed to open under ephemeral keys (preamble tampered with in flight?)", ErrAuth)
		}
		return nil, fmt.Errorf("%w (the peer uses a different mesh secret)", ErrAuth)
	}
	env, err := parseEnvelope(in[:plain])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadHello, err)
	}
	if env.typ != msgHello {
		return nil, fmt.Errorf("%w: first frame has type %d", errBadHello, env.typ)
	}
	remote, err := decodeHello(env.payload)
	if err != nil {
		return nil, err
	}
	if remote.transcript != transcript {
		return nil, fmt.Errorf("%w: key confirmation failed (transcript mismatch)", ErrAuth)
	}
	if remote.label != local.label {
		return nil, fmt.Errorf("%w: remote cluster %q, ours %q", ErrWrongCluster, remote.label, local.label)
	}
	if remote.name == local.name {
		if remote.uid == local.uid {
			return nil, errSelfConnect
		}
		return nil, fmt.Errorf("%w: %q (remote uid %016x, ours %016x)", ErrNameCollision, remote.name, remote.uid, local.uid)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("mesh: clear handshake deadline: %w", err)
	}
	res.remote = remote
	return res, nil
}

// negotiateVersion picks the highest protocol version both preambles
// speak.
func negotiateVersion(ours, theirs preamble) (uint16, error) {
	if theirs.maxVersion < ours.minVersion || theirs.minVersion > ours.maxVersion {
		return 0, fmt.Errorf("%w: we speak %d..%d, remote %d..%d", ErrVersion, ours.minVersion, ours.maxVersion, theirs.minVersion, theirs.maxVersion)
	}
	return min(ours.maxVersion, theirs.maxVersion), nil
}

// modeName describes a preamble mode in errors and logs.
func modeName(m uint8) string {
	switch m {
	case modeEncrypted:
		return "encrypted with a mesh secret"
	case modeEphemeral:
		return "encrypted with ephemeral keys only (auto TLS)"
	}
	return "plaintext"
}

// Encryption kinds reported in Status.
const (
	EncryptionPSK       = "psk"       // X25519 + mesh secret: confidential and authenticated
	EncryptionEphemeral = "ephemeral" // X25519 only: confidential against passive eavesdroppers, not authenticated
	EncryptionPlaintext = "plaintext"
)

// encryptionKind is the Status name of a preamble mode.
func encryptionKind(m uint8) string {
	switch m {
	case modeEncrypted:
		return EncryptionPSK
	case modeEphemeral:
		return EncryptionEphemeral
	}
	return EncryptionPlaintext
}
