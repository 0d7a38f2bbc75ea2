package initiator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// Login stages (RFC 7143 §11.12.3).
const (
	stageSecurity    = 0
	stageOperational = 1
	stageFullFeature = 3
)

// loginMaxRounds bounds the PDUs of one login, so an endless target cannot
// keep us in login forever (the login timeout bounds the time as well).
const loginMaxRounds = 32

// loginTextLimit is the largest data segment sent or accepted during login:
// MaxRecvDataSegmentLength is not negotiated yet, so the RFC default applies.
const loginTextLimit = 8192

// loginParams is everything one login attempt needs.
type loginParams struct {
	portal     string
	target     string // "" for discovery
	discovery  bool
	isid       [6]byte
	tsih       uint16
	cid        uint16
	cmdSN      uint32
	name       string
	alias      string
	creds      Credentials
	algorithms []CHAPAlgorithm
	neg        NegotiationConfig
	log        *slog.Logger
}

// redirectError is a login answered with Status-Class 1 (RFC 7143 §11.13.5).
type redirectError struct {
	address   string // host:port
	permanent bool
}

func (e *redirectError) Error() string { return "login redirected to " + e.address }

// loginResult is the outcome of a successful login.
type loginResult struct {
	state loginState
	tpgt  int
	alias string
}

// loginExchange runs the login phase on a fresh connection.
type loginExchange struct {
	lp        loginParams
	nc        net.Conn
	r         *pdu.Reader
	w         *pdu.Writer
	itt       uint32
	statSN    uint32
	gotStatSN bool
	raw       pdu.Raw
	last      *pdu.LoginResp
	tpgt      int
	alias     string
}

func (lp *loginParams) fail(class, detail uint8, reason string) *LoginError {
	return &LoginError{Target: lp.target, Portal: lp.portal, Class: class, Detail: detail, Reason: reason}
}

// login performs the Login Phase: security negotiation (None or CHAP), then
// operational negotiation, until the target moves to Full Feature Phase.
func login(ctx context.Context, nc net.Conn, r *pdu.Reader, w *pdu.Writer, lp loginParams) (*loginResult, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
		defer nc.SetDeadline(time.Time{})
	}
	// Unblock reads and writes when ctx is cancelled without a deadline.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	r.SetMaxDataSegmentLength(loginTextLimit)
	x := &loginExchange{lp: lp, nc: nc, r: r, w: w, itt: 0, tpgt: -1}
	res, err := x.run()
	// The socket deadline and ctx expire together: whichever is seen first,
	// it is the login timeout.
	if err != nil && (ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded)) {
		cause := ctx.Err()
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		return nil, lp.fail(0xff, 0xff, fmt.Sprintf("login timed out: %v", cause))
	}
	return res, err
}

func (x *loginExchange) run() (*loginResult, error) {
	lp := &x.lp
	keys := []pdu.KV{{Key: "InitiatorName", Value: lp.name}}
	if lp.alias != "" {
		keys = append(keys, pdu.KV{Key: "InitiatorAlias", Value: lp.alias})
	}
	if lp.discovery {
		keys = append(keys, pdu.KV{Key: "SessionType", Value: "Discovery"})
	} else {
		keys = append(keys, pdu.KV{Key: "SessionType", Value: "Normal"}, pdu.KV{Key: "TargetName", Value: lp.target})
	}
	haveCreds := lp.creds.User != "" || lp.creds.Secret != ""
	mutual := lp.creds.MutualUser != "" || lp.creds.MutualSecret != ""
	switch {
	case mutual:
		keys = append(keys, pdu.KV{Key: "AuthMethod", Value: "CHAP"})
	case haveCreds:
		keys = append(keys, pdu.KV{Key: "AuthMethod", Value: "CHAP,None"})
	default:
		keys = append(keys, pdu.KV{Key: "AuthMethod", Value: "None"})
	}

	// Security stage.
	kvs, err := x.exchange(keys, !haveCreds, stageSecurity, stageOperational)
	if err != nil {
		return nil, err
	}
	if err := x.security(kvs, haveCreds, mutual); err != nil {
		return nil, err
	}
	// Operational stage (unless the target already moved to full feature).
	neg := newNegotiator(lp.neg, lp.discovery)
	if !(x.last.Transit && x.last.NSG == stageFullFeature) {
		kvs, err = x.exchange(neg.offer(), true, stageOperational, stageFullFeature)
		for round := 0; ; round++ {
			if err != nil {
				return nil, err
			}
			reply, nerr := neg.apply(kvs)
			if nerr != nil {
				return nil, lp.fail(0xff, 0xff, "negotiation failed: "+nerr.Error())
			}
			if x.last.Transit && x.last.NSG == stageFullFeature {
				break
			}
			if round >= loginMaxRounds {
				return nil, lp.fail(0xff, 0xff, "target never completed operational negotiation")
			}
			kvs, err = x.exchange(reply, true, stageOperational, stageFullFeature)
		}
	}
	if err := neg.missing(); err != nil {
		return nil, lp.fail(0xff, 0xff, "negotiation failed: "+err.Error())
	}
	params := neg.result()
	if params.TargetPortalGroupTag < 0 {
		params.TargetPortalGroupTag = x.tpgt
	}
	if params.TargetAlias == "" {
		params.TargetAlias = x.alias
	}
	last := x.last
	return &loginResult{
		state: loginState{
			cmdSN:     lp.cmdSN,
			expCmdSN:  last.ExpCmdSN,
			maxCmdSN:  last.MaxCmdSN,
			expStatSN: x.statSN + 1,
			tsih:      last.TSIH,
			params:    params,
		},
		tpgt:  params.TargetPortalGroupTag,
		alias: params.TargetAlias,
	}, nil
}

