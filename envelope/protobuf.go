package envelope

import (
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/envelope/internal/pb"
)

// Protobuf is the protobuf envelope, tomodachi's ProtobufBase: a
// ready-to-use [ProtobufEnvelope].
var Protobuf = ProtobufEnvelope{}

// ProtobufEnvelope is tomodachi's ProtobufBase envelope (protocol
// tomodachi-protobuf-base--1.0.0). The body is standard, padded base64 text
// of a serialized SNSSQSMessage{service, metadata, data}; data holds the
// serialized payload message. The zero value is ready to use and safe for
// concurrent use; [Protobuf] is one.
//
// It implements [Checker]: like tomodachi's validate(), which requires a
// proto_class, it accepts at route registration only destinations Parse can
// fill (see [ProtobufEnvelope.Check]).
type ProtobufEnvelope struct{}

var (
	_ Envelope = ProtobufEnvelope{}
	_ Checker  = ProtobufEnvelope{}
)

const protobufName = "protobuf"

// Name returns "protobuf".
func (ProtobufEnvelope) Name() string { return protobufName }

// ContentType returns "application/x-protobuf; encoding=base64": the body is
// base64 text of a protobuf message. tomodachi sets no content type, and
// Parse does not look at it.
func (ProtobufEnvelope) ContentType() string { return "application/x-protobuf; encoding=base64" }

var deterministic = proto.MarshalOptions{Deterministic: true}

