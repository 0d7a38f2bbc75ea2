package initiator

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

const lab = "iqn.2026-11.lab:plain"

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want URL
	}{
		// libiscsi / qemu form.
		{"iscsi://127.0.0.1/" + lab + "/1", URL{Host: "127.0.0.1", Port: 3260, Target: lab, LUN: 1}},
		{"iscsi://127.0.0.1:3261/" + lab + "/0", URL{Host: "127.0.0.1", Port: 3261, Target: lab, LUN: 0}},
		{"iscsi://san.example.com:03260/" + lab + "/16383", URL{Host: "san.example.com", Port: 3260, Target: lab, LUN: 16383}},
		{"ISCSI://Host_1/" + lab + "/2", URL{Host: "Host_1", Port: 3260, Target: lab, LUN: 2}},
		// Without LUN, and bare portals.
		{"iscsi://host/" + lab, URL{Host: "host", Port: 3260, Target: lab, LUN: -1}},
		{"iscsi://host", URL{Host: "host", Port: 3260, LUN: -1}},
		{"iscsi://host:3262/", URL{Host: "host", Port: 3262, LUN: -1}},
		// IPv6.
		{"iscsi://[::1]:3260/" + lab + "/2", URL{Host: "::1", Port: 3260, Target: lab, LUN: 2}},
		{"iscsi://[2001:db8::7]", URL{Host: "2001:db8::7", Port: 3260, LUN: -1}},
		{"iscsi://[fe80::1%25eth0]:3261/" + lab, URL{Host: "fe80::1%eth0", Port: 3261, Target: lab, LUN: -1}},
		// User and secret: the first '%' separates, else the first ':'.
		{"iscsi://alice%secret-12345@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "secret-12345"}},
		{"iscsi://alice:secret-12345@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "secret-12345"}},
		{"iscsi://iqn.2026-11.lab:init%pa:ss@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "iqn.2026-11.lab:init", Secret: "pa:ss"}},
		{"iscsi://alice@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice"}},
		{"iscsi://alice%@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice"}},
		// The secret is percent-decoded (libiscsi does not: see the URL doc).
		{"iscsi://alice%p%40ss@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "p@ss"}},
		{"iscsi://alice%100%25sure@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "100%sure"}},
		{"iscsi://alice%%25%3f%2F%3A@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "%?/:"}},
		// The userinfo ends at the last '@'; '/' needs no escape before it.
		{"iscsi://alice%p@ss@host/" + lab + "/1", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "p@ss"}},
		{"iscsi://alice%a/b@[::1]/" + lab + "/1", URL{Host: "::1", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "a/b"}},
		// Percent-encoded target name.
		{"iscsi://host/iqn.2026-11.lab%3Aplain/3", URL{Host: "host", Port: 3260, Target: lab, LUN: 3}},
		// Query keys.
		{"iscsi://alice%s1@host/" + lab + "/1?target_user=tgt&target_password=t%26p%3D+%25",
			URL{Host: "host", Port: 3260, Target: lab, LUN: 1, User: "alice", Secret: "s1", MutualUser: "tgt", MutualSecret: "t&p=+%"}},
		{"iscsi://host/" + lab + "/1?header_digest=crc32c", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, HeaderDigest: "crc32c"}},
		{"iscsi://host/" + lab + "/1?header_digest=none&data_digest=crc32c&", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, HeaderDigest: "none", DataDigest: "crc32c"}},
		{"iscsi://host/" + lab + "/1?header_digest=prefer-crc32c", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, HeaderDigest: "prefer-crc32c"}},
		{"iscsi://host/" + lab + "/1?auth=sha-256", URL{Host: "host", Port: 3260, Target: lab, LUN: 1, CHAPAlgorithms: []CHAPAlgorithm{CHAPSHA256}}},
		{"iscsi://host?auth=sha3-256,md5", URL{Host: "host", Port: 3260, LUN: -1, CHAPAlgorithms: []CHAPAlgorithm{CHAPSHA3_256, CHAPMD5}}},
		{"iscsi://host/" + lab + "?target_user=", URL{Host: "host", Port: 3260, Target: lab, LUN: -1}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseURL(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Fatalf("got  %#v\nwant %#v", *got, tc.want)
			}
			// The unredacted form reads back as the same URL.
			again, err := ParseURL(got.format(false))
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("round trip through %q: %#v, %v", got.format(false), again, err)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://host/" + lab + "/1", `unsupported scheme "http"`},
		{"host/" + lab + "/1", "missing iscsi:// scheme"},
		{"iser://host/" + lab + "/1", "iSER"},
		{"iscsi://", "empty host"},
		{"iscsi:///" + lab + "/1", "empty host"},
		{"iscsi://:3260/" + lab + "/1", "empty host"},
		{"iscsi://host:0/" + lab + "/1", "bad port"},
		{"iscsi://host:65536/" + lab + "/1", "bad port"},
		{"iscsi://host:abc/" + lab + "/1", "bad port"},
		{"iscsi://host:+80/" + lab + "/1", "bad port"},
		{"iscsi://host:/" + lab + "/1", "empty port"},
		{"iscsi://[::1]:/" + lab + "/1", "empty port"},
		{"iscsi://::1/" + lab + "/1", "must be in brackets"},
		{"iscsi://[::1/" + lab + "/1", "missing ']'"},
		{"iscsi://[1.2.3.4]/" + lab, "bad IPv6"},
		{"iscsi://[::1]x/" + lab, "after IPv6"},
		{"iscsi://ho st/" + lab, "invalid character"},
		{"iscsi://host/" + lab + "/abc", `LUN "abc" is not a number`},
		{"iscsi://host/" + lab + "/-1", "not a number"},
		{"iscsi://host/" + lab + "/+1", "not a number"},
		{"iscsi://host/" + lab + "/1.5", "not a number"},
		{"iscsi://host/" + lab + "/16384", "out of range"},
		{"iscsi://host/" + lab + "/99999999999999999999999", "out of range"},
		{"iscsi://host/" + lab + "/1/2", "too many path elements"},
		{"iscsi://host//1", "empty target name"},
		{"iscsi://host/" + lab + "/", "empty LUN"},
		{"iscsi://host/iqn%zz/1", "target name"},
		{"iscsi://host/iqn%00/1", "control character"},
		{"iscsi://host/" + lab + "/1?foo=bar", `unknown query key "foo"`},
		{"iscsi://host/" + lab + "/1?initiator_name=iqn.x", `unknown query key "initiator_name"`},
		{"iscsi://host/" + lab + "/1?iser", "iSER"},
		{"iscsi://host/" + lab + "/1?header_digest=md5", "header_digest"},
		{"iscsi://host/" + lab + "/1?data_digest=", "data_digest"},
		{"iscsi://host/" + lab + "/1?target_user", "needs a value"},
		{"iscsi://host/" + lab + "/1?header_digest=none&header_digest=crc32c", "twice"},
		{"iscsi://host/" + lab + "/1?auth=blake2", "auth"},
		{"iscsi://host/" + lab + "/1?auth=", "auth"},
		{"iscsi://@host/" + lab + "/1", "empty user name"},
		{"iscsi://%topsecret@host/" + lab + "/1", "without a user name"},
		{"iscsi://ali\x01ce%x@host/" + lab + "/1", "control character"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := ParseURL(tc.in)
			if err == nil {
				t.Fatalf("accepted as %#v", u)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, "iscsi URL: ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line mentioning %q", msg, tc.want)
			}
		})
	}
}

