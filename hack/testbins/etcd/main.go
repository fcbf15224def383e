// Command etcd is upstream etcd's entrypoint, built from the pinned go.etcd.io/etcd/server/v3 module.
// The upstream module carries replace directives, so `go install ...@version` refuses it; this wrapper
// module pins the version in go.mod/go.sum instead. Built by hack/build-test-binaries.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
