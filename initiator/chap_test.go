package initiator

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// The expected responses below were computed outside Go, e.g.
//
//	printf '\x2aiscsifs-secret-1\xf0\xe1...\x0f' | openssl dgst -md5
//	python3 -c 'import hashlib; print(hashlib.sha3_256(b"\x2a"+...).hexdigest())'
const (
	vecSecret    = "iscsifs-secret-1"
	vecChallenge = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
	vecID        = "42" // 0x2a
)

var chapVectors = []struct {
	alg  CHAPAlgorithm
	want string
}{
	{CHAPMD5, "3bf194857eceeb19d14116c2b61f411a"},
	{CHAPSHA1, "a43236a212112c10d4ff92e4efcb1d93f6912210"},
	{CHAPSHA256, "d0bdfb8742f7bde1c1eedd14e8a434c4b803d1bbbb145b07ba4d7fae4976a0d8"},
	{CHAPSHA3_256, "7b7f20f131215c37e16159bc2828cc40462435dd7313a8ede35d0ad56f443dba"},
}

func kvs(pairs ...string) []pdu.KV {
	var out []pdu.KV
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, pdu.KV{Key: pairs[i], Value: pairs[i+1]})
	}
	return out
}

// testExchange returns an exchange with its own reflection log, so tests do
// not see each other's challenges.
func testExchange(creds Credentials, algs []CHAPAlgorithm, rnd []byte) *chapExchange {
	c := newCHAPExchange(creds, algs, bytes.NewReader(rnd))
	c.sent = newChallengeLog(8)
	return c
}

func mustLookup(t *testing.T, kv []pdu.KV, key string) string {
	t.Helper()
	v, ok := pdu.Lookup(kv, key)
	if !ok {
		t.Fatalf("no %s in %v", key, kv)
	}
	return v
}

func wantAuthError(t *testing.T, err error, substr string) {
	t.Helper()
	var ae *AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *AuthError", err, err)
	}
	if !strings.Contains(ae.Reason, substr) {
		t.Fatalf("reason %q does not mention %q", ae.Reason, substr)
	}
	if !strings.HasPrefix(err.Error(), "authentication failed: ") {
		t.Fatalf("Error() = %q", err.Error())
	}
}

func TestCHAPVectors(t *testing.T) {
	all := []CHAPAlgorithm{CHAPSHA3_256, CHAPSHA256, CHAPSHA1, CHAPMD5}
	for _, v := range chapVectors {
		t.Run(v.alg.String(), func(t *testing.T) {
			c := testExchange(Credentials{User: "alice", Secret: vecSecret}, all, nil)
			out, err := c.respond(kvs("CHAP_A", fmt.Sprint(int(v.alg)), "CHAP_I", vecID, "CHAP_C", "0x"+vecChallenge))
			if err != nil {
				t.Fatal(err)
			}
			if got := mustLookup(t, out, "CHAP_R"); got != "0x"+v.want {
				t.Errorf("CHAP_R = %s, want 0x%s", got, v.want)
			}
			if got := mustLookup(t, out, "CHAP_N"); got != "alice" {
				t.Errorf("CHAP_N = %q", got)
			}
			if len(out) != 2 {
				t.Errorf("one-way CHAP sent %v", out)
			}
			if c.algorithm() != v.alg {
				t.Errorf("algorithm() = %v", c.algorithm())
			}
		})
	}
	// Identifier 0, one-byte challenge, three-byte secret.
	c := testExchange(Credentials{User: "u", Secret: "abc"}, nil, nil)
	out, err := c.respond(kvs("CHAP_A", "5", "CHAP_I", "0", "CHAP_C", "0x00"))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustLookup(t, out, "CHAP_R"); got != "0xd6f5f95f45da69cbb0d5dbafe4d3f672" {
		t.Errorf("CHAP_R = %s", got)
	}
}

func TestCHAPChallengeEncodings(t *testing.T) {
	raw, _ := hex.DecodeString(vecChallenge)
	b64 := base64.StdEncoding.EncodeToString(raw)
	for _, enc := range []string{
		"0x" + vecChallenge,
		"0x" + strings.ToUpper(vecChallenge),
		"0X" + strings.ToUpper(vecChallenge), // istgt style
		"0b" + b64,
		"0B" + b64,
		"0b" + strings.TrimRight(b64, "="), // unpadded base64
	} {
		c := testExchange(Credentials{User: "alice", Secret: vecSecret}, nil, nil)
		out, err := c.respond(kvs("CHAP_A", "5", "CHAP_I", "0x2a", "CHAP_C", enc))
		if err != nil {
			t.Errorf("%s: %v", enc, err)
			continue
		}
		if got := mustLookup(t, out, "CHAP_R"); got != "0x"+chapVectors[0].want {
			t.Errorf("%s: CHAP_R = %s", enc, got)
		}
	}
	// An odd number of hex digits implies a leading zero (RFC 7143 §6.1).
	b, err := decodeBinary("0xabc", 10)
	if err != nil || !bytes.Equal(b, []byte{0x0a, 0xbc}) {
		t.Errorf("0xabc = %x, %v", b, err)
	}
}

