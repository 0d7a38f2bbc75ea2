package initiator

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// Params are the operational parameters of a connection after login
// (RFC 7143 §13): the negotiated results, and the RFC defaults for whatever
// the target never mentioned.
type Params struct {
	MaxRecvDataSegmentLength       int // what we declared: the target may send us data segments up to this
	TargetMaxRecvDataSegmentLength int // what the target declared; 8192 when it was silent (tgt at its default)
	MaxBurstLength                 int
	FirstBurstLength               int
	InitialR2T                     bool
	ImmediateData                  bool
	MaxOutstandingR2T              int
	DataPDUInOrder                 bool
	DataSequenceInOrder            bool
	DefaultTime2Wait               int // seconds
	DefaultTime2Retain             int // seconds
	ErrorRecoveryLevel             int
	MaxConnections                 int
	HeaderDigest                   bool // CRC32C
	DataDigest                     bool // CRC32C
	TargetPortalGroupTag           int  // -1 when the target did not send it
	TargetAlias                    string
}

// RFC 7143 §13 defaults and limits.
const (
	defaultMaxRecvDataSegmentLength = 8192
	defaultMaxBurstLength           = 262144
	defaultFirstBurstLength         = 65536
	defaultTime2Wait                = 2
	defaultTime2Retain              = 20
	minDataLength                   = 512
	maxDataLength                   = 1<<24 - 1
)

// DefaultParams returns the RFC 7143 defaults: what applies to every key
// neither side negotiated.
func DefaultParams() Params {
	return Params{
		MaxRecvDataSegmentLength:       defaultMaxRecvDataSegmentLength,
		TargetMaxRecvDataSegmentLength: defaultMaxRecvDataSegmentLength,
		MaxBurstLength:                 defaultMaxBurstLength,
		FirstBurstLength:               defaultFirstBurstLength,
		InitialR2T:                     true,
		ImmediateData:                  true,
		MaxOutstandingR2T:              1,
		DataPDUInOrder:                 true,
		DataSequenceInOrder:            true,
		DefaultTime2Wait:               defaultTime2Wait,
		DefaultTime2Retain:             defaultTime2Retain,
		ErrorRecoveryLevel:             0,
		MaxConnections:                 1,
		TargetPortalGroupTag:           -1,
	}
}

// DigestPolicy says which CRC32C digests we offer for HeaderDigest or
// DataDigest (RFC 7143 §13.1).
type DigestPolicy int

// Digest policies. The preference only orders the list we offer; a target
// picks the first value it supports (tgt picks CRC32C whenever it is
// configured for it, whatever our order).
const (
	DigestNone         DigestPolicy = iota // offer None only
	DigestCRC32C                           // offer CRC32C only: fail against a target without digests
	DigestPreferCRC32C                     // offer CRC32C,None
	DigestPreferNone                       // offer None,CRC32C (libiscsi's default for header digests)
)

// ParseDigestPolicy parses "none", "crc32c", "prefer-crc32c" or
// "prefer-none" (case-insensitive; the wire lists "crc32c,none" and
// "none,crc32c" are accepted as the two preferences).
func ParseDigestPolicy(s string) (DigestPolicy, error) {
	switch strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), " ", "")) {
	case "none":
		return DigestNone, nil
	case "crc32c":
		return DigestCRC32C, nil
	case "prefer-crc32c", "crc32c,none":
		return DigestPreferCRC32C, nil
	case "prefer-none", "none,crc32c":
		return DigestPreferNone, nil
	}
	return 0, fmt.Errorf("unknown digest policy %q (want none, crc32c, prefer-crc32c or prefer-none)", s)
}

// String returns the name ParseDigestPolicy accepts.
func (p DigestPolicy) String() string {
	switch p {
	case DigestNone:
		return "none"
	case DigestCRC32C:
		return "crc32c"
	case DigestPreferCRC32C:
		return "prefer-crc32c"
	case DigestPreferNone:
		return "prefer-none"
	}
	return "DigestPolicy(" + strconv.Itoa(int(p)) + ")"
}

