// Package depsstub pins dependencies while the packages that use them are written.
package depsstub

import (
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/spf13/pflag"
	_ "go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/client/v3/concurrency"
	_ "go.etcd.io/etcd/pkg/v3/idutil"
	_ "go.etcd.io/etcd/pkg/v3/wait"
	_ "go.etcd.io/etcd/server/v3/etcdserver/apply"
	_ "go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	_ "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock"
	_ "go.etcd.io/etcd/server/v3/etcdserver/api/v3election"
	_ "go.etcd.io/etcd/server/v3/etcdserver/api/v3compactor"
	_ "go.etcd.io/etcd/server/v3/etcdserver/read"
	_ "go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	_ "go.etcd.io/etcd/server/v3/storage/mvcc"
	_ "go.etcd.io/etcd/server/v3/storage/wal"
	_ "go.etcd.io/raft/v3"
	_ "go.uber.org/zap"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/crypto/curve25519"
	_ "golang.org/x/crypto/hkdf"
	_ "google.golang.org/grpc"
	_ "github.com/anishathalye/porcupine"
)
