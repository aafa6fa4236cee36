// Command etcd is upstream etcd's server, built at the version k8s.io/kubernetes itself depends on,
// so the cluster's API server talks to the etcd it is tested against upstream.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
