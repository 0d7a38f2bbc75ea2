package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/iscsifs/iscsifs/initiator"
)

func discoverCommand() *cli.Command {
	return &cli.Command{
		Name:      "discover",
		Usage:     "list the targets a portal offers (SendTargets)",
		ArgsUsage: "PORTAL   (host[:port] or iscsi://host[:port])",
		Flags:     append(commonFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action:    discoverAction,
	}
}

// portalArg accepts "host", "host:port", "[v6]:port" or an iscsi:// URL.
func portalArg(s string) (*initiator.URL, error) {
	if strings.HasPrefix(s, "iscsi://") {
		return initiator.ParseURL(s)
	}
	host, port := s, "3260"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if _, err := strconv.Atoi(port); err != nil || host == "" {
		return nil, fmt.Errorf("portal %q: want host[:port]", s)
	}
	return initiator.ParseURL("iscsi://" + net.JoinHostPort(host, port))
}

func discoverAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("discover: want exactly one argument, the portal (host[:port])")
	}
	u, err := portalArg(c.Args().First())
	if err != nil {
		return err
	}
	_, cfg, err := prepare(c, u)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	targets, err := initiator.Discover(ctx, u.Portal(), cfg)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if targets == nil {
			targets = []initiator.DiscoveredTarget{}
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(targets)
	}
	for _, t := range targets {
		for _, p := range t.Portals {
			fmt.Fprintf(c.App.Writer, "%s  %s,%d\n", t.Name, p.Address, p.Group)
		}
	}
	return nil
}
