package embed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/meshetcd/meshetcd/grpcapi"
	"github.com/meshetcd/meshetcd/kvstore"
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/meshview"
)

// Member is one running meshetcd member. It owns its listeners, its gRPC
// and HTTP servers and its kvstore; Close stops them all.
type Member struct {
	cfg        Config
	lg         *zap.Logger
	srv        *kvstore.Server
	router     *mesh.Router
	disc       *discovery
	gs         *grpc.Server
	clientTLS  *transport.TLSInfo // for https:// client URLs; nil without
	listenURLs []url.URL          // the bound client listener addresses
	clientURLs []url.URL          // advertised client URLs, port 0 resolved
	// metricsURLs are the bound --listen-metrics-urls, port 0 resolved.
	metricsURLs []url.URL

	gateways []*grpcapi.Gateway // closed after the servers stop

	cancelServe context.CancelFunc
	stopSeeds   func()         // stops re-resolving --peers host names
	wg          sync.WaitGroup // serving and watching goroutines
	errc        chan error     // first fatal error; buffered
	closing     chan struct{}  // closed when Close starts
	closeOnce   sync.Once
	closeErr    error
}

// StartMember validates cfg, opens the client listeners, starts the kvstore
// (which recovers or bootstraps the data directory), serves the etcd gRPC
// API and HTTP endpoints on every listener, and returns once the member is
// ready to serve linearizable requests. Like etcd, it serves no client
// request before that: a restarted member answers nothing, serializable
// reads included, until it has re-applied what its WAL had committed. ctx bounds the start only; the
// member then runs until Close or a fatal error (see Err).
//
// A second member on a data directory that is in use fails at once.
func StartMember(ctx context.Context, cfg Config) (m *Member, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		if lg, err = NewLogger(cfg.LogLevel, cfg.LogFormat, cfg.LogOutputs); err != nil {
			return nil, err
		}
	}
	dataDir := cfg.EffectiveDataDir()
	if cfg.DataDir == "" {
		lg.Warn("'data-dir' was empty; using default", zap.String("data-dir", dataDir))
	}
	hasWAL := wal.Exist(filepath.Join(dataDir, "member", "wal"))
	if !hasWAL && cfg.InitialClusterState == ClusterStateExisting {
		for _, u := range cfg.AdvertisePeerURLs {
			if u.Port() == "0" {
				return nil, fmt.Errorf("--initial-advertise-peer-urls %q: the port must be fixed to join an existing cluster (it is part of the member's identity in the mesh and in the member id)", u.String())
			}
		}
	}
	if err := resolvePeerPortZero(&cfg); err != nil {
		return nil, err
	}
	ic, err := cfg.InitialClusterMap()
	if err != nil {
		return nil, err
	}
	if cfg.Name == DefaultName {
		lg.Warn("it isn't recommended to use default name, please set a value for --name. " +
			"Note that etcd might run into issue when multiple members have the same default name")
	}
	if hasWAL && (cfg.DiscoverySize > 0 || cfg.Join || cfg.InitialClusterState == ClusterStateExisting) {
		lg.Info("the data directory holds a member; ignoring bootstrap flags (--discovery-size, --join, --initial-cluster*)", zap.String("data-dir", dataDir))
	}

	tlsInfo, _, err := cfg.clientTLS(lg, dataDir)
	if err != nil {
		return nil, err
	}

	listeners := make([]net.Listener, 0, len(cfg.ListenClientURLs))
	defer func() {
		if err != nil {
			for _, l := range listeners {
				_ = l.Close()
			}
		}
	}()
	var bound []url.URL
	for _, u := range cfg.ListenClientURLs {
		l, lerr := net.Listen("tcp", u.Host)
		if lerr != nil {
			return nil, fmt.Errorf("cannot listen for client traffic on %s: %w", u.String(), lerr)
		}
		listeners = append(listeners, l)
		b := u
		b.Host = l.Addr().String()
		if h, _, _ := net.SplitHostPort(u.Host); h == "localhost" {
			b.Host = net.JoinHostPort("localhost", strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
		}
		bound = append(bound, b)
	}
	advertised := resolveZeroPorts(cfg.AdvertiseClientURLs, cfg.ListenClientURLs, bound)
	// An https metrics URL serves with the client certificate, as in etcd:
	// the one StartMember prepared (auto TLS, cipher suites, versions) when
	// the client URLs use TLS too.
	metricsTLS := cfg.ClientTLSInfo
	if tlsInfo != nil {
		metricsTLS = *tlsInfo
	} else if err = cfg.applyTLSOptions(&metricsTLS); err != nil {
		return nil, err
	}
	metricsLs, err := openMetricsListeners(cfg.ListenMetricsURLs, metricsTLS, lg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			for _, ml := range metricsLs {
				_ = ml.l.Close()
			}
		}
	}()

	kc := kvstore.Config{
		Logger:                     lg,
		Name:                       cfg.Name,
		DataDir:                    dataDir,
		InitialCluster:             ic,
		InitialClusterToken:        cfg.InitialClusterToken,
		InitialClusterState:        cfg.InitialClusterState,
		PeerURLs:                   types.URLs(cfg.AdvertisePeerURLs),
		ClientURLs:                 types.URLs(advertised),
		SnapshotCount:              cfg.SnapshotCount,
		HeartbeatInterval:          cfg.HeartbeatInterval,
		ElectionTimeout:            cfg.ElectionTimeout,
		MaxRequestBytes:            cfg.MaxRequestBytes,
		MaxTxnOps:                  cfg.MaxTxnOps,
		QuotaBackendBytes:          cfg.QuotaBackendBytes,
		UnsafeNoFsync:              cfg.UnsafeNoFsync,
		AutoCompactionMode:         cfg.AutoCompactionMode,
		AutoCompactionRetention:    cfg.AutoCompactionRetention,
		Join:                       cfg.Join,
		DisableStrictReconfigCheck: !cfg.StrictReconfigCheck,
		AuthToken:                  cfg.AuthToken,
		TokenTTL:                   cfg.AuthTokenTTL,
		BcryptCost:                 int(min(cfg.BcryptCost, math.MaxInt32)),
		ClientCertAuthEnabled:      cfg.ClientTLSInfo.ClientCertAuth,
	}

	// The mesh router comes first: discovery, join and "existing" talk to
	// other members over it before the state machine exists.
	icStrings := make(map[string][]string, len(ic))
	for n, us := range ic {
		icStrings[n] = us.StringSlice()
	}
	// --peers host names stand for every address they resolve to.
	seeds := newSeedExpander(lg.Named("seeds"), cfg.SeedResolver, cfg.Peers)
	seedCfg := cfg
	seedCfg.Peers = seeds.seeds(ctx)
	mc, err := routerConfig(&seedCfg, lg, icStrings, meshDatagramSize(kc))
	if err != nil {
		return nil, err
	}
	router, err := mesh.New(mc)
	if err != nil {
		return nil, fmt.Errorf("cannot create the mesh router: %w", err)
	}
	disc := newDiscovery(lg.Named("discovery"), announcement{
		Peer:       mc.Name,
		Name:       cfg.Name,
		PeerURLs:   urlStrings(cfg.AdvertisePeerURLs),
		ClientURLs: urlStrings(advertised),
		Token:      cfg.InitialClusterToken,
	}, time.Now())
	if err := disc.register(router); err != nil {
		return nil, err
	}
	rctx, rcancel := context.WithTimeout(ctx, routerStartTimeout)
	err = router.Start(rctx)
	rcancel()
	if err != nil {
		_ = router.Stop()
		return nil, fmt.Errorf("cannot start the mesh on %s: %w", cfg.ListenPeerURLs[0].String(), err)
	}
	lg.Info("mesh router started", zap.String("peer-name", string(mc.Name)), zap.String("listen", router.ListenAddr()),
		zap.Strings("seeds", mc.Seeds), zap.String("cluster-label", mc.ClusterLabel), zap.Bool("encrypted", !mc.InsecurePlaintext))
	// Re-resolving --peers names lives as long as the router.
	seedCtx, stopSeeds := context.WithCancel(context.Background())
	seedsDone := make(chan struct{})
	if seeds.named() {
		go func() {
			defer close(seedsDone)
			seeds.refresh(seedCtx, seedCfg.Peers, router.AddSeeds)
		}()
	} else {
		close(seedsDone)
	}
	stopSeedRefresh := func() { stopSeeds(); <-seedsDone }
	routerOwned := true
	defer func() {
		if routerOwned {
			stopSeedRefresh()
			_ = router.Stop()
		}
	}()

	if !hasWAL && cfg.DiscoverySize > 0 {
		dtimeout := cfg.DiscoveryTimeout
		if dtimeout <= 0 {
			dtimeout = DefaultJoinTimeout
		}
		dctx, dcancel := context.WithTimeout(ctx, dtimeout)
		dec, view, derr := disc.run(dctx, cfg.DiscoverySize)
		dcancel()
		if derr != nil {
			if dctx.Err() != nil && ctx.Err() == nil {
				return nil, fmt.Errorf("member %q: %w within %v: %s", cfg.Name, ErrDiscoveryTimeout, dtimeout, disc.shortfall(cfg.DiscoverySize, router.Status()))
			}
			return nil, derr
		}
		switch dec.kind {
		case decideBootstrap:
			init := types.URLsMap{}
			for _, p := range dec.set {
				a := view[p]
				us, uerr := types.NewURLs(a.PeerURLs)
				if uerr != nil {
					return nil, fmt.Errorf("discovery: member %s announced bad peer URLs: %w", p, uerr)
				}
				init[a.Name] = us
			}
			disc.update(func(a *announcement) { a.Initial = dec.set })
			lg.Info("mesh discovery agreed on the initial cluster", zap.String("initial-cluster", init.String()))
			kc.InitialCluster, kc.InitialClusterState = init, ClusterStateNew
		case decideJoin:
			lg.Info("mesh discovery found a running cluster; joining it", zap.String("reason", dec.reason))
			kc.Join = true
		}
	}
	kc.Peers = meshPeers(lg, router, kc.PeerURLs.StringSlice())
	// The member's own series (etcd_server_*, meshetcd_mesh_*) live in a
	// registry of their own, served on /metrics beside the process-wide
	// default registry: several members of one process must not collide.
	metrics := prometheus.NewRegistry()
	kc.MetricsRegisterer = metrics
	if err := metrics.Register(newMeshCollector(router.Status)); err != nil {
		return nil, fmt.Errorf("registering the mesh metrics: %w", err)
	}

	// A joining member asks the cluster for its membership over the mesh;
	// bound that (JoinTimeout) so a refused or isolated joiner fails with
	// the reason instead of retrying forever.
	kctx := ctx
	joinTimeout := cfg.JoinTimeout
	if joinTimeout <= 0 {
		joinTimeout = DefaultJoinTimeout
	}
	joining := !hasWAL && (kc.Join || kc.InitialClusterState == ClusterStateExisting)
	if joining {
		var jcancel context.CancelFunc
		kctx, jcancel = context.WithTimeout(ctx, joinTimeout)
		defer jcancel()
	}
	srv, err := kvstore.New(kctx, kc)
	if err != nil {
		if joining && kctx.Err() != nil && ctx.Err() == nil {
			reason := joinProblem(router.Status())
			if reason == "" {
				reason = err.Error()
			} else {
				reason += " (" + err.Error() + ")"
			}
			return nil, fmt.Errorf("member %q: %w within %v: %s", cfg.Name, ErrJoinTimeout, joinTimeout, reason)
		}
		return nil, fmt.Errorf("cannot start member %q on data dir %q: %w", cfg.Name, dataDir, err)
	}
	routerOwned = false // the Member closes it from now on

	gcfg := grpcapi.Config{
		Logger:                      lg,
		MaxRequestBytes:             cfg.MaxRequestBytes,
		MaxTxnOps:                   cfg.MaxTxnOps,
		MaxConcurrentStreams:        cfg.MaxConcurrentStreams,
		GRPCKeepAliveMinTime:        cfg.GRPCKeepAliveMinTime,
		GRPCKeepAliveInterval:       cfg.GRPCKeepAliveInterval,
		GRPCKeepAliveTimeout:        cfg.GRPCKeepAliveTimeout,
		WarningUnaryRequestDuration: cfg.WarningUnaryRequestDuration,
		EnablePprof:                 cfg.EnablePprof,
		WatchProgressNotifyInterval: cfg.WatchProgressNotifyInterval,
		Version:                     Version,
		ElectionTimeout:             cfg.ElectionTimeout,
		MemberMetrics:               metrics,
		ClientCertAuth:              cfg.ClientTLSInfo.ClientCertAuth,
		ExtraHTTP: func(mux *http.ServeMux) {
			mux.Handle("/mesh/status", router.StatusHandler())
			meshview.NewHandler(meshViewSource{name: cfg.Name, srv: srv, router: router}, meshview.Config{Logger: lg}).Mount(mux)
		},
	}
	serveCtx, cancelServe := context.WithCancel(context.Background())
	m = &Member{
		cfg:         cfg,
		lg:          lg,
		srv:         srv,
		router:      router,
		disc:        disc,
		gs:          grpcapi.NewGRPCServer(srv, gcfg),
		clientTLS:   tlsInfo,
		listenURLs:  bound,
		clientURLs:  advertised,
		cancelServe: cancelServe,
		stopSeeds:   stopSeedRefresh,
		errc:        make(chan error, 1),
		closing:     make(chan struct{}),
	}
	if tlsInfo != nil {
		lg.Info("starting with client TLS", zap.String("tls-info", tlsInfo.String()), zap.Strings("cipher-suites", cfg.CipherSuites))
	}
	for i, l := range listeners {
		addr := bound[i].String()
		secure := bound[i].Scheme == "https"
		hcfg := gcfg
		if cfg.EnableGRPCGateway {
			// Like etcd, the JSON gateway is a gRPC client of the port it
			// is served on, so each listener gets its own.
			var gw *grpcapi.Gateway
			var gerr error
			if secure {
				gw, gerr = grpcapi.NewTLSGateway(serveCtx, dialAddr(l.Addr()), tlsInfo, lg)
			} else {
				gw, gerr = grpcapi.NewGateway(serveCtx, dialAddr(l.Addr()), lg)
			}
			if gerr != nil {
				// Listeners not yet handed to a Serve goroutine are ours.
				for _, rest := range listeners[i:] {
					_ = rest.Close()
				}
				_ = m.Close()
				return nil, fmt.Errorf("starting the JSON gateway on %s: %w", addr, gerr)
			}
			m.gateways = append(m.gateways, gw)
			hcfg.Gateway = gw
		}
		h := grpcapi.NewHTTPHandler(srv, hcfg)
		serve := func() error { return grpcapi.Serve(serveCtx, l, m.gs, h) }
		if secure {
			serve = func() error {
				return grpcapi.ServeTLS(serveCtx, l, m.gs, h, tlsInfo, cfg.MaxConcurrentStreams)
			}
			lg.Info("serving client traffic securely", zap.String("traffic", "grpc+http"), zap.String("address", l.Addr().String()))
		} else {
			lg.Info("serving client traffic insecurely; this is strongly discouraged!", zap.String("traffic", "grpc+http"), zap.String("address", l.Addr().String()))
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			// Like etcd's serveCtx.serve, no client request is served before
			// the member is ready: on a restart the backend may lag the WAL
			// until every committed entry is re-applied, and even a
			// serializable read must not see that older state. Connections
			// wait in the listen backlog meanwhile.
			select {
			case <-srv.ReadyNotify():
			case <-serveCtx.Done():
				_ = l.Close()
				return
			}
			if err := serve(); err != nil {
				m.fail(fmt.Errorf("serving client traffic on %s: %w", addr, err))
			}
		}()
	}
	listeners = nil // owned by the Serve goroutines now
	if len(metricsLs) > 0 {
		mh := grpcapi.NewMetricsHandler(srv, gcfg)
		for _, ml := range metricsLs {
			lg.Info("serving metrics", zap.String("address", ml.url.String()))
			m.metricsURLs = append(m.metricsURLs, ml.url)
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				if err := serveMetrics(serveCtx, ml.l, mh); err != nil {
					m.fail(fmt.Errorf("serving metrics on %s: %w", ml.url.String(), err))
				}
			}()
		}
		metricsLs = nil // owned by the serving goroutines now
	}
	m.wg.Add(1)
	go m.watchStop()

	select {
	case <-srv.ReadyNotify():
	case err := <-m.errc:
		_ = m.Close()
		return nil, err
	case <-srv.StopNotify():
		_ = m.Close()
		return nil, fmt.Errorf("member %q stopped before it became ready", cfg.Name)
	case <-ctx.Done():
		_ = m.Close()
		return nil, fmt.Errorf("member %q did not become ready: %w", cfg.Name, ctx.Err())
	}
	// Announce the running cluster, so members discovering later join it.
	disc.update(func(a *announcement) { a.ClusterID = srv.ClusterID().String() })
	for range bound {
		// etcd's exact line, once per client listener; tools wait for it.
		lg.Info("ready to serve client requests")
	}
	return m, nil
}

