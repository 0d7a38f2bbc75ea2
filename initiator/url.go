package initiator

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is the iSCSI well-known TCP port.
const DefaultPort = 3260

// maxURLLUN is the largest LUN a URL may name: single-level LUN addressing
// (peripheral below 256, flat space up to 16383), which is what the session
// encodes.
const maxURLLUN = 16383

// URL is an iSCSI URL as libiscsi and qemu write it:
//
//	iscsi://[<user>[%<secret>]@]<host>[:<port>]/<target-iqn>/<lun>
//
// iscsifs also takes a URL without the LUN (every LUN of the target) and a
// bare portal, iscsi://<host>[:<port>][/] (every target of the portal).
//
// The query keys are those libiscsi 1.20 accepts over TCP: target_user and
// target_password (the target's credentials, for mutual CHAP), header_digest
// and data_digest (crc32c or none; also prefer-crc32c and prefer-none here),
// and auth (the CHAP algorithm: md5, sha1, sha-256 or sha3-256; here also a
// preference list as ParseCHAPAlgorithms reads it). Any other key is an error
// (libiscsi ignores unknown keys silently); libiscsi has no initiator_name key.
//
// User and secret follow libiscsi: the userinfo ends at the last '@' before
// the path and query, the first '%' in it separates the user from the secret
// (when there is no '%', the first ':' does), and the user is taken literally.
// Unlike libiscsi, which never decodes them, the secret, the target name and
// the query values are percent-decoded, so that a secret can hold any byte:
// "user%p%40ss@host" has the secret "p@ss", and a literal '%' in a secret
// must be written %25. A '%' in the secret that does not start a %XX escape is
// an error rather than a silent mismatch with libiscsi. A '?' anywhere starts
// the query, so a '?' in a secret must be written %3F.
type URL struct {
	Host   string // DNS name, IPv4 or IPv6 address (without brackets)
	Port   int    // DefaultPort when the URL has none
	Target string // target IQN; "" for a portal URL
	LUN    int    // -1 when the URL names no LUN

	User, Secret             string // initiator CHAP credentials
	MutualUser, MutualSecret string // target_user, target_password

	HeaderDigest   string          // "" or a DigestPolicy name (from header_digest)
	DataDigest     string          // "" or a DigestPolicy name (from data_digest)
	CHAPAlgorithms []CHAPAlgorithm // from auth; nil when absent
}

