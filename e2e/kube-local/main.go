// kube-local runs a Kubernetes control plane in one process with no container runtime:
// an embedded etcd, kube-apiserver (RBAC on, TLS with a generated CA) and the
// kube-controller-manager loops serin's tests rely on. Pods are never run: a stand-in kubelet
// (serin-stack) binds them and marks them ready.
//
// It writes an admin kubeconfig, prints `ready` on stdout once /readyz answers ok and the
// controllers run, and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kube-local:", err)
		os.Exit(1)
	}
}

type options struct {
	kubeconfig  string
	dir         string
	port        int
	controllers string
	verbosity   string
	stdinEOF    bool
	watchCache  bool
	crds        stringList
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func parseFlags() options {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "write the admin kubeconfig to this file (required)")
	flag.StringVar(&o.dir, "dir", "", "data directory: etcd, certificates, kube.log (default: a temporary directory removed at exit)")
	flag.IntVar(&o.port, "port", 0, "API server port on 127.0.0.1 (0: a free port)")
	flag.StringVar(&o.controllers, "controllers", strings.Join(defaultControllers, ","), "kube-controller-manager loops to run")
	flag.StringVar(&o.verbosity, "v", "0", "log verbosity of the Kubernetes components (into DIR/kube.log)")
	flag.BoolVar(&o.stdinEOF, "exit-with-stdin", false, "stop when standard input closes (the parent process died)")
	flag.BoolVar(&o.watchCache, "watch-cache", true, "serve watches from the API server's watch cache; off, they read etcd directly, so a watch resumed from a compacted revision gets 410 Gone")
	flag.Var(&o.crds, "crds", "a YAML file of CustomResourceDefinitions to install before the controllers start (repeatable)")
	flag.Parse()
	return o
}

func run() error {
	start := time.Now()
	o := parseFlags()
	if o.kubeconfig == "" {
		return fmt.Errorf("--kubeconfig FILE is required")
	}
	dir, cleanup, err := dataDir(o.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := logToFile(filepath.Join(dir, "kube.log"), o.verbosity); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if o.stdinEOF {
		// A test process killed with SIGKILL cannot stop its children; the pipe it held
		// closes, and this ends the control plane with it.
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}

	p, err := newPKI(dir)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	etcd, etcdURL, err := startEtcd(dir)
	if err != nil {
		return err
	}
	defer etcd.Close()
	// For tests that compact etcd (through its JSON gateway) to force 410 Gone on watches.
	if err := os.WriteFile(filepath.Join(dir, "etcd-url"), []byte(etcdURL), 0o600); err != nil {
		return fmt.Errorf("write etcd-url: %w", err)
	}

	port := o.port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return err
		}
	}
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := writeKubeconfig(o.kubeconfig, url, p.caPEM, p.admin); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	apiDone := make(chan error, 1)
	args := apiServerArgs(p, etcdURL, port, dir)
	if !o.watchCache {
		args = append(args, "--watch-cache=false")
	}
	go func() { apiDone <- runAPIServer(ctx, args) }()
	if err := waitReady(ctx, url, p, apiDone); err != nil {
		return err
	}
	if err := installCRDs(ctx, o.kubeconfig, o.crds); err != nil {
		return fmt.Errorf("installing CRDs: %w", err)
	}
	kcmDone := make(chan error, 1)
	controllers := strings.Split(o.controllers, ",")
	go func() { kcmDone <- runControllerManager(ctx, controllerManagerArgs(p, o.kubeconfig, controllers)) }()

	fmt.Fprintf(os.Stderr, "kube-local: %s ready in %.1f s (logs: %s)\n", url, time.Since(start).Seconds(), filepath.Join(dir, "kube.log"))
	fmt.Println("ready")
	return waitForEnd(ctx, apiDone, kcmDone)
}

// waitForEnd returns when a signal arrives (after the API server has shut down, bounded)
// or when a component fails on its own.
func waitForEnd(ctx context.Context, apiDone, kcmDone <-chan error) error {
	select {
	case err := <-apiDone:
		return fmt.Errorf("kube-apiserver stopped: %v", err)
	case err := <-kcmDone:
		return fmt.Errorf("kube-controller-manager stopped: %v", err)
	case <-ctx.Done():
	}
	select {
	case <-apiDone:
	case <-time.After(15 * time.Second):
		fmt.Fprintln(os.Stderr, "kube-local: kube-apiserver did not stop within 15 s; exiting")
	}
	return nil
}

// waitReady polls /readyz with the admin certificate until it answers 200.
func waitReady(ctx context.Context, url string, p *pki, apiDone <-chan error) error {
	cert, err := tls.X509KeyPair(p.admin.certPEM, p.admin.keyPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.caCert)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}},
	}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-apiDone:
			return fmt.Errorf("kube-apiserver failed to start: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("interrupted before the API server was ready")
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := client.Get(url + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	return fmt.Errorf("kube-apiserver not ready after 3 minutes (see kube.log in the data directory)")
}

func dataDir(dir string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o700)
	}
	tmp, err := os.MkdirTemp("", "kube-local-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// logToFile sends the components' klog output to path: they log a great deal at start.
func logToFile(path, verbosity string) error {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{
		"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL",
		"log_file": path, "one_output": "true", "v": verbosity,
	} {
		if err := fs.Set(k, v); err != nil {
			return fmt.Errorf("klog flag %s: %w", k, err)
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
