package main

import (
	"encoding/base64"
	"fmt"
	"os"
)

// writeKubeconfig writes a kubeconfig for the server at url authenticating with the client
// certificate kp; everything is embedded so the file stands alone.
func writeKubeconfig(path, url string, caPEM []byte, kp keyPair) error {
	b64 := base64.StdEncoding.EncodeToString
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kube-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: kube-local
  context:
    cluster: kube-local
    user: admin
current-context: kube-local
`, url, b64(caPEM), b64(kp.certPEM), b64(kp.keyPEM))
	return os.WriteFile(path, []byte(body), 0o600)
}
