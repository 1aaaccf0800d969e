package hato

import (
	"fmt"
	"time"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
)

// startTimedOut is the error of a Start whose ctx ended (cause) before the
// service was ready. It says why when the connection is the reason: the
// (redacted) address, the failed attempts and the last dial error, as the
// connection actor reports them. It wraps cause and that dial error.
func (s *Service) startTimedOut(cause error) error {
	err := fmt.Errorf("hato: start: %w", cause)
	conn := s.conn.Load()
	if conn == nil {
		return err
	}
	res, qerr := s.system.Root.RequestFuture(conn, &actors.StatusRequest{}, time.Second).Result()
	st, ok := res.(*actors.ConnectionStatus)
	switch {
	case qerr != nil || !ok || st.Connected:
		return err
	case st.LastError != nil:
		return fmt.Errorf("%w: not connected to %s after %d failed connection attempts; last error: %w",
			err, broker.Redact(s.cfg.url), st.FailedAttempts, st.LastError)
	default:
		return fmt.Errorf("%w: not connected to %s: the first connection attempt had not finished",
			err, broker.Redact(s.cfg.url))
	}
}
