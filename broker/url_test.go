package broker

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestBuildURLAndRedact(t *testing.T) {
	for _, tc := range []struct {
		tls                bool
		host               string
		port               int
		login, pass, vhost string
		want               string
	}{
		{false, "127.0.0.1", 5672, "guest", "guest", "/", "amqp://guest:guest@127.0.0.1:5672/"},
		{true, "rabbit", 5671, "u", "p@ss/w?rd", "prod", "amqps://u:p%40ss%2Fw%3Frd@rabbit:5671/prod"},
		{false, "::1", 5672, "u", "p", "a/b", "amqp://u:p@[::1]:5672/a%2Fb"},
	} {
		got := BuildURL(tc.tls, tc.host, tc.port, tc.login, tc.pass, tc.vhost)
		if got != tc.want {
			t.Errorf("BuildURL = %s, want %s", got, tc.want)
		}
		u, err := amqp.ParseURI(got)
		if err != nil || u.Password != tc.pass || u.Vhost != tc.vhost {
			t.Errorf("%s parses to %+v (%v)", got, u, err)
		}
		if r := Redact(got); !contains(r, ":xxxxx@") {
			t.Errorf("Redact(%s) = %s", got, r)
		}
	}
}
