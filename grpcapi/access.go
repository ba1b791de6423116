package grpcapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"go.etcd.io/etcd/pkg/v3/httputil"
)

// accessController is etcd's HTTP front door (embed/serve.go): it maps the
// old /v3beta/ gateway prefix to /v3/, refuses plain-HTTP requests whose
// Host is not whitelisted (DNS rebinding, CVE-2018-5702), writes CORS
// headers and answers CORS preflight (OPTIONS) itself.
type accessController struct {
	lg            *zap.Logger
	cors          []string // allowed origins; empty or "*" means any
	hostWhitelist []string // allowed hosts; empty or "*" means any
	// gatewayCNRefused reports whether a /v3/ gateway request over TLS
	// with a named client certificate is refused: etcd does so with
	// --client-cert-auth and auth enabled, since the gateway forwards as
	// itself and the client's CN would silently not be the user. nil: never.
	gatewayCNRefused func() bool
	next             http.Handler
}

func (ac *accessController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL != nil && strings.HasPrefix(r.URL.Path, "/v3beta/") {
		r.URL.Path = strings.Replace(r.URL.Path, "/v3beta/", "/v3/", 1)
	}
	if r.TLS == nil {
		host := httputil.GetHostname(r)
		if !ac.hostAllowed(host) {
			ac.lg.Warn("rejecting HTTP request to prevent DNS rebinding attacks", zap.String("host", host))
			http.Error(w, errCVE20185702(host), http.StatusMisdirectedRequest)
			return
		}
	} else if ac.gatewayCNRefused != nil && strings.HasPrefix(r.URL.Path, "/v3/") && ac.gatewayCNRefused() {
		for _, chains := range r.TLS.VerifiedChains {
			if len(chains) > 0 && chains[0].Subject.CommonName != "" {
				http.Error(w, "CommonName of client sending a request against gateway will be ignored and not used as expected", http.StatusBadRequest)
				return
			}
		}
	}
	if ac.originAllowed("*") {
		addCORSHeader(w, "*")
	} else if origin := r.Header.Get("Origin"); ac.originAllowed(origin) {
		addCORSHeader(w, origin)
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusOK)
		return
	}
	ac.next.ServeHTTP(w, r)
}

func (ac *accessController) hostAllowed(host string) bool {
	return len(ac.hostWhitelist) == 0 || slices.Contains(ac.hostWhitelist, "*") || slices.Contains(ac.hostWhitelist, host)
}

func (ac *accessController) originAllowed(origin string) bool {
	return len(ac.cors) == 0 || slices.Contains(ac.cors, "*") || slices.Contains(ac.cors, origin)
}

func addCORSHeader(w http.ResponseWriter, origin string) {
	w.Header().Add("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
	w.Header().Add("Access-Control-Allow-Origin", origin)
	w.Header().Add("Access-Control-Allow-Headers", "accept, content-type, authorization")
}

// errCVE20185702 is etcd's explanation for a refused Host, word for word
// apart from the product name in the example flag.
func errCVE20185702(host string) string {
	return fmt.Sprintf(`
etcd received your request, but the Host header was unrecognized.

To fix this, choose one of the following options:
- Enable TLS, then any HTTPS request will be allowed.
- Add the hostname you want to use to the whitelist in settings.
  - e.g. etcd --host-whitelist %q

This requirement has been added to help prevent "DNS Rebinding" attacks (CVE-2018-5702).
`, host)
}
