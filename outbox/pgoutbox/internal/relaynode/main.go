// Command relaynode is a service that only runs an outbox relay, for the
// relay crash test: $HATO_RELAY_AMQP_URL, $HATO_TEST_PG_URL,
// $HATO_RELAY_TABLE. It prints "ready" once started and stops on SIGTERM.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/outbox/pgoutbox"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relaynode:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("HATO_TEST_PG_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	ob, err := pgoutbox.New(pool, pgoutbox.WithTable(os.Getenv("HATO_RELAY_TABLE")), pgoutbox.WithBatch(50))
	if err != nil {
		return err
	}
	svc, err := hato.New("outbox-relay", hato.WithURL(os.Getenv("HATO_RELAY_AMQP_URL")), hato.WithComponent(ob))
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return svc.Stop(ctx)
}
