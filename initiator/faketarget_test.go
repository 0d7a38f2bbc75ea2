package initiator

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// fakeTarget is an in-process iSCSI target for unit tests of the session
// logic and for fault injection. It is not a stand-in for a real target:
// integration tests use tgtd and istgt. It serves one LUN (LUN 0) of an
// in-memory disk with 512-byte blocks, and lets tests change its
// negotiation answers and inject misbehaviour.
type fakeTarget struct {
	ln net.Listener

	// Knobs, set before the initiator connects.
	keys        map[string]string                    // operational answers overriding the echo
	window      uint32                               // MaxCmdSN - ExpCmdSN + 1 (default 32)
	delay       atomic.Int64                         // per SCSI command, nanoseconds
	splitDataIn int                                  // Data-In segment size (default 8192)
	separateRsp bool                                 // SCSI Response after Data-In instead of the S bit
	pingEvery   time.Duration                        // target NOP-In pings
	onPDU       func(c *fakeConn, raw *pdu.Raw) bool // return true when handled
	sendTargets string                               // SendTargets answer text (joined NUL-separated)
	// sendTargetsAt, when set, answers SendTargets instead, by the portal
	// the discovery session came in on (tgt lists only that one).
	sendTargetsAt func(portal string) string
	textChunk     int // split Text responses into chunks of this size

	// Knobs for recovery and hostile-target tests (hostile_test.go,
	// recovery_test.go), also set before the initiator connects.
	chap      *fakeCHAP                                            // require CHAP in the security stage
	digests   bool                                                 // accept CRC32C header and data digests
	onLogin   func(c *fakeConn, req *pdu.LoginReq) fakeLoginAction // script the login phase
	refuseOld atomic.Bool                                          // for onLogin hooks: refuse the first session's ISID from now on
	// tmfResponse, when set, answers task management requests by function.
	tmfResponse func(function uint8) uint8
	tmfs        []uint8                                    // TMF functions received, guarded by mu
	onSCSI      func(c *fakeConn, m *pdu.SCSICommand) bool // answer a command itself (true) instead of executing it
	serial      atomic.Pointer[string]                     // VPD 0x80 unit serial; nil: no VPD pages
	modeWCE     atomic.Int32                               // MODE SENSE(10): 0 refused, 1 caching page with WCE=0, 2 with WCE=1
	modeDPOFUA  atomic.Bool                                // MODE SENSE(10) header: DPOFUA
	refuseFUA   atomic.Bool                                // a WRITE with FUA gets ILLEGAL REQUEST 24/00
	lastLBA16   atomic.Uint64                              // READ CAPACITY(16) answers this LAST LBA; 0: the command is refused
	logins      atomic.Int32                               // logins that reached Full Feature Phase
	scsiN       atomic.Int32                               // SCSI commands received (after onPDU)
	isids       []loginRecord                              // every Login Request's ISID/TSIH, guarded by mu
	logouts     []logoutRecord                             // every Logout Request, guarded by mu
	dropLogout  atomic.Bool                                // swallow Logout Requests: no response, the connection stays
	live        []*fakeConn                                // connections in Full Feature Phase, guarded by mu
	chals       [][]byte                                   // CHAP challenges the initiator sent, guarded by mu
	// alua makes the LU one with asymmetric access (enableALUA); nil: TPGS
	// 0, every portal alike, as tgt and istgt.
	alua       atomic.Pointer[fakeALUA]
	ioByPortal map[string]int // READ and WRITE commands per portal (listener address), guarded by mu

	mu   sync.Mutex
	disk []byte
	// medium, when not nil, models a volatile write cache (volatileCache):
	// disk is what reads see, medium what survives a power loss
	// (powerLoss). A WRITE reaches the medium with FUA or at the next
	// SYNCHRONIZE CACHE.
	medium   []byte
	fuaIO    int          // WRITEs with FUA, guarded by mu
	cdbOps   map[byte]int // SCSI opcodes seen
	peak     int
	running  int
	pings    atomic.Int32 // answered pings
	overruns atomic.Int32 // commands beyond MaxCmdSN, over all connections
	conns    []net.Conn
	extraLns []net.Listener // listenAlso's portals, guarded by mu
	wg       sync.WaitGroup
}

func newFakeTarget(t testing.TB, size int) *fakeTarget {
	ft, err := listenFakeTarget(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ft.close)
	return ft
}

// volatileCache makes the fake's write cache volatile from now on: what
// is written without FUA is lost at powerLoss unless a SYNCHRONIZE CACHE
// came after it.
func (ft *fakeTarget) volatileCache() {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.medium = append([]byte(nil), ft.disk...)
}

// powerLoss drops what the volatile write cache held: reads see the medium.
func (ft *fakeTarget) powerLoss() {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	copy(ft.disk, ft.medium)
}

// listenFakeTarget is newFakeTarget for callers without a testing.TB (the
// examples); they call close.
func listenFakeTarget(size int) (*fakeTarget, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ft := &fakeTarget{ln: ln, disk: make([]byte, size), window: 32, splitDataIn: 8192, keys: map[string]string{}}
	for i := range ft.disk {
		ft.disk[i] = byte(i * 7)
	}
	return ft, nil
}