// ParseURL parses an iSCSI URL. Errors are one line and never contain the
// secrets.
func ParseURL(s string) (*URL, error) {
	rest, ok := cutPrefixFold(s, "iscsi://")
	if !ok {
		if _, iser := cutPrefixFold(s, "iser://"); iser {
			return nil, urlError("iSER (iser://) is not supported, only iscsi://")
		}
		scheme, _, found := strings.Cut(s, "://")
		if !found {
			return nil, urlError("missing iscsi:// scheme (want iscsi://[user[%%secret]@]host[:port][/target-iqn[/lun]])")
		}
		return nil, urlError("unsupported scheme %.16q (want iscsi://)", scheme)
	}
	u := &URL{Port: DefaultPort, LUN: -1}

	rest, query, hasQuery := strings.Cut(rest, "?")
	if !strings.Contains(rest, "@") && strings.Contains(query, "@") {
		// Errors below would quote pieces of the secret.
		return nil, urlError("'?' before the '@' of the user info: write a '?' in a secret as %%3F")
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if err := u.parseUserinfo(rest[:at]); err != nil {
			return nil, err
		}
		rest = rest[at+1:]
	}
	hostport, path, _ := strings.Cut(rest, "/")
	if err := u.parseHostPort(hostport); err != nil {
		return nil, err
	}
	if err := u.parsePath(path); err != nil {
		return nil, err
	}
	if hasQuery {
		if err := u.parseQuery(query); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func urlError(format string, args ...any) error {
	return errors.New("iscsi URL: " + fmt.Sprintf(format, args...))
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// parseUserinfo splits user%secret (or user:secret) as libiscsi does.
func (u *URL) parseUserinfo(info string) error {
	sep := strings.IndexByte(info, '%')
	if sep < 0 {
		sep = strings.IndexByte(info, ':')
	}
	user, secret := info, ""
	if sep >= 0 {
		user, secret = info[:sep], info[sep+1:]
	}
	if user == "" {
		if sep >= 0 {
			return urlError("CHAP secret without a user name before '@'")
		}
		return urlError("empty user name before '@'")
	}
	if err := checkPrintable(user); err != nil {
		return urlError("user name: %v", err)
	}
	dec, err := unescape(secret)
	if err != nil {
		return urlError("malformed percent-encoding in the CHAP secret (write a literal %% as %%25)")
	}
	u.User, u.Secret = user, dec
	return nil
}

func (u *URL) parseHostPort(hp string) error {
	host, port := hp, ""
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return urlError("missing ']' after IPv6 address")
		}
		host = hp[1:end]
		switch after := hp[end+1:]; {
		case after == "":
		case after[0] == ':':
			port = after[1:]
			if port == "" {
				return urlError("empty port after ':'")
			}
		default:
			return urlError("unexpected %.16q after IPv6 address", after)
		}
		zoned, err := unescape(host) // RFC 6874: a zone is written %25zone
		if err != nil {
			return urlError("malformed IPv6 address %.64q", host)
		}
		addr, err := netip.ParseAddr(zoned)
		if err != nil || !addr.Is6() {
			return urlError("bad IPv6 address %.64q", host)
		}
		u.Host = zoned
	} else {
		if strings.Count(hp, ":") > 1 {
			return urlError("IPv6 address %.64q must be in brackets, e.g. [::1]:3260", hp)
		}
		var hasPort bool
		host, port, hasPort = strings.Cut(hp, ":")
		if hasPort && port == "" {
			return urlError("empty port after ':'")
		}
		if host == "" {
			return urlError("empty host")
		}
		for _, c := range host {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
				if c == '%' {
					return urlError("invalid character '%%' in host (is the '@' after user%%secret missing?)")
				}
				return urlError("invalid character %q in host", c)
			}
		}
		u.Host = host
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || port[0] < '0' || port[0] > '9' {
			return urlError("bad port (want a number 1-65535)")
		}
		u.Port = p
	}
	return nil
}

// parsePath reads "" (portal), "target" or "target/lun" (the part after the
// host's '/').
func (u *URL) parsePath(path string) error {
	if path == "" {
		return nil
	}
	parts := strings.Split(path, "/")
	if len(parts) > 2 {
		return urlError("too many path elements (want /target-iqn/lun)")
	}
	target, err := unescape(parts[0])
	if err != nil {
		return urlError("malformed percent-encoding in the target name %.64q", parts[0])
	}
	if target == "" {
		return urlError("empty target name")
	}
	if err := checkPrintable(target); err != nil {
		return urlError("target name: %v", err)
	}
	u.Target = target
	if len(parts) == 1 {
		return nil
	}
	lun := parts[1]
	if lun == "" {
		return urlError("empty LUN after the target name (drop the trailing '/' for all LUNs)")
	}
	for _, c := range lun {
		if c < '0' || c > '9' {
			return urlError("LUN %.16q is not a number", lun)
		}
	}
	n, err := strconv.Atoi(lun)
	if err != nil || n > maxURLLUN {
		return urlError("LUN %.16q out of range (0-%d)", lun, maxURLLUN)
	}
	u.LUN = n
	return nil
}

// URL query keys (libiscsi 1.20's parser, TCP transport).
const urlQueryKeys = "target_user, target_password, header_digest, data_digest, auth"

func (u *URL) parseQuery(q string) error {
	seen := map[string]bool{}
	for _, item := range strings.Split(q, "&") {
		if item == "" {
			continue
		}
		key, raw, hasValue := strings.Cut(item, "=")
		switch key {
		case "target_user", "target_password", "header_digest", "data_digest", "auth":
		case "iser":
			return urlError("iSER is not supported")
		default:
			if !isIdentifier(key) {
				return urlError("malformed query item (known keys: %s)", urlQueryKeys)
			}
			return urlError("unknown query key %q (known: %s)", key, urlQueryKeys)
		}
		if seen[key] {
			return urlError("query key %s given twice", key)
		}
		seen[key] = true
		if !hasValue {
			return urlError("query key %s needs a value (%s=...)", key, key)
		}
		value, err := unescape(raw)
		if err != nil {
			if key == "target_password" {
				return urlError("malformed percent-encoding in target_password (write a literal %% as %%25)")
			}
			return urlError("malformed percent-encoding in %s", key)
		}
		switch key {
		case "target_user":
			if err := checkPrintable(value); err != nil {
				return urlError("target_user: %v", err)
			}
			u.MutualUser = value
		case "target_password":
			u.MutualSecret = value
		case "header_digest", "data_digest":
			p, err := ParseDigestPolicy(value)
			if err != nil {
				return urlError("%s: %v", key, err)
			}
			if key == "header_digest" {
				u.HeaderDigest = p.String()
			} else {
				u.DataDigest = p.String()
			}
		case "auth":
			if value == "" {
				return urlError("auth needs a CHAP algorithm (md5, sha1, sha256, sha3-256)")
			}
			algs, err := ParseCHAPAlgorithms(value)
			if err != nil {
				return urlError("auth: %v", err)
			}
			u.CHAPAlgorithms = algs
		}
	}
	return nil
}

