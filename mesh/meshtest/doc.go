// Package meshtest is the shared support for tests that run mesh routers
// outside package mesh (meshconn, peer, kvstore): a router config tuned for
// tests and routers on one in-memory network (mesh/memnet). Only tests
// import it. (Package mesh's own tests keep theirs: they cannot import a
// package that imports mesh.)
package meshtest