// resolvePeerPortZero gives a one-member cluster whose peer URLs use port 0
// (tests, throw-away members) a fixed free port: the mesh peer name and the
// member id derive from the advertised peer URL, so it must be known before
// the router starts. Validate allows port 0 only for a member alone.
func resolvePeerPortZero(cfg *Config) error {
	var port string
	fix := func(us []url.URL) []url.URL {
		out := slices.Clone(us)
		for i := range out {
			if out[i].Port() == "0" {
				out[i].Host = net.JoinHostPort(out[i].Hostname(), port)
			}
		}
		return out
	}
	zero := false
	for _, u := range slices.Concat(cfg.AdvertisePeerURLs, cfg.ListenPeerURLs) {
		zero = zero || u.Port() == "0"
	}
	if !zero {
		return nil
	}
	host := cfg.ListenPeerURLs[0].Hostname()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return fmt.Errorf("cannot pick a free peer port on %s: %w", host, err)
	}
	_, port, _ = net.SplitHostPort(l.Addr().String())
	_ = l.Close()
	cfg.ListenPeerURLs = fix(cfg.ListenPeerURLs)
	cfg.AdvertisePeerURLs = fix(cfg.AdvertisePeerURLs)
	if strings.TrimSpace(cfg.InitialCluster) != "" {
		// name=http://host:0 in --initial-cluster follows the advertised URL.
		cfg.InitialCluster = cfg.Name + "=" + urlsString(cfg.AdvertisePeerURLs)
	}
	return nil
}

