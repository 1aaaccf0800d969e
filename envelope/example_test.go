package envelope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/testpb"
)

func ExampleJSONEnvelope_Build() {
	body, err := envelope.JSON.Build(envelope.Build{
		Service:     envelope.Service{Name: "orders", UUID: "0f0e4b43-2a9e-4c5c-9d7e-000000000001"},
		Topic:       "orders.created",
		MessageUUID: "0f0e4b43-2a9e-4c5c-9d7e-000000000001.2d27701c-c1eb-4a7a-835d-ae9b2aa76d85",
		Time:        time.Unix(1795629630, 885080000),
	}, map[string]any{"order_id": 42, "customer": "Åsa", "total": 19.99}, envelope.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(body))
	// Output:
	// {"service": {"name": "orders", "uuid": "0f0e4b43-2a9e-4c5c-9d7e-000000000001"}, "metadata": {"message_uuid": "0f0e4b43-2a9e-4c5c-9d7e-000000000001.2d27701c-c1eb-4a7a-835d-ae9b2aa76d85", "protocol_version": "tomodachi-json-base--1.0.0", "compatible_protocol_versions": ["json_base-wip"], "timestamp": 1795629630.88508, "topic": "orders.created", "data_encoding": "raw"}, "data": {"customer": "\u00c5sa", "order_id": 42, "total": 19.99}}
}

func ExampleJSONEnvelope_Parse() {
	// A body as tomodachi publishes it.
	body := []byte(`{"service": {"name": "orders", "uuid": "5d0b530f-5c44-4981-b01f-342801bd48f5"}, "metadata": {"message_uuid": "5d0b530f-5c44-4981-b01f-342801bd48f5.348d4bab-2739-479f-a8a8-3db65b1f11e1", "protocol_version": "tomodachi-json-base--1.0.0", "compatible_protocol_versions": ["json_base-wip"], "timestamp": 1795629630.8772357, "topic": "orders.created", "data_encoding": "raw"}, "data": {"order_id": 12345678901234, "items": ["a", "b"], "note": null}}`)

	// Typed: encoding/json rules.
	var order struct {
		OrderID int64    `json:"order_id"`
		Items   []string `json:"items"`
	}
	msg, err := envelope.JSON.Parse(body, &order, envelope.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Println(msg.Service.Name, msg.Metadata.Topic, msg.Metadata.MessageUUID)
	fmt.Println(order.OrderID, order.Items)

	// Untyped: numbers stay exact.
	var data any
	if _, err := envelope.JSON.Parse(body, &data, envelope.Options{}); err != nil {
		panic(err)
	}
	fmt.Printf("%#v\n", data.(map[string]any)["order_id"])

	// Failures match a sentinel.
	_, err = envelope.JSON.Parse([]byte(`[1, 2]`), &data, envelope.Options{})
	fmt.Println(errors.Is(err, envelope.ErrMalformed), err)
	// Output:
	// orders orders.created 5d0b530f-5c44-4981-b01f-342801bd48f5.348d4bab-2739-479f-a8a8-3db65b1f11e1
	// 12345678901234 [a b]
	// "12345678901234"
	// true json: envelope: malformed message: the message is not a JSON object
}

func ExampleProtobufEnvelope() {
	b := envelope.Build{Topic: "people.updated", MessageUUID: "u.1", Time: time.Unix(1, 0)}
	body, err := envelope.Protobuf.Build(b, &testpb.Person{Id: "12", Name: "John Doe"}, envelope.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(body))

	// A route checks its payload type once, at registration.
	var person *testpb.Person
	fmt.Println(envelope.Protobuf.Check(&person, envelope.Options{}))
	fmt.Println(envelope.Protobuf.Check(new(string), envelope.Options{}) != nil)

	msg, err := envelope.Protobuf.Parse(body, &person, envelope.Options{
		Validator: func(p any) error {
			if p.(*testpb.Person).GetId() == "" {
				return errors.New("id required")
			}
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(msg.Metadata.Topic, msg.Metadata.DataEncoding, person.GetId(), person.GetName())
	// Output:
	// CgASRQoDdS4xEh50b21vZGFjaGktcHJvdG9idWYtYmFzZS0tMS4wLjAZAAAAAAAA8D8iDnBlb3BsZS51cGRhdGVkKgVwcm90bxoOCgIxMhIISm9obiBEb2U=
	// <nil>
	// true
	// people.updated proto 12 John Doe
}

// textEnvelope is a custom envelope: the body is "<topic>\n<text>". A route
// can ask Parse to upper-case the text with the per-route option
// "text.upper" in Options.Values.
type textEnvelope struct{}

func (textEnvelope) Name() string        { return "text" }
func (textEnvelope) ContentType() string { return "text/plain; charset=utf-8" }

func (textEnvelope) Build(b envelope.Build, data any, _ envelope.Options) ([]byte, error) {
	s, ok := data.(string)
	if !ok {
		return nil, &envelope.BuildError{Envelope: "text", Kind: envelope.ErrPayloadType, Detail: fmt.Sprintf("want a string, got %T", data)}
	}
	return []byte(b.Topic + "\n" + s), nil
}

func (textEnvelope) Parse(body []byte, dst any, opts envelope.Options) (envelope.Message, error) {
	topic, text, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return envelope.Message{}, &envelope.ParseError{Envelope: "text", Kind: envelope.ErrMalformed, Detail: "no topic line"}
	}
	msg := envelope.Message{Metadata: envelope.Metadata{Topic: string(topic), DataEncoding: "raw"}}
	p, ok := dst.(*string)
	if !ok || p == nil {
		return msg, &envelope.ParseError{Envelope: "text", Kind: envelope.ErrPayloadType, Detail: fmt.Sprintf("want *string, got %T", dst)}
	}
	if upper, _ := opts.Values["text.upper"].(bool); upper {
		text = bytes.ToUpper(text)
	}
	*p = string(text)
	return msg, nil
}

func Example_customEnvelope() {
	var env envelope.Envelope = textEnvelope{}
	body, _ := env.Build(envelope.Build{Topic: "greetings"}, "hello, world", envelope.Options{})

	var plain, loud string
	_, _ = env.Parse(body, &plain, envelope.Options{})
	msg, _ := env.Parse(body, &loud, envelope.Options{Values: map[string]any{"text.upper": true}})
	fmt.Println(msg.Metadata.Topic, "|", plain, "|", loud)

	_, err := env.Parse(body, new(int), envelope.Options{})
	fmt.Println(errors.Is(err, envelope.ErrPayloadType))
	// Output:
	// greetings | hello, world | HELLO, WORLD
	// true
}

func ExampleRawEnvelope() {
	body, _ := envelope.Raw.Build(envelope.Build{}, json.RawMessage(`{"any": "bytes"}`), envelope.Options{})
	var s string
	msg, _ := envelope.Raw.Parse(body, &s, envelope.Options{})
	fmt.Println(s, msg.Metadata.DataEncoding)
	// Output:
	// {"any": "bytes"} raw
}
