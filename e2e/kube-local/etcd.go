package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// startEtcd runs an embedded single-member etcd on loopback ports picked by the kernel and
// returns its client URL. Its data lives under dir and is thrown away with it, so fsync is
// off: a crash loses nothing anyone needs.
//
// A port the kernel picked is free when picked, not when etcd binds it: another process
// starting at the same moment (tests start many stacks in parallel) may take it in between.
// Then etcd starts again on other ports.
func startEtcd(dir string) (*embed.Etcd, string, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var e *embed.Etcd
		var clientURL string
		e, clientURL, err = startEtcdOnce(dir)
		if err == nil {
			return e, clientURL, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) && !strings.Contains(err.Error(), "address already in use") {
			return nil, "", err
		}
		if rmErr := os.RemoveAll(filepath.Join(dir, "etcd")); rmErr != nil {
			return nil, "", rmErr
		}
	}
	return nil, "", err
}

func startEtcdOnce(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Name = "kube-local"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	// Its shutdown reports closed listeners as errors: keep them out of the caller's stderr.
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.UnsafeNoFsync = true
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after 60 s")
	}
	return e, clientURL.String(), nil
}