// dialAddr is the address to dial a listener at: a wildcard listener is
// reached through loopback.
func dialAddr(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return a.String()
	}
	ip := net.IPv4(127, 0, 0, 1)
	if ta.IP.To4() == nil {
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(ta.Port))
}

// resolveZeroPorts replaces each advertised URL whose port is 0 by the
// address bound for the listen URL with the same scheme and host:port, or
// else by the first listener of the same scheme (then of any scheme) that
// was asked for port 0.
func resolveZeroPorts(adv, listen, bound []url.URL) []url.URL {
	out := make([]url.URL, len(adv))
	for i, a := range adv {
		out[i] = a
		if a.Port() != "0" {
			continue
		}
		exact, sameScheme, any := -1, -1, -1
		for k, l := range listen {
			switch {
			case l.Host == a.Host && l.Scheme == a.Scheme && exact < 0:
				exact = k
			case l.Port() == "0" && l.Scheme == a.Scheme && sameScheme < 0:
				sameScheme = k
			case l.Port() == "0" && any < 0:
				any = k
			}
		}
		for _, j := range []int{exact, sameScheme, any} {
			if j >= 0 {
				out[i].Host = bound[j].Host
				break
			}
		}
	}
	return out
}

// watchStop turns an unexpected kvstore stop into a fatal error.
func (m *Member) watchStop() {
	defer m.wg.Done()
	select {
	case <-m.srv.StopNotify():
		select {
		case <-m.closing:
		default:
			m.fail(errors.New("the member's state machine stopped unexpectedly"))
		}
	case <-m.closing:
	}
}

