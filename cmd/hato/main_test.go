package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hato-go/hato/test/brokertest"
)

// pkgVhost is this package's vhost on the test broker, created only when a
// broker test asks for it.
var pkgVhost = brokertest.NewPackageVhost("cli")

// binDir holds the binaries broker tests build.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hato-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	if err := pkgVhost.Delete(); err != nil {
		fmt.Fprintf(os.Stderr, "brokertest: %v\n", err)
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// result is what a run of the command printed and returned.
type result struct {
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runIn runs the command in process with stdin and the environment vars
// (AMQP_URL is unset unless given).
func runIn(stdin string, vars map[string]string, args ...string) result {
	return runEnv(false, stdin, vars, args...)
}

// runInTerminal is runIn with stdin taken for a terminal, as when an
// operator types the answers.
func runInTerminal(stdin string, vars map[string]string, args ...string) result {
	return runEnv(true, stdin, vars, args...)
}

func runEnv(terminal bool, stdin string, vars map[string]string, args ...string) result {
	var out, errb bytes.Buffer
	e := &env{
		ctx:      context.Background(),
		stdin:    strings.NewReader(stdin),
		stdout:   &out,
		stderr:   &errb,
		getenv:   func(k string) string { return vars[k] },
		terminal: func() bool { return terminal },
	}
	code := run(e, args)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}
