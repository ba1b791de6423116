package meshview

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
)

// Source is what the serving member provides: its own mesh status, its
// name, and the committed membership with the leader.
type Source interface {
	MeshStatus() mesh.Status
	// Membership returns the viewer's member name, the leader's member
	// name ("" when there is none) and the members.
	Membership() (self, leader string, members []MemberInfo)
}

// DefaultPeerTimeout bounds the fetch of another member's mesh status.
const DefaultPeerTimeout = 800 * time.Millisecond

// Config configures Handler. Zero values are fine.
type Config struct {
	// Client fetches other members' /mesh/status for the round-trip times
	// of the links the viewer is not on (default: a plain http.Client;
	// members whose client URLs it cannot reach just contribute none).
	Client *http.Client
	// PeerTimeout bounds each such fetch (default DefaultPeerTimeout).
	PeerTimeout time.Duration
	Logger      *zap.Logger
}

//go:embed page.html
var page []byte

// Handler serves the mesh page and its data.
type Handler struct {
	src Source
	cfg Config
}

// NewHandler returns the handler; Mount puts it on a mux.
func NewHandler(src Source, cfg Config) *Handler {
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = DefaultPeerTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Handler{src: src, cfg: cfg}
}

// Paths where Mount serves the page and its JSON.
const (
	PagePath  = "/mesh"
	GraphPath = "/mesh/graph"
	// StatusPath is where members serve their raw mesh status (mounted by
	// the caller); the graph fetches it from the other members.
	StatusPath = "/mesh/status"
)

// Mount serves the page at PagePath and the graph at GraphPath.
func (h *Handler) Mount(mux *http.ServeMux) {
	mux.HandleFunc(PagePath, h.servePage)
	mux.HandleFunc(GraphPath, h.serveGraph)
}

func allowRead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	return true
}

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	if !allowRead(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// Everything is inline; forbid the rest.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(page)
}

func (h *Handler) serveGraph(w http.ResponseWriter, r *http.Request) {
	if !allowRead(w, r) {
		return
	}
	g := h.Graph(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(g)
}

// Graph builds the graph now, asking the other members for their mesh
// status in parallel (each bounded by PeerTimeout and ctx).
func (h *Handler) Graph(ctx context.Context) Graph {
	self, leader, members := h.src.Membership()
	in := Input{Self: h.src.MeshStatus(), SelfName: self, LeaderName: leader, Members: members, Now: time.Now().UTC()}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, m := range members {
		if m.Name == self || len(m.ClientURLs) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := h.fetchStatus(ctx, m.ClientURLs[0])
			if err != nil {
				h.cfg.Logger.Debug("mesh page: no mesh status from member", zap.String("member", m.Name), zap.Error(err))
				return
			}
			mu.Lock()
			in.Others = append(in.Others, st)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return Build(in)
}

func (h *Handler) fetchStatus(ctx context.Context, clientURL string) (mesh.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PeerTimeout)
	defer cancel()
	u := strings.TrimSuffix(clientURL, "/") + StatusPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return mesh.Status{}, fmt.Errorf("meshview: %w", err)
	}
	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		return mesh.Status{}, fmt.Errorf("meshview: fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return mesh.Status{}, fmt.Errorf("meshview: fetching %s: %s", u, resp.Status)
	}
	var st mesh.Status
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 4<<20)).Decode(&st); err != nil {
		return mesh.Status{}, fmt.Errorf("meshview: decoding %s: %w", u, err)
	}
	return st, nil
}