func (m *Member) fail(err error) {
	select {
	case <-m.closing:
		return // errors caused by Close are not failures
	default:
	}
	m.lg.Error("member failed", zap.Error(err))
	select {
	case m.errc <- err:
	default: // the first error is the one that matters
	}
}

// Err delivers the member's first fatal error (a listener failure, or the
// state machine stopping on its own). The member is unusable after that;
// call Close.
func (m *Member) Err() <-chan error { return m.errc }

// ClientURLs are the member's advertised client URLs, with port 0 replaced
// by the bound port.
func (m *Member) ClientURLs() []url.URL {
	return append([]url.URL(nil), m.clientURLs...)
}

// ListenClientURLs are the bound client listener addresses.
func (m *Member) ListenClientURLs() []url.URL {
	return append([]url.URL(nil), m.listenURLs...)
}

// MetricsURLs are the bound --listen-metrics-urls listeners (port 0
// resolved), which serve /metrics and the health endpoints only.
func (m *Member) MetricsURLs() []url.URL {
	return append([]url.URL(nil), m.metricsURLs...)
}

// Server is the member's state machine, for in-process callers that want to
// bypass gRPC.
func (m *Member) Server() *kvstore.Server { return m.srv }

// Config is the configuration the member was started with.
func (m *Member) Config() Config { return m.cfg }

