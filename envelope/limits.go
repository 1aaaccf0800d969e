package envelope

import (
	"bytes"
	"compress/zlib"
	"errors"
	"io"
	"sync"
)

// limitOf resolves an Options limit: zero means def, negative means no limit
// (returned as -1).
func limitOf(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return -1
	}
	return v
}

// maxBody is the body-size limit in force, -1 for none.
func (o Options) maxBody() int64 { return limitOf(o.MaxBodySize, DefaultMaxBodySize) }

// maxDecompressed is the decompressed-size limit in force, -1 for none.
func (o Options) maxDecompressed() int64 {
	return limitOf(o.MaxDecompressedSize, DefaultMaxDecompressedSize)
}

// exceeds reports whether n bytes are over limit (-1: never).
func exceeds(n int, limit int64) bool { return limit >= 0 && int64(n) > limit }

// checkBody returns a *ParseError (ErrTooLarge) when body is over the body
// limit in opts. It looks at len(body) only.
func checkBody(env string, body []byte, opts Options) error {
	if limit := opts.maxBody(); exceeds(len(body), limit) {
		return &ParseError{Envelope: env, Kind: ErrTooLarge, Detail: sizeDetail("body", len(body), limit)}
	}
	return nil
}

func sizeDetail(what string, n int, limit int64) string {
	return what + " of " + itoa(int64(n)) + " bytes exceeds the limit of " + itoa(limit) + " bytes"
}

// errInflateTooLarge is inflate's sentinel for "over the limit"; any other
// inflate error means corrupt data.
var errInflateTooLarge = errors.New("decompressed data exceeds the limit")

// inflate decompresses a zlib stream (RFC 1950: what Python's zlib.compress
// writes) and returns the whole output. It never holds more than limit+1
// output bytes: the buffer grows by doubling, capped at limit+1, and reading
// stops as soon as the output would exceed limit (errInflateTooLarge), so a
// decompression bomb costs at most about 2×limit bytes of allocation in
// total. limit < 0 means no limit. Any other error means the stream is
// corrupt or truncated. Data after the end of the zlib stream is ignored, as
// Python's zlib.decompress ignores it.
func inflate(src []byte, limit int64) ([]byte, error) {
	zr, err := getZlibReader(src)
	if err != nil {
		return nil, err
	}
	defer zlibReaders.Put(zr)

	size := int64(len(src)) * 4
	if size < 512 {
		size = 512
	}
	if limit >= 0 && size > limit+1 {
		size = limit + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if limit >= 0 && int64(len(buf)) > limit {
				return nil, errInflateTooLarge
			}
			next := int64(cap(buf)) * 2
			if limit >= 0 && next > limit+1 {
				next = limit + 1
			}
			grown := make([]byte, len(buf), next)
			copy(grown, buf)
			buf = grown
		}
		n, err := zr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if limit >= 0 && int64(len(buf)) > limit {
				return nil, errInflateTooLarge
			}
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// deflate compresses src as a zlib stream at zlib's default level (6), as
// Python's zlib.compress does. The bytes differ from CPython's zlib; any
// inflater reads both.
// Readers are pooled like writers; a reader is only put back after use.
var zlibReaders sync.Pool

func getZlibReader(src []byte) (io.ReadCloser, error) {
	if zr, ok := zlibReaders.Get().(io.ReadCloser); ok {
		if err := zr.(zlib.Resetter).Reset(bytes.NewReader(src), nil); err != nil {
			return nil, err
		}
		return zr, nil
	}
	return zlib.NewReader(bytes.NewReader(src))
}

// Writers are pooled: a zlib writer allocates about a megabyte of state.
func deflate(src []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(src)/2 + 64)
	zw := zlibWriters.Get().(*zlib.Writer)
	zw.Reset(&out)
	_, _ = zw.Write(src) // bytes.Buffer writes cannot fail
	_ = zw.Close()
	zlibWriters.Put(zw)
	return out.Bytes()
}

var zlibWriters = sync.Pool{New: func() any {
	zw, _ := zlib.NewWriterLevel(nil, zlib.DefaultCompression) // level is valid: no error
	return zw
}}