// security completes the security stage after the target's answer to the
// first PDU.
func (x *loginExchange) security(kvs []pdu.KV, haveCreds, mutual bool) error {
	lp := &x.lp
	method, _ := pdu.Lookup(kvs, "AuthMethod")
	switch {
	case method == "CHAP":
		if !haveCreds {
			return lp.fail(2, 1, "authentication failed: target requires CHAP but no credentials were given")
		}
	case method == "None" || (method == "" && x.last.Transit):
		if mutual {
			return lp.fail(2, 1, "authentication failed: mutual CHAP requested but the target does not authenticate")
		}
		return x.leaveSecurity()
	case method == "":
		return lp.fail(2, 1, "target did not answer AuthMethod")
	default:
		return lp.fail(2, 1, fmt.Sprintf("authentication failed: target answered AuthMethod=%s", method))
	}

	chap := newCHAPExchange(lp.creds, lp.algorithms, nil)
	kvs, err := x.exchange(chap.offer(), false, stageSecurity, stageOperational)
	if err != nil {
		return err
	}
	answer, err := chap.respond(kvs)
	if err != nil {
		return &LoginError{Target: lp.target, Portal: lp.portal, Class: 2, Detail: 1, Reason: "authentication failed: " + trimAuth(err), auth: true}
	}
	kvs, err = x.exchange(answer, true, stageSecurity, stageOperational)
	if err != nil {
		return err
	}
	if mutual {
		if err := chap.verify(kvs); err != nil {
			return &LoginError{Target: lp.target, Portal: lp.portal, Class: 2, Detail: 1, Reason: "mutual authentication failed: " + trimAuth(err), auth: true}
		}
	}
	lp.log.Debug("CHAP authentication done", "chap_user", lp.creds.User, "algorithm", chap.algorithm().String(), "mutual", mutual)
	return x.leaveSecurity()
}

// trimAuth drops the "authentication failed: " prefix of an AuthError so the
// message does not say it twice.
func trimAuth(err error) string {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return err.Error()
}

// leaveSecurity sends empty PDUs asking to transit until the target agrees.
func (x *loginExchange) leaveSecurity() error {
	for round := 0; !x.last.Transit; round++ {
		if round >= loginMaxRounds {
			return x.lp.fail(0xff, 0xff, "target never left the security stage")
		}
		if _, err := x.exchange(nil, true, stageSecurity, stageOperational); err != nil {
			return err
		}
	}
	return nil
}

// exchange sends keys (split over several PDUs with the C bit when long) and
// returns the target's whole answer (joined over its C-bit PDUs).
func (x *loginExchange) exchange(keys []pdu.KV, transit bool, csg, nsg uint8) ([]pdu.KV, error) {
	text := pdu.EncodeText(nil, keys)
	for {
		chunk := text
		cont := false
		if len(chunk) > loginTextLimit {
			chunk, cont = text[:loginTextLimit], true
		}
		text = text[len(chunk):]
		resp, err := x.roundTrip(&pdu.LoginReq{Transit: transit && !cont, Continue: cont, CSG: csg, NSG: nsg, Data: chunk})
		if err != nil {
			return nil, err
		}
		if !cont {
			var all []byte
			all = append(all, resp.Data...)
			for resp.Continue {
				if resp, err = x.roundTrip(&pdu.LoginReq{CSG: csg, NSG: nsg}); err != nil {
					return nil, err
				}
				if len(all)+len(resp.Data) > 64*1024 {
					return nil, x.lp.fail(0xff, 0xff, "login text from target exceeds 64 KiB")
				}
				all = append(all, resp.Data...)
			}
			kvs, err := pdu.ParseText(all)
			if err != nil {
				return nil, x.lp.fail(0xff, 0xff, "malformed login text: "+err.Error())
			}
			x.noteDeclarative(kvs)
			return kvs, nil
		}
		// The target acknowledges a C-bit PDU with an empty response.
		if len(resp.Data) != 0 || resp.Transit {
			return nil, x.lp.fail(0xff, 0xff, "target answered a continued login PDU with data")
		}
	}
}

