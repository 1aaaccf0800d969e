//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package brokertest

import (
	"errors"
	"time"
)

// On platforms without flock(2) the cross-process broker lock and the
// detached watchdog are not available; the helpers still work, but fault
// tests must then be run on their own (go test -p 1).

type lockFiles struct{}

var errNoLock = errors.New("broker lock not supported on this platform")

func openLockFiles() (*lockFiles, error)                               { return nil, errNoLock }
func (l *lockFiles) shared(deadline time.Time, onWait func()) error    { return errNoLock }
func (l *lockFiles) exclusive(deadline time.Time, onWait func()) error { return errNoLock }
func (l *lockFiles) close()                                            {}
func (l *lockFiles) unlock() error                                     { return errNoLock }

func spawnDelayed(delay time.Duration, name string, args ...string) (cancel func(), err error) {
	return nil, errNoLock
}