func (ft *fakeTarget) start() string { return ft.serve(ft.ln) }

// listenAlso opens another portal of the same target (the same disk and
// state), on addr ("127.0.0.1:0" for any port), and returns its address.
// close closes it too.
func (ft *fakeTarget) listenAlso(addr string) (string, net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	ft.mu.Lock()
	ft.extraLns = append(ft.extraLns, ln)
	ft.mu.Unlock()
	return ft.serve(ln), ln, nil
}

// serve accepts connections on ln until it is closed.
func (ft *fakeTarget) serve(ln net.Listener) string {
	ft.wg.Add(1)
	go func() {
		defer ft.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			ft.mu.Lock()
			ft.conns = append(ft.conns, nc)
			ft.mu.Unlock()
			ft.wg.Add(1)
			go func() {
				defer ft.wg.Done()
				c := &fakeConn{ft: ft, nc: nc, r: pdu.NewReader(nc), w: pdu.NewWriter(nc), outs: map[uint32]chan *pdu.DataOut{}}
				c.serve()
			}()
		}
	}()
	return ln.Addr().String()
}

// dropAll closes every connection (a network failure).
func (ft *fakeTarget) dropAll() {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	for _, c := range ft.conns {
		c.Close()
	}
	ft.conns = nil
}

func (ft *fakeTarget) close() {
	ft.ln.Close()
	ft.mu.Lock()
	for _, ln := range ft.extraLns {
		ln.Close()
	}
	ft.mu.Unlock()
	ft.dropAll()
	ft.wg.Wait()
}

// fakeConn is one connection of the fake target.
type fakeConn struct {
	ft     *fakeTarget
	nc     net.Conn
	r      *pdu.Reader
	w      *pdu.Writer
	wmu    sync.Mutex
	statSN uint32
	expCmd uint32
	mrdsl  int // initiator's MaxRecvDataSegmentLength
	outsMu sync.Mutex
	outs   map[uint32]chan *pdu.DataOut
	wg     sync.WaitGroup
	ttt    uint32
	text   []byte // pending SendTargets continuation

	unsolicited int // FirstBurstLength when InitialR2T=No, else 0

	aborted       map[uint32]bool // ITTs ended by ABORT TASK, guarded by wmu
	advertisedMax atomic.Uint32   // highest MaxCmdSN sent
	// pending counts the SCSI commands serve executes whose status has not
	// been sent; it drops before the status is written, so a PDU the
	// initiator sends after the status always sees it lower.
	pending atomic.Int32

	chapID        byte   // CHAP_I sent to the initiator
	chapChallenge []byte // CHAP_C sent to the initiator
	chapDone      bool   // the initiator's CHAP_R was right
	hdigest       bool   // negotiated digests, set after login
	ddigest       bool

	aluaUA atomic.Bool // UNIT ATTENTION 2A/06 pending (setALUAStates)
}

func (c *fakeConn) send(m pdu.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isAborted(m) {
		return nil
	}
	return c.w.WriteMessage(m)
}

// isAborted drops PDUs of aborted tasks (as a target does after answering
// ABORT TASK); wmu must be held.
func (c *fakeConn) isAborted(m pdu.Message) bool {
	switch m := m.(type) {
	case *pdu.DataIn:
		return c.aborted[m.ITT]
	case *pdu.SCSIResponse:
		return c.aborted[m.ITT]
	case *pdu.R2T:
		return c.aborted[m.ITT]
	}
	return false
}

// sendStatus assigns the next StatSN and writes the PDU under one lock, so
// StatSNs go out in order as on a real target.
func (c *fakeConn) sendStatus(build func(statSN uint32) pdu.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	m := build(c.statSN)
	switch m := m.(type) {
	case *pdu.SCSIResponse:
		c.pending.Add(-1)
	case *pdu.DataIn:
		if m.StatusPresent {
			c.pending.Add(-1)
		}
	}
	if c.isAborted(m) {
		return nil
	}
	c.statSN++
	return c.w.WriteMessage(m)
}

// sendRaw writes bytes as they are (garbage, truncated PDUs).
func (c *fakeConn) sendRaw(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.Write(b)
}

// nextStat returns the StatSN to use and advances it.
func (c *fakeConn) nextStat() uint32 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	s := c.statSN
	c.statSN++
	return s
}

func (c *fakeConn) window() (exp, max uint32) {
	exp = atomic.LoadUint32(&c.expCmd)
	max = exp + c.ft.window - 1
	for {
		old := c.advertisedMax.Load()
		if !serialLess(old, max) || c.advertisedMax.CompareAndSwap(old, max) {
			return exp, max
		}
	}
}

