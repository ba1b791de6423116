package main

import (
	"testing"
	"time"
)

func TestAuthFlags(t *testing.T) {
	o := mustParse(t, nil, fakeEnv{})
	if o.cfg.AuthToken != "simple" || o.cfg.AuthTokenTTL != 300*time.Second || o.cfg.BcryptCost != 10 {
		t.Errorf("defaults: auth-token %q ttl %v bcrypt-cost %d, want etcd's simple, 300s, 10", o.cfg.AuthToken, o.cfg.AuthTokenTTL, o.cfg.BcryptCost)
	}
	jwt := "jwt,pub-key=/k/a.pub,priv-key=/k/a.key,sign-method=ES256,ttl=10m"
	o = mustParse(t, []string{"--auth-token", jwt, "--auth-token-ttl", "60", "--bcrypt-cost", "4"}, fakeEnv{})
	if o.cfg.AuthToken != jwt || o.cfg.AuthTokenTTL != time.Minute || o.cfg.BcryptCost != 4 {
		t.Errorf("auth-token %q ttl %v bcrypt-cost %d", o.cfg.AuthToken, o.cfg.AuthTokenTTL, o.cfg.BcryptCost)
	}
	o = mustParse(t, nil, fakeEnv{"ETCD_AUTH_TOKEN": jwt, "ETCD_AUTH_TOKEN_TTL": "5"})
	if o.cfg.AuthToken != jwt || o.cfg.AuthTokenTTL != 5*time.Second {
		t.Errorf("from the environment: auth-token %q ttl %v", o.cfg.AuthToken, o.cfg.AuthTokenTTL)
	}
	// etcd's flag types: a negative value is a usage error. A bad token
	// spec or an out-of-range cost is etcd's business at start (exit 1,
	// respectively a warning and the default), see integration.
	mustFail(t, []string{"--auth-token-ttl", "-1"}, fakeEnv{}, "auth-token-ttl")
	mustFail(t, []string{"--bcrypt-cost", "-1"}, fakeEnv{}, "bcrypt-cost")
}

func TestListenMetricsURLsFlag(t *testing.T) {
	o := mustParse(t, []string{"--listen-metrics-urls", "http://127.0.0.1:26190,https://127.0.0.1:26191"}, fakeEnv{})
	if got := urlList(o.cfg.ListenMetricsURLs); got != "http://127.0.0.1:26190,https://127.0.0.1:26191" {
		t.Errorf("listen-metrics-urls %s", got)
	}
	if o := mustParse(t, nil, fakeEnv{}); len(o.cfg.ListenMetricsURLs) != 0 {
		t.Errorf("default listen-metrics-urls %v, want none", o.cfg.ListenMetricsURLs)
	}
	mustFail(t, []string{"--listen-metrics-urls", "http://example.com:26190"}, fakeEnv{}, "expected IP in URL for binding")
	mustFail(t, []string{"--listen-metrics-urls", "unix://m.sock"}, fakeEnv{}, "--listen-metrics-urls")
	mustFail(t, []string{"--listen-metrics-urls", "127.0.0.1:26190"}, fakeEnv{}, "listen-metrics-urls")
}
