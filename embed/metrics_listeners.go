package embed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
)

// ErrMissingClientTLSInfoForMetricsURL is etcd's error (same text) for an
// https:// --listen-metrics-urls without a client certificate.
var ErrMissingClientTLSInfoForMetricsURL = errors.New("client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url")

// metricsListener is one bound --listen-metrics-urls listener.
type metricsListener struct {
	l   net.Listener
	url url.URL // port 0 resolved
}

// openMetricsListeners opens the --listen-metrics-urls listeners the way
// etcd's createMetricsListener does: plaintext for http://, TLS with the
// client certificate (ClientTLSInfo, re-read on each handshake by etcd's
// transport) for https://. On error nothing stays open.
func openMetricsListeners(urls []url.URL, tlsInfo transport.TLSInfo, lg *zap.Logger) (out []metricsListener, err error) {
	defer func() {
		if err != nil {
			for _, ml := range out {
				_ = ml.l.Close()
			}
			out = nil
		}
	}()
	if tlsInfo.Logger == nil {
		tlsInfo.Logger = lg
	}
	for _, u := range urls {
		var info *transport.TLSInfo
		if u.Scheme == "https" {
			if tlsInfo.Empty() {
				return out, ErrMissingClientTLSInfoForMetricsURL
			}
			info = &tlsInfo
		}
		l, lerr := transport.NewListenerWithOpts(u.Host, u.Scheme, transport.WithTLSInfo(info))
		if lerr != nil {
			return out, fmt.Errorf("cannot listen for metrics on %s: %w", u.String(), lerr)
		}
		b := u
		if u.Port() == "0" {
			b.Host = net.JoinHostPort(u.Hostname(), fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
		}
		out = append(out, metricsListener{l: l, url: b})
	}
	return out, nil
}

// serveMetrics serves h on l until ctx ends (then it closes the server and
// returns nil) or serving fails.
func serveMetrics(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Minute,            // etcd's value
		ErrorLog:          log.New(io.Discard, "", 0), // client errors are not ours to log
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}
