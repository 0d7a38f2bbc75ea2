package initiator

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// CHAPAlgorithm is a CHAP hash algorithm, numbered as in the IANA "PPP
// Authentication Algorithms" registry, which is what CHAP_A carries (RFC 7143
// §12.1.3). RFC 7143 itself only names 5 (MD5), which every initiator must
// offer; 6-8 are the later IANA assignments used by LIO, open-iscsi and
// libiscsi.
//
// Beware: tgt 1.0.85 uses a pre-IANA numbering in which 7 means SHA-1, so
// offering sha256 to it fails authentication. Offer md5 (the default) unless
// the target is known to follow IANA.
type CHAPAlgorithm uint8

// CHAP algorithms (IANA PPP Authentication Algorithms).
const (
	CHAPMD5      CHAPAlgorithm = 5
	CHAPSHA1     CHAPAlgorithm = 6
	CHAPSHA256   CHAPAlgorithm = 7
	CHAPSHA3_256 CHAPAlgorithm = 8
)

// String returns the algorithm's name as ParseCHAPAlgorithms accepts it.
func (a CHAPAlgorithm) String() string {
	switch a {
	case CHAPMD5:
		return "md5"
	case CHAPSHA1:
		return "sha1"
	case CHAPSHA256:
		return "sha256"
	case CHAPSHA3_256:
		return "sha3-256"
	}
	return "CHAP_A(" + strconv.Itoa(int(a)) + ")"
}

// newHash returns the algorithm's hash, nil for an unknown algorithm.
func (a CHAPAlgorithm) newHash() hash.Hash {
	switch a {
	case CHAPMD5:
		return md5.New()
	case CHAPSHA1:
		return sha1.New()
	case CHAPSHA256:
		return sha256.New()
	case CHAPSHA3_256:
		return sha3.New256()
	}
	return nil
}

// digestSize is the length of the algorithm's CHAP_R in bytes.
func (a CHAPAlgorithm) digestSize() int {
	if h := a.newHash(); h != nil {
		return h.Size()
	}
	return 0
}

// ParseCHAPAlgorithms parses a preference list such as
// "sha3-256,sha256,sha1,md5". Names are case-insensitive ("sha-1" and
// "sha-256", as libiscsi spells them, are accepted too) and the IANA numbers
// 5-8 may stand for the names. An empty string means md5 alone, the RFC 7143
// default. The list is used as given: RFC 7143 requires an initiator to offer
// md5, so keep it last in the list unless the policy is to refuse MD5.
func ParseCHAPAlgorithms(s string) ([]CHAPAlgorithm, error) {
	if strings.TrimSpace(s) == "" {
		return []CHAPAlgorithm{CHAPMD5}, nil
	}
	var algs []CHAPAlgorithm
	for _, f := range strings.Split(s, ",") {
		name := strings.ToLower(strings.TrimSpace(f))
		var a CHAPAlgorithm
		switch name {
		case "md5", "5":
			a = CHAPMD5
		case "sha1", "sha-1", "6":
			a = CHAPSHA1
		case "sha256", "sha-256", "7":
			a = CHAPSHA256
		case "sha3-256", "sha3_256", "8":
			a = CHAPSHA3_256
		case "":
			return nil, fmt.Errorf("CHAP algorithm list %q has an empty element", s)
		default:
			return nil, fmt.Errorf("unknown CHAP algorithm %q (want md5, sha1, sha256, sha3-256 or their numbers 5-8)", strings.TrimSpace(f))
		}
		for _, b := range algs {
			if a == b {
				return nil, fmt.Errorf("CHAP algorithm %s listed twice in %q", a, s)
			}
		}
		algs = append(algs, a)
	}
	return algs, nil
}

// minSecretLen is the shortest CHAP secret RFC 7143 §9.2.1 allows when the
// channel is not encrypted: 96 bits.
const minSecretLen = 12

// WeakSecret reports whether a CHAP secret is shorter than the 12 bytes (96
// bits) RFC 7143 §9.2.1 requires. Neither tgt nor istgt enforces this, so the
// caller decides whether to warn or refuse.
func WeakSecret(s string) bool { return len(s) < minSecretLen }

// Credentials are the CHAP names and secrets of one login. User and Secret
// authenticate the initiator to the target; MutualUser and MutualSecret are the
// target's, for mutual CHAP. All printing forms (String, GoString, Format,
// MarshalJSON, MarshalText, LogValue) redact the secrets, so a Credentials
// value in a log line never leaks them. (fmt cannot reach the methods of an
// unexported struct field: keep Credentials in exported fields, or pointers.)
type Credentials struct {
	User, Secret, MutualUser, MutualSecret string
}

