//go:build faults

package faults

import (
	"net"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"
)

func amqpURI(url string) (amqp.URI, error) { return amqp.ParseURI(url) }

// throughProxy rewrites url to connect through addr.
func throughProxy(url, addr string) (string, error) {
	u, err := amqp.ParseURI(url)
	if err != nil {
		return "", err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	u.Host = host
	if u.Port, err = strconv.Atoi(port); err != nil {
		return "", err
	}
	return u.String(), nil
}