func TestCHAPChallengeLength(t *testing.T) {
	creds := Credentials{User: "alice", Secret: vecSecret}
	max := "0x" + strings.Repeat("AB", 1024) // istgt sends exactly 1024 bytes
	if _, err := testExchange(creds, nil, nil).respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", max)); err != nil {
		t.Errorf("1024-byte challenge: %v", err)
	}
	b64 := "0b" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 1024))
	if _, err := testExchange(creds, nil, nil).respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", b64)); err != nil {
		t.Errorf("1024-byte base64 challenge: %v", err)
	}
	for name, bad := range map[string]string{
		"1025 hex":    "0x" + strings.Repeat("ab", 1025),
		"1025 base64": "0b" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 1025)),
		"empty":       "0x",
		"no prefix":   "abcdef",
		"bad hex":     "0xzz",
		"bad base64":  "0b!!!!",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := testExchange(creds, nil, nil).respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", bad))
			wantAuthError(t, err, "CHAP_C")
		})
	}
}

func TestCHAPRespondErrors(t *testing.T) {
	creds := Credentials{User: "alice", Secret: vecSecret}
	offered := []CHAPAlgorithm{CHAPSHA256, CHAPMD5}
	for _, tc := range []struct {
		name   string
		target []pdu.KV
		want   string
	}{
		{"algorithm not offered", kvs("CHAP_A", "6", "CHAP_I", "1", "CHAP_C", "0x01"), "not among the offered 7,5"},
		{"unknown algorithm", kvs("CHAP_A", "99", "CHAP_I", "1", "CHAP_C", "0x01"), "not among"},
		{"reject", kvs("CHAP_A", "Reject"), "CHAP_A=Reject"},
		{"list answer", kvs("CHAP_A", "7,5", "CHAP_I", "1", "CHAP_C", "0x01"), "CHAP_A=7,5"},
		{"no CHAP_A", kvs("CHAP_I", "1", "CHAP_C", "0x01"), "no CHAP_A"},
		{"no CHAP_I", kvs("CHAP_A", "5", "CHAP_C", "0x01"), "no CHAP_I"},
		{"CHAP_I too big", kvs("CHAP_A", "5", "CHAP_I", "256", "CHAP_C", "0x01"), "0-255"},
		{"CHAP_I negative", kvs("CHAP_A", "5", "CHAP_I", "-1", "CHAP_C", "0x01"), "CHAP_I"},
		{"CHAP_I text", kvs("CHAP_A", "5", "CHAP_I", "one", "CHAP_C", "0x01"), "CHAP_I"},
		{"no CHAP_C", kvs("CHAP_A", "5", "CHAP_I", "1"), "no CHAP_C"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testExchange(creds, offered, nil).respond(tc.target)
			wantAuthError(t, err, tc.want)
		})
	}
	_, err := testExchange(Credentials{}, nil, nil).respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", "0x01"))
	wantAuthError(t, err, "no credentials")
	_, err = testExchange(Credentials{User: "a", Secret: "same-secret-123", MutualUser: "t", MutualSecret: "same-secret-123"}, nil, nil).
		respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", "0x01"))
	wantAuthError(t, err, "must differ")

	c := testExchange(creds, nil, nil)
	target := kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", "0x0102")
	if _, err := c.respond(target); err != nil {
		t.Fatal(err)
	}
	_, err = c.respond(target)
	wantAuthError(t, err, "second")
}

func TestCHAPOffer(t *testing.T) {
	if got := newCHAPExchange(Credentials{}, nil, nil).offer(); len(got) != 1 || got[0] != (pdu.KV{Key: "CHAP_A", Value: "5"}) {
		t.Errorf("default offer = %v", got)
	}
	got := newCHAPExchange(Credentials{}, []CHAPAlgorithm{CHAPSHA3_256, CHAPSHA256, CHAPSHA1, CHAPMD5}, nil).offer()
	if got[0].Value != "8,7,6,5" {
		t.Errorf("offer = %v", got)
	}
}