const redacted = "***"

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// String returns the names with the secrets replaced by "***".
func (c Credentials) String() string {
	return fmt.Sprintf("{User:%s Secret:%s MutualUser:%s MutualSecret:%s}",
		c.User, redact(c.Secret), c.MutualUser, redact(c.MutualSecret))
}

// GoString is String for %#v.
func (c Credentials) GoString() string {
	return fmt.Sprintf("initiator.Credentials{User:%q, Secret:%q, MutualUser:%q, MutualSecret:%q}",
		c.User, redact(c.Secret), c.MutualUser, redact(c.MutualSecret))
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, %d...) print the
// redacted form.
func (c Credentials) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, c.GoString())
	case verb == 'q':
		_, _ = io.WriteString(f, strconv.Quote(c.String()))
	default:
		_, _ = io.WriteString(f, c.String())
	}
}

type redactedCredentials struct {
	User         string `json:"user,omitempty"`
	Secret       string `json:"secret,omitempty"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// MarshalJSON encodes the names and "***" for the secrets that are set.
func (c Credentials) MarshalJSON() ([]byte, error) {
	return json.Marshal(redactedCredentials{c.User, redact(c.Secret), c.MutualUser, redact(c.MutualSecret)})
}

// MarshalText is String, for encoders that prefer text.
func (c Credentials) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// LogValue gives log/slog the redacted form.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user", c.User), slog.String("secret", redact(c.Secret)),
		slog.String("mutual_user", c.MutualUser), slog.String("mutual_secret", redact(c.MutualSecret)))
}

// Mutual reports whether the credentials ask for mutual CHAP.
func (c Credentials) Mutual() bool { return c.MutualUser != "" || c.MutualSecret != "" }

// Validate checks that the credentials are complete and consistent: a user
// needs a secret and the other way round, mutual CHAP needs one-way CHAP, and
// the two secrets must differ (RFC 7143 §9.2.1; with equal secrets a target's
// genuine answer cannot be told from a reflected one). Short secrets are not
// an error here; see WeakSecret. The errors never contain a secret.
func (c Credentials) Validate() error {
	switch {
	case c.User == "" && c.Secret != "":
		return errors.New("CHAP secret given without a CHAP user name")
	case c.User != "" && c.Secret == "":
		return fmt.Errorf("CHAP user %q has no secret", c.User)
	case c.MutualUser == "" && c.MutualSecret != "":
		return errors.New("mutual CHAP secret given without the target's user name")
	case c.MutualUser != "" && c.MutualSecret == "":
		return fmt.Errorf("mutual CHAP user %q has no secret", c.MutualUser)
	case c.Mutual() && c.User == "":
		return errors.New("mutual CHAP needs the initiator's CHAP user and secret as well")
	case c.Mutual() && c.Secret == c.MutualSecret:
		return errors.New("the mutual CHAP secret must differ from the initiator's secret (RFC 7143 §9.2.1)")
	}
	return nil
}

// AuthError is a failed CHAP exchange: the target's CHAP keys were unusable
// or its mutual response was wrong. Reason never contains a secret.
type AuthError struct{ Reason string }

func (e *AuthError) Error() string { return "authentication failed: " + e.Reason }

func authErrorf(format string, args ...any) *AuthError {
	return &AuthError{Reason: fmt.Sprintf(format, args...)}
}

// CHAP limits (RFC 7143 §12.1.3).
const (
	maxCHAPChallenge = 1024 // binary bytes of CHAP_C
	minOurChallenge  = 16   // what we send for mutual CHAP
)

// challengeLog remembers the challenges this process sent recently, so that a
// target that reflects one of them back (to have us compute the answer it
// owes) is refused (RFC 7143 §9.2.1, §12.1.3).
type challengeLog struct {
	mu   sync.Mutex
	ring [][]byte
	next int
}

func newChallengeLog(n int) *challengeLog { return &challengeLog{ring: make([][]byte, n)} }

func (l *challengeLog) add(c []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = bytes.Clone(c)
	l.next = (l.next + 1) % len(l.ring)
}

func (l *challengeLog) contains(c []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.ring {
		if s != nil && bytes.Equal(s, c) {
			return true
		}
	}
	return false
}

// sentChallenges is shared by all sessions of the process: a reflection
// attack replays a challenge from one connection on another.
var sentChallenges = newChallengeLog(256)

// chapExchange drives the initiator side of one CHAP exchange in the security
// stage. It does no I/O: the login code sends offer(), passes the target's
// answer to respond(), sends what respond returns and, for mutual CHAP,
// passes the target's final keys to verify().
type chapExchange struct {
	creds Credentials
	algs  []CHAPAlgorithm
	rand  io.Reader
	sent  *challengeLog

	alg          CHAPAlgorithm // chosen by the target, 0 until respond
	responded    bool
	verified     bool
	ourID        byte
	ourChallenge []byte
}

// newCHAPExchange starts an exchange offering algs in preference order (nil
// or empty: md5 only). rand supplies the mutual challenge; nil means
// crypto/rand.
func newCHAPExchange(creds Credentials, algs []CHAPAlgorithm, rnd io.Reader) *chapExchange {
	if len(algs) == 0 {
		algs = []CHAPAlgorithm{CHAPMD5}
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &chapExchange{creds: creds, algs: append([]CHAPAlgorithm(nil), algs...), rand: rnd, sent: sentChallenges}
}

// offer returns CHAP_A with the algorithms in preference order.
func (c *chapExchange) offer() []pdu.KV {
	nums := make([]string, len(c.algs))
	for i, a := range c.algs {
		nums[i] = strconv.Itoa(int(a))
	}
	return []pdu.KV{{Key: "CHAP_A", Value: strings.Join(nums, ",")}}
}

// algorithm returns the algorithm the target chose (0 before respond).
func (c *chapExchange) algorithm() CHAPAlgorithm { return c.alg }

// respond takes the target's CHAP_A, CHAP_I and CHAP_C and returns CHAP_N and
// CHAP_R, followed for mutual CHAP by our CHAP_I and CHAP_C.
func (c *chapExchange) respond(target []pdu.KV) ([]pdu.KV, error) {
	if c.responded {
		return nil, authErrorf("target sent a second CHAP challenge")
	}
	if err := c.creds.Validate(); err != nil {
		return nil, &AuthError{Reason: err.Error()}
	}
	if c.creds.User == "" {
		return nil, authErrorf("target requires CHAP but no credentials were given")
	}
	alg, err := c.chosenAlgorithm(target)
	if err != nil {
		return nil, err
	}
	idText, ok := pdu.Lookup(target, "CHAP_I")
	if !ok {
		return nil, authErrorf("target sent no CHAP_I")
	}
	id, err := parseCHAPIdentifier(idText)
	if err != nil {
		return nil, authErrorf("target's CHAP_I: %v", err)
	}
	chalText, ok := pdu.Lookup(target, "CHAP_C")
	if !ok {
		return nil, authErrorf("target sent no CHAP_C")
	}
	challenge, err := decodeBinary(chalText, maxCHAPChallenge)
	if err != nil {
		return nil, authErrorf("target's CHAP_C: %v", err)
	}
	if len(challenge) == 0 {
		return nil, authErrorf("target's CHAP_C is empty")
	}
	if c.sent.contains(challenge) {
		return nil, authErrorf("target's CHAP_C repeats a challenge this initiator sent (reflection attack)")
	}
	c.alg = alg
	c.responded = true
	out := []pdu.KV{
		{Key: "CHAP_N", Value: c.creds.User},
		{Key: "CHAP_R", Value: encodeHex(chapResponse(alg, id, c.creds.Secret, challenge))},
	}
	if !c.creds.Mutual() {
		return out, nil
	}
	if err := c.newChallenge(challenge); err != nil {
		return nil, err
	}
	c.sent.add(c.ourChallenge)
	return append(out,
		pdu.KV{Key: "CHAP_I", Value: strconv.Itoa(int(c.ourID))},
		pdu.KV{Key: "CHAP_C", Value: encodeHex(c.ourChallenge)}), nil
}

// chosenAlgorithm checks the target's CHAP_A: one value, among those offered.
func (c *chapExchange) chosenAlgorithm(target []pdu.KV) (CHAPAlgorithm, error) {
	v, ok := pdu.Lookup(target, "CHAP_A")
	if !ok {
		return 0, authErrorf("target sent no CHAP_A")
	}
	offered := c.offer()[0].Value
	n, err := strconv.Atoi(v)
	if err != nil {
		// Reject, NotUnderstood or a list: the target takes none of ours.
		return 0, authErrorf("target answered CHAP_A=%.32s to our offer %s", v, offered)
	}
	for _, a := range c.algs {
		if int(a) == n {
			return a, nil
		}
	}
	return 0, authErrorf("target chose CHAP_A=%d, which is not among the offered %s", n, offered)
}

// newChallenge draws our mutual CHAP identifier and challenge: at least 16
// bytes and at least the digest size, never equal to the target's.
func (c *chapExchange) newChallenge(theirs []byte) error {
	n := max(minOurChallenge, c.alg.digestSize())
	buf := make([]byte, 1+n)
	for range 4 {
		if _, err := io.ReadFull(c.rand, buf); err != nil {
			return authErrorf("cannot draw a random challenge: %v", err)
		}
		if !bytes.Equal(buf[1:], theirs) {
			c.ourID, c.ourChallenge = buf[0], buf[1:]
			return nil
		}
	}
	return authErrorf("random source keeps repeating the target's challenge")
}

// verify checks the target's answer to our mutual challenge: CHAP_N must be
// the configured MutualUser and CHAP_R the response computed with
// MutualSecret. A response equal to the one our own secret gives is refused as
// a reflection. Without mutual CHAP there is nothing to verify.
func (c *chapExchange) verify(target []pdu.KV) error {
	if !c.creds.Mutual() {
		return nil
	}
	if !c.responded {
		return authErrorf("mutual CHAP response checked before the challenge was sent")
	}
	if c.verified {
		return authErrorf("mutual CHAP response received twice")
	}
	name, okN := pdu.Lookup(target, "CHAP_N")
	respText, okR := pdu.Lookup(target, "CHAP_R")
	if !okN || !okR {
		return authErrorf("target did not answer the mutual CHAP challenge")
	}
	if name != c.creds.MutualUser {
		return authErrorf("target authenticated as %q, expected %q", name, c.creds.MutualUser)
	}
	got, err := decodeBinary(respText, maxCHAPChallenge)
	if err != nil {
		return authErrorf("target's CHAP_R: %v", err)
	}
	if want := c.alg.digestSize(); len(got) != want {
		return authErrorf("target's CHAP_R has %d bytes, %s needs %d", len(got), c.alg, want)
	}
	own := chapResponse(c.alg, c.ourID, c.creds.Secret, c.ourChallenge)
	if subtle.ConstantTimeCompare(got, own) == 1 {
		return authErrorf("target's CHAP_R was computed with the initiator's own secret (reflection)")
	}
	want := chapResponse(c.alg, c.ourID, c.creds.MutualSecret, c.ourChallenge)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return authErrorf("target %q gave a wrong mutual CHAP response", name)
	}
	c.verified = true
	return nil
}

// chapResponse is H(identifier || secret || challenge) (RFC 1994 §4.1).
func chapResponse(alg CHAPAlgorithm, id byte, secret string, challenge []byte) []byte {
	h := alg.newHash()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// parseCHAPIdentifier parses CHAP_I: a number 0-255, decimal or 0x hex.
func parseCHAPIdentifier(s string) (byte, error) {
	n, err := parseNumber(s)
	if err != nil {
		return 0, err
	}
	if n > 255 {
		return 0, fmt.Errorf("%d is outside 0-255", n)
	}
	return byte(n), nil
}

// parseNumber parses an RFC 7143 §6.1 numerical value: a decimal constant or a
// hex constant (0x or 0X prefix).
func parseNumber(s string) (uint64, error) {
	base, digits := 10, s
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		base, digits = 16, s[2:]
	}
	if digits == "" || digits[0] == '+' || digits[0] == '-' || strings.Contains(digits, "_") {
		return 0, fmt.Errorf("%.32q is not a number", s)
	}
	n, err := strconv.ParseUint(digits, base, 64)
	if err != nil {
		return 0, fmt.Errorf("%.32q is not a number", s)
	}
	return n, nil
}

// decodeBinary decodes an RFC 7143 §6.1 binary value: 0x/0X and hex digits of
// either case (an odd count implies a leading zero), or 0b/0B and base64. It
// refuses values longer than limit bytes before decoding them.
func decodeBinary(s string, limit int) ([]byte, error) {
	if len(s) < 3 || s[0] != '0' {
		return nil, errors.New("not a binary value (want 0x hex or 0b base64)")
	}
	body := s[2:]
	switch s[1] {
	case 'x', 'X':
		if (len(body)+1)/2 > limit {
			return nil, fmt.Errorf("longer than %d bytes", limit)
		}
		if len(body)%2 == 1 {
			body = "0" + body
		}
		b, err := hex.DecodeString(body)
		if err != nil {
			return nil, errors.New("malformed hex")
		}
		return b, nil
	case 'b', 'B':
		enc := base64.StdEncoding
		if !strings.HasSuffix(body, "=") {
			enc = base64.RawStdEncoding
		}
		if enc.DecodedLen(len(body)) > limit+2 {
			return nil, fmt.Errorf("longer than %d bytes", limit)
		}
		b, err := enc.DecodeString(body)
		if err != nil {
			return nil, errors.New("malformed base64")
		}
		if len(b) > limit {
			return nil, fmt.Errorf("longer than %d bytes", limit)
		}
		return b, nil
	}
	return nil, errors.New("not a binary value (want 0x hex or 0b base64)")
}

func encodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }
