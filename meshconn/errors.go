package meshconn

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/meshetcd/meshetcd/mesh"
)

// Errors returned by this package. Send-side errors from the mesh are
// wrapped, never replaced, so errors.Is(err, mesh.ErrNoRoute),
// mesh.ErrQueueFull, mesh.ErrTooLarge and mesh.ErrClosed work on them.
var (
	// ErrBadAddr: the address is not a valid MeshAddr.
	ErrBadAddr  = errors.New("meshconn: invalid mesh address")
	errNoScheme = fmt.Errorf("%w: missing mesh:// prefix", ErrBadAddr)

	// ErrShortBuffer: ReadFrom's buffer was smaller than the datagram; the
	// datagram was truncated to fit and the rest is lost. Size read buffers
	// with PacketConn.MaxDatagramSize to avoid it.
	ErrShortBuffer = fmt.Errorf("meshconn: datagram truncated to fit the read buffer: %w", io.ErrShortBuffer)

	// ErrClosed: the PacketConn or Bulk endpoint was closed. It matches
	// both net.ErrClosed and mesh.ErrClosed.
	ErrClosed = fmt.Errorf("meshconn: use of closed endpoint: %w (%w)", net.ErrClosed, mesh.ErrClosed)

	// ErrIdleTimeout: a bulk transfer heard nothing from its peer for the
	// configured idle timeout. It matches os.ErrDeadlineExceeded, so it is
	// a net.Error-style timeout.
	ErrIdleTimeout = fmt.Errorf("meshconn: bulk transfer idle timeout: %w", os.ErrDeadlineExceeded)

	// ErrRejected: the receiver refused the transfer (its handler returned
	// an error, it was busy, or the meta was too large). The receiver's
	// reason is in the error text.
	ErrRejected = errors.New("meshconn: bulk transfer rejected by receiver")

	// ErrAborted: the other side gave up on the transfer (the sender
	// cancelled or vanished, or the receiver lost the transfer's state,
	// e.g. because it restarted).
	ErrAborted = errors.New("meshconn: bulk transfer aborted by peer")

	// ErrMetaTooLarge: the meta of a bulk transfer exceeds the limit.
	ErrMetaTooLarge = errors.New("meshconn: bulk transfer meta too large")
)