func (c *fakeConn) serve() {
	defer c.wg.Wait()
	defer func() {
		// Unblock command goroutines waiting for Data-Out.
		c.outsMu.Lock()
		for itt, ch := range c.outs {
			close(ch)
			delete(c.outs, itt)
		}
		c.outsMu.Unlock()
	}()
	defer c.nc.Close()
	if !c.login() {
		return
	}
	stopPing := make(chan struct{})
	defer close(stopPing)
	if c.ft.pingEvery > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			tick := time.NewTicker(c.ft.pingEvery)
			defer tick.Stop()
			ttt := uint32(100)
			for {
				select {
				case <-stopPing:
					return
				case <-tick.C:
				}
				exp, max := c.window()
				ttt++
				c.wmu.Lock()
				stat := c.statSN
				c.wmu.Unlock()
				c.send(&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: ttt, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max})
			}
		}()
	}
	for {
		var raw pdu.Raw
		if err := c.r.Read(&raw); err != nil {
			return
		}
		if c.ft.onPDU != nil && c.ft.onPDU(c, &raw) {
			continue
		}
		msg, err := pdu.Decode(&raw)
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pdu.SCSICommand:
			c.ft.scsiN.Add(1)
			if !serialLessEq(m.CmdSN, c.advertisedMax.Load()) {
				c.ft.overruns.Add(1)
			}
			if !m.Immediate {
				atomic.AddUint32(&c.expCmd, 1)
			}
			var ch chan *pdu.DataOut
			if m.Write && len(m.Data) < int(m.ExpectedDataTransferLength) {
				ch = make(chan *pdu.DataOut, 4096)
				c.outsMu.Lock()
				c.outs[m.ITT] = ch
				c.outsMu.Unlock()
			}
			m.Data = append([]byte(nil), m.Data...)
			c.pending.Add(1)
			c.wg.Add(1)
			go func() { defer c.wg.Done(); c.scsi(m, ch) }()
		case *pdu.DataOut:
			c.outsMu.Lock()
			ch := c.outs[m.ITT]
			c.outsMu.Unlock()
			if ch != nil {
				m.Data = append([]byte(nil), m.Data...)
				ch <- m
			}
		case *pdu.NOPOut:
			if m.ITT != pdu.ReservedTag {
				exp, max := c.window()
				c.sendStatus(func(stat uint32) pdu.Message {
					return &pdu.NOPIn{ITT: m.ITT, TTT: pdu.ReservedTag, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max, Data: m.Data}
				})
			} else {
				c.ft.pings.Add(1)
			}
		case *pdu.TextReq:
			if !m.Immediate {
				atomic.AddUint32(&c.expCmd, 1)
			}
			c.textReply(m)
		case *pdu.LogoutReq:
			c.ft.mu.Lock()
			c.ft.logouts = append(c.ft.logouts, logoutRecord{reason: m.Reason, at: time.Now(), pending: c.pending.Load()})
			c.ft.mu.Unlock()
			if c.ft.dropLogout.Load() {
				continue
			}
			exp, max := c.window()
			c.sendStatus(func(stat uint32) pdu.Message {
				return &pdu.LogoutResp{ITT: m.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max}
			})
			return
		case *pdu.TaskMgmtReq:
			exp, max := c.window()
			c.wmu.Lock()
			if c.aborted == nil {
				c.aborted = map[uint32]bool{}
			}
			resp := uint8(pdu.TMFRespComplete)
			if c.ft.tmfResponse != nil {
				resp = c.ft.tmfResponse(m.Function)
			}
			if resp == pdu.TMFRespComplete {
				c.aborted[m.ReferencedTaskTag] = true
			}
			c.wmu.Unlock()
			c.ft.mu.Lock()
			c.ft.tmfs = append(c.ft.tmfs, m.Function)
			c.ft.mu.Unlock()
			c.sendStatus(func(stat uint32) pdu.Message {
				return &pdu.TaskMgmtResp{Response: resp, ITT: m.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max}
			})
		}
	}
}

