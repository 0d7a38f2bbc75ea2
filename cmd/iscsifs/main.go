// Command iscsifs discovers iSCSI targets, lists their LUNs, mounts them as
// files through FUSE, images them and benchmarks them.
package main

import "os"

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
