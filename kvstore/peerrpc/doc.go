// Package peerrpc is a small request/response facility between members over
// one mesh datagram channel: what etcd does with HTTP requests on the peer
// port outside Raft (lease keepalive and time-to-live forwarded to the
// leader, learner promotion forwarded to the leader, the member list for a
// member joining with --initial-cluster-state existing, and our own join).
//
// A request is one datagram: kind, method, a 64-bit id unique per Endpoint,
// the caller's remaining timeout in milliseconds, and the payload. The
// answer is one datagram with the same id, carrying either the result or an
// error text. There are no retries here: a lost datagram is a timeout, and
// callers that can retry (they all can: every method is idempotent or
// checked on apply) do so themselves.
//
// Bounds: at most Config.MaxConcurrent handlers run at once (more requests
// get ErrBusy at once), handlers run with the caller's timeout capped at
// Config.MaxHandlerTime, payloads are limited by the mesh datagram size, and
// calls without a deadline get Config.DefaultTimeout.
//
// Errors: ErrTimeout (no answer in time), ErrBusy, ErrNoHandler (the other
// side does not serve the method), ErrClosed, a mesh send error (wrapped,
// e.g. mesh.ErrNoRoute), or *RemoteError with the handler's error text;
// callers map the text back to their own error values (RemoteError.Is).
package peerrpc
