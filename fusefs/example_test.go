package fusefs_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/iscsifs/iscsifs/cache"
	"github.com/iscsifs/iscsifs/fusefs"
	"github.com/iscsifs/iscsifs/initiator"
)

// lunFile serves a LUN through a cache: the cache has the I/O methods of a
// fusefs.File, the LUN says whether it is write-protected.
type lunFile struct {
	*cache.Cache
	lun *initiator.LUN
}

func (f lunFile) ReadOnly() bool { return f.lun.ReadOnly() }

// Serve one LUN as the file /mnt/disk/lun1 from a program (root, or a user
// allowed to use /dev/fuse), until Ctrl-C.
func ExampleMount() {
	ctx := context.Background()
	lun, err := initiator.Open(ctx, "iscsi://192.0.2.10/iqn.2026-11.lab:disk/1", initiator.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer lun.Close()
	c, err := cache.New(lun, cache.DefaultOptions())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	srv, err := fusefs.Mount("/mnt/disk", []fusefs.Entry{{Path: "lun1", File: lunFile{c, lun}}}, fusefs.Options{})
	if err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	go func() {
		<-stop
		if err := c.Flush(ctx); err != nil {
			log.Print(err)
		}
		if err := srv.Unmount(); err != nil { // fails while the file is open
			log.Print(err)
		}
	}()
	srv.Wait()
}