// values lists the digests the policy allows, in preference order.
func (p DigestPolicy) values() []string {
	switch p {
	case DigestCRC32C:
		return []string{"CRC32C"}
	case DigestPreferCRC32C:
		return []string{"CRC32C", "None"}
	case DigestPreferNone:
		return []string{"None", "CRC32C"}
	}
	return []string{"None"}
}

// NegotiationConfig is what we offer in the operational stage.
type NegotiationConfig struct {
	MaxRecvDataSegmentLength int // declared: the largest data segment we accept (512 to 2^24-1)
	MaxBurstLength           int // 512 to 2^24-1 (16 MiB - 1)
	FirstBurstLength         int // 512 to 2^24-1, at most MaxBurstLength
	InitialR2T               bool
	ImmediateData            bool
	MaxOutstandingR2T        int // 1 to 65535
	HeaderDigest             DigestPolicy
	DataDigest               DigestPolicy
}

// DefaultNegotiationConfig returns the offer for throughput: 256 KiB data
// segments, 1 MiB bursts with a 256 KiB first burst, unsolicited and
// immediate data (InitialR2T=No, ImmediateData=Yes), four outstanding R2Ts,
// and digests only when the target wants them (None,CRC32C).
//
// Targets answer with the minimum of theirs and ours (tgt: FirstBurstLength
// 65536, MaxBurstLength 262144, InitialR2T=Yes, MaxOutstandingR2T=1), so a
// large offer costs nothing.
func DefaultNegotiationConfig() NegotiationConfig {
	return NegotiationConfig{
		MaxRecvDataSegmentLength: 262144,
		MaxBurstLength:           1 << 20,
		FirstBurstLength:         262144,
		InitialR2T:               false,
		ImmediateData:            true,
		MaxOutstandingR2T:        4,
		HeaderDigest:             DigestPreferNone,
		DataDigest:               DigestPreferNone,
	}
}

// Validate reports settings outside the ranges of RFC 7143 §13. Zero numeric
// fields are not errors: they stand for the defaults.
func (c NegotiationConfig) Validate() error {
	for _, f := range []struct {
		name    string
		v       int
		lo, hi  int
		context string
	}{
		{"MaxRecvDataSegmentLength", c.MaxRecvDataSegmentLength, minDataLength, maxDataLength, ""},
		{"MaxBurstLength", c.MaxBurstLength, minDataLength, maxDataLength, ""},
		{"FirstBurstLength", c.FirstBurstLength, minDataLength, maxDataLength, ""},
		{"MaxOutstandingR2T", c.MaxOutstandingR2T, 1, 65535, ""},
	} {
		if f.v != 0 && (f.v < f.lo || f.v > f.hi) {
			return fmt.Errorf("%s %d is outside %d-%d", f.name, f.v, f.lo, f.hi)
		}
	}
	if c.FirstBurstLength != 0 && c.MaxBurstLength != 0 && c.FirstBurstLength > c.MaxBurstLength {
		return fmt.Errorf("FirstBurstLength %d exceeds MaxBurstLength %d", c.FirstBurstLength, c.MaxBurstLength)
	}
	for _, p := range []DigestPolicy{c.HeaderDigest, c.DataDigest} {
		if p < DigestNone || p > DigestPreferNone {
			return fmt.Errorf("unknown digest policy %d", int(p))
		}
	}
	return nil
}

