package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/hato-go/hato/envelope"
)

// Envelope names accepted by --envelope.
const (
	envAuto     = "auto"
	envJSON     = "json"
	envProtobuf = "protobuf"
	envRaw      = "raw"
)

// protoFlags name a protobuf message type in a descriptor set file.
type protoFlags struct {
	protoType     string
	descriptorSet string
}

func (p *protoFlags) register(fs *flag.FlagSet, use string) {
	fs.StringVar(&p.protoType, "proto-type", "", "full name of the protobuf message type (e.g. pkg.Person), found in --descriptor-set; "+use)
	fs.StringVar(&p.descriptorSet, "descriptor-set", "", "FileDescriptorSet file (protoc --include_imports --descriptor_set_out=FILE) holding --proto-type")
}

// messageType resolves the flags; nil when neither is given.
func (p *protoFlags) messageType() (protoreflect.MessageType, error) {
	if p.protoType == "" && p.descriptorSet == "" {
		return nil, nil
	}
	if p.protoType == "" || p.descriptorSet == "" {
		return nil, usagef("--proto-type and --descriptor-set go together")
	}
	return loadMessageType(p.descriptorSet, p.protoType)
}

// loadMessageType finds the message type name in a FileDescriptorSet file.
func loadMessageType(file, name string) (protoreflect.MessageType, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, usagef("descriptor set: %v", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, usagef("descriptor set %s: %v", file, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, usagef("descriptor set %s (built with --include_imports?): %v", file, err)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, usagef("--proto-type %s: not in %s", name, file)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, usagef("--proto-type %s: not a message type", name)
	}
	return dynamicpb.NewMessageType(md), nil
}

// decoder turns bodies into records.
type decoder struct {
	envelope string                   // auto, json, protobuf or raw
	msgType  protoreflect.MessageType // decodes protobuf data; nil shows it as base64
}

func newDecoder(name string, p *protoFlags) (*decoder, error) {
	switch name {
	case envAuto, envJSON, envProtobuf, envRaw:
	default:
		return nil, usagef("--envelope %q: want auto, json, protobuf or raw", name)
	}
	mt, err := p.messageType()
	if err != nil {
		return nil, err
	}
	return &decoder{envelope: name, msgType: mt}, nil
}

// decoded is what the decoder made of a body.
type decoded struct {
	Envelope    string `json:"envelope"`
	Service     string `json:"service,omitempty"`
	ServiceUUID string `json:"service_uuid,omitempty"`
	MessageUUID string `json:"message_uuid,omitempty"`
	Timestamp   string `json:"timestamp,omitempty"`
	Topic       string `json:"topic,omitempty"`
	// Data is the payload as JSON: the JSON envelope's data, a decoded
	// protobuf message, or a string (DataFormat says which: json, base64
	// or text).
	Data       json.RawMessage `json:"data,omitempty"`
	DataFormat string          `json:"data_format,omitempty"`
	// Error says why no envelope decoded the body; Data is then the body
	// as it is.
	Error string `json:"error,omitempty"`
}

// decode decodes body with the configured envelope; "auto" tries JSON,
// then protobuf, then shows the body as it is with the error of the
// envelope it looked like: JSON's for text, protobuf's for binary.
func (d *decoder) decode(body []byte) decoded {
	switch d.envelope {
	case envJSON:
		r, err := decodeJSON(body)
		return orRaw(r, err, body)
	case envProtobuf:
		r, err := d.decodeProto(body)
		return orRaw(r, err, body)
	case envRaw:
		return rawData(envRaw, body)
	}
	j, jerr := decodeJSON(body)
	if jerr == nil {
		return j
	}
	p, perr := d.decodeProto(body)
	if perr == nil {
		return p
	}
	// Text (a raw body, broken JSON) is more likely meant as JSON than as
	// protobuf, whose error would only puzzle.
	if t := bytes.TrimSpace(body); (len(t) > 0 && t[0] == '{') || printable(body) {
		return orRaw(j, jerr, body)
	}
	return orRaw(p, perr, body)
}

// orRaw is r, or the body as it is with err when err is set.
func orRaw(r decoded, err error, body []byte) decoded {
	if err == nil {
		return r
	}
	out := rawData("none", body)
	out.Error = err.Error()
	return out
}

func rawData(name string, body []byte) decoded {
	s, format := showBody(body)
	data, _ := json.Marshal(s)
	return decoded{Envelope: name, Data: data, DataFormat: format}
}

func withMessage(name string, m envelope.Message) decoded {
	r := decoded{
		Envelope:    name,
		Service:     m.Service.Name,
		ServiceUUID: m.Service.UUID,
		MessageUUID: m.Metadata.MessageUUID,
		Topic:       m.Metadata.Topic,
	}
	if m.Metadata.Timestamp != 0 {
		r.Timestamp = formatTime(m.Metadata.Time())
	}
	return r
}

func decodeJSON(body []byte) (decoded, error) {
	var data json.RawMessage
	m, err := envelope.JSON.Parse(body, &data, envelope.Options{})
	if err != nil {
		return decoded{}, err
	}
	r := withMessage(envJSON, m)
	var buf bytes.Buffer
	if json.Compact(&buf, data) == nil {
		data = buf.Bytes()
	}
	r.Data, r.DataFormat = data, "json"
	return r, nil
}

func (d *decoder) decodeProto(body []byte) (decoded, error) {
	var payload []byte
	m, err := envelope.Protobuf.Parse(body, &payload, envelope.Options{})
	if err != nil {
		return decoded{}, err
	}
	r := withMessage(envProtobuf, m)
	b64, _ := json.Marshal(base64.StdEncoding.EncodeToString(payload))
	r.Data, r.DataFormat = b64, "base64"
	if d.msgType == nil {
		return r, nil
	}
	msg := d.msgType.New().Interface()
	if err := proto.Unmarshal(payload, msg); err != nil {
		r.Error = fmt.Sprintf("data is not a %s: %v", d.msgType.Descriptor().FullName(), err)
		return r, nil
	}
	if js, err := protojson.Marshal(msg); err == nil {
		r.Data, r.DataFormat = compactJSON(js), "json"
	}
	return r, nil
}

// compactJSON removes protojson's deliberately unstable spacing.
func compactJSON(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// text renders d for a terminal: sender, message uuid and timestamp, then
// the data (or the body and the decode error).
func (d decoded) text() string {
	var b strings.Builder
	if d.Envelope == "none" {
		fmt.Fprintf(&b, "(undecodable: %s) %s", safe(d.Error), dataText(d))
		return b.String()
	}
	if d.Service != "" || d.MessageUUID != "" {
		fmt.Fprintf(&b, "%s %s %s ", safe(orDash(d.Service)), safe(orDash(d.MessageUUID)), safe(orDash(d.Timestamp)))
	}
	b.WriteString(dataText(d))
	if d.Error != "" {
		fmt.Fprintf(&b, " (%s)", safe(d.Error))
	}
	return b.String()
}

// dataText is the data as text: JSON as it is, strings unquoted.
func dataText(d decoded) string {
	if d.DataFormat == "json" {
		return string(d.Data)
	}
	var s string
	if json.Unmarshal(d.Data, &s) != nil {
		return string(d.Data)
	}
	if d.DataFormat == "base64" {
		return "base64:" + s
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is how long ago an RFC 3339 time was; ok is false if s does not
// parse.
func age(s string, now time.Time) (time.Duration, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, false
	}
	return now.Sub(t), true
}