// Client returns a new clientv3 client connected to this member's client
// listeners: the http:// ones if there are any, else the https:// ones,
// trusting the member's certificate and presenting the member's own client
// certificate (--client-cert-file, else --cert-file) when the port wants
// one. The caller closes it.
func (m *Member) Client() (*clientv3.Client, error) {
	var plain, secure []string
	for _, u := range m.listenURLs {
		if u.Scheme == "https" {
			secure = append(secure, u.String())
		} else {
			plain = append(plain, u.String())
		}
	}
	ccfg := clientv3.Config{
		Endpoints:   plain,
		DialTimeout: 5 * time.Second,
		Logger:      m.lg.Named("client"),
	}
	if len(plain) == 0 {
		tc, err := m.clientTLS.ServerConfig()
		if err != nil {
			return nil, fmt.Errorf("client TLS for member %q: %w", m.cfg.Name, err)
		}
		tc = tc.Clone()
		tc.InsecureSkipVerify = true // the member's own certificate
		ccfg.Endpoints, ccfg.TLS = secure, tc
	}
	c, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("connecting a client to member %q: %w", m.cfg.Name, err)
	}
	return c, nil
}

// Close shuts the member down gracefully: the listeners stop accepting,
// in-flight requests get a short grace period, the gRPC and HTTP servers
// stop, then the state machine stops (flushing its storage). It is safe to
// call more than once and from several goroutines; later calls return the
// first call's result.
func (m *Member) Close() error {
	m.closeOnce.Do(func() {
		close(m.closing)
		m.lg.Info("closing member", zap.String("name", m.cfg.Name))
		m.cancelServe()
		m.wg.Wait()
		for _, gw := range m.gateways {
			if err := gw.Close(); err != nil {
				m.lg.Warn("closing the JSON gateway", zap.Error(err))
			}
		}
		// kvstore hands leadership over and closes the raft transport;
		// the router goes last so that hand-over can still travel.
		m.srv.Stop()
		m.stopSeeds()
		if err := m.router.Stop(); err != nil {
			m.lg.Warn("stopping the mesh router", zap.Error(err))
		}
		m.lg.Info("member closed", zap.String("name", m.cfg.Name))
	})
	return m.closeErr
}