// normalized fills in defaults and clamps to the RFC ranges. The zero
// NegotiationConfig means DefaultNegotiationConfig(); otherwise zero numeric
// fields take the default and the booleans are taken as given.
func (c NegotiationConfig) normalized() NegotiationConfig {
	d := DefaultNegotiationConfig()
	if c == (NegotiationConfig{}) {
		return d
	}
	fix := func(v *int, def, lo, hi int) {
		if *v == 0 {
			*v = def
		}
		*v = min(max(*v, lo), hi)
	}
	fix(&c.MaxRecvDataSegmentLength, d.MaxRecvDataSegmentLength, minDataLength, maxDataLength)
	fix(&c.MaxBurstLength, d.MaxBurstLength, minDataLength, maxDataLength)
	fix(&c.FirstBurstLength, d.FirstBurstLength, minDataLength, maxDataLength)
	fix(&c.MaxOutstandingR2T, d.MaxOutstandingR2T, 1, 65535)
	c.FirstBurstLength = min(c.FirstBurstLength, c.MaxBurstLength)
	if c.HeaderDigest < DigestNone || c.HeaderDigest > DigestPreferNone {
		c.HeaderDigest = d.HeaderDigest
	}
	if c.DataDigest < DigestNone || c.DataDigest > DigestPreferNone {
		c.DataDigest = d.DataDigest
	}
	return c
}

// NegotiationError is an answer or offer from the target we cannot accept:
// out of range, not among what we offered, or contradicting a requirement.
// Login fails; retrying with the same configuration would fail again.
type NegotiationError struct {
	Key, Value string
	Reason     string
}

func (e *NegotiationError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return fmt.Sprintf("negotiation of %s=%s: %s", e.Key, v, e.Reason)
}

// rule is how a key's result is computed (RFC 7143 §6.2).
type rule int

const (
	ruleList rule = iota // the responder picks the first value it supports from the offer
	ruleMin              // numerical, result = min
	ruleMax              // numerical, result = max
	ruleOr               // Boolean OR
	ruleAnd              // Boolean AND
)

type keySpec struct {
	rule       rule
	lo, hi     int  // numerical range
	normalOnly bool // "Irrelevant when: SessionType=Discovery"
}

// negotiable are the operational keys we negotiate, with their RFC 7143 §13
// rules and ranges.
var negotiable = map[string]keySpec{
	"HeaderDigest":        {rule: ruleList},
	"DataDigest":          {rule: ruleList},
	"MaxConnections":      {rule: ruleMin, lo: 1, hi: 65535, normalOnly: true},
	"InitialR2T":          {rule: ruleOr, normalOnly: true},
	"ImmediateData":       {rule: ruleAnd, normalOnly: true},
	"MaxBurstLength":      {rule: ruleMin, lo: minDataLength, hi: maxDataLength, normalOnly: true},
	"FirstBurstLength":    {rule: ruleMin, lo: minDataLength, hi: maxDataLength, normalOnly: true},
	"DefaultTime2Wait":    {rule: ruleMax, lo: 0, hi: 3600},
	"DefaultTime2Retain":  {rule: ruleMin, lo: 0, hi: 3600},
	"MaxOutstandingR2T":   {rule: ruleMin, lo: 1, hi: 65535, normalOnly: true},
	"DataPDUInOrder":      {rule: ruleOr, normalOnly: true},
	"DataSequenceInOrder": {rule: ruleOr, normalOnly: true},
	"ErrorRecoveryLevel":  {rule: ruleMin, lo: 0, hi: 2},
}

// Offer order of the first operational PDU.
var (
	normalOffer = []string{
		"HeaderDigest", "DataDigest", "ErrorRecoveryLevel", "MaxConnections",
		"InitialR2T", "ImmediateData", "MaxRecvDataSegmentLength",
		"MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T",
		"DataPDUInOrder", "DataSequenceInOrder", "DefaultTime2Wait", "DefaultTime2Retain",
	}
	discoveryOffer = []string{"HeaderDigest", "DataDigest", "ErrorRecoveryLevel", "MaxRecvDataSegmentLength"}
)

