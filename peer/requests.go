package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
)

// Defaults of EndpointConfig.
const (
	DefaultMaxConcurrent  = 64
	DefaultTimeout        = 5 * time.Second
	DefaultMaxHandlerTime = 30 * time.Second
)

// Typed errors of Call.
var (
	ErrTimeout   = errors.New("peer: no answer from peer in time")
	ErrBusy      = errors.New("peer: peer is busy")
	ErrNoHandler = errors.New("peer: peer does not serve this method")
	ErrClosed    = errors.New("peer: endpoint closed")
	errMalformed = errors.New("peer: malformed datagram")
)

// CodedError is an error that crosses the wire as its code: a handler
// that returns one (or wraps one) lets the caller recognise it without
// comparing text. The codes are the handlers' business (kvstore numbers
// etcd's errors); 0 means no code.
type CodedError interface {
	error
	PeerErrorCode() uint16
}

// RemoteError is the error a peer's handler returned: its code (0 when it
// had none) and its text, for logs.
type RemoteError struct {
	Peer mesh.PeerName
	Code uint16
	Msg  string
}

func (e *RemoteError) Error() string { return e.Msg }

// PeerErrorCode is the handler error's code.
func (e *RemoteError) PeerErrorCode() uint16 { return e.Code }

// Is matches a CodedError target with the same non-zero code, so callers
// can use errors.Is(err, someCodedSentinel) across the wire.
func (e *RemoteError) Is(target error) bool {
	c, ok := target.(CodedError)
	return ok && e.Code != 0 && c.PeerErrorCode() == e.Code
}

// errorCode is the code of err (0 without one).
func errorCode(err error) uint16 {
	var c CodedError
	if errors.As(err, &c) {
		return c.PeerErrorCode()
	}
	return 0
}

// Handler serves one method. ctx ends with the caller's timeout (capped) or
// when the Endpoint closes. The returned payload must fit one datagram.
type Handler func(ctx context.Context, src mesh.PeerName, req []byte) ([]byte, error)

// sender is the datagram channel an Endpoint sends on;
// *mesh.DatagramChannel satisfies it.
type sender interface {
	Send(dst mesh.PeerName, payload []byte) error
	MaxPayload() int
}

// EndpointConfig configures an Endpoint.
type EndpointConfig struct {
	Logger         *zap.Logger // nil: zap.NewNop()
	Router         *mesh.Router
	Channel        mesh.ChannelID // default RequestChannel
	MaxConcurrent  int            // handlers running at once; default 64
	DefaultTimeout time.Duration  // for calls whose ctx has no deadline; default 5 s
	MaxHandlerTime time.Duration  // cap on a handler's ctx; default 30 s
	// Open overrides how the datagram channel is opened (tests); nil opens
	// cfg.Channel on cfg.Router at raft priority.
	Open func(h mesh.DatagramHandler) (sender, error)
}

// Endpoint both serves (Handle) and calls (Call) methods. Close stops it.
type Endpoint struct {
	lg  *zap.Logger
	cfg EndpointConfig
	ch  sender

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{}
	nextID atomic.Uint64

	mu       sync.Mutex
	closed   bool
	handlers map[uint8]Handler
	pending  map[uint64]chan reply
}

type reply struct {
	payload []byte
	err     error
}

const (
	kindRequest  = 1
	kindResponse = 2

	statusOK        = 0
	statusError     = 1
	statusBusy      = 2
	statusNoHandler = 3

	// request:  kind u8 | method u8 | id u64 | timeout ms u32 | payload
	// response: kind u8 | status u8 | id u64 | payload
	//           (status error: code u16 | error text)
	requestHeaderLen  = 14
	responseHeaderLen = 10
)

// NewEndpoint opens the endpoint's datagram channel.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Channel == 0 {
		cfg.Channel = RequestChannel
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = DefaultTimeout
	}
	if cfg.MaxHandlerTime <= 0 {
		cfg.MaxHandlerTime = DefaultMaxHandlerTime
	}
	if cfg.Open == nil {
		if cfg.Router == nil {
			return nil, errors.New("peer: EndpointConfig.Router is required")
		}
		r, id := cfg.Router, cfg.Channel
		cfg.Open = func(h mesh.DatagramHandler) (sender, error) {
			return r.NewDatagramChannel(id, "peer-requests", mesh.PriorityInteractive, h)
		}
	}
	e := &Endpoint{
		lg:       cfg.Logger.Named("peer-requests"),
		cfg:      cfg,
		sem:      make(chan struct{}, cfg.MaxConcurrent),
		handlers: map[uint8]Handler{},
		pending:  map[uint64]chan reply{},
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	// Ids start at the boot time so a restarted caller's ids do not match
	// answers meant for its previous incarnation.
	e.nextID.Store(uint64(time.Now().UnixNano()))
	ch, err := cfg.Open(e.onDatagram)
	if err != nil {
		e.cancel()
		return nil, fmt.Errorf("peer: open request channel %d: %w", cfg.Channel, err)
	}
	e.ch = ch
	return e, nil
}

// Handle registers (or, with nil, removes) the handler of method.
func (e *Endpoint) Handle(method uint8, h Handler) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h == nil {
		delete(e.handlers, method)
		return
	}
	e.handlers[method] = h
}