// login accepts AuthMethod=None (or runs CHAP when the chap knob is set) and
// echoes the operational keys (with the knob overrides). onLogin may answer
// any Login Request itself.
func (c *fakeConn) login() bool {
	hdigest, ddigest := false, false
	for {
		var raw pdu.Raw
		if err := c.r.Read(&raw); err != nil {
			return false
		}
		var req pdu.LoginReq
		if err := req.Decode(&raw); err != nil {
			return false
		}
		c.ft.mu.Lock()
		c.ft.isids = append(c.ft.isids, loginRecord{isid: req.ISID, tsih: req.TSIH, at: time.Now()})
		c.ft.mu.Unlock()
		if c.ft.onLogin != nil {
			switch c.ft.onLogin(c, &req) {
			case loginHandled:
				continue
			case loginClose:
				return false
			}
		}
		kvs, _ := pdu.ParseText(req.Data)
		var answer []pdu.KV
		if req.CSG == 0 && c.ft.chap != nil {
			var ok bool
			if answer, ok = c.chapStep(&req, kvs); !ok {
				return false
			}
		}
		for _, kv := range kvs {
			switch kv.Key {
			case "InitiatorName", "InitiatorAlias", "SessionType", "TargetName":
			case "CHAP_A", "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C":
			case "AuthMethod":
				if c.ft.chap == nil {
					answer = append(answer, pdu.KV{Key: "AuthMethod", Value: "None"})
				}
			case "MaxRecvDataSegmentLength":
				c.mrdsl, _ = strconv.Atoi(kv.Value)
			case "HeaderDigest", "DataDigest":
				v := "None"
				if c.ft.digests && strings.Contains(kv.Value, "CRC32C") {
					v = "CRC32C"
					if kv.Key == "HeaderDigest" {
						hdigest = true
					} else {
						ddigest = true
					}
				}
				answer = append(answer, pdu.KV{Key: kv.Key, Value: v})
			default:
				if v, ok := c.ft.keys[kv.Key]; ok {
					answer = append(answer, pdu.KV{Key: kv.Key, Value: v})
				} else {
					answer = append(answer, kv)
				}
			}
		}
		if v, ok := pdu.Lookup(answer, "InitialR2T"); ok && v == "No" {
			fb, _ := pdu.Lookup(answer, "FirstBurstLength")
			c.unsolicited, _ = strconv.Atoi(fb)
			if c.unsolicited == 0 {
				c.unsolicited = 65536
			}
		}
		if req.CSG == 1 {
			for _, k := range []string{"MaxRecvDataSegmentLength"} {
				if v, ok := c.ft.keys[k]; ok {
					answer = append(answer, pdu.KV{Key: k, Value: v})
				}
			}
		}
		atomic.StoreUint32(&c.expCmd, req.CmdSN)
		exp, max := c.window()
		transit := req.Transit
		if req.CSG == 0 && c.ft.chap != nil && !c.chapDone {
			transit = false // CHAP has not finished: stay in the security stage
		}
		resp := &pdu.LoginResp{
			Transit: transit, CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, TSIH: 1,
			ITT: req.ITT, StatSN: c.nextStat(), ExpCmdSN: exp, MaxCmdSN: max,
			Data: pdu.EncodeText(nil, answer),
		}
		if !transit {
			resp.NSG = 0
		}
		if err := c.send(resp); err != nil {
			return false
		}
		if transit && req.NSG == 3 {
			c.wmu.Lock()
			c.r.SetDigests(hdigest, ddigest)
			c.w.SetDigests(hdigest, ddigest)
			c.hdigest, c.ddigest = hdigest, ddigest
			c.wmu.Unlock()
			c.ft.logins.Add(1)
			c.ft.mu.Lock()
			c.ft.live = append(c.ft.live, c)
			c.ft.mu.Unlock()
			return true
		}
	}
}

// loginRecord is what identified one Login Request's session, and when it
// arrived.
type loginRecord struct {
	isid [6]byte
	tsih uint16
	at   time.Time
}

// logoutRecord is one Logout Request: its reason code, when it arrived and
// how many SCSI commands of its connection were still unanswered.
type logoutRecord struct {
	reason  uint8
	at      time.Time
	pending int32
}

// fakeLoginAction is what an onLogin hook did with a Login Request.
type fakeLoginAction int

const (
	loginDefault fakeLoginAction = iota // let the fake answer as usual
	loginHandled                        // the hook answered (or chose not to); read the next PDU
	loginClose                          // close the connection
)

// fakeCHAP is the target side of CHAP (MD5 only): the initiator's account,
// optionally the target's own for mutual CHAP, and ways to misbehave.
type fakeCHAP struct {
	user, secret             string
	mutualUser, mutualSecret string
	// challenge, when set, picks the challenge for a connection (a hostile
	// target replaying one the initiator sent).
	challenge func(c *fakeConn) []byte
	// mutualWith, when set, is the secret the target answers the mutual
	// challenge with (a reflection uses the initiator's own).
	mutualWith string
	// responses counts CHAP_R values received from the initiator.
	responses atomic.Int32
	// onlyMD5 makes the target fail any login whose CHAP_A list is not
	// exactly "5", as old LIO and Synology targets do.
	onlyMD5 bool
	offers  []string // CHAP_A lists received, guarded by fakeTarget.mu
}

