package grpcapi

import (
	"context"
	"errors"

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

// errorMapping pairs an internal error with the wire error etcd sends for it.
// It is the table of etcd v3.7.3 v3rpc/util.go (toGRPCErrorMap), in the same
// order. A slice rather than a map so that wrapped errors (%w) can be matched
// with errors.Is in a deterministic order.
type errorMapping struct {
	internal error
	grpc     error
}

// grpcErrorTable returns the mapping. It is a function, not a package
// variable, so the package has no mutable state; the table is small and
// togRPCError only walks it on the error path.
func grpcErrorTable() []errorMapping {
	return []errorMapping{
		{membership.ErrIDRemoved, rpctypes.ErrGRPCMemberNotFound},
		{membership.ErrIDNotFound, rpctypes.ErrGRPCMemberNotFound},
		{membership.ErrIDExists, rpctypes.ErrGRPCMemberExist},
		{membership.ErrPeerURLexists, rpctypes.ErrGRPCPeerURLExist},
		{membership.ErrMemberNotLearner, rpctypes.ErrGRPCMemberNotLearner},
		{membership.ErrTooManyLearners, rpctypes.ErrGRPCTooManyLearners},
		{etcderr.ErrNotEnoughStartedMembers, rpctypes.ErrMemberNotEnoughStarted},
		{etcderr.ErrLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady},

		{mvcc.ErrCompacted, rpctypes.ErrGRPCCompacted},
		{mvcc.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
		{etcderr.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
		{etcderr.ErrNoSpace, rpctypes.ErrGRPCNoSpace},
		{etcderr.ErrTooManyRequests, rpctypes.ErrTooManyRequests},

		{etcderr.ErrNoLeader, rpctypes.ErrGRPCNoLeader},
		{etcderr.ErrNotLeader, rpctypes.ErrGRPCNotLeader},
		{etcderr.ErrLeaderChanged, rpctypes.ErrGRPCLeaderChanged},
		{etcderr.ErrCanceled, rpctypes.ErrGRPCCanceled},
		{etcderr.ErrStopped, rpctypes.ErrGRPCStopped},
		{etcderr.ErrTimeout, rpctypes.ErrGRPCTimeout},
		{etcderr.ErrTimeoutDueToLeaderFail, rpctypes.ErrGRPCTimeoutDueToLeaderFail},
		{etcderr.ErrTimeoutDueToConnectionLost, rpctypes.ErrGRPCTimeoutDueToConnectionLost},
		{etcderr.ErrTimeoutWaitAppliedIndex, rpctypes.ErrGRPCTimeoutWaitAppliedIndex},
		{etcderr.ErrUnhealthy, rpctypes.ErrGRPCUnhealthy},
		{etcderr.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
		{etcderr.ErrCorrupt, rpctypes.ErrGRPCCorrupt},
		{etcderr.ErrBadLeaderTransferee, rpctypes.ErrGRPCBadLeaderTransferee},

		{etcderr.ErrClusterVersionUnavailable, rpctypes.ErrGRPCClusterVersionUnavailable},
		{etcderr.ErrWrongDowngradeVersionFormat, rpctypes.ErrGRPCWrongDowngradeVersionFormat},
		{serverversion.ErrInvalidDowngradeTargetVersion, rpctypes.ErrGRPCInvalidDowngradeTargetVersion},
		{serverversion.ErrDowngradeInProcess, rpctypes.ErrGRPCDowngradeInProcess},
		{serverversion.ErrNoInflightDowngrade, rpctypes.ErrGRPCNoInflightDowngrade},

		{lease.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
		{lease.ErrLeaseExists, rpctypes.ErrGRPCLeaseExist},
		{lease.ErrLeaseTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},

		{auth.ErrRootUserNotExist, rpctypes.ErrGRPCRootUserNotExist},
		{auth.ErrRootRoleNotExist, rpctypes.ErrGRPCRootRoleNotExist},
		{auth.ErrUserAlreadyExist, rpctypes.ErrGRPCUserAlreadyExist},
		{auth.ErrUserEmpty, rpctypes.ErrGRPCUserEmpty},
		{auth.ErrUserNotFound, rpctypes.ErrGRPCUserNotFound},
		{auth.ErrRoleAlreadyExist, rpctypes.ErrGRPCRoleAlreadyExist},
		{auth.ErrRoleNotFound, rpctypes.ErrGRPCRoleNotFound},
		{auth.ErrRoleEmpty, rpctypes.ErrGRPCRoleEmpty},
		{auth.ErrAuthFailed, rpctypes.ErrGRPCAuthFailed},
		{auth.ErrPermissionNotGiven, rpctypes.ErrGRPCPermissionNotGiven},
		{auth.ErrPermissionDenied, rpctypes.ErrGRPCPermissionDenied},
		{auth.ErrRoleNotGranted, rpctypes.ErrGRPCRoleNotGranted},
		{auth.ErrPermissionNotGranted, rpctypes.ErrGRPCPermissionNotGranted},
		{auth.ErrAuthNotEnabled, rpctypes.ErrGRPCAuthNotEnabled},
		{auth.ErrInvalidAuthToken, rpctypes.ErrGRPCInvalidAuthToken},
		{auth.ErrInvalidAuthMgmt, rpctypes.ErrGRPCInvalidAuthMgmt},
		{auth.ErrAuthOldRevision, rpctypes.ErrGRPCAuthOldRevision},
	}
}

// togRPCError converts an error returned by kvstore (etcd's internal error
// values, possibly wrapped) into the gRPC status error etcd sends for it.
//
// Context errors are returned unchanged, as etcd does: the gRPC server turns
// them into codes.Canceled / codes.DeadlineExceeded itself. Errors that
// already carry a gRPC status (e.g. an rpctypes error returned by kvstore)
// pass through unchanged rather than being buried in codes.Unknown. Anything
// else becomes codes.Unknown with the error's text, like etcd.
func togRPCError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	table := grpcErrorTable()
	// Exact identity first: that is etcd's own lookup and it must win over
	// errors.Is matches further up a wrap chain.
	for _, m := range table {
		if err == m.internal { //nolint:errorlint // identity match is intended
			return m.grpc
		}
	}
	for _, m := range table {
		if errors.Is(err, m.internal) {
			return m.grpc
		}
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}
