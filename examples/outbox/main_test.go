//go:build integration

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato/test/brokertest"
)

// POST /orders: the order is committed and its event reaches the route.
func TestOrderEventRelayed(t *testing.T) {
	_, amqpURL := brokertest.NewVhost(t)
	dbURL := os.Getenv("HATO_TEST_PG_URL")
	if dbURL == "" {
		dbURL = "postgres://hato:hato@127.0.0.1:5432/hato_test"
	}
	var mu sync.Mutex
	var got []Order
	app, err := Setup(context.Background(), dbURL, amqpURL, zap.NewNop(), func(o Order) {
		mu.Lock()
		got = append(got, o)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = app.Svc.Stop(context.Background()) }()
	srv := httptest.NewServer(app)
	defer srv.Close()
	item := fmt.Sprint("tea-", time.Now().UnixNano())
	resp, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader(`{"item":"`+item+`","qty":2}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", resp.StatusCode)
	}
	brokertest.WaitFor(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range got {
			if o.Item == item && o.ID > 0 {
				return true
			}
		}
		return false
	}, "the order.created event")
}
