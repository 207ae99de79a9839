// Command skydd-vcsim is the lab's vCenter: govmomi's simulator (vcsim) with the parts of the
// vSphere API that level c needs and vcsim leaves out, added per host (host.go): the service
// system (SSH, ESXi Shell, ntpd), the date/time system (NTP), the host access manager (lockdown
// mode), the patch manager with a reboot (installing an offline bundle changes the host's build)
// and a mix of ESXi builds across the hosts. Everything else is vcsim as it is.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := simulator.VPX()
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", 0, "standalone hosts per datacenter")
	flag.IntVar(&model.Machine, "vm", model.Machine, "virtual machines per resource pool")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "local datastores")
	listen := flag.String("l", "127.0.0.1:8989", "listen address")
	userFile := flag.String("username", "", "file holding the login username (required)")
	passFile := flag.String("password", "", "file holding the login password (required)")
	cert := flag.String("tlscert", "", "TLS certificate (PEM, required)")
	key := flag.String("tlskey", "", "TLS key (PEM, required)")
	builds := flag.String("builds", "", "ESXi VERSION-BUILD per host, comma-separated, in host name order (repeats)")
	flag.Parse()

	for name, v := range map[string]string{"-username": *userFile, "-password": *passFile,
		"-tlscert": *cert, "-tlskey": *key} {
		if v == "" {
			log.Fatalf("skydd-vcsim: %s is required", name)
		}
	}
	hostBuilds, err := parseBuilds(*builds)
	if err != nil {
		log.Fatalf("skydd-vcsim: -builds: %v", err)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatalf("skydd-vcsim: TLS key pair: %v", err)
	}
	user, pass := readSecret(*userFile), readSecret(*passFile)

	if err := model.Create(); err != nil {
		log.Fatalf("skydd-vcsim: model: %v", err)
	}
	extendHosts(model.Map(), hostBuilds)

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(user, pass)}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	server := model.Service.NewServer()
	fmt.Printf("skydd-vcsim listening on %s (pid %d)\n", server.URL.Host, os.Getpid())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	server.Close()
	model.Remove()
}

func readSecret(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatalf("skydd-vcsim: %v", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		log.Fatalf("skydd-vcsim: %s is empty", path)
	}
	return s
}
