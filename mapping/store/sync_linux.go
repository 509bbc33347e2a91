package store

import (
	"os"
	"syscall"
)

// syncData makes f's contents durable with fdatasync(2): its data, and its
// size when that changed, but not its times, so that syncing a log written
// over in place (see boundLog) costs one write to the device, not also a
// journal commit of the file system.
func syncData(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
