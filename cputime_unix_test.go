//go:build unix

package hato

import (
	"syscall"
	"time"
)

// processCPU is the CPU time this process used, every goroutine's and
// the garbage collector's.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