func urlStrings(us []url.URL) []string {
	ss := make([]string, len(us))
	for i := range us {
		ss[i] = us[i].String()
	}
	return ss
}

// PeerAddr is host:port of the member's first advertised peer URL: what
// another member passes in --peers (Config.Peers) to reach it.
func (m *Member) PeerAddr() string { return m.cfg.AdvertisePeerURLs[0].Host }

// PeerURLs are the member's advertised peer URLs.
func (m *Member) PeerURLs() []url.URL { return append([]url.URL(nil), m.cfg.AdvertisePeerURLs...) }

// Name is the member's name (--name).
func (m *Member) Name() string { return m.cfg.Name }

// MeshStatus is a snapshot of the member's mesh router (also served as
// JSON at /mesh/status on every client URL).
func (m *Member) MeshStatus() mesh.Status { return m.router.Status() }

// freeLoopbackPort returns a port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("embed: picking a free port: %w", err)
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// joinProblem explains from the mesh status why a joining member got no
// answer: a refusal by an address it dialled ("mesh secret mismatch with
// 10.0.0.1:2380"), else one on an inbound connection, else that no member
// is reachable (with the last dial error). "" when members are reachable:
// then the cluster itself did not answer, and kvstore's error says why.
func joinProblem(st mesh.Status) string {
	for _, t := range st.Targets {
		if t.Reason != "" {
			return fmt.Sprintf("%s with %s", t.Reason, t.Addr)
		}
	}
	for i := len(st.HandshakeFailures) - 1; i >= 0; i-- {
		if f := st.HandshakeFailures[i]; f.Reason != "" {
			return fmt.Sprintf("%s with %s (%s)", f.Reason, f.Addr, f.Direction)
		}
	}
	for _, p := range st.Peers {
		if p.Name != st.Name && p.Reachable {
			return ""
		}
	}
	var errs []string
	for _, t := range st.Targets {
		if t.LastError != "" {
			errs = append(errs, t.Addr+": "+t.LastError)
		}
	}
	if len(errs) == 0 {
		return "no member reachable over the mesh"
	}
	return "no member reachable over the mesh (last errors: " + strings.Join(errs, "; ") + ")"
}