// loginKeys belong to the login code (security stage and session identity);
// the negotiator neither answers nor records them.
var loginKeys = map[string]bool{
	"AuthMethod": true, "CHAP_A": true, "CHAP_I": true, "CHAP_C": true, "CHAP_N": true, "CHAP_R": true,
	"SessionType": true, "InitiatorName": true, "InitiatorAlias": true, "TargetName": true,
}

// Answers that are not values (RFC 7143 §6.2).
const (
	valReject        = "Reject"
	valIrrelevant    = "Irrelevant"
	valNotUnderstood = "NotUnderstood"
)

func isSpecial(v string) bool {
	return v == valReject || v == valIrrelevant || v == valNotUnderstood
}

// negotiator runs operational negotiation (RFC 7143 §6.2, §13) for one
// connection. It does no I/O: the login code sends offer(), passes every
// Login Response's keys to apply() and sends what it returns, then takes
// result().
type negotiator struct {
	cfg       NegotiationConfig
	discovery bool

	offered map[string]string // keys we offered, with our value
	results map[string]string // settled keys: the canonical result, "" = RFC default
	replied map[string]bool   // keys we have answered (target offers, NotUnderstood)
	seen    map[string]string // negotiable keys the target sent, with the first value

	targetMRDSL int // 0 until the target declares it
	tpgt        int
	alias       string
}

// newNegotiator prepares the offer for a Normal or a Discovery session.
func newNegotiator(cfg NegotiationConfig, discovery bool) *negotiator {
	return &negotiator{
		cfg:       cfg.normalized(),
		discovery: discovery,
		offered:   make(map[string]string),
		results:   make(map[string]string),
		replied:   make(map[string]bool),
		seen:      make(map[string]string),
		tpgt:      -1,
	}
}

