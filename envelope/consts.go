package envelope

// Protocol versions the shipped envelopes write in metadata.protocol_version.
// Parse does not require them: tomodachi does not check them either.
const (
	JSONProtocolVersion     = "tomodachi-json-base--1.0.0"
	ProtobufProtocolVersion = "tomodachi-protobuf-base--1.0.0"
)

// Values of metadata.data_encoding.
const (
	// EncodingRaw: data is stored as is (JSON: the JSON value; protobuf: the
	// bytes, never decoded into a message).
	EncodingRaw = "raw"
	// EncodingBase64GzipJSON: JSON data is a string holding base64 of the
	// zlib-compressed JSON text (zlib, despite the name).
	EncodingBase64GzipJSON = "base64_gzip_json"
	// EncodingProto: protobuf data is the serialized payload message.
	EncodingProto = "proto"
	// EncodingGzipProto: protobuf data is the zlib-compressed serialized
	// payload (zlib, despite the name).
	EncodingGzipProto = "gzip_proto"
	// EncodingBase64 (deprecated upstream, read only): protobuf data is
	// base64 of the serialized payload.
	EncodingBase64 = "base64"
	// EncodingBase64GzipProto (deprecated upstream, read only): protobuf data
	// is base64 of the zlib-compressed serialized payload.
	EncodingBase64GzipProto = "base64_gzip_proto"
)

// Compression thresholds, as tomodachi applies them on Build.
const (
	// JSONCompressThreshold: JSON data whose Python-style JSON text has at
	// least this many characters is compressed (base64_gzip_json).
	JSONCompressThreshold = 60000
	// ProtobufCompressThreshold: a serialized protobuf payload of more than
	// this many bytes is compressed (gzip_proto).
	ProtobufCompressThreshold = 60000
)
