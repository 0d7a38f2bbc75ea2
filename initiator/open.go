package initiator

import (
	"context"
	"time"
)

// Open logs in to the target that a LUN URL names and opens the LUN, for a
// program that wants one disk:
//
//	lun, err := initiator.Open(ctx, "iscsi://192.0.2.10/iqn.2003-01.org.example:disk1/0", initiator.Config{})
//	if err != nil {
//		return err
//	}
//	defer lun.Close()
//
// The URL is iscsi://[user[%secret]@]host[:port]/target-iqn/lun (see URL);
// what it states (CHAP user and secret, target_user and target_password,
// auth, header_digest, data_digest) takes precedence over cfg, which
// supplies everything else. The zero Config is a working one: the
// initiator name DefaultInitiatorName, the negotiation offer
// DefaultNegotiationConfig, the timeouts documented on Config, and no
// logging.
//
// The LUN owns its session: its Close logs the session out. Programs that
// use several LUNs of a target share one session instead: Login, then
// Session.OpenLUN for each.
func Open(ctx context.Context, rawURL string, cfg Config) (*LUN, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Target == "" || u.LUN < 0 {
		return nil, urlError("Open needs a LUN: iscsi://host[:port]/target-iqn/lun")
	}
	cfg, err = u.configure(cfg)
	if err != nil {
		return nil, err
	}
	s, err := Login(ctx, u.Portal(), u.Target, cfg)
	if err != nil {
		return nil, err
	}
	l, err := s.OpenLUN(ctx, uint64(u.LUN))
	if err != nil {
		// Log out even when ctx is what ended the open.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeLogoutWait+time.Second)
		defer cancel()
		_ = s.Close(cctx)
		return nil, err
	}
	l.ownsS = true
	return l, nil
}

// configure returns cfg with what the URL states: credentials, CHAP
// algorithms and digest policies.
func (u *URL) configure(cfg Config) (Config, error) {
	if u.User != "" {
		cfg.Credentials.User, cfg.Credentials.Secret = u.User, u.Secret
	}
	if u.MutualUser != "" || u.MutualSecret != "" {
		cfg.Credentials.MutualUser, cfg.Credentials.MutualSecret = u.MutualUser, u.MutualSecret
	}
	if len(u.CHAPAlgorithms) > 0 {
		cfg.CHAPAlgorithms = u.CHAPAlgorithms
	}
	if u.HeaderDigest == "" && u.DataDigest == "" {
		return cfg, nil
	}
	if cfg.Negotiation == (NegotiationConfig{}) {
		// Setting one field would make the others count as given.
		cfg.Negotiation = DefaultNegotiationConfig()
	}
	for _, d := range []struct {
		name   string
		policy *DigestPolicy
	}{{u.HeaderDigest, &cfg.Negotiation.HeaderDigest}, {u.DataDigest, &cfg.Negotiation.DataDigest}} {
		if d.name == "" {
			continue
		}
		p, err := ParseDigestPolicy(d.name)
		if err != nil {
			return cfg, urlError("%v", err)
		}
		*d.policy = p
	}
	return cfg, nil
}
