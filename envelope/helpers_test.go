package envelope

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/envelope/internal/pb"
)

var sentinels = []error{ErrMalformed, ErrUnknownEncoding, ErrTooLarge, ErrPayloadType, ErrValidation}

// sentinelOf returns the one sentinel err matches, or nil when it matches
// none or several.
func sentinelOf(err error) error {
	var found error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			if found != nil {
				return nil
			}
			found = s
		}
	}
	return found
}

// wantKind fails unless err is a *ParseError (or *BuildError when build)
// matching exactly the sentinel want.
func wantKind(t testing.TB, err, want error, build bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	if got := sentinelOf(err); got != want { //nolint:errorlint // sentinels compared as values
		t.Fatalf("error %q matches %v, want exactly %v", err, got, want)
	}
	var pe *ParseError
	var be *BuildError
	if build && !errors.As(err, &be) || !build && !errors.As(err, &pe) {
		t.Fatalf("error %q (%T) is not the expected *ParseError/*BuildError", err, err)
	}
}

func zlibOf(b []byte) []byte {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	_, _ = zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// zlibBomb is a valid zlib stream of 1 GiB of zeros (about 1 MB).
var zlibBomb = sync.OnceValue(func() []byte { return zlibZeros(1024) })

// zlibZeros returns a valid zlib stream of n MiB of zeros, cheaply: one
// flushed segment of 1 MiB of zeros compresses to the same bytes each time
// once the window is full of zeros, so the stream repeats it.
func zlibZeros(n int) []byte {
	const seg = 1 << 20
	var out bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&out, zlib.BestCompression)
	zeros := make([]byte, seg)
	var segs [3][]byte
	for i := range segs {
		_, _ = zw.Write(zeros)
		zw.Flush()
		segs[i] = bytes.Clone(out.Bytes())
		out.Reset()
	}
	if n < 2 || !bytes.Equal(segs[1], segs[2]) {
		panic("zlib segments differ: cannot build the bomb this way")
	}
	bomb := append([]byte{}, segs[0]...)
	for i := 1; i < n; i++ {
		bomb = append(bomb, segs[1]...)
	}
	bomb = append(bomb, 0x03, 0x00) // final empty fixed-Huffman block
	// Adler-32 of n*seg zeros: A = 1, B = count mod 65521.
	return binary.BigEndian.AppendUint32(bomb, uint32((n*seg)%65521)<<16|1)
}

// pbBody builds a ProtobufBase body with the given encoding and data.
func pbBody(enc string, data []byte) []byte {
	raw, _ := proto.Marshal(&pb.SNSSQSMessage{
		Service:  &pb.Service{Name: "s", Uuid: "u"},
		Metadata: &pb.Metadata{MessageUuid: "u.1", ProtocolVersion: ProtobufProtocolVersion, Timestamp: 1, Topic: "t", DataEncoding: enc},
		Data:     data,
	})
	return []byte(base64.StdEncoding.EncodeToString(raw))
}

// jsonBody builds a JsonBase body with the given encoding and data text.
func jsonBody(enc, data string) []byte {
	return []byte(`{"service": {"name": "s", "uuid": "u"}, "metadata": {"message_uuid": "u.1", "protocol_version": "` +
		JSONProtocolVersion + `", "timestamp": 1.5, "topic": "t", "data_encoding": "` + enc + `"}, "data": ` + data + `}`)
}
