package pdu

import (
	"bytes"
	"fmt"
)

// KV is one key=value pair of iSCSI text (RFC 7143 §6.1). Order matters in
// negotiation, so text is a slice of pairs rather than a map.
type KV struct {
	Key   string
	Value string
}

// Limits from RFC 7143 §6.1: keys up to 63 bytes; values up to 255 bytes except
// binary values (CHAP challenges and responses, up to 1024 bytes encoded as up to
// 2048 hex digits plus "0x").
const (
	maxKeyLen   = 63
	maxValueLen = 8192
)

// TextError reports malformed key=value text.
type TextError struct {
	Offset int
	Reason string
}

func (e *TextError) Error() string {
	return fmt.Sprintf("iscsi text at byte %d: %s", e.Offset, e.Reason)
}

// ParseText decodes a sequence of NUL-terminated key=value pairs. A trailing
// pair without its NUL is accepted (some targets omit it on the last pair) and
// trailing NUL padding is ignored.
func ParseText(data []byte) ([]KV, error) {
	var kvs []KV
	off := 0
	for off < len(data) {
		end := bytes.IndexByte(data[off:], 0)
		var item []byte
		if end < 0 {
			item = data[off:]
			end = len(item)
		} else {
			item = data[off : off+end]
		}
		if len(item) == 0 { // padding or an empty item
			off += end + 1
			continue
		}
		eq := bytes.IndexByte(item, '=')
		if eq <= 0 {
			return nil, &TextError{Offset: off, Reason: fmt.Sprintf("item %q is not key=value", truncate(item))}
		}
		if eq > maxKeyLen {
			return nil, &TextError{Offset: off, Reason: "key longer than 63 bytes"}
		}
		if len(item)-eq-1 > maxValueLen {
			return nil, &TextError{Offset: off, Reason: "value too long"}
		}
		kvs = append(kvs, KV{Key: string(item[:eq]), Value: string(item[eq+1:])})
		off += end + 1
	}
	return kvs, nil
}

// EncodeText appends key=value\0 for every pair to dst.
func EncodeText(dst []byte, kvs []KV) []byte {
	for _, kv := range kvs {
		dst = append(dst, kv.Key...)
		dst = append(dst, '=')
		dst = append(dst, kv.Value...)
		dst = append(dst, 0)
	}
	return dst
}

// Lookup returns the value of the last pair with the key.
func Lookup(kvs []KV, key string) (string, bool) {
	for i := len(kvs) - 1; i >= 0; i-- {
		if kvs[i].Key == key {
			return kvs[i].Value, true
		}
	}
	return "", false
}

func truncate(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "..."
	}
	return string(b)
}
