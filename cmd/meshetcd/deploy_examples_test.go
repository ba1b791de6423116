package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// The deployment examples under deploy/ must keep working with the
// binary's flags: these tests parse the flags they pass exactly as the
// server would.

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		ClusterIP                string `yaml:"clusterIP"`
		PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
		ServiceName              string `yaml:"serviceName"`
		Replicas                 int    `yaml:"replicas"`
		PodManagementPolicy      string `yaml:"podManagementPolicy"`
		Template                 struct {
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []struct {
					Args []string `yaml:"args"`
					Env  []struct {
						Name string `yaml:"name"`
					} `yaml:"env"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func TestKubernetesExample(t *testing.T) {
	data, err := os.ReadFile("../../deploy/kubernetes/meshetcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []k8sObject
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("deploy/kubernetes/meshetcd.yaml: %v", err)
		}
		objs = append(objs, o)
	}
	var headless, sts *k8sObject
	for i := range objs {
		switch {
		case objs[i].Kind == "Service" && objs[i].Spec.ClusterIP == "None":
			headless = &objs[i]
		case objs[i].Kind == "StatefulSet":
			sts = &objs[i]
		}
	}
	if headless == nil || sts == nil {
		t.Fatalf("want a headless Service and a StatefulSet, got %+v", objs)
	}
	if !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("the headless service must list pods before they are ready: members discover each other through it before any is ready")
	}
	if sts.Spec.ServiceName != headless.Metadata.Name || sts.Spec.PodManagementPolicy != "Parallel" || sts.Spec.Replicas != 3 {
		t.Errorf("statefulset serviceName %q podManagementPolicy %q replicas %d", sts.Spec.ServiceName, sts.Spec.PodManagementPolicy, sts.Spec.Replicas)
	}
	if !sts.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
		t.Errorf("pods must run as non-root")
	}
	c := sts.Spec.Template.Spec.Containers[0]
	if !slices.ContainsFunc(c.Env, func(e struct {
		Name string `yaml:"name"`
	}) bool {
		return e.Name == meshPasswordEnv
	}) {
		t.Errorf("the mesh secret (%s) is not set", meshPasswordEnv)
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = strings.ReplaceAll(a, "$(POD_NAME)", "meshetcd-1")
	}
	o := mustParse(t, args, fakeEnv{meshPasswordEnv: "secret"})
	if o.cfg.DiscoverySize != sts.Spec.Replicas {
		t.Errorf("--discovery-size %d, replicas %d", o.cfg.DiscoverySize, sts.Spec.Replicas)
	}
	if len(o.cfg.Peers) != 1 || !strings.HasPrefix(o.cfg.Peers[0], headless.Metadata.Name+".") {
		t.Errorf("--peers %v: want the headless service's DNS name", o.cfg.Peers)
	}
	svc, _, err := net.SplitHostPort(o.cfg.Peers[0])
	if err != nil {
		t.Fatalf("--peers %q: %v", o.cfg.Peers[0], err)
	}
	// Stable names (pod IPs change on restart) keep member ids stable.
	if h := o.cfg.AdvertisePeerURLs[0].Hostname(); h != "meshetcd-1."+svc {
		t.Errorf("advertised peer host %q is not the pod's stable DNS name under %s", h, svc)
	}
}

func TestSystemdExample(t *testing.T) {
	unit, err := os.ReadFile("../../deploy/systemd/meshetcd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/meshetcd", "EnvironmentFile=/etc/meshetcd/meshetcd.env", "StateDirectory=meshetcd", "DynamicUser=yes"} {
		if !bytes.Contains(unit, []byte("\n"+want+"\n")) {
			t.Errorf("meshetcd.service lacks %q", want)
		}
	}
	f, err := os.Open("../../deploy/systemd/meshetcd.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e := fakeEnv{"ETCD_DATA_DIR": "/var/lib/meshetcd"} // set by the unit
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("meshetcd.env: bad line %q", line)
		}
		e[k] = v
	}
	o := mustParse(t, nil, e)
	if o.cfg.Name != "infra0" || o.cfg.DiscoverySize != 3 || len(o.cfg.Peers) != 2 || o.cfg.DataDir != "/var/lib/meshetcd" {
		t.Errorf("config from meshetcd.env: name %q discovery-size %d peers %v data-dir %q", o.cfg.Name, o.cfg.DiscoverySize, o.cfg.Peers, o.cfg.DataDir)
	}
}
