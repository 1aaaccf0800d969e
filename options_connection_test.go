package hato_test

import (
	"strings"
	"testing"

	"github.com/hato-go/hato"
)

func TestURLNeverLeaksThePassword(t *testing.T) {
	_, err := hato.New("svc", hato.WithURL("amqp://user:s3cret@host:5672/%zz"))
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v must exist and not show the password", err)
	}
	t.Setenv("AMQP_URL", "amqp://user:s3cret@host:5672/%zz")
	_, err = hato.New("svc")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("AMQP_URL error %v must exist and not show the password", err)
	}
}