// Close fails pending calls with ErrClosed, cancels running handlers and
// waits for them. The mesh channel stays registered (the router cannot
// unregister one); later datagrams are ignored. Idempotent.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	for id, c := range e.pending {
		c <- reply{err: ErrClosed}
		delete(e.pending, id)
	}
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
	return nil
}

// Call sends req to dst's handler of method and waits for the answer until
// ctx ends (or DefaultTimeout when ctx has no deadline).
func (e *Endpoint) Call(ctx context.Context, dst mesh.PeerName, method uint8, req []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.DefaultTimeout)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	remaining := time.Until(dl)
	if remaining <= 0 {
		return nil, ErrTimeout
	}
	if requestHeaderLen+len(req) > e.ch.MaxPayload() {
		return nil, fmt.Errorf("peer: request of %d bytes exceeds the datagram limit %d: %w", len(req), e.ch.MaxPayload(), mesh.ErrTooLarge)
	}
	id := e.nextID.Add(1)
	c := make(chan reply, 1)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	e.pending[id] = c
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.pending, id)
		e.mu.Unlock()
	}()

	b := make([]byte, requestHeaderLen+len(req))
	b[0], b[1] = kindRequest, method
	binary.BigEndian.PutUint64(b[2:10], id)
	binary.BigEndian.PutUint32(b[10:14], uint32(min(remaining.Milliseconds()+1, int64(^uint32(0)))))
	copy(b[requestHeaderLen:], req)
	if err := e.ch.Send(dst, b); err != nil {
		return nil, fmt.Errorf("peer: send to %s: %w", dst, err)
	}
	select {
	case r := <-c:
		return r.payload, r.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w (%s, method %d)", ErrTimeout, dst, method)
		}
		return nil, ctx.Err()
	}
}

// onDatagram runs on the mesh channel's delivery goroutine: it never
// blocks, so a slow handler cannot stall other traffic.
func (e *Endpoint) onDatagram(src mesh.PeerName, payload []byte) {
	if len(payload) < responseHeaderLen {
		e.lg.Debug("dropped short datagram", zap.String("from", string(src)))
		return
	}
	switch payload[0] {
	case kindResponse:
		e.onResponse(src, payload)
	case kindRequest:
		e.onRequest(src, payload)
	default:
		e.lg.Debug("dropped datagram of unknown kind", zap.String("from", string(src)), zap.Uint8("kind", payload[0]))
	}
}

func (e *Endpoint) onResponse(src mesh.PeerName, payload []byte) {
	id := binary.BigEndian.Uint64(payload[2:10])
	body := payload[responseHeaderLen:]
	var r reply
	switch payload[1] {
	case statusOK:
		r.payload = append([]byte(nil), body...)
	case statusError:
		if len(body) < 2 {
			r.err = fmt.Errorf("%w: error answer without a code from %s", errMalformed, src)
			break
		}
		r.err = &RemoteError{Peer: src, Code: binary.BigEndian.Uint16(body), Msg: string(body[2:])}
	case statusBusy:
		r.err = fmt.Errorf("%w (%s)", ErrBusy, src)
	case statusNoHandler:
		r.err = fmt.Errorf("%w (%s)", ErrNoHandler, src)
	default:
		r.err = fmt.Errorf("%w: status %d from %s", errMalformed, payload[1], src)
	}
	e.mu.Lock()
	c, ok := e.pending[id]
	if ok {
		delete(e.pending, id)
	}
	e.mu.Unlock()
	if ok {
		c <- r // buffered 1, and removed from pending: never blocks
	}
}

func (e *Endpoint) onRequest(src mesh.PeerName, payload []byte) {
	if len(payload) < requestHeaderLen {
		return
	}
	method := payload[1]
	id := binary.BigEndian.Uint64(payload[2:10])
	timeout := time.Duration(binary.BigEndian.Uint32(payload[10:14])) * time.Millisecond
	req := append([]byte(nil), payload[requestHeaderLen:]...)
	e.mu.Lock()
	h, ok := e.handlers[method]
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return
	}
	if !ok {
		e.respond(src, id, statusNoHandler, nil)
		return
	}
	select {
	case e.sem <- struct{}{}:
	default:
		e.respond(src, id, statusBusy, nil)
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.sem
		return
	}
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		ctx, cancel := context.WithTimeout(e.ctx, min(timeout, e.cfg.MaxHandlerTime))
		defer cancel()
		resp, err := h(ctx, src, req)
		// Free the slot before answering: a caller that sends its next
		// request as soon as this answer arrives must not find the slot
		// still taken by its own finished request (a spurious ErrBusy).
		<-e.sem
		if err != nil {
			e.respond(src, id, statusError, append(binary.BigEndian.AppendUint16(nil, errorCode(err)), err.Error()...))
			return
		}
		e.respond(src, id, statusOK, resp)
	}()
}

func (e *Endpoint) respond(dst mesh.PeerName, id uint64, status uint8, body []byte) {
	if responseHeaderLen+len(body) > e.ch.MaxPayload() {
		status, body = statusError, append([]byte{0, 0}, "peer: response too large for one datagram"...)
	}
	b := make([]byte, responseHeaderLen+len(body))
	b[0], b[1] = kindResponse, status
	binary.BigEndian.PutUint64(b[2:10], id)
	copy(b[responseHeaderLen:], body)
	if err := e.ch.Send(dst, b); err != nil {
		// The caller times out and retries.
		e.lg.Debug("could not answer peer request", zap.String("to", string(dst)), zap.Error(err))
	}
}
