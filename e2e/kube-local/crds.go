package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
)

// installCRDs creates the CustomResourceDefinitions of the given YAML files and waits until
// they are established. It runs before the controller manager starts, as on a cluster whose
// CRDs were installed long ago: the garbage collector discovers resources at start and then
// only every 30 s, so an owner of a kind it has not discovered yet is not collected until
// then.
func installCRDs(ctx context.Context, kubeconfig string, files []string) error {
	if len(files) == 0 {
		return nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	api := client.ApiextensionsV1().CustomResourceDefinitions()
	var names []string
	for _, file := range files {
		crds, err := readCRDs(file)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		for _, crd := range crds {
			if _, err := api.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: CRD %s: %w", file, crd.Name, err)
			}
			names = append(names, crd.Name)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range names {
		for !established(ctx, api, name) {
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s not established within 30 s", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

type crdGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*apiextensionsv1.CustomResourceDefinition, error)
}

func established(ctx context.Context, api crdGetter, name string) bool {
	crd, err := api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

// readCRDs decodes every CustomResourceDefinition document of a multi-document YAML file.
func readCRDs(file string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := decoder.Decode(crd); err != nil {
			if errors.Is(err, io.EOF) {
				return crds, nil
			}
			return nil, err
		}
		if crd.Name != "" {
			crds = append(crds, crd)
		}
	}
}
