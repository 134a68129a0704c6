package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	"k8s.io/kubernetes/cmd/kube-controller-manager/names"
)

// defaultControllers are the controller-manager loops serin's releases depend on: workload
// rollouts and their status, garbage collection through owner references, namespace
// deletion, endpoint slices, and the service accounts every pod needs to be admitted.
var defaultControllers = []string{
	names.DeploymentController,
	names.ReplicaSetController,
	names.DaemonSetController,
	names.StatefulSetController,
	names.GarbageCollectorController,
	names.NamespaceController,
	names.EndpointSliceController,
	names.ServiceAccountController,
	names.ServiceAccountTokenController,
	names.RootCACertificatePublisherController,
}

// apiServerArgs are kube-apiserver's flags for a single loopback server with RBAC on.
func apiServerArgs(p *pki, etcdURL string, port int, dir string) []string {
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + dir,
		"--tls-cert-file=" + p.serving.certFile,
		"--tls-private-key-file=" + p.serving.keyFile,
		"--client-ca-file=" + p.caFile(),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + p.saPubKeyFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-cluster-ip-range=10.0.0.0/16",
		// A loopback address cannot be an Endpoints address: nothing reconciles the
		// `kubernetes` Service's endpoints here.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		// As on clusters that enforce it (OpenShift among them): setting
		// blockOwnerDeletion on an owner reference needs update on the owner's finalizers,
		// which the least-privilege install must then grant.
		"--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
	}
}

// runAPIServer builds kube-apiserver from its options as its own command does, and serves
// until ctx ends. It does not use the cobra command, which installs a process-wide signal
// handler of its own.
func runAPIServer(ctx context.Context, args []string) error {
	s := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("kube-apiserver flags: %w", err)
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-apiserver feature gates: %w", err)
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return fmt.Errorf("kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("kube-apiserver options: %v", errs)
	}
	return app.Run(ctx, completed)
}

func controllerManagerArgs(p *pki, kubeconfig string, controllers []string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--service-account-private-key-file=" + p.saKeyFile,
		"--root-ca-file=" + p.caFile(),
		"--use-service-account-credentials=false",
		"--controller-start-interval=0",
		// Tests change things every second; the default resync would hide nothing but costs CPU.
		"--min-resync-period=1h",
		// One control plane serves every scenario of a test process at once (a dozen
		// releases, each scaling and rolling Deployments every second): the defaults (20
		// requests/s, five workers per loop) would queue one scenario's rollout behind
		// another's.
		"--kube-api-qps=500",
		"--kube-api-burst=1000",
		"--concurrent-deployment-syncs=20",
		"--concurrent-replicaset-syncs=20",
		"--concurrent-service-endpoint-syncs=20",
		"--concurrent-daemonset-syncs=10",
		"--concurrent-statefulset-syncs=10",
	}
}

// runControllerManager runs the given kube-controller-manager loops against the API server
// of kubeconfig until ctx ends.
func runControllerManager(ctx context.Context, args []string) error {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return fmt.Errorf("kube-controller-manager options: %w", err)
	}
	known, disabled, aliases := kcm.KnownControllers(), kcm.ControllersDisabledByDefault(), kcm.ControllerAliases()
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range s.Flags(known, disabled, aliases).FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("kube-controller-manager flags: %w", err)
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-controller-manager feature gates: %w", err)
	}
	c, err := s.Config(ctx, known, disabled, aliases)
	if err != nil {
		return fmt.Errorf("kube-controller-manager config: %w", err)
	}
	return kcm.Run(ctx, c.Complete())
}