// chapStep runs one security-stage PDU through CHAP and returns the keys to
// answer; false means the login failed and the connection was answered with
// an authentication failure.
func (c *fakeConn) chapStep(req *pdu.LoginReq, kvs []pdu.KV) ([]pdu.KV, bool) {
	ch := c.ft.chap
	if _, ok := pdu.Lookup(kvs, "AuthMethod"); ok {
		return []pdu.KV{{Key: "AuthMethod", Value: "CHAP"}}, true
	}
	if list, ok := pdu.Lookup(kvs, "CHAP_A"); ok {
		c.ft.mu.Lock()
		ch.offers = append(ch.offers, list)
		c.ft.mu.Unlock()
		if ch.onlyMD5 && list != "5" {
			c.send(&pdu.LoginResp{CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, ITT: req.ITT, StatSN: c.nextStat(), StatusClass: 2, StatusDetail: 1})
			return nil, false
		}
		c.chapID = 7
		c.chapChallenge = make([]byte, 16)
		for i := range c.chapChallenge {
			c.chapChallenge[i] = byte(i*31 + 5)
		}
		if ch.challenge != nil {
			c.chapChallenge = ch.challenge(c)
		}
		return []pdu.KV{
			{Key: "CHAP_A", Value: "5"},
			{Key: "CHAP_I", Value: strconv.Itoa(int(c.chapID))},
			{Key: "CHAP_C", Value: encodeHex(c.chapChallenge)},
		}, true
	}
	r, ok := pdu.Lookup(kvs, "CHAP_R")
	if !ok {
		return nil, true // an empty PDU asking to transit
	}
	ch.responses.Add(1)
	n, _ := pdu.Lookup(kvs, "CHAP_N")
	got, err := decodeBinary(r, 1024)
	want := chapResponse(CHAPMD5, c.chapID, ch.secret, c.chapChallenge)
	if err != nil || n != ch.user || !bytes.Equal(got, want) {
		c.send(&pdu.LoginResp{CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, ITT: req.ITT, StatSN: c.nextStat(), StatusClass: 2, StatusDetail: 1})
		return nil, false
	}
	c.chapDone = true
	var answer []pdu.KV
	if ic, ok := pdu.Lookup(kvs, "CHAP_C"); ok {
		iid, _ := pdu.Lookup(kvs, "CHAP_I")
		id, _ := strconv.Atoi(iid)
		chal, _ := decodeBinary(ic, 1024)
		c.ft.mu.Lock()
		c.ft.chals = append(c.ft.chals, chal)
		c.ft.mu.Unlock()
		secret := ch.mutualSecret
		if ch.mutualWith != "" {
			secret = ch.mutualWith
		}
		answer = append(answer,
			pdu.KV{Key: "CHAP_N", Value: ch.mutualUser},
			pdu.KV{Key: "CHAP_R", Value: encodeHex(chapResponse(CHAPMD5, byte(id), secret, chal))})
	}
	return answer, true
}

// challengesSeen returns the CHAP challenges the initiator sent so far.
func (ft *fakeTarget) challengesSeen() [][]byte {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([][]byte(nil), ft.chals...)
}

// loginRecords returns the ISID and TSIH of every Login Request so far.
func (ft *fakeTarget) loginRecords() []loginRecord {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([]loginRecord(nil), ft.isids...)
}

// logoutRecords returns every Logout Request so far.
func (ft *fakeTarget) logoutRecords() []logoutRecord {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return append([]logoutRecord(nil), ft.logouts...)
}

// lastConn returns the most recent connection in Full Feature Phase.
func (ft *fakeTarget) lastConn() *fakeConn {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(ft.live) == 0 {
		return nil
	}
	return ft.live[len(ft.live)-1]
}

// setSerial makes the fake report VPD pages 0x00 and 0x80 with serial.
func (ft *fakeTarget) setSerial(serial string) { ft.serial.Store(&serial) }

// command returns the SCSI Command in raw, or nil for another PDU.
func command(raw *pdu.Raw) *pdu.SCSICommand {
	if raw.BHS.Opcode() != pdu.OpSCSICommand {
		return nil
	}
	var m pdu.SCSICommand
	if err := m.Decode(raw); err != nil {
		return nil
	}
	return &m
}

// accept numbers a command that a hook answers itself, as serve does.
func (c *fakeConn) accept(m *pdu.SCSICommand) {
	if !m.Immediate {
		atomic.AddUint32(&c.expCmd, 1)
	}
}

// respond ends a command with a status and optional sense data.
func (c *fakeConn) respond(m *pdu.SCSICommand, status uint8, sense []byte) {
	exp, max := c.window()
	c.sendStatus(func(stat uint32) pdu.Message {
		r := &pdu.SCSIResponse{Status: status, ITT: m.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max}
		if len(sense) > 0 {
			r.SetSenseData(sense)
		}
		return r
	})
}

// fixedSense builds fixed-format sense data (response code 0x70).
func fixedSense(key, asc, ascq uint8) []byte {
	b := make([]byte, 18)
	b[0] = 0x70
	b[2] = key
	b[7] = 10
	b[12] = asc
	b[13] = ascq
	return b
}

// growAnnounced adds n bytes to the disk and reports it to the initiator
// on the last connection: an Asynchronous Message (event 0) with the sense
// data of UNIT ATTENTION 2A/09, capacity data has changed.
func (ft *fakeTarget) growAnnounced(n int) {
	ft.mu.Lock()
	ft.disk = append(ft.disk, make([]byte, n)...)
	ft.mu.Unlock()
	sense := fixedSense(0x06, 0x2a, 0x09)
	data := binary.BigEndian.AppendUint16(nil, uint16(len(sense)))
	ft.lastConn().sendAsync(pdu.AsyncEventSCSI, [8]byte{}, 0, 0, 0, append(data, sense...))
}

// sendAsync sends an Asynchronous Message (it takes a StatSN).
func (c *fakeConn) sendAsync(event uint8, lun [8]byte, p1, p2, p3 uint16, data []byte) {
	exp, max := c.window()
	c.sendStatus(func(stat uint32) pdu.Message {
		return &pdu.AsyncMsg{LUN: lun, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max, AsyncEvent: event,
			Parameter1: p1, Parameter2: p2, Parameter3: p3, Data: data}
	})
}

