package initiator

import (
	"context"
	"errors"
	"fmt"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// DiscoveredTarget is one TargetName from SendTargets with all its portals.
type DiscoveredTarget struct {
	Name    string   `json:"name"`
	Portals []Portal `json:"portals"`
}

// Portal is one TargetAddress: host:port and portal group tag (-1 if none).
type Portal struct {
	Address string `json:"address"`
	Group   int    `json:"tpgt"`
}

// maxTextResponse bounds a joined multi-PDU text response.
const maxTextResponse = 1 << 20

// Discover runs a discovery session at portal and returns every target with
// every address (RFC 7143 §13.3, Appendix C). A target listed without an
// address is reachable at the discovery portal.
func Discover(ctx context.Context, portal string, cfg Config) ([]DiscoveredTarget, error) {
	s, err := open(ctx, portal, "", true, cfg)
	if err != nil {
		return nil, err
	}
	kvs, err := s.text(ctx, []pdu.KV{{Key: "SendTargets", Value: "All"}})
	closeErr := s.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("discovery at %s: %w", portal, err)
	}
	if closeErr != nil {
		s.logger().Debug("discovery logout", "err", closeErr)
	}
	return parseSendTargets(kvs, s.Portal())
}

func parseSendTargets(kvs []pdu.KV, discoveryPortal string) ([]DiscoveredTarget, error) {
	var out []DiscoveredTarget
	for _, kv := range kvs {
		switch kv.Key {
		case "TargetName":
			out = append(out, DiscoveredTarget{Name: kv.Value})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, errors.New("SendTargets: TargetAddress before any TargetName")
			}
			addr, tpgt, err := parseTargetAddress(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("SendTargets: %w", err)
			}
			t := &out[len(out)-1]
			t.Portals = append(t.Portals, Portal{Address: addr, Group: tpgt})
		}
	}
	for i := range out {
		if len(out[i].Portals) == 0 {
			out[i].Portals = []Portal{{Address: discoveryPortal, Group: -1}}
		}
	}
	return out, nil
}

// text runs one Text Request exchange, following continuations (F=0 with a
// TTT) and joining the whole sequence before parsing: tgt cuts responses
// inside a key=value while still sending C=0.
func (s *Session) text(ctx context.Context, keys []pdu.KV) ([]pdu.KV, error) {
	c := s.current()
	if c == nil {
		return nil, ErrSessionClosed
	}
	// Non-immediate (istgt advances ExpCmdSN for immediate Text), and not
	// gated on MaxCmdSN in discovery sessions (tgt never opens that window).
	opts := sendOpts{gated: !c.discovery}
	data := pdu.EncodeText(nil, keys)
	ttt := pdu.ReservedTag
	var joined []byte
	itt := uint32(0)
	for round := 0; ; round++ {
		if round > 1024 {
			return nil, errors.New("text response never ended")
		}
		t := newTask(taskText)
		if round > 0 {
			t.itt, t.keepITT = itt, true // continuations keep the sequence's ITT
		}
		payload := data
		data = nil
		err := c.send(ctx, t, opts, func(itt, cmdSN, expStatSN uint32) pdu.Message {
			return &pdu.TextReq{Final: true, ITT: itt, TTT: ttt, LUN: [8]byte{}, CmdSN: cmdSN, ExpStatSN: expStatSN, Data: payload}
		})
		if err != nil {
			return nil, err
		}
		itt = t.itt
		if err := c.await(ctx, t); err != nil {
			c.take(t.itt)
			return nil, err
		}
		if t.result.err != nil {
			return nil, t.result.err
		}
		resp := t.result.msg.(*pdu.TextResp)
		if len(joined)+len(resp.Data) > maxTextResponse {
			return nil, fmt.Errorf("text response larger than %d bytes", maxTextResponse)
		}
		joined = append(joined, resp.Data...)
		if resp.Final {
			break
		}
		if resp.TTT == pdu.ReservedTag {
			return nil, &ProtocolViolation{Reason: "text response with F=0 and no target transfer tag"}
		}
		ttt = resp.TTT
	}
	return pdu.ParseText(joined)
}
