//go:build !linux

package initiator

import (
	"net"
	"time"
)

func setUserTimeout(*net.TCPConn, time.Duration) {}