// isIdentifier reports a short word of letters, digits, '_' and '-': safe to
// quote in an error.
func isIdentifier(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkPrintable refuses control characters (including NUL, which cannot
// travel in iSCSI text).
func checkPrintable(s string) error {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("control character %q", c)
		}
	}
	return nil
}

// unescape decodes %XX escapes (either case); any other '%' is an error.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
			return "", errors.New("bad percent escape")
		}
		b.WriteByte(byte(unhex(s[i+1])<<4 | unhex(s[i+2])))
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// escape percent-encodes '%', the bytes in special, and every byte outside
// printable ASCII.
func escape(s, special string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || c <= 0x20 || c >= 0x7f || strings.IndexByte(special, c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Portal returns "host:port", with an IPv6 host in brackets.
func (u URL) Portal() string {
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// Credentials returns the CHAP credentials the URL carries.
func (u URL) Credentials() Credentials {
	return Credentials{User: u.User, Secret: u.Secret, MutualUser: u.MutualUser, MutualSecret: u.MutualSecret}
}

// String returns the URL with the secrets replaced by "***": safe to log.
func (u URL) String() string { return u.format(true) }

// Format makes every fmt verb, %#v and %d included, print String.
func (u URL) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = io.WriteString(f, strconv.Quote(u.String()))
		return
	}
	_, _ = io.WriteString(f, u.String())
}

// MarshalText is String, so JSON encoders and loggers get the redacted form.
func (u URL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// LogValue gives log/slog the redacted form.
func (u URL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// format writes the URL back; unredacted, ParseURL reads it as the same URL.
func (u URL) format(redactSecrets bool) string {
	var b strings.Builder
	b.WriteString("iscsi://")
	if u.User != "" || u.Secret != "" {
		b.WriteString(u.User)
		switch {
		case u.Secret != "" && redactSecrets:
			b.WriteString("%" + redacted)
		case u.Secret != "":
			b.WriteString("%" + escape(u.Secret, "@/?#&"))
		case strings.ContainsRune(u.User, ':'):
			b.WriteString("%") // so the ':' is not read as the separator
		}
		b.WriteString("@")
	}
	host := u.Host
	if strings.Contains(host, ":") {
		host = "[" + strings.ReplaceAll(host, "%", "%25") + "]"
	}
	b.WriteString(host + ":" + strconv.Itoa(u.Port))
	if u.Target != "" {
		b.WriteString("/" + escape(u.Target, "/?@#&"))
		if u.LUN >= 0 {
			b.WriteString("/" + strconv.Itoa(u.LUN))
		}
	}
	var q []string
	add := func(key, value string) {
		if value != "" {
			q = append(q, key+"="+escape(value, "&=#+"))
		}
	}
	add("target_user", u.MutualUser)
	if u.MutualSecret != "" && redactSecrets {
		q = append(q, "target_password="+redacted)
	} else {
		add("target_password", u.MutualSecret)
	}
	add("header_digest", u.HeaderDigest)
	add("data_digest", u.DataDigest)
	if len(u.CHAPAlgorithms) > 0 {
		names := make([]string, len(u.CHAPAlgorithms))
		for i, a := range u.CHAPAlgorithms {
			names[i] = a.String()
		}
		add("auth", strings.Join(names, ","))
	}
	if len(q) > 0 {
		b.WriteString("?" + strings.Join(q, "&"))
	}
	return b.String()
}
