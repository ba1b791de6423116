// Package testutil is the one home of the small helpers tests share:
// polling for a condition, free loopback ports, and reading WAL segments.
// Only tests import it.
package testutil