func (x *loginExchange) noteDeclarative(kvs []pdu.KV) {
	if v, ok := pdu.Lookup(kvs, "TargetPortalGroupTag"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			x.tpgt = n
		}
	}
	if v, ok := pdu.Lookup(kvs, "TargetAlias"); ok {
		x.alias = v
	}
}

// roundTrip sends one Login Request and reads the Login Response.
func (x *loginExchange) roundTrip(req *pdu.LoginReq) (*pdu.LoginResp, error) {
	lp := &x.lp
	req.ISID = lp.isid
	req.TSIH = lp.tsih
	req.ITT = x.itt
	req.CID = lp.cid
	req.CmdSN = lp.cmdSN
	if x.gotStatSN {
		req.ExpStatSN = x.statSN + 1
	}
	lp.log.Debug("login request", "csg", req.CSG, "nsg", req.NSG, "transit", req.Transit, "continue", req.Continue, "keys", loggableText(req.Data))
	var out pdu.Raw
	if err := req.Encode(&out); err != nil {
		return nil, err
	}
	if err := x.w.Write(&out); err != nil {
		return nil, &ConnectionError{Portal: lp.portal, Err: err}
	}
	if err := x.r.Read(&x.raw); err != nil {
		return nil, &ConnectionError{Portal: lp.portal, Err: err}
	}
	if op := x.raw.BHS.Opcode(); op != pdu.OpLoginResp {
		return nil, lp.fail(0xff, 0xff, fmt.Sprintf("target sent opcode 0x%02x during login", uint8(op)))
	}
	resp := new(pdu.LoginResp)
	if err := resp.Decode(&x.raw); err != nil {
		return nil, lp.fail(0xff, 0xff, "malformed login response: "+err.Error())
	}
	resp.Data = append([]byte(nil), resp.Data...)
	lp.log.Debug("login response", "csg", resp.CSG, "nsg", resp.NSG, "transit", resp.Transit, "status_class", resp.StatusClass, "status_detail", resp.StatusDetail, "keys", loggableText(resp.Data))
	x.statSN = resp.StatSN
	x.gotStatSN = true
	x.last = resp
	switch resp.StatusClass {
	case pdu.LoginStatusSuccess:
	case pdu.LoginStatusRedirect:
		kvs, _ := pdu.ParseText(resp.Data)
		addr, _ := pdu.Lookup(kvs, "TargetAddress")
		hostPort, _, err := parseTargetAddress(addr)
		if err != nil {
			return nil, lp.fail(resp.StatusClass, resp.StatusDetail, "redirect without a usable TargetAddress")
		}
		return nil, &redirectError{address: hostPort, permanent: resp.StatusDetail == 0x02}
	default:
		return nil, lp.fail(resp.StatusClass, resp.StatusDetail, "")
	}
	if resp.VersionActive != 0 {
		return nil, lp.fail(2, 5, "")
	}
	if resp.ITT != x.itt {
		return nil, lp.fail(0xff, 0xff, "login response with a foreign ITT")
	}
	if resp.Transit && resp.NSG < req.CSG || resp.CSG != req.CSG {
		return nil, lp.fail(0xff, 0xff, fmt.Sprintf("target answered stage %d/%d to a stage %d request", resp.CSG, resp.NSG, req.CSG))
	}
	return resp, nil
}

// parseTargetAddress splits "host[:port][,tpgt]" (IPv6 in brackets) into
// "host:port" and the portal group tag (-1 when absent).
func parseTargetAddress(s string) (string, int, error) {
	tpgt := -1
	hostPort := s
	if i := lastComma(s); i >= 0 {
		n, err := strconv.Atoi(s[i+1:])
		if err != nil || n < 0 || n > 65535 {
			return "", 0, fmt.Errorf("bad portal group tag in %q", s)
		}
		tpgt = n
		hostPort = s[:i]
	}
	if hostPort == "" {
		return "", 0, fmt.Errorf("empty TargetAddress")
	}
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		// No port: the default 3260 applies.
		host, port = hostPort, "3260"
		if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 || host == "" {
		return "", 0, fmt.Errorf("bad TargetAddress %q", s)
	}
	return net.JoinHostPort(host, port), tpgt, nil
}

func lastComma(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		switch s[i] {
		case ',':
			return i
		case ']', ':':
			return -1
		}
	}
	return -1
}

// loggableText renders login text for debug logs: CHAP values (challenges,
// responses) are left out, everything else is shown. Secrets are never part
// of login text.
func loggableText(data []byte) string {
	kvs, err := pdu.ParseText(data)
	if err != nil {
		return fmt.Sprintf("<%d bytes, malformed>", len(data))
	}
	var b []byte
	for i, kv := range kvs {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, kv.Key...)
		b = append(b, '=')
		switch kv.Key {
		case "CHAP_R", "CHAP_C":
			b = append(b, "<omitted>"...)
		default:
			b = append(b, kv.Value...)
		}
	}
	return string(b)
}
