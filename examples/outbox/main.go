// Command outbox shows the transactional outbox: POST /orders inserts an
// order and its order.created event in one PostgreSQL transaction; the
// outbox relay running inside the hato service publishes the event once
// the transaction committed, and the service's own route receives it.
//
//	AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ \
//	DATABASE_URL=postgres://hato:hato@127.0.0.1:5432/hato_test \
//	go run . &
//	curl -d '{"item":"tea","qty":2}' localhost:8080/orders
package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/outbox/pgoutbox"
)

// Order is the request body and the event's payload.
type Order struct {
	ID   int64  `json:"id"`
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// App is the example's service, outbox and database.
type App struct {
	Pool   *pgxpool.Pool
	Outbox *pgoutbox.Outbox
	Svc    *hato.Service
}

// Setup creates the tables and the service (not started) with the relay
// and an order.created route that calls onOrder.
func Setup(ctx context.Context, dbURL, amqpURL string, log *zap.Logger, onOrder func(Order)) (*App, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	ob, err := pgoutbox.New(pool)
	if err == nil {
		err = ob.Migrate(ctx)
	}
	if err == nil {
		_, err = pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, item text NOT NULL, qty int NOT NULL)`)
	}
	var svc *hato.Service
	if err == nil {
		svc, err = hato.New("orders", hato.WithURL(amqpURL), hato.WithLogger(log), hato.WithComponent(ob))
	}
	if err == nil {
		err = hato.Subscribe(svc, "order.created", func(_ context.Context, m *hato.Message[Order]) error {
			onOrder(m.Data)
			return nil
		})
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &App{Pool: pool, Outbox: ob, Svc: svc}, nil
}

// ServeHTTP handles POST /orders: the order row and its event commit
// together, or neither does.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an order", http.StatusMethodNotAllowed)
		return
	}
	var o Order
	if err := json.NewDecoder(r.Body).Decode(&o); err != nil || o.Item == "" || o.Qty <= 0 {
		http.Error(w, "want {\"item\": \"...\", \"qty\": n}", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	err := pgx.BeginFunc(ctx, a.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO orders (item, qty) VALUES ($1, $2) RETURNING id`, o.Item, o.Qty).Scan(&o.ID); err != nil {
			return err
		}
		_, err := a.Outbox.Publish(ctx, tx, a.Svc, o, "order.created")
		return err
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(o)
}

func main() {
	log, _ := zap.NewProduction()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app, err := Setup(ctx, env("DATABASE_URL", "postgres://hato:hato@127.0.0.1:5432/hato_test"),
		env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), log,
		func(o Order) { log.Info("order created", zap.Int64("id", o.ID), zap.String("item", o.Item)) })
	if err != nil {
		log.Fatal("setup", zap.Error(err))
	}
	defer app.Pool.Close()
	srv := &http.Server{Addr: env("HTTP_ADDR", "127.0.0.1:8080"), Handler: app}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http", zap.Error(err))
			stop()
		}
	}()
	err = app.Svc.Run(ctx)
	_ = srv.Shutdown(context.Background())
	if err != nil {
		log.Fatal("service", zap.Error(err))
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