// writeRaw encodes m, lets edit change the encoded PDU consistently (header
// fields, an AHS with its length), frames it with the connection's digests,
// lets corrupt change the bytes on the wire (lying lengths, bad digests) and
// sends them. status says whether the PDU takes the next StatSN.
func (c *fakeConn) writeRaw(m pdu.Message, status bool, edit func(raw *pdu.Raw), corrupt func(wire []byte)) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var raw pdu.Raw
	if err := m.Encode(&raw); err != nil {
		return err
	}
	if status {
		binary.BigEndian.PutUint32(raw.BHS[24:28], c.statSN)
		c.statSN++
	}
	if edit != nil {
		edit(&raw)
	}
	var buf bytes.Buffer
	w := pdu.NewWriter(&buf)
	w.SetDigests(c.hdigest, c.ddigest)
	if err := w.Write(&raw); err != nil {
		return err
	}
	wire := buf.Bytes()
	if corrupt != nil {
		corrupt(wire)
	}
	_, err := c.nc.Write(wire)
	return err
}

func (c *fakeConn) textReply(m *pdu.TextReq) {
	exp, max := c.window()
	if m.TTT == pdu.ReservedTag {
		c.text = []byte(c.ft.sendTargets)
		if c.ft.sendTargetsAt != nil {
			c.text = []byte(c.ft.sendTargetsAt(c.nc.LocalAddr().String()))
		}
	}
	chunk := c.text
	final := true
	if c.ft.textChunk > 0 && len(chunk) > c.ft.textChunk {
		chunk, final = chunk[:c.ft.textChunk], false
	}
	c.text = c.text[len(chunk):]
	ttt := pdu.ReservedTag
	if !final {
		c.ttt++
		ttt = c.ttt
	}
	c.sendStatus(func(stat uint32) pdu.Message {
		return &pdu.TextResp{Final: final, ITT: m.ITT, TTT: ttt, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max, Data: chunk}
	})
}

