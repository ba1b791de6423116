package kvstore

import (
	"time"

	"github.com/coreos/go-semver/semver"
	"go.uber.org/zap"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// monitorStorageVersionInterval is how often etcd re-checks the storage
// version (its monitorVersionInterval).
const monitorStorageVersionInterval = 4 * time.Second

// monitorStorageVersion stamps the backend's storage version (the meta
// bucket's storageVersion, with etcd's schema migrations) to the cluster
// version's major.minor, as etcd's monitorStorageVersion does: endpoint
// status, snapshots and etcdutl read it, and etcd refuses or migrates a data
// directory by it. Owned by the server: it returns when the server stops.
func (s *Server) monitorStorageVersion() {
	for {
		s.updateStorageVersionIfNeeded()
		select {
		case <-time.After(monitorStorageVersionInterval):
		case <-s.clusterVersionChanged.Receive():
		case <-s.stopping:
			return
		}
	}
}

// updateStorageVersionIfNeeded is etcd's version.Monitor
// UpdateStorageVersionIfNeeded over our backend.
func (s *Server) updateStorageVersionIfNeeded() {
	cv := s.cluster.Version()
	if cv == nil || cv.String() == version.MinClusterVersion {
		return
	}
	target := semver.Version{Major: cv.Major, Minor: cv.Minor}
	s.bemu.RLock()
	defer s.bemu.RUnlock()
	tx := s.be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	current, err := schema.UnsafeDetectSchemaVersion(s.lg, tx)
	if err == nil && current.Equal(target) {
		s.storageVersionCurrent.Store(true)
		return
	}
	if err == nil {
		s.lg.Info("cluster version differs from storage version.", zap.String("cluster-version", cv.String()), zap.String("storage-version", current.String()))
	}
	if err := schema.UnsafeMigrate(s.lg, tx, binaryWALVersion{}, target); err != nil {
		s.lg.Error("failed to update storage version", zap.String("cluster-version", cv.String()), zap.Error(err))
		return
	}
	s.storageVersionCurrent.Store(true)
}

// binaryWALVersion answers schema.UnsafeMigrate's question "what is the
// oldest etcd that can read this WAL" with this binary's version: it is
// asked only for a downgrade, and meshetcd never downgrades the storage
// below the version that wrote it.
type binaryWALVersion struct{}

func (binaryWALVersion) MinimalEtcdVersion() *semver.Version {
	v := semver.New(version.Version)
	return &semver.Version{Major: v.Major, Minor: v.Minor}
}