func TestCHAPMutual(t *testing.T) {
	creds := Credentials{User: "alice", Secret: vecSecret, MutualUser: "tgt", MutualSecret: "target-secret-22"}
	// The random source gives our identifier 7, then the challenge.
	for _, tc := range []struct {
		alg  CHAPAlgorithm
		n    int // challenge length we send
		want string
	}{
		{CHAPMD5, 16, "86f55e1225a1ec4d354a628ede5ca83a"},
		{CHAPSHA256, 32, "842c0541318cddf7e384c78ac044f781049a791e046a80817ee30bcf03ff5ba5"},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			rnd := []byte{7}
			for b := byte(0x10); b < 0x30; b++ {
				rnd = append(rnd, b)
			}
			c := testExchange(creds, []CHAPAlgorithm{CHAPSHA256, CHAPMD5}, rnd)
			out, err := c.respond(kvs("CHAP_A", fmt.Sprint(int(tc.alg)), "CHAP_I", vecID, "CHAP_C", "0x"+vecChallenge))
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 4 || out[2].Key != "CHAP_I" || out[3].Key != "CHAP_C" {
				t.Fatalf("mutual answer %v", out)
			}
			if out[2].Value != "7" {
				t.Errorf("our CHAP_I = %s", out[2].Value)
			}
			ours, err := decodeBinary(out[3].Value, 1024)
			if err != nil || len(ours) != tc.n || ours[0] != 0x10 {
				t.Fatalf("our CHAP_C = %s (%v)", out[3].Value, err)
			}
			if !c.sent.contains(ours) {
				t.Error("our challenge was not remembered")
			}
			// Wrong name, wrong length, wrong value, then the right answer.
			wantAuthError(t, c.verify(kvs("CHAP_N", "mallory", "CHAP_R", "0x"+tc.want)), `expected "tgt"`)
			wantAuthError(t, c.verify(kvs("CHAP_N", "tgt", "CHAP_R", "0x"+tc.want+"00")), "bytes")
			wantAuthError(t, c.verify(kvs("CHAP_N", "tgt", "CHAP_R", "0x"+tc.want[:len(tc.want)-2])), "bytes")
			bad := []byte(tc.want)
			bad[0] ^= 1
			wantAuthError(t, c.verify(kvs("CHAP_N", "tgt", "CHAP_R", "0x"+string(bad))), "wrong mutual")
			wantAuthError(t, c.verify(kvs("CHAP_N", "tgt")), "did not answer")
			wantAuthError(t, c.verify(nil), "did not answer")
			if err := c.verify(kvs("CHAP_N", "tgt", "CHAP_R", "0x"+strings.ToUpper(tc.want))); err != nil {
				t.Fatalf("genuine response refused: %v", err)
			}
			raw, _ := hex.DecodeString(tc.want)
			c.verified = false
			if err := c.verify(kvs("CHAP_N", "tgt", "CHAP_R", "0b"+base64.StdEncoding.EncodeToString(raw))); err != nil {
				t.Fatalf("base64 response refused: %v", err)
			}
			wantAuthError(t, c.verify(kvs("CHAP_N", "tgt", "CHAP_R", "0x"+tc.want)), "twice")
		})
	}
}

func TestCHAPVerifyOneWay(t *testing.T) {
	c := testExchange(Credentials{User: "alice", Secret: vecSecret}, nil, nil)
	if err := c.verify(nil); err != nil {
		t.Errorf("one-way verify: %v", err)
	}
	m := testExchange(Credentials{User: "alice", Secret: vecSecret, MutualUser: "t", MutualSecret: "target-secret-22"}, nil, nil)
	wantAuthError(t, m.verify(kvs("CHAP_N", "t", "CHAP_R", "0x00")), "before")
}

func TestCHAPReflection(t *testing.T) {
	creds := Credentials{User: "alice", Secret: vecSecret, MutualUser: "tgt", MutualSecret: "target-secret-22"}
	rnd := bytes.Repeat([]byte{0x55}, 64)
	log := newChallengeLog(4)

	// The target sends back the challenge we issued on another connection.
	first := newCHAPExchange(creds, nil, bytes.NewReader(rnd))
	first.sent = log
	out, err := first.respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", "0x0102030405"))
	if err != nil {
		t.Fatal(err)
	}
	ours := mustLookup(t, out, "CHAP_C")
	second := newCHAPExchange(creds, nil, nil)
	second.sent = log
	_, err = second.respond(kvs("CHAP_A", "5", "CHAP_I", "9", "CHAP_C", strings.ToUpper(ours)))
	wantAuthError(t, err, "reflection")

	// The target answers our challenge with our own secret: the response it
	// got from us on a parallel connection where it posed our challenge.
	ourID := byte(0x55)
	ourChal, _ := decodeBinary(ours, 1024)
	reflected := chapResponse(CHAPMD5, ourID, vecSecret, ourChal)
	wantAuthError(t, first.verify(kvs("CHAP_N", "tgt", "CHAP_R", encodeHex(reflected))), "own secret")

	// A random source that only repeats the target's challenge is refused
	// rather than sending the same challenge back.
	same := bytes.Repeat([]byte{0xaa}, 200)
	c := testExchange(creds, nil, same)
	_, err = c.respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", "0x"+strings.Repeat("aa", 16)))
	wantAuthError(t, err, "repeating")

	// A broken random source is an error, not a zero challenge.
	c = testExchange(creds, nil, []byte{1, 2})
	_, err = c.respond(kvs("CHAP_A", "5", "CHAP_I", "1", "CHAP_C", "0x01"))
	wantAuthError(t, err, "random")
}