// ours is the value we offer for a key, or would answer with as responder.
func (n *negotiator) ours(key string) string {
	c := &n.cfg
	switch key {
	case "HeaderDigest":
		return strings.Join(c.HeaderDigest.values(), ",")
	case "DataDigest":
		return strings.Join(c.DataDigest.values(), ",")
	case "MaxRecvDataSegmentLength":
		return strconv.Itoa(c.MaxRecvDataSegmentLength)
	case "MaxBurstLength":
		return strconv.Itoa(c.MaxBurstLength)
	case "FirstBurstLength":
		return strconv.Itoa(c.FirstBurstLength)
	case "MaxOutstandingR2T":
		return strconv.Itoa(c.MaxOutstandingR2T)
	case "InitialR2T":
		return yesNo(c.InitialR2T)
	case "ImmediateData":
		return yesNo(c.ImmediateData)
	case "DataPDUInOrder", "DataSequenceInOrder":
		return "Yes"
	case "ErrorRecoveryLevel":
		return "0" // iscsifs recovers at ERL 0 (session reinstatement)
	case "MaxConnections":
		return "1"
	case "DefaultTime2Wait":
		return strconv.Itoa(defaultTime2Wait)
	case "DefaultTime2Retain":
		// At ERL 0 we never continue a failed connection, so the target
		// need not keep its state (as libiscsi and open-iscsi offer).
		return "0"
	}
	return ""
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// offer returns the keys for the first operational PDU: every key relevant to
// the session type that is not settled yet (the target may have offered some
// first).
func (n *negotiator) offer() []pdu.KV {
	keys := normalOffer
	if n.discovery {
		keys = discoveryOffer
	}
	var out []pdu.KV
	for _, k := range keys {
		_, settled := n.results[k]
		_, seen := n.seen[k]
		_, offered := n.offered[k]
		if settled || seen || offered || n.replied[k] {
			continue
		}
		v := n.ours(k)
		n.offered[k] = v
		out = append(out, pdu.KV{Key: k, Value: v})
	}
	return out
}

// apply takes the keys of one Login Response: answers to our offers, the
// target's declarations and the target's own offers. It returns the answers
// we owe the target (to send in the next Login Request), or a
// *NegotiationError when an answer is unacceptable.
func (n *negotiator) apply(target []pdu.KV) ([]pdu.KV, error) {
	var reply []pdu.KV
	for _, kv := range target {
		k, v := kv.Key, kv.Value
		if loginKeys[k] {
			continue
		}
		if spec, ok := negotiable[k]; ok {
			if first, seen := n.seen[k]; seen {
				// A repeated key is harmless when it says the same.
				if first != v {
					return nil, &NegotiationError{Key: k, Value: v, Reason: fmt.Sprintf("sent twice with different values (first %.32q)", first)}
				}
				continue
			}
			n.seen[k] = v
			if ourValue, offered := n.offered[k]; offered {
				if err := n.answer(k, spec, ourValue, v); err != nil {
					return nil, err
				}
				continue
			}
			r, err := n.respondTo(k, spec, v)
			if err != nil {
				return nil, err
			}
			reply = append(reply, r...)
			continue
		}
		r, err := n.other(k, v)
		if err != nil {
			return nil, err
		}
		reply = append(reply, r...)
	}
	return reply, nil
}

// answer checks the target's answer to a key we offered and records the result.
func (n *negotiator) answer(k string, spec keySpec, ours, v string) error {
	bad := func(reason string) error { return &NegotiationError{Key: k, Value: v, Reason: reason} }
	if isSpecial(v) {
		// Reject, Irrelevant or NotUnderstood: the RFC default stays.
		n.results[k] = ""
		return n.checkDigest(k, v)
	}
	switch spec.rule {
	case ruleList:
		val, ok := listMember(strings.Split(ours, ","), v)
		if !ok {
			return bad("not one of the offered " + ours)
		}
		n.results[k] = val
	case ruleMin, ruleMax:
		x, err := inRange(v, spec.lo, spec.hi)
		if err != nil {
			return bad(err.Error())
		}
		o, _ := strconv.Atoi(ours)
		if spec.rule == ruleMin && x > o {
			return bad(fmt.Sprintf("more than the %d we offered (the result is the minimum)", o))
		}
		if spec.rule == ruleMax && x < o {
			return bad(fmt.Sprintf("less than the %d we offered (the result is the maximum)", o))
		}
		n.results[k] = strconv.Itoa(x)
	case ruleOr, ruleAnd:
		b, err := parseBool(v)
		if err != nil {
			return bad(err.Error())
		}
		o := ours == "Yes"
		if spec.rule == ruleOr && o && !b {
			return bad("we offered Yes and the result of OR is Yes")
		}
		if spec.rule == ruleAnd && !o && b {
			return bad("we offered No and the result of AND is No")
		}
		n.results[k] = yesNo(b)
	}
	return nil
}

// respondTo answers a negotiable key the target offered before we did.
func (n *negotiator) respondTo(k string, spec keySpec, v string) ([]pdu.KV, error) {
	if isSpecial(v) {
		// Not an offer; we never sent the key, so there is nothing to settle.
		return nil, nil
	}
	n.replied[k] = true
	reply := func(val string) []pdu.KV { return []pdu.KV{{Key: k, Value: val}} }
	if n.discovery && spec.normalOnly {
		return reply(valIrrelevant), nil
	}
	ours := n.ours(k)
	var result string
	switch spec.rule {
	case ruleList:
		for _, item := range strings.Split(v, ",") {
			if val, ok := listMember(strings.Split(ours, ","), item); ok {
				result = val
				break
			}
		}
		if result == "" {
			n.results[k] = ""
			if err := n.checkDigest(k, v); err != nil {
				return nil, err
			}
			return reply(valReject), nil
		}
	case ruleMin, ruleMax:
		x, err := inRange(v, spec.lo, spec.hi)
		if err != nil {
			n.results[k] = ""
			return reply(valReject), nil
		}
		o, _ := strconv.Atoi(ours)
		if spec.rule == ruleMin {
			result = strconv.Itoa(min(x, o))
		} else {
			result = strconv.Itoa(max(x, o))
		}
	case ruleOr, ruleAnd:
		b, err := parseBool(v)
		if err != nil {
			n.results[k] = ""
			return reply(valReject), nil
		}
		if spec.rule == ruleOr {
			result = yesNo(b || ours == "Yes")
		} else {
			result = yesNo(b && ours == "Yes")
		}
	}
	n.results[k] = result
	return reply(result), nil
}

// other handles the keys outside the negotiable table: declarations, obsolete
// and transport-specific keys, and unknown keys.
func (n *negotiator) other(k, v string) ([]pdu.KV, error) {
	once := func(val string) []pdu.KV {
		if n.replied[k] {
			return nil
		}
		n.replied[k] = true
		return []pdu.KV{{Key: k, Value: val}}
	}
	switch k {
	case "MaxRecvDataSegmentLength":
		// Declarative (RFC 7143 §13.12): the largest segment we may send.
		if isSpecial(v) {
			return nil, nil // istgt answers Irrelevant in discovery: 8192 stays
		}
		x, err := inRange(v, minDataLength, maxDataLength)
		if err != nil {
			return nil, &NegotiationError{Key: k, Value: v, Reason: err.Error()}
		}
		n.targetMRDSL = x
	case "TargetPortalGroupTag":
		x, err := inRange(v, 0, 65535)
		if err != nil {
			return nil, &NegotiationError{Key: k, Value: v, Reason: err.Error()}
		}
		n.tpgt = x
	case "TargetAlias":
		n.alias = v
	case "TargetAddress", "X#NodeArchitecture":
		// Declarations with nothing to answer; redirects are the login
		// code's business.
	case "IFMarker", "OFMarker":
		// Obsolete (RFC 7143 §13.26): never NotUnderstood; "No" is allowed
		// and what RFC 3720 targets expect.
		if isSpecial(v) {
			return nil, nil
		}
		return once("No"), nil
	case "IFMarkInt", "OFMarkInt":
		if isSpecial(v) {
			return nil, nil
		}
		return once(valReject), nil
	case "RDMAExtensions":
		// Boolean AND; this initiator is TCP only (RFC 7145 for iSER).
		if isSpecial(v) {
			return nil, nil
		}
		return once("No"), nil
	case "InitiatorRecvDataSegmentLength", "TargetRecvDataSegmentLength":
		if isSpecial(v) {
			return nil, nil
		}
		return once(valIrrelevant), nil // iSER only
	case "iSCSIProtocolLevel":
		// RFC 7144 §2.1: minimum; we implement RFC 7143 (level 1).
		if isSpecial(v) {
			return nil, nil
		}
		x, err := inRange(v, 0, 31)
		if err != nil {
			return once(valReject), nil
		}
		return once(strconv.Itoa(min(x, 1))), nil
	case "TaskReporting":
		// RFC 7143 §13.23: a list; we only do RFC3720 task reporting.
		if isSpecial(v) {
			return nil, nil
		}
		if n.discovery {
			return once(valIrrelevant), nil
		}
		for _, item := range strings.Split(v, ",") {
			if item == "RFC3720" {
				return once("RFC3720"), nil
			}
		}
		return once(valReject), nil
	default:
		if isSpecial(v) {
			return nil, nil // an answer to a key we never sent
		}
		return once(valNotUnderstood), nil
	}
	return nil, nil
}

// checkDigest fails when a digest we require ends up as None.
func (n *negotiator) checkDigest(k, v string) error {
	p := n.cfg.HeaderDigest
	if k == "DataDigest" {
		p = n.cfg.DataDigest
	} else if k != "HeaderDigest" {
		return nil
	}
	if p == DigestCRC32C {
		return &NegotiationError{Key: k, Value: v, Reason: "CRC32C is required but the target does not agree to it"}
	}
	return nil
}

// missing reports a required setting the target never agreed to: a CRC32C
// digest we require but the target left unanswered. Call it when the target
// moves to Full Feature Phase.
func (n *negotiator) missing() error {
	for _, k := range []string{"HeaderDigest", "DataDigest"} {
		if v, done := n.results[k]; v != "CRC32C" {
			if err := n.checkDigest(k, v); err != nil {
				if !done {
					return &NegotiationError{Key: k, Reason: "CRC32C is required but the target never answered"}
				}
				return err
			}
		}
	}
	return nil
}

// inRange parses a numerical value and checks it against [lo, hi].
func inRange(v string, lo, hi int) (int, error) {
	x, err := parseNumber(v)
	if err != nil {
		return 0, err
	}
	if x < uint64(lo) || x > uint64(hi) {
		return 0, fmt.Errorf("outside the range %d-%d", lo, hi)
	}
	return int(x), nil
}

func parseBool(v string) (bool, error) {
	switch {
	case strings.EqualFold(v, "Yes"):
		return true, nil
	case strings.EqualFold(v, "No"):
		return false, nil
	}
	return false, errors.New("not Yes or No")
}

// listMember finds v (one value, compared case-insensitively) in list and
// returns the list's spelling.
func listMember(list []string, v string) (string, bool) {
	for _, item := range list {
		if strings.EqualFold(item, v) {
			return item, true
		}
	}
	return "", false
}

// result returns the connection's parameters: negotiated results, and RFC
// defaults for the keys the target never answered (except where our offer
// alone decides: OR offered Yes, AND offered No, RFC 7143 §6.2.2). In
// discovery sessions the keys irrelevant there keep their defaults.
// FirstBurstLength never exceeds MaxBurstLength.
func (n *negotiator) result() Params {
	p := DefaultParams()
	p.MaxRecvDataSegmentLength = n.cfg.MaxRecvDataSegmentLength
	if n.targetMRDSL != 0 {
		p.TargetMaxRecvDataSegmentLength = n.targetMRDSL
	}
	p.TargetPortalGroupTag = n.tpgt
	p.TargetAlias = n.alias

	value := func(k string) (string, bool) {
		if v, done := n.results[k]; done {
			return v, v != ""
		}
		ours, offered := n.offered[k]
		if !offered {
			return "", false
		}
		switch negotiable[k].rule {
		case ruleOr:
			return ours, ours == "Yes"
		case ruleAnd:
			return ours, ours == "No"
		}
		return "", false
	}
	num := func(k string, dst *int) {
		if v, ok := value(k); ok {
			*dst, _ = strconv.Atoi(v)
		}
	}
	flag := func(k string, dst *bool) {
		if v, ok := value(k); ok {
			*dst = v == "Yes"
		}
	}
	if v, ok := value("HeaderDigest"); ok {
		p.HeaderDigest = v == "CRC32C"
	}
	if v, ok := value("DataDigest"); ok {
		p.DataDigest = v == "CRC32C"
	}
	num("ErrorRecoveryLevel", &p.ErrorRecoveryLevel)
	num("DefaultTime2Wait", &p.DefaultTime2Wait)
	num("DefaultTime2Retain", &p.DefaultTime2Retain)
	if !n.discovery {
		num("MaxConnections", &p.MaxConnections)
		num("MaxBurstLength", &p.MaxBurstLength)
		num("FirstBurstLength", &p.FirstBurstLength)
		num("MaxOutstandingR2T", &p.MaxOutstandingR2T)
		flag("InitialR2T", &p.InitialR2T)
		flag("ImmediateData", &p.ImmediateData)
		flag("DataPDUInOrder", &p.DataPDUInOrder)
		flag("DataSequenceInOrder", &p.DataSequenceInOrder)
	}
	p.FirstBurstLength = min(p.FirstBurstLength, p.MaxBurstLength)
	return p
}