// Build returns the body tomodachi's ProtobufBase.build_message would publish.
// data is a proto.Message, serialized deterministically, or a []byte holding
// an already serialized payload; anything else is ErrPayloadType. A
// serialized payload over [ProtobufCompressThreshold] bytes is
// zlib-compressed (data_encoding gzip_proto), else stored as is (proto).
// Strings that are not valid UTF-8 (which protobuf strings cannot hold) are
// written with U+FFFD in place of bad bytes. opts is not used.
func (ProtobufEnvelope) Build(b Build, data any, opts Options) ([]byte, error) {
	var payload []byte
	switch d := data.(type) {
	case proto.Message:
		var err error
		if payload, err = deterministic.Marshal(d); err != nil {
			return nil, buildErr(protobufName, ErrPayloadType, "cannot serialize "+typeName(data), err)
		}
	case []byte:
		payload = d
	default:
		return nil, buildErr(protobufName, ErrPayloadType, "data must be a proto.Message or []byte, got "+typeName(data), nil)
	}
	enc := EncodingProto
	if len(payload) > ProtobufCompressThreshold {
		payload = deflate(payload)
		enc = EncodingGzipProto
	}
	m := &pb.SNSSQSMessage{
		Service: &pb.Service{Name: validUTF8(b.Service.Name), Uuid: validUTF8(b.Service.UUID)},
		Metadata: &pb.Metadata{
			MessageUuid:     validUTF8(b.messageUUID()),
			ProtocolVersion: ProtobufProtocolVersion,
			Timestamp:       b.timestamp(),
			Topic:           validUTF8(b.Topic),
			DataEncoding:    enc,
		},
		Data: payload,
	}
	raw, err := deterministic.Marshal(m)
	if err != nil { // cannot happen: every string is valid UTF-8
		return nil, buildErr(protobufName, ErrPayloadType, "cannot serialize the envelope", err)
	}
	return base64.StdEncoding.AppendEncode(make([]byte, 0, base64.StdEncoding.EncodedLen(len(raw))), raw), nil
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Parse reads a ProtobufBase body and decodes its data into dst:
//   - a proto.Message (such as *pb.Person): the payload is unmarshalled into
//     it in place (proto.Unmarshal resets it first).
//   - a pointer to a message pointer (**pb.Person) or to a non-nil
//     proto.Message interface: the same, into the message it points to; a
//     nil *pb.Person gets a new message, set only on success.
//   - *[]byte: the serialized payload, decoded per data_encoding
//     (decompressed, base64-decoded) but not unmarshalled.
//   - *any: the data field exactly as carried, as a []byte (still
//     compressed for gzip_proto), as tomodachi gives data without a
//     proto_class; Metadata.DataEncoding says how to read it.
//
// Any other destination is ErrPayloadType. data_encoding may be proto,
// gzip_proto, raw, or the deprecated base64 and base64_gzip_proto; anything
// else (also a missing one) is ErrUnknownEncoding, whatever the destination.
// raw data is plain bytes: it fills *[]byte and *any but not a message
// (ErrPayloadType). A payload that does not unmarshal into the message type
// is ErrPayloadType: protobuf cannot tell a corrupt payload from one of
// another type; a corrupt envelope (bad base64, truncated or garbage
// SNSSQSMessage, corrupt compressed data) is ErrMalformed. An empty body is
// ErrMalformed.
//
// Limits: a body over opts.MaxBodySize is ErrTooLarge before decoding;
// compressed data inflating beyond opts.MaxDecompressedSize is ErrTooLarge.
//
// opts.Validator, when set, gets the message for message destinations, the
// []byte for *any and dst for *[]byte; its error is wrapped in ErrValidation.
//
// On error, the returned Message holds what was read before the failure.
// Parse never retains body; the bytes it stores in dst are its own.
func (ProtobufEnvelope) Parse(body []byte, dst any, opts Options) (Message, error) {
	if err := checkBody(protobufName, body, opts); err != nil {
		return Message{}, err
	}
	to, err := resolveProtoDest(dst)
	if err != nil {
		return Message{}, err
	}
	if len(body) == 0 {
		return Message{}, parseErr(protobufName, ErrMalformed, "empty body", nil)
	}
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
	n, err := base64.StdEncoding.Decode(raw, body)
	if err != nil {
		return Message{}, parseErr(protobufName, ErrMalformed, "body is not base64", err)
	}
	var m pb.SNSSQSMessage
	if err := proto.Unmarshal(raw[:n], &m); err != nil {
		return Message{}, parseErr(protobufName, ErrMalformed, "body is not an SNSSQSMessage", err)
	}
	msg := Message{
		Service: Service{Name: m.GetService().GetName(), UUID: m.GetService().GetUuid()},
		Metadata: Metadata{
			MessageUUID:     m.GetMetadata().GetMessageUuid(),
			ProtocolVersion: m.GetMetadata().GetProtocolVersion(),
			Timestamp:       m.GetMetadata().GetTimestamp(),
			Topic:           m.GetMetadata().GetTopic(),
			DataEncoding:    m.GetMetadata().GetDataEncoding(),
		},
	}
	payload, err := to.fill(msg.Metadata.DataEncoding, m.Data, opts)
	if err != nil {
		return msg, err
	}
	if opts.Validator != nil {
		if err := opts.Validator(payload); err != nil {
			return msg, parseErr(protobufName, ErrValidation, "", err)
		}
	}
	return msg, nil
}

// Check accepts the destinations Parse can fill: a proto.Message type (dst
// is *M, or **M for a route whose payload type is *M), *[]byte and *any
// (which get bytes, as tomodachi without a proto_class). Anything else is
// ErrPayloadType: a protobuf route needs a message type to decode into.
func (ProtobufEnvelope) Check(dst any, _ Options) error {
	_, err := resolveProtoDest(dst)
	return err
}

var protoMessageType = reflect.TypeFor[proto.Message]()

// protoDest is a resolved Parse destination: exactly one field is set.
type protoDest struct {
	anyp   *any
	bytesp *[]byte
	msg    proto.Message // fill in place
	alloc  reflect.Value // a settable nil *M: fill a new M, then set
}

func resolveProtoDest(dst any) (protoDest, error) {
	switch d := dst.(type) {
	case *any:
		if d != nil {
			return protoDest{anyp: d}, nil
		}
	case *[]byte:
		if d != nil {
			return protoDest{bytesp: d}, nil
		}
	case proto.Message:
		if d.ProtoReflect().IsValid() {
			return protoDest{msg: d}, nil
		}
	default:
		if to, ok := resolveIndirectProtoDest(dst); ok {
			return to, nil
		}
	}
	return protoDest{}, parseErr(protobufName, ErrPayloadType,
		"destination must be a proto.Message, a pointer to one, *[]byte or *any, got "+typeName(dst), nil)
}

// resolveIndirectProtoDest resolves a pointer to a proto.Message: a nil
// *M to allocate, or a valid message to fill in place.
func resolveIndirectProtoDest(dst any) (protoDest, bool) {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || !rv.Type().Elem().Implements(protoMessageType) {
		return protoDest{}, false
	}
	ev := rv.Elem()
	switch {
	case ev.Kind() == reflect.Pointer && ev.IsNil():
		return protoDest{alloc: ev}, true
	case ev.Kind() == reflect.Pointer || ev.Kind() == reflect.Interface && !ev.IsNil():
		if m := ev.Interface().(proto.Message); m.ProtoReflect().IsValid() {
			return protoDest{msg: m}, true
		}
	}
	return protoDest{}, false
}

// fill stores the data in the destination and returns what the validator
// gets.
func (to protoDest) fill(enc string, data []byte, opts Options) (any, error) {
	if !knownProtoEncoding(enc) {
		detail := "metadata.data_encoding " + quoteDetail(enc)
		if enc == "" {
			detail = "metadata.data_encoding is missing"
		}
		return nil, parseErr(protobufName, ErrUnknownEncoding, detail, nil)
	}
	if data == nil {
		data = []byte{}
	}
	if to.anyp != nil {
		*to.anyp = data
		return data, nil
	}
	payload, err := decodeProtoData(enc, data, opts.maxDecompressed())
	if err != nil {
		return nil, err
	}
	if to.bytesp != nil {
		*to.bytesp = payload
		return to.bytesp, nil
	}
	if enc == EncodingRaw {
		return nil, parseErr(protobufName, ErrPayloadType, "data_encoding raw carries bytes, not a protobuf message", nil)
	}
	m := to.msg
	if m == nil {
		m = reflect.New(to.alloc.Type().Elem()).Interface().(proto.Message)
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, parseErr(protobufName, ErrPayloadType, "data does not unmarshal into "+string(m.ProtoReflect().Descriptor().FullName()), err)
	}
	if to.alloc.IsValid() {
		to.alloc.Set(reflect.ValueOf(m))
	}
	return m, nil
}

func knownProtoEncoding(enc string) bool {
	switch enc {
	case EncodingProto, EncodingGzipProto, EncodingRaw, EncodingBase64, EncodingBase64GzipProto:
		return true
	}
	return false
}

// decodeProtoData returns the serialized payload carried in data.
func decodeProtoData(enc string, data []byte, limit int64) ([]byte, error) {
	if enc == EncodingBase64 || enc == EncodingBase64GzipProto {
		d := make([]byte, base64.StdEncoding.DecodedLen(len(data)))
		n, err := base64.StdEncoding.Decode(d, data)
		if err != nil {
			return nil, parseErr(protobufName, ErrMalformed, enc+" data is not base64", err)
		}
		data = d[:n]
	}
	if enc == EncodingGzipProto || enc == EncodingBase64GzipProto {
		out, err := inflate(data, limit)
		if errors.Is(err, errInflateTooLarge) {
			return nil, parseErr(protobufName, ErrTooLarge, "decompressed data exceeds the limit of "+itoa(limit)+" bytes", nil)
		}
		if err != nil {
			return nil, parseErr(protobufName, ErrMalformed, enc+" data is not zlib data", err)
		}
		return out, nil
	}
	return data, nil
}
