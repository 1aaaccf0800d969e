//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package clustertest

import (
	"context"
	"errors"
	"os"
	"os/exec"
)

func lockFile(ctx context.Context, path string, onWait func()) (*os.File, error) {
	return nil, errors.New("clustertest: needs flock(2) and scripts/cluster.sh (Linux)")
}

func detach(cmd *exec.Cmd) {}

func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