// scsi executes one command against the in-memory disk.
func (c *fakeConn) scsi(m *pdu.SCSICommand, outs chan *pdu.DataOut) {
	ft := c.ft
	ft.mu.Lock()
	ft.running++
	ft.peak = max(ft.peak, ft.running)
	ft.mu.Unlock()
	defer func() {
		ft.mu.Lock()
		ft.running--
		ft.mu.Unlock()
	}()
	if d := time.Duration(ft.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	if ft.onSCSI != nil && ft.onSCSI(c, m) {
		return
	}
	cdb := m.CDB
	ft.mu.Lock()
	if ft.cdbOps == nil {
		ft.cdbOps = map[byte]int{}
	}
	ft.cdbOps[cdb[0]]++
	switch cdb[0] {
	case 0x28, 0x88, 0x2a, 0x8a:
		if ft.ioByPortal == nil {
			ft.ioByPortal = map[string]int{}
		}
		ft.ioByPortal[c.portal()]++
	}
	ft.mu.Unlock()
	if a := ft.alua.Load(); a != nil && c.aluaSCSI(a, m) {
		return
	}
	var lba uint64
	var blocks uint32
	var data []byte
	status := uint8(0)
	var sense []byte
	switch cdb[0] {
	case 0x00: // TEST UNIT READY
	case 0x35, 0x91: // SYNCHRONIZE CACHE(10), (16): everything
		ft.mu.Lock()
		if ft.medium != nil {
			copy(ft.medium, ft.disk)
		}
		ft.mu.Unlock()
	case 0x12: // INQUIRY
		if cdb[1]&1 != 0 {
			serial := ft.serial.Load()
			switch {
			case serial == nil:
				status = 2
			case cdb[2] == 0x00:
				data = []byte{0, 0x00, 0, 2, 0x00, 0x80}
			case cdb[2] == 0x80:
				data = append(binary.BigEndian.AppendUint16([]byte{0, 0x80}, uint16(len(*serial))), *serial...)
			default:
				status = 2
			}
			break
		}
		data = make([]byte, 36)
		data[4] = 31
		if a := ft.alua.Load(); a != nil {
			data[5] = a.tpgs << 4
		}
		copy(data[8:], "FAKE    FAKEDISK        0001")
	case 0x5a: // MODE SENSE(10): header and the caching page
		switch ft.modeWCE.Load() {
		case 0:
			status = 2
		case 1, 2:
			page := make([]byte, 20)
			page[0], page[1] = 0x08, 18
			if ft.modeWCE.Load() == 2 {
				page[2] = 0x04 // WCE
			}
			data = append(binary.BigEndian.AppendUint16(nil, uint16(6+len(page))), 0, 0, 0, 0, 0, 0)
			if ft.modeDPOFUA.Load() {
				data[3] = 0x10
			}
			data = append(data, page...)
		}
	case 0x9e: // SERVICE ACTION IN(16): READ CAPACITY(16) only
		if last := ft.lastLBA16.Load(); last != 0 && cdb[1]&0x1f == 0x10 {
			data = binary.BigEndian.AppendUint64(nil, last)
			data = binary.BigEndian.AppendUint32(data, 512)
			data = append(data, make([]byte, 20)...)
		} else {
			status = 2
		}
	case 0x25: // READ CAPACITY(10)
		data = make([]byte, 8)
		binary.BigEndian.PutUint32(data, uint32(len(ft.disk)/512-1))
		binary.BigEndian.PutUint32(data[4:], 512)
	case 0x28, 0x88, 0x2a, 0x8a:
		if cdb[0] == 0x28 || cdb[0] == 0x2a {
			lba, blocks = uint64(binary.BigEndian.Uint32(cdb[2:])), uint32(binary.BigEndian.Uint16(cdb[7:]))
		} else {
			lba, blocks = binary.BigEndian.Uint64(cdb[2:]), binary.BigEndian.Uint32(cdb[10:])
		}
		off, n := int(lba)*512, int(blocks)*512
		if off+n > len(ft.disk) {
			status = 2
			break
		}
		fua := cdb[1]&0x08 != 0
		if fua && (cdb[0] == 0x2a || cdb[0] == 0x8a) && ft.refuseFUA.Load() {
			status, sense = 2, fixedSense(0x05, 0x24, 0x00) // INVALID FIELD IN CDB
			break
		}
		if cdb[0] == 0x28 || cdb[0] == 0x88 {
			ft.mu.Lock()
			data = append([]byte(nil), ft.disk[off:off+n]...)
			ft.mu.Unlock()
			break
		}
		buf := make([]byte, n)
		got := copy(buf, m.Data)
		// Unsolicited Data-Out (InitialR2T=No) up to FirstBurstLength.
		if c.unsolicited > 0 {
			for got < min(n, c.unsolicited) {
				d, ok := <-outs
				if !ok {
					return
				}
				copy(buf[d.BufferOffset:], d.Data)
				got += len(d.Data)
			}
		}
		for got < n {
			// Solicit the rest, one burst at a time.
			exp, max := c.window()
			burst := min(n-got, 262144)
			c.send(&pdu.R2T{ITT: m.ITT, TTT: uint32(0x1000 + got), StatSN: c.peekStat(), ExpCmdSN: exp, MaxCmdSN: max, BufferOffset: uint32(got), DesiredDataTransferLength: uint32(burst)})
			end := got + burst
			for got < end {
				d, ok := <-outs
				if !ok {
					return
				}
				copy(buf[d.BufferOffset:], d.Data)
				got += len(d.Data)
			}
		}
		ft.mu.Lock()
		copy(ft.disk[off:], buf)
		if fua {
			ft.fuaIO++
		}
		if ft.medium != nil && (fua || ft.modeWCE.Load() == 1) { // WCE=0: written through
			copy(ft.medium[off:], buf)
		}
		ft.mu.Unlock()
	case 0xa0: // REPORT LUNS: LUN 0 alone
		data = []byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	case 0x5e: // PERSISTENT RESERVE IN, READ KEYS: generation 0, no key
		if cdb[1]&0x1f == 0 {
			data = make([]byte, 8)
		} else {
			status, sense = 2, fixedSense(0x05, 0x24, 0x00) // INVALID FIELD IN CDB
		}
	default:
		status, sense = 2, fixedSense(0x05, 0x20, 0x00) // INVALID COMMAND OPERATION CODE
	}
	c.answer(m, data, status, sense)
}

// answer ends a command: data as Data-In PDUs (cut to the expected
// length), the status with them or in a SCSI Response with sense data.
func (c *fakeConn) answer(m *pdu.SCSICommand, data []byte, status uint8, sense []byte) {
	ft := c.ft
	exp, max := c.window()
	if len(data) > int(m.ExpectedDataTransferLength) {
		data = data[:m.ExpectedDataTransferLength]
	}
	var dataSN uint32
	for sent := 0; sent < len(data); {
		n := min(ft.splitDataIn, len(data)-sent)
		last := sent+n == len(data)
		d := &pdu.DataIn{Final: last, ITT: m.ITT, TTT: pdu.ReservedTag, ExpCmdSN: exp, MaxCmdSN: max, DataSN: dataSN, BufferOffset: uint32(sent), Data: data[sent : sent+n]}
		if last && !ft.separateRsp && status == 0 {
			d.StatusPresent = true
			if uint32(len(data)) < m.ExpectedDataTransferLength {
				d.Underflow, d.ResidualCount = true, m.ExpectedDataTransferLength-uint32(len(data))
			}
			c.sendStatus(func(stat uint32) pdu.Message { d.StatSN = stat; return d })
			return
		}
		c.send(d)
		dataSN++
		sent += n
	}
	c.sendStatus(func(stat uint32) pdu.Message {
		r := &pdu.SCSIResponse{Status: status, ITT: m.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max}
		if len(sense) > 0 {
			r.SetSenseData(sense)
		}
		return r
	})
}

func (c *fakeConn) peekStat() uint32 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.statSN
}

// fakeALUA makes the fake's LU one with asymmetric access (alua_test.go):
// INQUIRY reports tpgs, each portal (listener address) is a target port
// with a relative port identifier in a target port group, named in VPD
// 0x83 (designators 4 and 5), and REPORT TARGET PORT GROUPS gives each
// group's state, which setALUAState changes. With refuse, a port whose
// group is not active refuses what SPC-4 (and LIO) say it does not serve:
// NOT READY 04/0B when standby, 04/0C when unavailable or offline, 04/0A
// when transitioning; otherwise every port serves I/O whatever its state.
type fakeALUA struct {
	tpgs   uint8
	refuse bool
	ports  map[string]fakePort // set before the initiator connects

	mu     sync.Mutex
	states map[uint16]uint8 // group → asymmetric access state
}