func TestParseCHAPAlgorithms(t *testing.T) {
	for in, want := range map[string][]CHAPAlgorithm{
		"":                         {CHAPMD5},
		"md5":                      {CHAPMD5},
		"sha3-256,sha256,sha1,md5": {CHAPSHA3_256, CHAPSHA256, CHAPSHA1, CHAPMD5},
		"SHA256, MD5":              {CHAPSHA256, CHAPMD5},
		"sha-256,sha-1":            {CHAPSHA256, CHAPSHA1},
		"8,7,6,5":                  {CHAPSHA3_256, CHAPSHA256, CHAPSHA1, CHAPMD5},
	} {
		got, err := ParseCHAPAlgorithms(in)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ParseCHAPAlgorithms(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"sha512", "md5,,sha1", "md5,md5", "4", "9", "md5;sha1"} {
		if _, err := ParseCHAPAlgorithms(in); err == nil {
			t.Errorf("ParseCHAPAlgorithms(%q) accepted", in)
		}
	}
	if _, err := ParseCHAPAlgorithms("blake2"); err == nil || !strings.Contains(err.Error(), `"blake2"`) {
		t.Errorf("error does not name the algorithm: %v", err)
	}
	if s := CHAPAlgorithm(3).String(); s != "CHAP_A(3)" {
		t.Errorf("String() = %q", s)
	}
	for _, a := range []CHAPAlgorithm{CHAPMD5, CHAPSHA1, CHAPSHA256, CHAPSHA3_256} {
		if got, err := ParseCHAPAlgorithms(a.String()); err != nil || got[0] != a {
			t.Errorf("round trip of %v: %v %v", a, got, err)
		}
	}
}

func TestCredentialsNeverPrintSecrets(t *testing.T) {
	c := Credentials{User: "alice", Secret: "SECRET-one-234", MutualUser: "tgt", MutualSecret: "SECRET-two-567"}
	wrapped := struct {
		Creds Credentials
		Ptr   *Credentials
	}{c, &c}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v"} {
		outs = append(outs, fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c), fmt.Sprintf(verb, wrapped))
	}
	js, err := json.Marshal(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	txt, _ := c.MarshalText()
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("login", "creds", c)
	outs = append(outs, string(js), string(txt), sb.String(), c.String(), c.GoString())
	for _, o := range outs {
		if strings.Contains(o, "SECRET") {
			t.Errorf("secret leaked: %s", o)
		}
	}
	if s := fmt.Sprint(c); !strings.Contains(s, "alice") || !strings.Contains(s, "tgt") || !strings.Contains(s, "***") {
		t.Errorf("String() = %s", s)
	}
	if s := fmt.Sprint(Credentials{User: "bob"}); strings.Contains(s, "***") {
		t.Errorf("an empty secret is shown as set: %s", s)
	}
	if !strings.Contains(string(js), `"secret":"***"`) {
		t.Errorf("JSON = %s", js)
	}
}

func TestCredentialsValidate(t *testing.T) {
	ok := []Credentials{
		{},
		{User: "alice", Secret: "s"},
		{User: "alice", Secret: "secret-one-23", MutualUser: "t", MutualSecret: "secret-two-23"},
	}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("%v: %v", c, err)
		}
	}
	bad := []Credentials{
		{Secret: "s"},
		{User: "alice"},
		{User: "alice", Secret: "s", MutualUser: "t"},
		{User: "alice", Secret: "s", MutualSecret: "m"},
		{MutualUser: "t", MutualSecret: "m"},
		{User: "alice", Secret: "same-secret-1", MutualUser: "t", MutualSecret: "same-secret-1"},
	}
	for _, c := range bad {
		err := c.Validate()
		if err == nil {
			t.Errorf("%v accepted", c)
		} else if strings.Contains(err.Error(), "same-secret") {
			t.Errorf("error leaks the secret: %v", err)
		}
	}
	if !WeakSecret("short-11chr") || WeakSecret("twelve-bytes") || !WeakSecret("") {
		t.Error("WeakSecret threshold is not 12 bytes")
	}
}