// Mistyped URLs must not quote the secret in the error.
func TestParseURLErrorsHideSecrets(t *testing.T) {
	for _, in := range []string{
		"iscsi://alice%p%zzTOPSECRET@host/" + lab + "/1", // malformed escape
		"iscsi://alice%TOPSECRET%@host/" + lab + "/1",
		"iscsi://alice%TOP?SECRET@host/" + lab + "/1",   // unescaped '?'
		"iscsi://alice%TOP?SECRET=1@host/" + lab + "/1", // ... that looks like a query
		"iscsi://alice%TOPSECRET/" + lab + "/1",         // '@' forgotten
		"iscsi://alice:TOPSECRET/" + lab + "/1",         // '@' forgotten, ':' form
		"iscsi://host/" + lab + "/1?target_password=TOP%SECRET",
		"iscsi://host/" + lab + "/1?TOPSECRET@x",
	} {
		_, err := ParseURL(in)
		if err == nil {
			t.Errorf("%s accepted", in)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "TOP") {
			t.Errorf("%s: error quotes the secret: %v", in, err)
		}
	}
}

func TestURLStringRedacts(t *testing.T) {
	u, err := ParseURL("iscsi://alice%p%40ssSECRET@[::1]:3261/" + lab + "/1?target_user=tgt&target_password=tSECRET&header_digest=crc32c&auth=md5")
	if err != nil {
		t.Fatal(err)
	}
	want := "iscsi://alice%***@[::1]:3261/" + lab + "/1?target_user=tgt&target_password=***&header_digest=crc32c&auth=md5"
	if got := u.String(); got != want {
		t.Errorf("String() = %s\nwant       %s", got, want)
	}
	if got := u.Portal(); got != "[::1]:3261" {
		t.Errorf("Portal() = %s", got)
	}
	if c := u.Credentials(); c != (Credentials{User: "alice", Secret: "p@ssSECRET", MutualUser: "tgt", MutualSecret: "tSECRET"}) {
		t.Errorf("Credentials() = %#v", c)
	}
	for _, s := range logForms(t, u) {
		if strings.Contains(s, "SECRET") {
			t.Errorf("secret leaked: %s", s)
		}
	}
	for in, want := range map[string]string{
		"iscsi://host":                                "iscsi://host:3260",
		"iscsi://10.0.0.1:3262/" + lab:                "iscsi://10.0.0.1:3262/" + lab,
		"iscsi://alice@host/" + lab + "/0":            "iscsi://alice@host:3260/" + lab + "/0",
		"iscsi://[fe80::1%25eth0]/" + lab + "/0":      "iscsi://[fe80::1%25eth0]:3260/" + lab + "/0",
		"iscsi://a:b%@host/" + lab + "/0":             "iscsi://a:b%@host:3260/" + lab + "/0",
		"iscsi://host/" + lab + "/1?data_digest=none": "iscsi://host:3260/" + lab + "/1?data_digest=none",
	} {
		u, err := ParseURL(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := u.String(); got != want {
			t.Errorf("String(%s) = %s, want %s", in, got, want)
		}
	}
	if got := (&URL{Host: "fe80::1%eth0", Port: 3260}).Portal(); got != "[fe80::1%eth0]:3260" {
		t.Errorf("Portal() = %s", got)
	}
}

// logForms prints the URL the ways a log line might.
func logForms(t *testing.T, u *URL) []string {
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, u), fmt.Sprintf(verb, *u), fmt.Sprintf(verb, struct{ U URL }{*u}))
	}
	js, err := json.Marshal(struct {
		U URL
		P *URL
	}{*u, u})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("mount", "url", *u, "ptr", u)
	return append(outs, string(js), sb.String(), u.Credentials().String())
}
