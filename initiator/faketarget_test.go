package initiator

import (
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// fakeTarget is an in-process iSCSI target for unit tests of the session
// logic and for fault injection. It is not a stand-in for a real target:
// integration tests use tgtd and istgt. It serves one LUN (LUN 0) of an
// in-memory disk with 512-byte blocks, and lets tests change its
// negotiation answers and inject misbehaviour.
type fakeTarget struct {
	t  testing.TB
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
	textChunk   int                                  // split Text responses into chunks of this size

	mu       sync.Mutex
	disk     []byte
	peak     int
	running  int
	pings    atomic.Int32 // answered pings
	overruns atomic.Int32 // commands beyond MaxCmdSN, over all connections
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newFakeTarget(t testing.TB, size int) *fakeTarget {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{t: t, ln: ln, disk: make([]byte, size), window: 32, splitDataIn: 8192, keys: map[string]string{}}
	for i := range ft.disk {
		ft.disk[i] = byte(i * 7)
	}
	t.Cleanup(ft.close)
	return ft
}

func (ft *fakeTarget) start() string {
	ft.wg.Add(1)
	go func() {
		defer ft.wg.Done()
		for {
			nc, err := ft.ln.Accept()
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
	return ft.ln.Addr().String()
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
			c.aborted[m.ReferencedTaskTag] = true
			c.wmu.Unlock()
			c.sendStatus(func(stat uint32) pdu.Message {
				return &pdu.TaskMgmtResp{Response: pdu.TMFRespComplete, ITT: m.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max}
			})
		}
	}
}

// login accepts AuthMethod=None and echoes the operational keys (with the
// knob overrides).
func (c *fakeConn) login() bool {
	for {
		var raw pdu.Raw
		if err := c.r.Read(&raw); err != nil {
			return false
		}
		var req pdu.LoginReq
		if err := req.Decode(&raw); err != nil {
			return false
		}
		kvs, _ := pdu.ParseText(req.Data)
		var answer []pdu.KV
		for _, kv := range kvs {
			switch kv.Key {
			case "InitiatorName", "InitiatorAlias", "SessionType", "TargetName":
			case "AuthMethod":
				answer = append(answer, pdu.KV{Key: "AuthMethod", Value: "None"})
			case "MaxRecvDataSegmentLength":
				c.mrdsl, _ = strconv.Atoi(kv.Value)
			case "HeaderDigest", "DataDigest":
				answer = append(answer, pdu.KV{Key: kv.Key, Value: "None"})
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
		resp := &pdu.LoginResp{
			Transit: req.Transit, CSG: req.CSG, NSG: req.NSG, ISID: req.ISID, TSIH: 1,
			ITT: req.ITT, StatSN: c.nextStat(), ExpCmdSN: exp, MaxCmdSN: max,
			Data: pdu.EncodeText(nil, answer),
		}
		if err := c.send(resp); err != nil {
			return false
		}
		if req.Transit && req.NSG == 3 {
			return true
		}
	}
}

func (c *fakeConn) textReply(m *pdu.TextReq) {
	exp, max := c.window()
	if m.TTT == pdu.ReservedTag {
		c.text = []byte(c.ft.sendTargets)
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
	cdb := m.CDB
	var lba uint64
	var blocks uint32
	var data []byte
	status := uint8(0)
	switch cdb[0] {
	case 0x00, 0x35: // TEST UNIT READY, SYNCHRONIZE CACHE
	case 0x12: // INQUIRY
		if cdb[1]&1 != 0 {
			status = 2
			break
		}
		data = make([]byte, 36)
		data[4] = 31
		copy(data[8:], "FAKE    FAKEDISK        0001")
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
		ft.mu.Unlock()
	default:
		status = 2
	}
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
		return &pdu.SCSIResponse{Status: status, ITT: m.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: max}
	})
}

func (c *fakeConn) peekStat() uint32 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.statSN
}
