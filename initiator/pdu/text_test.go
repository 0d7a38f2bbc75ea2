package pdu

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseText(t *testing.T) {
	long := func(n int) string { return strings.Repeat("k", n) }
	tests := []struct {
		name string
		in   string
		want []KV
		err  string // substring of the error, "" for success
	}{
		{"empty", "", nil, ""},
		{"only padding", "\x00\x00\x00", nil, ""},
		{"one pair", "HeaderDigest=None\x00", []KV{{"HeaderDigest", "None"}}, ""},
		{"pairs in order", "a=1\x00b=2\x00a=3\x00", []KV{{"a", "1"}, {"b", "2"}, {"a", "3"}}, ""},
		{"last pair without NUL", "a=1\x00b=2", []KV{{"a", "1"}, {"b", "2"}}, ""},
		{"padding after the text", "a=1\x00\x00\x00\x00", []KV{{"a", "1"}}, ""},
		{"empty item in the middle", "a=1\x00\x00b=2\x00", []KV{{"a", "1"}, {"b", "2"}}, ""},
		{"empty value", "SendTargets=\x00", []KV{{"SendTargets", ""}}, ""},
		{"value containing =", "k=a=b\x00", []KV{{"k", "a=b"}}, ""},
		{"list value", "AuthMethod=CHAP,None\x00", []KV{{"AuthMethod", "CHAP,None"}}, ""},
		{"UTF-8", "TargetAlias=dépôt\x00", []KV{{"TargetAlias", "dépôt"}}, ""},
		{"key of 63 bytes", long(63) + "=v\x00", []KV{{long(63), "v"}}, ""},
		{"key of 64 bytes", long(64) + "=v\x00", nil, "key longer"},
		{"value of 8192 bytes", "k=" + long(8192), []KV{{"k", long(8192)}}, ""},
		{"value of 8193 bytes", "k=" + long(8193), nil, "value too long"},
		{"no =", "a=1\x00junk\x00", nil, "not key=value"},
		{"empty key", "=v\x00", nil, "not key=value"},
	}
	for _, tc := range tests {
		got, err := ParseText([]byte(tc.in))
		if tc.err != "" {
			var te *TextError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want a *TextError with %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ParseText = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestParseTextErrorOffset(t *testing.T) {
	_, err := ParseText([]byte("a=1\x00bb=2\x00junk"))
	var te *TextError
	if !errors.As(err, &te) || te.Offset != 9 {
		t.Fatalf("got %v, want offset 9", err)
	}
	if !strings.Contains(te.Error(), "byte 9") {
		t.Errorf("message %q", te.Error())
	}
	_, err = ParseText([]byte(strings.Repeat("x", 100)))
	if !errors.As(err, &te) || !strings.Contains(te.Reason, "...") {
		t.Errorf("a long bad item is not truncated in the message: %v", err)
	}
}

func TestEncodeText(t *testing.T) {
	kvs := []KV{{"InitiatorName", "iqn.2026-11.lab:init"}, {"SessionType", "Discovery"}, {"SendTargets", ""}}
	got := EncodeText([]byte("prefix"), kvs)
	want := "prefixInitiatorName=iqn.2026-11.lab:init\x00SessionType=Discovery\x00SendTargets=\x00"
	if string(got) != want {
		t.Errorf("EncodeText = %q", got)
	}
	back, err := ParseText(got[len("prefix"):])
	if err != nil || !reflect.DeepEqual(back, kvs) {
		t.Errorf("round trip %q, %v", back, err)
	}
	if got := EncodeText(nil, nil); len(got) != 0 {
		t.Errorf("EncodeText(nil, nil) = %q", got)
	}
}

func TestLookup(t *testing.T) {
	kvs := []KV{{"a", "1"}, {"b", "2"}, {"a", "3"}, {"empty", ""}}
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"a", "3", true}, // the last pair wins
		{"b", "2", true},
		{"empty", "", true},
		{"A", "", false}, // keys are case-sensitive
		{"c", "", false},
	}
	for _, tc := range tests {
		if got, ok := Lookup(kvs, tc.key); got != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%q) = %q, %v", tc.key, got, ok)
		}
	}
	if _, ok := Lookup(nil, "a"); ok {
		t.Error("Lookup in nil found a key")
	}
}