// fakePort is one target port of a fakeALUA.
type fakePort struct{ rel, group uint16 }

// enableALUA gives the fake ALUA with TPGS tpgs, its ports (portal →
// port) and the groups' states.
func (ft *fakeTarget) enableALUA(tpgs uint8, refuse bool, ports map[string]fakePort, states map[uint16]uint8) {
	ft.alua.Store(&fakeALUA{tpgs: tpgs, refuse: refuse, ports: ports, states: states})
}

// setALUAStates changes the states of the groups given, all at once, and,
// as a target does on every I_T nexus of the LU, queues UNIT ATTENTION
// 2A/06 (asymmetric access state changed) on every connection.
func (ft *fakeTarget) setALUAStates(states map[uint16]uint8) {
	a := ft.alua.Load()
	a.mu.Lock()
	for g, st := range states {
		a.states[g] = st
	}
	a.mu.Unlock()
	ft.mu.Lock()
	for _, c := range ft.live {
		c.aluaUA.Store(true)
	}
	ft.mu.Unlock()
}

// ioAt is how many READ and WRITE commands came through portal.
func (ft *fakeTarget) ioAt(portal string) int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.ioByPortal[portal]
}

// dropPortal closes the connections that came in through portal (a
// network failure on that path only).
func (ft *fakeTarget) dropPortal(portal string) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	kept := ft.conns[:0]
	for _, nc := range ft.conns {
		if nc.LocalAddr().String() == portal {
			nc.Close()
		} else {
			kept = append(kept, nc)
		}
	}
	ft.conns = kept
}

// portal is the listener address the connection came in through.
func (c *fakeConn) portal() string { return c.nc.LocalAddr().String() }

// aluaSCSI answers what ALUA changes: a pending UNIT ATTENTION 2A/06, VPD
// 0x83, REPORT TARGET PORT GROUPS and the commands a port refuses in its
// state. It returns false for a command to execute as usual.
func (c *fakeConn) aluaSCSI(a *fakeALUA, m *pdu.SCSICommand) bool {
	cdb := m.CDB
	op := cdb[0]
	// INQUIRY, REPORT LUNS and REQUEST SENSE neither report nor clear a
	// unit attention (SAM-5).
	if op != 0x12 && op != 0xa0 && op != 0x03 && c.aluaUA.CompareAndSwap(true, false) {
		c.respond(m, 2, fixedSense(0x06, 0x2a, 0x06))
		return true
	}
	port, known := a.ports[c.portal()]
	a.mu.Lock()
	state := a.states[port.group]
	var rtpg []byte
	if op == 0xa3 && cdb[1]&0x1f == 0x0a {
		groups := make([]uint16, 0, len(a.states))
		for g := range a.states {
			groups = append(groups, g)
		}
		slices.Sort(groups)
		rtpg = make([]byte, 4)
		for _, g := range groups {
			var members []uint16
			for _, p := range a.ports {
				if p.group == g {
					members = append(members, p.rel)
				}
			}
			slices.Sort(members)
			// Supported: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP.
			rtpg = append(rtpg, a.states[g], 0x8f, byte(g>>8), byte(g), 0, 0, 0, byte(len(members)))
			for _, r := range members {
				rtpg = append(rtpg, 0, 0, byte(r>>8), byte(r))
			}
		}
		binary.BigEndian.PutUint32(rtpg, uint32(len(rtpg)-4))
	}
	a.mu.Unlock()
	switch {
	case rtpg != nil:
		c.answer(m, rtpg, 0, nil)
		return true
	case op == 0x12 && cdb[1]&1 != 0 && cdb[2] == 0x83:
		page := []byte{0, 0x83, 0, 0}
		if known {
			// Binary, iSCSI, PIV, associated with the target port.
			page = append(page, 0x51, 0x94, 0, 4, 0, 0, byte(port.rel>>8), byte(port.rel))
			page = append(page, 0x51, 0x95, 0, 4, 0, 0, byte(port.group>>8), byte(port.group))
		}
		binary.BigEndian.PutUint16(page[2:], uint16(len(page)-4))
		c.answer(m, page, 0, nil)
		return true
	}
	if !a.refuse || !known {
		return false
	}
	var ascq uint8
	switch state {
	case scsi.AccessStandby:
		switch op {
		case 0x12, 0xa0, 0x03, 0xa3, 0x1a, 0x5a, 0x25, 0x9e, 0x5e: // what a standby port serves
		default:
			ascq = 0x0b
		}
	case scsi.AccessUnavailable, scsi.AccessOffline, scsi.AccessTransitioning:
		switch op {
		case 0x12, 0xa0, 0x03, 0xa3:
		default:
			ascq = 0x0c
			if state == scsi.AccessTransitioning {
				ascq = 0x0a
			}
		}
	}
	if ascq == 0 {
		return false
	}
	c.respond(m, 2, fixedSense(0x02, 0x04, ascq))
	return true
}
