//go:build !linux

package store

import "os"

// syncData makes f durable with (*os.File).Sync where fdatasync(2) is not
// available.
func syncData(f *os.File) error { return f.Sync() }
