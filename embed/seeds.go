package embed

import (
	"context"
	"net"
	"slices"
	"time"

	"go.uber.org/zap"
)

// HostResolver resolves the host names in --peers (Config.Peers);
// *net.Resolver satisfies it. Tests inject their own.
type HostResolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// A --peers entry whose host is a DNS name stands for every address the
// name resolves to, each one a mesh seed: a Kubernetes headless Service
// (or any round-robin name) lists every member that way. Names are looked
// up again every seedRefreshInterval while the member runs, so members
// whose addresses appear later (pods starting) are dialled too.
const (
	seedRefreshInterval = 5 * time.Second
	seedLookupTimeout   = 5 * time.Second
)

// seedExpander turns --peers entries into mesh seed addresses.
type seedExpander struct {
	lg       *zap.Logger
	resolver HostResolver
	peers    []string
	interval time.Duration // between refreshes
}

func newSeedExpander(lg *zap.Logger, r HostResolver, peers []string) *seedExpander {
	if r == nil {
		r = net.DefaultResolver
	}
	return &seedExpander{lg: lg, resolver: r, peers: peers, interval: seedRefreshInterval}
}

// named reports whether any entry needs a lookup.
func (e *seedExpander) named() bool {
	for _, p := range e.peers {
		if host, _, err := net.SplitHostPort(p); err == nil && net.ParseIP(host) == nil {
			return true
		}
	}
	return false
}

// seeds resolves every entry: an IP literal stays as given; a name becomes
// ip:port for each address it resolves to, or stays as given (the mesh
// dials it, and a later refresh may resolve it) when the lookup fails.
func (e *seedExpander) seeds(ctx context.Context) []string {
	var out []string
	for _, p := range e.peers {
		host, port, err := net.SplitHostPort(p)
		if err != nil || net.ParseIP(host) != nil {
			out = append(out, p)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, seedLookupTimeout)
		addrs, err := e.resolver.LookupHost(lctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			e.lg.Warn("cannot resolve --peers host name yet; dialling it as given and retrying the lookup",
				zap.String("peer", p), zap.Error(err))
			out = append(out, p)
			continue
		}
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a, port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// refresh looks the names up every e.interval and hands addresses
// not seen before to add, until ctx ends.
func (e *seedExpander) refresh(ctx context.Context, known []string, add func(...string)) {
	seen := map[string]bool{}
	for _, s := range known {
		seen[s] = true
	}
	t := time.NewTicker(e.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var fresh []string
		for _, s := range e.seeds(ctx) {
			if !seen[s] {
				seen[s] = true
				fresh = append(fresh, s)
			}
		}
		if len(fresh) > 0 {
			e.lg.Info("--peers host names resolve to new addresses; dialling them", zap.Strings("seeds", fresh))
			add(fresh...)
		}
	}
}
