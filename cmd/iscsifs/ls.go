package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/initiator"
	"github.com/iscsifs/iscsifs/initiator/scsi"
)

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list LUNs: of a target, of every target of a portal, or one LUN",
		ArgsUsage: "URL   (iscsi://[user[%secret]@]host[:port][/iqn[/lun]])",
		Flags:     append(commonFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action:    lsAction,
	}
}

// lunInfo is one line of `ls`.
type lunInfo struct {
	Target     string `json:"target"`
	LUN        uint64 `json:"lun"`
	Type       string `json:"type"`
	Size       int64  `json:"size"`
	BlockSize  int    `json:"block_size"`
	Vendor     string `json:"vendor"`
	Product    string `json:"product"`
	Serial     string `json:"serial"`
	Identifier string `json:"identifier,omitempty"`
	ReadOnly   bool   `json:"read_only"`
}

func lsAction(c *cli.Context) (err error) {
	u, err := parseURLArg(c, "the URL")
	if err != nil {
		return err
	}
	log, cfg, err := prepare(c, u)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()

	targets, err := targetsOf(ctx, u, cfg)
	if err != nil {
		return err
	}
	var all []lunInfo
	var failed []error
	for _, target := range targets {
		infos, err := listTarget(ctx, u, target, cfg, log)
		if err != nil {
			if u.Target != "" {
				return err
			}
			// A portal listing goes on past a target we may not log in to
			// (other credentials) and reports it at the end.
			fmt.Fprintf(c.App.ErrWriter, "iscsifs: %s\n", oneLine(err))
			failed = append(failed, err)
			continue
		}
		all = append(all, infos...)
	}
	defer func() {
		if len(failed) > 0 && err == nil {
			err = cli.Exit("", 1)
		}
	}()
	if c.Bool("json") {
		if all == nil {
			all = []lunInfo{}
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	for _, li := range all {
		prefix := ""
		if u.Target == "" {
			prefix = li.Target + " " // a portal lists several targets
		}
		fmt.Fprintf(c.App.Writer, "%s%d %s %d %d %s %s %s\n", prefix, li.LUN, li.Type, li.Size, li.BlockSize,
			field(li.Vendor), field(li.Product), field(li.Serial))
	}
	return nil
}

// field keeps a column non-empty and space-free so lines split cleanly.
func field(s string) string {
	s = strings.Join(strings.Fields(s), "_")
	if s == "" {
		return "-"
	}
	return s
}

func listTarget(ctx context.Context, u *initiator.URL, target string, cfg initiator.Config, log zerolog.Logger) ([]lunInfo, error) {
	s, luns, err := loginAndOpen(ctx, u, target, cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close(context.WithoutCancel(ctx))
	var out []lunInfo
	for _, tl := range luns {
		n, l, err := tl.n, tl.lun, tl.err
		li := lunInfo{Target: target, LUN: n}
		switch {
		case err == nil:
			li.Type = "disk"
			li.Size, li.BlockSize = l.Size(), l.BlockSize()
			li.Vendor, li.Product = l.Inquiry.Vendor, l.Inquiry.Product
			li.Serial, li.Identifier, li.ReadOnly = l.Serial, l.Identifier, l.ReadOnly()
		case errors.Is(err, initiator.ErrNotBlockDevice):
			inq, ierr := s.Inquiry(ctx, n)
			if ierr != nil {
				return nil, ierr
			}
			li.Type = scsi.DeviceTypeName(inq.DeviceType)
			li.Vendor, li.Product = inq.Vendor, inq.Product
		default:
			return nil, err
		}
		log.Debug().Str("target", target).Uint64("lun", n).Str("type", li.Type).Int64("size", li.Size).Msg("LUN")
		out = append(out, li)
	}
	return out, nil
}
