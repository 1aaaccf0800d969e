package broker

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestEncodableRefusesWhatAMQPCannotCarry(t *testing.T) {
	long := strings.Repeat("x", 256)
	bad := []*Request{
		{RoutingKey: long},
		{Exchange: long},
		{Msg: amqp.Publishing{MessageId: long}},
		{Msg: amqp.Publishing{Headers: amqp.Table{long: "v"}}},
		{Msg: amqp.Publishing{Headers: amqp.Table{"k": amqp.Table{long: 1}}}},
		{Msg: amqp.Publishing{Headers: amqp.Table{"k": []any{amqp.Table{long: 1}}}}},
		{Msg: amqp.Publishing{Headers: amqp.Table{"k": struct{}{}}}},
	}
	for i, r := range bad {
		if err := encodable(r, 0); !errors.Is(err, ErrUnencodable) {
			t.Errorf("request %d: %v, want ErrUnencodable", i, err)
		}
	}
	ok := &Request{RoutingKey: long[:255], Msg: amqp.Publishing{MessageId: long[:255], Headers: amqp.Table{"k": long}}}
	if err := encodable(ok, 0); err != nil {
		t.Errorf("a request at the limits: %v", err)
	}
}

func TestBrokenLinkTellsNetworkFromRefusal(t *testing.T) {
	broken := []error{
		amqp.ErrClosed,
		&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE},
		fmt.Errorf("flush: %w", syscall.ECONNRESET),
	}
	for _, err := range broken {
		if !brokenLink(err) {
			t.Errorf("%v: not a broken link", err)
		}
	}
	if brokenLink(errors.New("amqp: shortstr \"...\" exceeds 255 bytes")) {
		t.Error("an encoding error counted as a broken link: the publish would be resent forever")
	}
}

func TestProtocolErrorCountsOnlyBrokerRefusals(t *testing.T) {
	if !protocolError(&amqp.Error{Code: amqp.FrameError, Server: true}) {
		t.Error("broker frame error not counted")
	}
	if protocolError(&amqp.Error{Code: amqp.FrameError, Server: false}) {
		t.Error("a local read failure (amqp091-go reports FrameError) counted against the publishes")
	}
	if protocolError(&amqp.Error{Code: amqp.ConnectionForced, Server: true}) {
		t.Error("an operator's close counted against the publishes")
	}
}
