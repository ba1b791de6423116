package meshconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/meshetcd/meshetcd/mesh"
)

// SpoolFunc takes a completely received, verified body that SpoolToFile
// wrote to path. It may rename the file to keep it; otherwise the file is
// removed after it returns. Its error rejects the transfer.
type SpoolFunc func(ctx context.Context, src mesh.PeerName, meta []byte, path string) error

// SpoolToFile returns a Handler that writes each body to a new temporary
// file in dir ("" means os.TempDir()), syncs it, and then calls fn with its
// path. If the transfer dies first the file is removed and fn is not
// called, so fn only ever sees complete bodies.
func SpoolToFile(dir string, fn SpoolFunc) Handler {
	return func(ctx context.Context, in *Incoming) (err error) {
		f, err := os.CreateTemp(dir, "meshconn-bulk-*.tmp")
		if err != nil {
			return fmt.Errorf("meshconn: spool: %w", err)
		}
		path := f.Name()
		defer func() {
			// Whatever fn did not keep goes; a missing file is fine.
			if rmErr := os.Remove(path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && err == nil {
				err = fmt.Errorf("meshconn: spool: %w", rmErr)
			}
		}()
		if _, err := io.Copy(f, in.Body); err != nil {
			_ = f.Close() // the copy error is the one worth reporting
			return fmt.Errorf("meshconn: spool to %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return fmt.Errorf("meshconn: spool sync %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("meshconn: spool close %s: %w", path, err)
		}
		return fn(ctx, in.Src, in.Meta, path)
	}
}
