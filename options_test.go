package hato_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato"
)

func TestInvalidOptionsAreRejectedAtConstruction(t *testing.T) {
	for name, opts := range map[string][]hato.Option{
		"bad url":            {hato.WithURL("http://nope")},
		"port":               {hato.WithPort(0)},
		"heartbeat":          {hato.WithHeartbeat(time.Millisecond)},
		"prefetch":           {hato.Prefetch(0, 400)},
		"nil logger":         {hato.WithLogger(nil)},
		"nil actor system":   {hato.WithActorSystem(nil)},
		"empty exchange":     {hato.Exchange("")},
		"nil envelope":       {hato.Envelope(nil)},
		"negative queue ttl": {hato.WithQueueTTL(-time.Second)},
		"nil option":         {nil},
		"max message size 0": {hato.WithMaxMessageSize(0)},
		"channels per conn":  {hato.WithChannelsPerConnection(-1)},
		"channels > 65535":   {hato.WithChannelsPerConnection(65536)},
		"handler timeout":    {hato.HandlerTimeout(-time.Second)},
		"liveness interval":  {hato.WithLivenessInterval(0)},
		"stall after":        {hato.WithStallAfter(-time.Second)},
		"unhealthy after":    {hato.WithUnhealthyAfter(0)},
		"liveness checks":    {hato.WithLivenessChecks(0)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := hato.New("svc", opts...); !errorsIs(err, hato.ErrInvalidOption) {
				t.Errorf("New = %v, want ErrInvalidOption", err)
			}
		})
	}
	if _, err := hato.New(""); !errorsIs(err, hato.ErrInvalidOption) {
		t.Errorf("empty name: %v", err)
	}
}

// Issue 19: negative values were silently replaced by defaults, and port
// 99999 was accepted at New and retried until the start timeout.
func TestBadValuesAreRefusedAtNew(t *testing.T) {
	for name, opt := range map[string]hato.Option{
		"negative MaxAttempts":     hato.FailureHandling(hato.FailurePolicy{MaxAttempts: -1}),
		"negative MaxRedeliveries": hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: -2}),
		"negative retry backoff":   hato.FailureHandling(hato.FailurePolicy{Backoff: hato.Backoff{Initial: -time.Second}}),
		"NaN multiplier":           hato.WithReconnectBackoff(hato.Backoff{Multiplier: math.NaN()}),
		"jitter above 1":           hato.WithReconnectBackoff(hato.Backoff{Jitter: 2}),
		"initial above max":        hato.WithReconnectBackoff(hato.Backoff{Initial: time.Minute, Max: time.Second}),
		"negative restart window":  hato.Supervision(hato.RestartPolicy{Window: -time.Second}),
		"negative restart backoff": hato.Supervision(hato.RestartPolicy{Backoff: hato.Backoff{Max: -1}}),
		"port 99999":               hato.WithURL("amqp://guest:guest@127.0.0.1:99999/"),
	} {
		if _, err := hato.New("bad", opt); !errors.Is(err, hato.ErrInvalidOption) {
			t.Errorf("%s: New: %v, want ErrInvalidOption", name, err)
		}
	}
	// The error names the field that is negative, not a valid one beside it.
	_, err := hato.New("bad", hato.FailureHandling(hato.FailurePolicy{MaxAttempts: -1}))
	if err == nil || !strings.Contains(err.Error(), "MaxAttempts -1 is negative") || strings.Contains(err.Error(), "MaxRedeliveries") {
		t.Errorf("negative MaxAttempts: %v", err)
	}
	svc, err := hato.New("bad", hato.WithURL(offlineURL))
	if err != nil {
		t.Fatal(err)
	}
	err = hato.Subscribe(svc, "k", func(context.Context, *hato.Message[map[string]any]) error { return nil },
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: -1}))
	if !errors.Is(err, hato.ErrInvalidOption) {
		t.Errorf("Subscribe with a negative MaxAttempts: %v, want ErrInvalidOption", err)
	}
	t.Setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:99999/")
	if _, err := hato.New("bad"); !errors.Is(err, hato.ErrInvalidOption) {
		t.Errorf("AMQP_URL with port 99999: %v, want ErrInvalidOption", err)
	}
	// The documented negatives stay: no jitter, unlimited restarts.
	if _, err := hato.New("ok", hato.WithURL(offlineURL), hato.WithReconnectBackoff(hato.Backoff{Jitter: -1}),
		hato.Supervision(hato.RestartPolicy{MaxRestarts: -1})); err != nil {
		t.Errorf("documented negatives: %v", err)
	}
}
