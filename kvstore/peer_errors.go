package kvstore

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"
)

// Errors between members travel as codes, never matched by their text.

// peerErrors are the errors a peer's handler returns that its caller must
// recognise, so that callers and grpcapi see etcd's errors. They cross the
// wire as their code, index + 1: the order is part of the protocol between
// members, so only append.
var peerErrors = []error{
	servererrors.ErrStopped, servererrors.ErrCanceled, servererrors.ErrTimeout,
	servererrors.ErrTimeoutWaitAppliedIndex, servererrors.ErrLeaderChanged,
	servererrors.ErrNotEnoughStartedMembers, servererrors.ErrLearnerNotReady,
	servererrors.ErrNoLeader, servererrors.ErrNotLeader, servererrors.ErrUnhealthy,
	servererrors.ErrTooManyRequests, servererrors.ErrTimeoutDueToLeaderFail,
	servererrors.ErrTimeoutDueToConnectionLost,
	lease.ErrNotPrimary, lease.ErrLeaseNotFound,
	membership.ErrIDRemoved, membership.ErrIDExists, membership.ErrIDNotFound,
	membership.ErrPeerURLexists, membership.ErrMemberNotLearner, membership.ErrTooManyLearners,
	auth.ErrPermissionDenied, auth.ErrUserEmpty, auth.ErrAuthOldRevision,
}

// codedError is a peerErrors error on its way to the wire.
type codedError struct {
	code uint16
	err  error
}

func (e codedError) Error() string         { return e.err.Error() }
func (e codedError) Unwrap() error         { return e.err }
func (e codedError) PeerErrorCode() uint16 { return e.code }

// withCode gives err its wire code when it is one of peerErrors.
func withCode(err error) error {
	for i, k := range peerErrors {
		if errors.Is(err, k) {
			return codedError{code: uint16(i + 1), err: err}
		}
	}
	return err
}

// fromRemote turns a peer's coded error back into its sentinel value.
func fromRemote(err error) error {
	var c interface{ PeerErrorCode() uint16 }
	if errors.As(err, &c) {
		if code := int(c.PeerErrorCode()); code > 0 && code <= len(peerErrors) {
			return peerErrors[code-1]
		}
	}
	return err
}

// codedHandler is h with its errors given their wire codes.
func codedHandler(h peerHandler) func(context.Context, string, []byte) ([]byte, error) {
	return func(ctx context.Context, from string, req []byte) ([]byte, error) {
		resp, err := h(ctx, from, req)
		if err != nil {
			return nil, withCode(err)
		}
		return resp, nil
	}
}

// peerHandler serves one peer request method.
type peerHandler func(ctx context.Context, from string, req []byte) ([]byte, error)

// errUnknownMember: a call to a member id without peer URLs.
func errUnknownMember(id types.ID) error {
	return fmt.Errorf("kvstore: member %s has no mesh peer: %w", id, membership.ErrIDNotFound)
}
