package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// EnvRabbitmqctl names the environment variable that overrides the
// rabbitmqctl executable.
const EnvRabbitmqctl = "HATO_TEST_RABBITMQCTL"

// CtlTimeout bounds every rabbitmqctl invocation.
const CtlTimeout = 60 * time.Second

// rabbitmqctlPath resolves the rabbitmqctl executable.
func rabbitmqctlPath() (string, error) {
	name := strings.TrimSpace(os.Getenv(EnvRabbitmqctl))
	if name == "" {
		name = "rabbitmqctl"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("brokertest: %s not found (%w); install RabbitMQ with `scripts/rabbitmq.sh ensure` or set %s", name, err, EnvRabbitmqctl)
	}
	return path, nil
}

// Rabbitmqctl runs `rabbitmqctl args...` with a CtlTimeout timeout and
// returns its combined stdout+stderr. A non-zero exit status, a timeout or a
// missing executable is returned as an error that includes the output.
//
// Each call starts an Erlang VM (~0.5–1 s), so batch where possible.
// Arguments are passed without a shell, but note that Debian's
// /usr/sbin/rabbitmqctl wrapper re-quotes them for `su` when run as root:
// avoid '$', '`' and '\' in arguments.
func Rabbitmqctl(args ...string) (string, error) {
	return rabbitmqctl(context.Background(), args...)
}

func rabbitmqctl(ctx context.Context, args ...string) (string, error) {
	acquireShared()
	path, err := rabbitmqctlPath()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, CtlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// The Debian wrapper forks su/erl; do not hang on grandchildren that
	// keep the output pipe open after a kill.
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	text := out.String()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return text, fmt.Errorf("rabbitmqctl %s: timed out after %v; output:\n%s", strings.Join(args, " "), CtlTimeout, text)
	}
	if err != nil {
		return text, fmt.Errorf("rabbitmqctl %s: %w; output:\n%s", strings.Join(args, " "), err, strings.TrimSpace(text))
	}
	return text, nil
}
