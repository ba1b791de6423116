package kvstore

import (
	"errors"
	"fmt"
	"testing"

	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"
)

// remoteErr is what the peer transport hands back for a handler error with
// a code (peer.RemoteError).
type remoteErr struct {
	code uint16
	msg  string
}

func (e remoteErr) Error() string         { return e.msg }
func (e remoteErr) PeerErrorCode() uint16 { return e.code }

// Every error of peerErrors survives the trip as its code, also wrapped,
// and text alone is never matched.
func TestPeerErrorsRoundTripAsCodes(t *testing.T) {
	for _, want := range peerErrors {
		coded := withCode(fmt.Errorf("context: %w", want))
		var c interface{ PeerErrorCode() uint16 }
		if !errors.As(coded, &c) || c.PeerErrorCode() == 0 {
			t.Fatalf("%v got no code", want)
		}
		if got := fromRemote(remoteErr{code: c.PeerErrorCode(), msg: coded.Error()}); got != want {
			t.Errorf("code %d came back as %v, want %v", c.PeerErrorCode(), got, want)
		}
	}
	if got := fromRemote(remoteErr{code: 0, msg: lease.ErrNotPrimary.Error()}); errors.Is(got, lease.ErrNotPrimary) {
		t.Error("an uncoded error matched by its text")
	}
	if got := fromRemote(remoteErr{code: uint16(len(peerErrors) + 1), msg: "x"}); errors.Is(got, servererrors.ErrStopped) {
		t.Error("an unknown code matched a known error")
	}
	if err := errors.New("other"); withCode(err) != err {
		t.Error("an error outside peerErrors got a code")
	}
}
