//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package brokertest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Cross-process broker lock (see the package documentation).
//
// Two flock(2) files are used so that a waiting fault test is not starved
// by test processes that keep starting (writer preference):
//
//	reader: SH(intent) -> SH(main) -> UN(intent); keeps SH(main) until exit
//	writer: UN(main)   -> EX(intent) -> EX(main) -> UN(intent); ...; SH(main)
//
// A process never waits for a lock while holding another one it could block
// a peer with, so there is no deadlock. All waits poll with LOCK_NB (no
// goroutines) and are bounded.

const lockPollInterval = 50 * time.Millisecond

type lockFiles struct {
	main, intent *os.File
}

func openLockFiles() (*lockFiles, error) {
	dir := os.Getenv(EnvLockDir)
	if dir == "" {
		dir = os.TempDir()
	}
	base := filepath.Join(dir, "hato-brokertest-"+sanitize(brokerHostPort(), "_.-"))
	open := func(path string) (*os.File, error) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return nil, err
		}
		_ = f.Chmod(0o666) // let other users' test runs share it despite umask
		return f, nil
	}
	main, err := open(base + ".lock")
	if err != nil {
		return nil, err
	}
	intent, err := open(base + ".intent.lock")
	if err != nil {
		_ = main.Close()
		return nil, err
	}
	return &lockFiles{main: main, intent: intent}, nil
}

var errLockTimeout = errors.New("timed out")

// flockWait takes lock how (LOCK_SH/LOCK_EX/LOCK_UN) on f, polling until
// deadline. onWait is called once if the lock is not immediately available.
func flockWait(f *os.File, how int, deadline time.Time, onWait func()) error {
	waited := false
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flock %s: %w", f.Name(), errLockTimeout)
		}
		if !waited && onWait != nil {
			onWait()
		}
		waited = true
		time.Sleep(lockPollInterval)
	}
}

func (l *lockFiles) shared(deadline time.Time, onWait func()) error {
	if err := flockWait(l.intent, syscall.LOCK_SH, deadline, onWait); err != nil {
		return err
	}
	defer func() { _ = syscall.Flock(int(l.intent.Fd()), syscall.LOCK_UN) }()
	return flockWait(l.main, syscall.LOCK_SH, deadline, onWait)
}

func (l *lockFiles) exclusive(deadline time.Time, onWait func()) error {
	if err := syscall.Flock(int(l.main.Fd()), syscall.LOCK_UN); err != nil {
		return fmt.Errorf("flock unlock %s: %w", l.main.Name(), err)
	}
	if err := flockWait(l.intent, syscall.LOCK_EX, deadline, onWait); err != nil {
		return err
	}
	defer func() { _ = syscall.Flock(int(l.intent.Fd()), syscall.LOCK_UN) }()
	return flockWait(l.main, syscall.LOCK_EX, deadline, onWait)
}

// close closes both files, which drops any lock held through them.
func (l *lockFiles) close() {
	_ = l.main.Close()
	_ = l.intent.Close()
}

func (l *lockFiles) unlock() error {
	return syscall.Flock(int(l.main.Fd()), syscall.LOCK_UN)
}

// spawnDelayed starts `name args...` after delay in a detached process
// group, so it survives the test binary being killed (and a Ctrl-C sent to
// the terminal's process group). cancel kills it (if still waiting or
// running) and reaps it.
func spawnDelayed(delay time.Duration, name string, args ...string) (cancel func(), err error) {
	secs := strconv.Itoa(int(delay.Round(time.Second) / time.Second))
	shArgs := append([]string{"-c", `sleep "$1"; shift; exec "$@"`, "hato-brokertest-watchdog", secs, name}, args...)
	cmd := exec.Command("/bin/sh", shArgs...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}, nil
}
