package envelope

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hato-go/hato/internal/testpb"
)

// Run: go test -run='^$' -bench=. -benchmem ./envelope/

type benchItem struct {
	SKU   string  `json:"sku"`
	Qty   int     `json:"qty"`
	Price float64 `json:"price"`
	Note  string  `json:"note"`
}

type benchOrder struct {
	OrderID  int64       `json:"order_id"`
	Customer string      `json:"customer"`
	Paid     bool        `json:"paid"`
	Items    []benchItem `json:"items"`
}

var benchBuild = Build{
	Service:     Service{Name: "bench-service", UUID: "5d0b530f-5c44-4981-b01f-342801bd48f5"},
	Topic:       "orders.created",
	MessageUUID: "5d0b530f-5c44-4981-b01f-342801bd48f5.348d4bab-2739-479f-a8a8-3db65b1f11e1",
	Time:        time.Unix(1795629630, 877235700),
}

// benchText is deterministic pseudo-random text (compresses like real text
// rather than like zeros).
func benchText(r *rand.Rand, n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 åäö"
	rs := []rune(letters)
	out := make([]rune, n)
	for i := range out {
		out[i] = rs[r.IntN(len(rs))]
	}
	return string(out)
}

// benchOrderOf returns an order whose data JSON text is about size bytes.
func benchOrderOf(size int) benchOrder {
	r := rand.New(rand.NewPCG(1, 2))
	o := benchOrder{OrderID: 12345678901234, Customer: "Åsa Öberg", Paid: true}
	for {
		o.Items = append(o.Items, benchItem{SKU: benchText(r, 8), Qty: r.IntN(100), Price: float64(r.IntN(100000)) / 100, Note: benchText(r, 40)})
		b, _ := json.Marshal(o)
		if len(b) >= size {
			return o
		}
	}
}

func benchPerson(size int) *testpb.Person {
	r := rand.New(rand.NewPCG(3, 4))
	return &testpb.Person{Id: "12", Name: benchText(r, size-10)}
}

var benchSizes = []struct {
	name string
	size int
}{{"256B", 256}, {"64KiB", 64 << 10}}

func BenchmarkJSON(b *testing.B) {
	for _, s := range benchSizes {
		data := benchOrderOf(s.size)
		body, err := JSON.Build(benchBuild, data, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("build/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := JSON.Build(benchBuild, data, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parse/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var o benchOrder
				if _, err := JSON.Parse(body, &o, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parse-untyped/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var v any
				if _, err := JSON.Parse(body, &v, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkProtobuf(b *testing.B) {
	for _, s := range benchSizes {
		data := benchPerson(s.size)
		body, err := Protobuf.Build(benchBuild, data, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("build/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := Protobuf.Build(benchBuild, data, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parse/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var p *testpb.Person
				if _, err := Protobuf.Parse(body, &p, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
