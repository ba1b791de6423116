package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	etcderr "go.etcd.io/etcd/server/v3/etcdserver/errors"
	serverversion "go.etcd.io/etcd/server/v3/etcdserver/version"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// TestTogRPCErrorTable checks every mapping etcd v3.7.3 makes, written out
// independently of errors.go's table so a typo there fails here.
func TestTogRPCErrorTable(t *testing.T) {
	tests := []struct {
		in       error
		wantCode codes.Code
		wantMsg  string
	}{
		{membership.ErrIDRemoved, codes.NotFound, "etcdserver: member not found"},
		{membership.ErrIDNotFound, codes.NotFound, "etcdserver: member not found"},
		{membership.ErrIDExists, codes.FailedPrecondition, "etcdserver: member ID already exist"},
		{membership.ErrPeerURLexists, codes.FailedPrecondition, "etcdserver: Peer URLs already exists"},
		{membership.ErrMemberNotLearner, codes.FailedPrecondition, "etcdserver: can only promote a learner member"},
		{membership.ErrTooManyLearners, codes.FailedPrecondition, "etcdserver: too many learner members in cluster"},
		// etcd maps these two to client-side rpctypes errors, which are not
		// gRPC statuses: the gRPC server sends them as codes.Unknown with
		// the message. Same bytes on the wire as etcd, so same here.
		{etcderr.ErrNotEnoughStartedMembers, codes.Unknown, "etcdserver: re-configuration failed due to not enough started members"},
		{etcderr.ErrLearnerNotReady, codes.FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader"},
		{mvcc.ErrCompacted, codes.OutOfRange, "etcdserver: mvcc: required revision has been compacted"},
		{mvcc.ErrFutureRev, codes.OutOfRange, "etcdserver: mvcc: required revision is a future revision"},
		{etcderr.ErrRequestTooLarge, codes.InvalidArgument, "etcdserver: request is too large"},
		{etcderr.ErrNoSpace, codes.ResourceExhausted, "etcdserver: mvcc: database space exceeded"},
		{etcderr.ErrTooManyRequests, codes.Unknown, "etcdserver: too many requests"},
		{etcderr.ErrNoLeader, codes.Unavailable, "etcdserver: no leader"},
		{etcderr.ErrNotLeader, codes.FailedPrecondition, "etcdserver: not leader"},
		{etcderr.ErrLeaderChanged, codes.Unavailable, "etcdserver: leader changed"},
		{etcderr.ErrCanceled, codes.Canceled, "etcdserver: request canceled"},
		{etcderr.ErrStopped, codes.Unavailable, "etcdserver: server stopped"},
		{etcderr.ErrTimeout, codes.Unavailable, "etcdserver: request timed out"},
		{etcderr.ErrTimeoutDueToLeaderFail, codes.Unavailable, "etcdserver: request timed out, possibly due to previous leader failure"},
		{etcderr.ErrTimeoutDueToConnectionLost, codes.Unavailable, "etcdserver: request timed out, possibly due to connection lost"},
		{etcderr.ErrTimeoutWaitAppliedIndex, codes.Unavailable, "etcdserver: request timed out, waiting for the applied index took too long"},
		{etcderr.ErrUnhealthy, codes.Unavailable, "etcdserver: unhealthy cluster"},
		{etcderr.ErrKeyNotFound, codes.InvalidArgument, "etcdserver: key not found"},
		{etcderr.ErrCorrupt, codes.DataLoss, "etcdserver: corrupt cluster"},
		{etcderr.ErrBadLeaderTransferee, codes.FailedPrecondition, "etcdserver: bad leader transferee"},
		{etcderr.ErrClusterVersionUnavailable, codes.FailedPrecondition, "etcdserver: cluster version not found during downgrade"},
		{etcderr.ErrWrongDowngradeVersionFormat, codes.InvalidArgument, "etcdserver: wrong downgrade target version format"},
		{serverversion.ErrInvalidDowngradeTargetVersion, codes.InvalidArgument, "etcdserver: invalid downgrade target version"},
		{serverversion.ErrDowngradeInProcess, codes.FailedPrecondition, "etcdserver: cluster has a downgrade job in progress"},
		{serverversion.ErrNoInflightDowngrade, codes.FailedPrecondition, "etcdserver: no inflight downgrade job"},
		{lease.ErrLeaseNotFound, codes.NotFound, "etcdserver: requested lease not found"},
		{lease.ErrLeaseExists, codes.FailedPrecondition, "etcdserver: lease already exists"},
		{lease.ErrLeaseTTLTooLarge, codes.OutOfRange, "etcdserver: too large lease TTL"},
		{auth.ErrRootUserNotExist, codes.FailedPrecondition, "etcdserver: root user does not exist"},
		{auth.ErrRootRoleNotExist, codes.FailedPrecondition, "etcdserver: root user does not have root role"},
		{auth.ErrUserAlreadyExist, codes.FailedPrecondition, "etcdserver: user name already exists"},
		{auth.ErrUserEmpty, codes.InvalidArgument, "etcdserver: user name is empty"},
		{auth.ErrUserNotFound, codes.FailedPrecondition, "etcdserver: user name not found"},
		{auth.ErrRoleAlreadyExist, codes.FailedPrecondition, "etcdserver: role name already exists"},
		{auth.ErrRoleNotFound, codes.FailedPrecondition, "etcdserver: role name not found"},
		{auth.ErrRoleEmpty, codes.InvalidArgument, "etcdserver: role name is empty"},
		{auth.ErrAuthFailed, codes.InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"},
		{auth.ErrPermissionNotGiven, codes.InvalidArgument, "etcdserver: permission not given"},
		{auth.ErrPermissionDenied, codes.PermissionDenied, "etcdserver: permission denied"},
		{auth.ErrRoleNotGranted, codes.FailedPrecondition, "etcdserver: role is not granted to the user"},
		{auth.ErrPermissionNotGranted, codes.FailedPrecondition, "etcdserver: permission is not granted to the role"},
		{auth.ErrAuthNotEnabled, codes.FailedPrecondition, "etcdserver: authentication is not enabled"},
		{auth.ErrInvalidAuthToken, codes.Unauthenticated, "etcdserver: invalid auth token"},
		{auth.ErrInvalidAuthMgmt, codes.InvalidArgument, "etcdserver: invalid auth management"},
		{auth.ErrAuthOldRevision, codes.InvalidArgument, "etcdserver: revision of auth store is old"},
	}
	if got, want := len(grpcErrorTable()), len(tests); got != want {
		t.Errorf("errors.go maps %d errors, this test lists %d (etcd 3.7.3 maps %d besides context errors)", got, want, want)
	}
	for _, tt := range tests {
		t.Run(tt.in.Error(), func(t *testing.T) {
			for _, in := range []error{tt.in, fmt.Errorf("kvstore: apply: %w", tt.in)} {
				got := togRPCError(in)
				// status.Convert is what the gRPC server does with a
				// handler's error before putting it on the wire.
				st := status.Convert(got)
				if st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
					t.Fatalf("togRPCError(%v) = (%v, %q), want (%v, %q)", in, st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
				}
				// clientv3 turns wire errors back into rpctypes values by
				// message; the round trip must land where etcd's does.
				want := rpctypes.Error(status.Error(tt.wantCode, tt.wantMsg))
				if ce := rpctypes.Error(st.Err()); ce.Error() != want.Error() {
					t.Fatalf("client-side error %q, want %q", ce.Error(), want.Error())
				}
			}
		})
	}
}

func TestTogRPCErrorPassThrough(t *testing.T) {
	if togRPCError(nil) != nil {
		t.Fatal("nil error mapped to non-nil")
	}
	// Context errors are left to gRPC, which maps them to Canceled /
	// DeadlineExceeded itself (as etcd relies on).
	for _, err := range []error{context.Canceled, context.DeadlineExceeded, fmt.Errorf("wait: %w", context.Canceled)} {
		if got := togRPCError(err); got != err {
			t.Errorf("togRPCError(%v) = %v, want unchanged", err, got)
		}
	}
	// A status error (say an rpctypes error kvstore returned) is not
	// buried in codes.Unknown.
	if got := togRPCError(rpctypes.ErrGRPCNoLeader); got != rpctypes.ErrGRPCNoLeader {
		t.Errorf("status error changed: %v", got)
	}
	// Anything else: codes.Unknown with the error text, like etcd.
	got := togRPCError(errors.New("disk on fire"))
	if st, _ := status.FromError(got); st.Code() != codes.Unknown || st.Message() != "disk on fire" {
		t.Errorf("unknown error mapped to %v", got)
	}
	// The exact value wins over a wrapped one further up the chain.
	both := fmt.Errorf("%w (%w)", etcderr.ErrTimeout, etcderr.ErrNoLeader)
	if got := togRPCError(both); !errors.Is(got, rpctypes.ErrGRPCNoLeader) && got != rpctypes.ErrGRPCNoLeader {
		// membership errors come first in the table, then etcdserver
		// errors in etcd's order: ErrNoLeader precedes ErrTimeout.
		t.Errorf("multi-wrapped error mapped to %v", got)
	}
}
